"""Checkpoints: named NumPy arrays plus JSON metadata in one ``.npz`` file, never pickled.

Format (``format_version`` 1)
-----------------------------
An uncompressed ``.npz`` (a zip of ``.npy`` files, readable by ``np.load``): every array
under its own key, plus ``__meta__``, the UTF-8 bytes of a JSON object as a 1-D uint8
array. The JSON always holds ``"format": "scratchae-checkpoint"`` and
``"format_version": 1``. Keys may contain dots and slashes (``"model/encoder.0.W"``).

Safety
------
Nothing is ever pickled: object arrays are refused when saving, and loading uses
``np.load(path, allow_pickle=False)`` after checking every member's header, so a file
with a pickled payload is refused without running it.

Atomicity
---------
:func:`save_checkpoint` writes a temporary file in the target's directory, flushes and
fsyncs it, then ``os.replace``-s it onto the target: a crash leaves either the old
checkpoint or the new one, never half of one.

Nested state
------------
:func:`flatten_state` splits a nested dict (e.g. ``Optimizer.state_dict()``) into flat
array keys ``"<prefix>/<key>/<key>..."`` and a JSON-able skeleton holding everything
else (numbers, strings, empty dicts); :func:`unflatten_state` puts them back together.
"""
from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import zipfile

from numpy.lib import format as _npformat

from . import backend as B
from .backend import host as np

__all__ = ["save_checkpoint", "load_checkpoint", "flatten_state", "unflatten_state",
           "CheckpointError", "FORMAT", "FORMAT_VERSION", "META_KEY"]

FORMAT = "scratchae-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"

#: a fixed member timestamp: the same arrays and meta give the same bytes
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class CheckpointError(ValueError):
    """A checkpoint cannot be written or is refused when read (one line says why)."""


# --- saving -------------------------------------------------------------------------
def _host_array(key: str, a) -> "np.ndarray":
    if B.is_numpy(a):
        arr = a
    elif B.is_array(a):                       # CuPy, array_api_strict, ...: copied to the host
        arr = B.to_numpy(a)
    else:
        arr = np.asarray(a)
    if arr.dtype.hasobject:
        raise CheckpointError(f"array {key!r} has dtype {arr.dtype} (Python objects); "
                              "checkpoints hold numeric arrays only and are never pickled")
    return arr


def _json_default(o):
    if isinstance(o, np.generic):  # np.float32(0.5), np.int64(3), np.bool_(True)
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _encode_meta(meta) -> bytes:
    if not isinstance(meta, dict):
        raise CheckpointError(f"meta must be a dict, got {type(meta).__name__}")
    if meta.get("format", FORMAT) != FORMAT:
        raise CheckpointError(f"meta['format'] is {meta['format']!r}; it is reserved for "
                              f"{FORMAT!r}")
    doc = dict(meta)
    doc["format"], doc["format_version"] = FORMAT, FORMAT_VERSION
    try:
        text = json.dumps(doc, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"meta is not JSON-serialisable: {err}") from None
    return text.encode("utf-8")


def _check_key(key) -> str:
    if not isinstance(key, str) or not key:
        raise CheckpointError(f"array keys must be non-empty strings, got {key!r}")
    if key == META_KEY:
        raise CheckpointError(f"the key {META_KEY!r} is reserved for the metadata")
    return key


def _default_mode(target: str) -> int:
    try:
        return os.stat(target).st_mode & 0o777  # keep an existing checkpoint's mode
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save_checkpoint(path, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` (name -> array) and ``meta`` (JSON-able dict) to ``path`` atomically.

    ``path`` is used as given (no ``.npz`` is appended). Arrays on any backend are copied
    to the host. Object arrays, non-string keys, ``"__meta__"`` as a key and meta that is
    not JSON raise :class:`CheckpointError` before anything is written. On any failure
    the temporary file is removed and an existing checkpoint at ``path`` is untouched.
    """
    if not isinstance(arrays, dict):
        raise CheckpointError(f"arrays must be a dict of name -> array, got {type(arrays).__name__}")
    host = {_check_key(k): _host_array(k, a) for k, a in arrays.items()}
    host[META_KEY] = np.frombuffer(_encode_meta(meta), dtype=np.uint8)

    target = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(target)
    if os.path.isdir(target):
        raise CheckpointError(f"{target} is a directory, not a checkpoint file")
    tmp = tempfile.NamedTemporaryFile(delete=False, dir=directory, prefix=f".{base}.",
                                      suffix=".tmp")
    try:
        with tmp:
            # The .npz layout np.savez writes, but written member by member: np.savez takes
            # the keys as keyword arguments, so keys such as "file" or "allow_pickle"
            # would collide with its own parameters.
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for key, arr in host.items():
                    info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_DATE)
                    info.compress_type = zipfile.ZIP_STORED
                    with zf.open(info, "w", force_zip64=True) as member:
                        _npformat.write_array(member, arr, allow_pickle=False)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp.name, _default_mode(target))
        os.replace(tmp.name, target)
    except BaseException:
        try:
            os.unlink(tmp.name)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX; best effort elsewhere)
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- loading ------------------------------------------------------------------------
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def _scan_members(zf: zipfile.ZipFile, path: str) -> None:
    """Check CRCs and every member's .npy header (without reading any pickled payload)."""
    bad = zf.testzip()
    if bad is not None:
        raise CheckpointError(f"{path}: corrupted checkpoint (bad CRC in member {bad!r})")
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise CheckpointError(f"{path}: not a scratchae checkpoint (member "
                                  f"{info.filename!r} is not an .npy array)")
        with zf.open(info) as f:
            try:
                version = _npformat.read_magic(f)
                if version == (1, 0):
                    _, _, dtype = _npformat.read_array_header_1_0(f)
                else:
                    _, _, dtype = _npformat.read_array_header_2_0(f)
            except Exception as err:
                raise CheckpointError(f"{path}: corrupted checkpoint (member "
                                      f"{info.filename!r}: {err})") from None
        if dtype.hasobject:
            raise CheckpointError(f"refusing to load pickled data from {path} (member "
                                  f"{info.filename!r} holds Python objects)")


def _decode_meta(raw, path: str) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: {META_KEY} must be a 1-D uint8 array of JSON bytes, got "
                              f"{raw.dtype} {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: {META_KEY} is not UTF-8 JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: {META_KEY} must be a JSON object, got "
                              f"{type(meta).__name__}")
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise CheckpointError(f"{path}: not a scratchae checkpoint (format {fmt!r}, expected "
                              f"{FORMAT!r})")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version} is newer than this scratchae "
                              f"reads ({FORMAT_VERSION}); upgrade scratchae")
    return meta


def load_checkpoint(path) -> tuple[dict, dict]:
    """Read a checkpoint: ``(arrays, meta)``, both plain dicts; arrays are NumPy.

    ``meta`` includes ``"format"`` and ``"format_version"``. Raises
    :class:`FileNotFoundError` when there is no file, and :class:`CheckpointError` for
    anything that is not an intact scratchae checkpoint: not a zip/npz, truncated or
    corrupted, no ``__meta__``, another format, a newer ``format_version``, or pickled
    data (refused without being unpickled).
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:  # FileNotFoundError / IsADirectoryError as usual
        head = fh.read(4)
    if head not in _ZIP_MAGICS:
        what = "an empty file" if not head else (
            "a single .npy array" if head.startswith(b"\x93NUM") else "not a zip/.npz file")
        raise CheckpointError(f"{path}: not a scratchae checkpoint ({what})")
    try:
        with zipfile.ZipFile(path) as zf:
            _scan_members(zf, path)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint ({err})") from None

    try:
        with np.load(path, allow_pickle=False) as npz:
            # npz[name + ".npy"] addresses the member exactly: npz[name] would prefer a
            # member literally called `name` (a key "w" next to a key "w.npy" would clash).
            loaded = {name: npz[name + ".npy"] for name in npz.files}
    except ValueError as err:
        if "pickle" in str(err).lower() or "object arrays" in str(err).lower():
            raise CheckpointError(f"refusing to load pickled data from {path}") from None
        raise CheckpointError(f"{path}: corrupted checkpoint ({err})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint ({err})") from None

    if META_KEY not in loaded:
        raise CheckpointError(f"{path}: not a scratchae checkpoint (no {META_KEY} entry; a plain "
                              ".npz of arrays?)")
    meta = _decode_meta(loaded.pop(META_KEY), path)
    return loaded, meta


# --- nested state -------------------------------------------------------------------
_SCALARS = (str, int, float, bool, type(None))


def _is_array(x) -> bool:
    return not isinstance(x, (np.generic, *_SCALARS)) and hasattr(x, "shape") and hasattr(x, "dtype")


def _jsonable(x, where: str):
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return x  # json writes NaN/Infinity, and Python reads them back
    if isinstance(x, _SCALARS):
        return x
    if isinstance(x, (list, tuple)) and not any(_is_array(v) or isinstance(v, dict) for v in x):
        return [_jsonable(v, where) for v in x]
    raise CheckpointError(f"flatten_state: {where} is a {type(x).__name__}; expected an array, "
                          "a dict, or a JSON scalar/list")


def flatten_state(prefix: str, state: dict) -> tuple[dict, dict]:
    """Split a nested dict into ``(arrays, skeleton)``.

    ``arrays`` maps ``"<prefix>/<k1>/<k2>..."`` to NumPy copies of every array leaf (any
    backend); ``skeleton`` is ``state`` without its arrays: the JSON-able scalars, lists
    and (possibly empty) dicts, to store in the checkpoint's meta. Dict keys must be
    strings without ``"/"`` (dots are fine: ``"encoder.0.W"``).

    >>> arrays, skel = flatten_state("optim", opt.state_dict())        # doctest: +SKIP
    >>> opt.load_state_dict(unflatten_state("optim", arrays, skel))    # doctest: +SKIP
    """
    if not isinstance(prefix, str) or not prefix.strip("/"):
        raise CheckpointError(f"flatten_state: prefix must be a non-empty string, got {prefix!r}")
    if not isinstance(state, dict):
        raise CheckpointError(f"flatten_state: state must be a dict, got {type(state).__name__}")
    arrays = {}

    def walk(d: dict, path: str) -> dict:
        skel = {}
        for k, v in d.items():
            if not isinstance(k, str) or not k or "/" in k:
                raise CheckpointError(f"flatten_state: key {k!r} under {path!r} must be a "
                                      "non-empty string without '/'")
            key = f"{path}/{k}"
            if isinstance(v, dict):
                skel[k] = walk(v, key)
            elif _is_array(v):
                arrays[key] = np.array(_host_array(key, v), copy=True)
            else:
                skel[k] = _jsonable(v, repr(key))
        return skel

    return arrays, walk(state, prefix.rstrip("/"))


def unflatten_state(prefix: str, arrays: dict, skeleton: dict | None = None) -> dict:
    """The inverse of :func:`flatten_state`: the arrays under ``"<prefix>/"`` put back
    into (a deep copy of) ``skeleton``. Arrays under other prefixes are ignored."""
    out = copy.deepcopy(skeleton) if skeleton is not None else {}
    if not isinstance(out, dict):
        raise CheckpointError(f"unflatten_state: skeleton must be a dict, got {type(out).__name__}")
    head = prefix.rstrip("/") + "/"
    for key, arr in arrays.items():
        if not key.startswith(head):
            continue
        parts = key[len(head):].split("/")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"unflatten_state: {key!r} runs into a non-dict entry")
        if parts[-1] in node and isinstance(node[parts[-1]], dict):
            raise CheckpointError(f"unflatten_state: {key!r} would replace a dict")
        node[parts[-1]] = arr
    return out

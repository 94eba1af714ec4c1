"""Datasets: find, download (checked), parse and batch MNIST and Fashion-MNIST.

This is host-side code: it reads files and returns NumPy ``uint8`` arrays; the training
loop moves each preprocessed batch to the model's device.

Where :func:`load_dataset` looks, in order
------------------------------------------
1. ``data=`` (the CLI's ``--data PATH``): an ``.npz`` file with ``x_train, y_train,
   x_test, y_test``, or a directory holding ``<name>.npz`` or the four IDX files
   (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
   ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; uncompressed copies
   are accepted too), or a subdirectory ``<name>/`` holding either (so one directory
   can serve both datasets). Nothing usable there is an error: an explicit path is
   never skipped silently.
2. ``$SCRATCHAE_DATA``: the same; a directory without the dataset is passed over.
3. The cache, ``~/.cache/scratchae/<name>/``.
4. A download into the cache (``download=True``) of the four IDX files from
   :data:`MIRRORS`, each checked against its SHA-256 in :data:`CHECKSUMS` before it is
   kept.
5. For MNIST only: the subset shipped in the package (5,000 train / 1,000 test
   images), with one line on stderr saying so. ``data="bundled"`` asks for it directly.

Everything that goes wrong raises :class:`DataError` with one line saying what and
where.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.resources
import operator
import os
import pathlib
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from typing import Iterator

from .backend import host as np

__all__ = [
    "Dataset", "DataError", "load_dataset", "preprocess", "batches", "download_dataset",
    "read_idx", "parse_idx", "cache_dir", "DATASETS", "FILES", "MIRRORS", "CHECKSUMS",
    "ENV_VAR", "SUBSET_RESOURCE", "SUBSET_SOURCE", "subset_note", "checksum",
]


class DataError(RuntimeError):
    """A dataset could not be found, downloaded, verified or parsed."""


DATASETS = ("mnist", "fashion_mnist")

#: the four canonical files of both datasets, keyed by the Dataset field they fill
FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}

#: where to download from, tried in order
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
}

#: SHA-256 of each canonical ``.gz`` file (as torchvision, TensorFlow and others check
#: them). The Fashion-MNIST mirror is plain HTTP: these hashes are what make it safe.
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
        "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
        "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
        "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
    },
}

ENV_VAR = "SCRATCHAE_DATA"

#: ``Dataset.source`` of the bundled subset; ``load_dataset(data="bundled")`` loads it
SUBSET_SOURCE = "bundled subset"

#: the MNIST subset inside the package (made by benchmarks/make_mnist_subset.py)
SUBSET_RESOURCE = ("_data", "mnist_subset.npz")

#: seconds to wait on a connection or a read before trying the next mirror
TIMEOUT = 20.0

_PRETTY = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
_KEYS = ("x_train", "y_train", "x_test", "y_test")


# --- the dataset ------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Dataset:
    """Images ``(N, 28, 28)`` uint8 (0-255) and labels ``(N,)`` uint8 (0-9)."""
    name: str
    x_train: "np.ndarray"
    y_train: "np.ndarray"
    x_test: "np.ndarray"
    y_test: "np.ndarray"
    #: where it came from: a path, or "bundled subset"
    source: str

    @property
    def is_subset(self) -> bool:
        return self.source == SUBSET_SOURCE

    def __repr__(self):
        return (f"Dataset({self.name!r}, {len(self.x_train)} train / {len(self.x_test)} test, "
                f"source={self.source!r})")


def _check_arrays(arrays: dict, where: str) -> dict:
    """Validate (and normalise label dtypes of) the four arrays of a dataset."""
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8:
            raise DataError(f"{where}: x_{split} has dtype {x.dtype}, expected uint8 pixel "
                            "values 0-255 (the raw images, not preprocessed floats)")
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{where}: x_{split} has shape {x.shape}, expected (N, 28, 28)")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"{where}: y_{split} has shape {y.shape}, expected ({x.shape[0]},) "
                            f"to match x_{split}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where}: y_{split} has dtype {y.dtype}, expected integer labels")
        if y.size and (int(y.min()) < 0 or int(y.max()) > 9):
            raise DataError(f"{where}: y_{split} has labels outside 0-9 "
                            f"(min {int(y.min())}, max {int(y.max())})")
        out[f"x_{split}"] = x
        out[f"y_{split}"] = y.astype(np.uint8, copy=False)
    return out


# --- IDX files --------------------------------------------------------------------
#: IDX type codes (third byte of the magic number) -> big-endian NumPy dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes, where: str = "IDX data") -> "np.ndarray":
    """Parse the bytes of an (uncompressed) IDX file into an array in native byte order.

    IDX: two zero bytes, a type code, the number of dimensions; then each dimension as
    a big-endian uint32; then the values, big-endian, row-major. Anything else
    (wrong magic, unknown type, too few or too many bytes) raises :class:`DataError`.
    """
    raw = bytes(raw)
    if len(raw) < 4:
        raise DataError(f"{where}: not an IDX file ({len(raw)} bytes, shorter than the header)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{where}: not an IDX file (magic number starts {raw[:2].hex()}, "
                        "expected 0000)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise DataError(f"{where}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{where}: IDX file with 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{where}: truncated IDX header ({len(raw)} bytes, expected {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[code])
    want = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != want:
        kind = "truncated" if len(raw) < want else "has trailing bytes"
        raise DataError(f"{where}: IDX file {kind}: {len(raw)} bytes, expected {want} "
                        f"for shape {shape}")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # a writable copy in native order


def read_idx(path) -> "np.ndarray":
    """Read an IDX file, gzipped (detected by its magic bytes) or not."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupted gzip data ({err})") from None
    return parse_idx(raw, str(path))


def _idx_paths(directory: pathlib.Path) -> dict | None:
    """The four IDX files in ``directory`` (``.gz`` or uncompressed), or None."""
    found = {}
    for key, gz in FILES.items():
        for candidate in (directory / gz, directory / gz[:-3]):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_idx_dir(name: str, paths: dict, where: str) -> dict:
    # Both datasets use the same file names and headers: use the known hashes to catch
    # "these are the MNIST files" when Fashion-MNIST was asked for (and vice versa).
    for other in DATASETS:
        if other == name:
            continue
        gz = paths["x_train"]
        if gz.name == FILES["x_train"] and _sha256(gz) == CHECKSUMS[other][gz.name]:
            raise DataError(f"{gz}: this is the {_PRETTY[other]} file, but {_PRETTY[name]} "
                            "was asked for")
    arrays = {}
    for key, p in paths.items():
        arr = read_idx(p)
        if arr.dtype != np.uint8:
            raise DataError(f"{p}: IDX values have type {arr.dtype}, expected uint8")
        arrays[key] = arr
    return _check_arrays(arrays, where)


def _load_npz(path: pathlib.Path) -> dict:
    with open(path, "rb") as fh:
        head = fh.read(6)
    if not head.startswith(b"PK") and not head.startswith(b"\x93NUMPY"):
        what = "an empty file" if not head else "neither a zip archive nor a .npy array"
        raise DataError(f"{path}: not an .npz file ({what}); expected an .npz with "
                        f"{', '.join(_KEYS)}, or a folder with the four IDX .gz files")
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise DataError(f"{path}: a single .npy array, expected an .npz with "
                                f"{', '.join(_KEYS)}")
            missing = [k for k in _KEYS if k not in f.files]
            if missing:
                raise DataError(f"{path}: missing {', '.join(missing)} (has "
                                f"{', '.join(f.files) or 'nothing'}); expected {', '.join(_KEYS)}")
            arrays = {k: f[k] for k in _KEYS}
    except DataError:
        raise
    except ValueError as err:
        if "pickle" in str(err).lower():  # refused by allow_pickle=False
            raise DataError(f"{path}: cannot read without unpickling ({err})") from None
        raise DataError(f"{path}: not a readable .npz file ({err})") from None
    except Exception as err:  # BadZipFile, OSError, EOFError, ...
        raise DataError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    return _check_arrays(arrays, str(path))


def _load_from(name: str, path: pathlib.Path) -> Dataset | None:
    """Load ``name`` from a file or directory; None when the directory does not hold it."""
    if path.is_file():
        return Dataset(name, **_load_npz(path), source=str(path))
    if not path.is_dir():
        return None
    candidates = [path / f"{name}.npz", path / name / f"{name}.npz"]
    if name == "fashion_mnist":
        candidates.append(path / "fashion-mnist.npz")
    for npz in candidates:
        if npz.is_file():
            return Dataset(name, **_load_npz(npz), source=str(npz))
    for directory in (path, path / name):
        paths = _idx_paths(directory)
        if paths is not None:
            return Dataset(name, **_load_idx_dir(name, paths, str(directory)), source=str(directory))
    return None


# --- the cache and downloads ------------------------------------------------------
def cache_dir(name: str) -> pathlib.Path:
    """``~/.cache/scratchae/<name>``: where downloads are kept."""
    return pathlib.Path.home() / ".cache" / "scratchae" / name


def _fetch(url: str, dest, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        expected, got = r.headers.get("Content-Length"), 0
        for block in iter(lambda: r.read(1 << 16), b""):
            dest.write(block)
            got += len(block)
    if expected is not None and expected.isdigit() and got != int(expected):
        raise OSError(f"transfer cut off after {got} of {expected} bytes")


def download_dataset(name: str = "mnist", dest=None, mirrors=None, checksums=None,
                     timeout: float | None = None, quiet: bool = False) -> pathlib.Path:
    """Download the four IDX files of ``name`` into ``dest`` (default: the cache).

    Each file is fetched into a temporary file in ``dest`` and checked against its
    SHA-256 in ``checksums``; a file whose hash differs is deleted, and the next mirror
    tried. Only when all four are good are they renamed into place, so ``dest`` never
    holds an unverified or partial file. Files already in ``dest`` with the right hash
    are kept. Raises :class:`DataError` (naming the file, the expected and the actual
    hash for a mismatch) when some file cannot be had. Returns ``dest``.
    """
    name = _check_name(name)
    dest = pathlib.Path(dest) if dest is not None else cache_dir(name)
    mirrors = tuple(MIRRORS[name] if mirrors is None else mirrors)
    checksums = dict(CHECKSUMS[name] if checksums is None else checksums)
    timeout = TIMEOUT if timeout is None else timeout
    if not mirrors:
        raise DataError(f"no mirrors to download {_PRETTY[name]} from")
    missing = [f for f in FILES.values() if f not in checksums]
    if missing:
        raise DataError(f"no SHA-256 given for {', '.join(missing)}: refusing to download "
                        "files that cannot be checked")

    created = [d for d in (dest, *dest.parents) if not d.exists()]  # deepest first
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create the download directory {dest}: {err.strerror or err}") from None
    fetched = {}  # final path -> verified temp path
    try:
        for fname in FILES.values():
            final, expected = dest / fname, checksums[fname].lower()
            if final.is_file() and _sha256(final) == expected:
                continue
            errors = []
            for mirror in mirrors:
                url = mirror.rstrip("/") + "/" + fname
                tmp = tempfile.NamedTemporaryFile(delete=False, dir=dest, prefix=f".{fname}.",
                                                  suffix=".part")
                try:
                    with tmp:
                        _fetch(url, tmp, timeout)
                except (urllib.error.URLError, http.client.HTTPException, OSError,
                        ValueError) as err:  # HTTPException: e.g. a cut-off transfer
                    os.unlink(tmp.name)
                    reason = getattr(err, "reason", None) or err
                    errors.append(f"{url}: {reason}")
                    continue
                except BaseException:
                    os.unlink(tmp.name)
                    raise
                actual = _sha256(tmp.name)
                if actual != expected:
                    os.unlink(tmp.name)
                    errors.append(f"{fname} from {url} has SHA-256 {actual}, expected {expected}; "
                                  "deleted")
                    continue
                fetched[final] = tmp.name
                break
            else:
                raise DataError(f"could not download {fname} of {_PRETTY[name]}: "
                                + " | ".join(errors))
        n_new = len(fetched)
        for final, tmp in fetched.items():
            os.replace(tmp, final)
        fetched.clear()
    finally:
        for tmp in fetched.values():
            try:
                os.unlink(tmp)
            except OSError:
                pass
        for d in created:  # directories this call made: removed again if left empty
            try:
                d.rmdir()
            except OSError:
                break
    if n_new and not quiet:
        print(f"scratchae: downloaded {_PRETTY[name]} ({n_new} files, SHA-256 checked) to {dest}",
              file=sys.stderr)
    return dest


# --- loading ----------------------------------------------------------------------
def _check_name(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    return key


def _bundled_subset() -> Dataset:
    res = importlib.resources.files("scratchae").joinpath(*SUBSET_RESOURCE)
    try:
        with res.open("rb") as fh, np.load(fh, allow_pickle=False) as f:
            arrays = {k: f[k] for k in _KEYS}
    except Exception as err:
        raise DataError(f"the bundled MNIST subset ({'/'.join(SUBSET_RESOURCE)}) is missing or "
                        f"unreadable ({type(err).__name__}: {err}); reinstall scratchae or pass "
                        "--data PATH") from None
    return Dataset("mnist", **_check_arrays(arrays, "bundled subset"), source=SUBSET_SOURCE)


def load_dataset(name: str = "mnist", data=None, download: bool = True,
                 quiet: bool = False) -> Dataset:
    """Find (or download) ``name`` = ``"mnist"`` | ``"fashion_mnist"`` and load it.

    See the module docstring for where it looks. ``data`` is a path (str or PathLike)
    to an ``.npz`` file or a directory. With ``download=False`` nothing is fetched.
    ``quiet`` silences the stderr notes (a download done, the fallback to the bundled
    MNIST subset).
    """
    name = _check_name(name)
    pretty = _PRETTY[name]
    if data in (SUBSET_SOURCE, "bundled") and name == "mnist":
        return _bundled_subset()
    if data is not None:
        path = pathlib.Path(data).expanduser()
        if not path.exists():
            raise DataError(f"--data {path}: no such file or directory")
        found = _load_from(name, path)
        if found is None:
            raise DataError(f"--data {path}: no {name}.npz and no four IDX files "
                            f"({', '.join(FILES.values())}) in this directory")
        return found

    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        path = pathlib.Path(env).expanduser()
        if not path.exists():
            raise DataError(f"${ENV_VAR}={env}: no such file or directory")
        found = _load_from(name, path)
        if found is not None:
            return found

    cache = cache_dir(name)
    found = _load_from(name, cache) if cache.is_dir() else None
    if found is not None:
        return found

    failure = "download is off"
    if download:
        try:
            download_dataset(name, cache, quiet=quiet)
            return Dataset(name, **_load_idx_dir(name, _idx_paths(cache), str(cache)),
                           source=str(cache))
        except DataError as err:
            failure = f"download failed: {err}"

    how = (f"pass --data PATH (an .npz with {', '.join(_KEYS)}, or a directory with the four "
           f"IDX .gz files) or set ${ENV_VAR}, or put the files in {cache}")
    if name != "mnist":
        raise DataError(f"{pretty} not found ({failure}); {how}")
    ds = _bundled_subset()
    if not quiet:
        print(f"scratchae: {subset_note(ds)}", file=sys.stderr)
    return ds


def subset_note(ds: Dataset) -> str:
    """One line on the bundled subset: what is used and how to get full MNIST."""
    return (f"using the bundled MNIST subset ({len(ds.x_train)} train / {len(ds.x_test)} test "
            f"images); for full MNIST pass --data mnist.npz (or a folder with the IDX .gz files), "
            f"set ${ENV_VAR}, or let scratchae download it once into {cache_dir('mnist')}")


def checksum(ds: Dataset) -> str:
    """sha256 of the four arrays (shapes, dtypes and bytes): the same data from any file."""
    h = hashlib.sha256()
    for key in _KEYS:
        a = np.ascontiguousarray(getattr(ds, key))
        h.update(f"{key}{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# --- preprocessing and batching ---------------------------------------------------
def _numpy_generator(rng, who: str):
    if hasattr(rng, "host_generator"):  # a scratchae.backend.Generator
        return rng.host_generator()
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"{who}: rng must be a numpy Generator (np.random.default_rng(seed)) or a "
                    f"scratchae Generator, got {type(rng).__name__}")


def preprocess(x_uint8, binarize: str = "none", rng=None, dtype="float32") -> "np.ndarray":
    """uint8 images ``(N, 28, 28)`` (or ``(N, 784)``) -> floats ``(N, 784)`` on the host.

    binarize:
        ``"none"``     pixel / 255, in [0, 1];
        ``"fixed"``    1 where pixel / 255 > 0.5, else 0 (the same every call);
        ``"dynamic"``  a fresh Bernoulli(pixel / 255) draw per call, from ``rng`` (a
                       seeded ``np.random.Generator`` or scratchae Generator; required).
    """
    x = np.asarray(x_uint8)
    if x.dtype != np.uint8:
        raise TypeError(f"preprocess: expected uint8 images (0-255), got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"preprocess: expected images of shape (N, 28, 28) or (N, 784), "
                         f"got {x.shape}")
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"preprocess: dtype must be a float type, got {dt}")
    flat = x.reshape(x.shape[0], -1)
    mode = str(binarize).lower()
    if mode == "none":
        return flat.astype(dt) / dt.type(255)
    if mode == "fixed":
        return (flat > 127).astype(dt)  # pixel/255 > 0.5  <=>  pixel >= 128
    if mode == "dynamic":
        if rng is None:
            raise ValueError("preprocess: binarize='dynamic' draws random pixels and needs "
                             "rng=np.random.default_rng(seed)")
        gen = _numpy_generator(rng, "preprocess")
        p = flat.astype(dt) / dt.type(255)
        return (gen.random(p.shape, dtype=dt) < p).astype(dt)
    raise ValueError(f"preprocess: binarize must be 'none', 'fixed' or 'dynamic', got {binarize!r}")


def batches(n: int, batch_size: int, rng=None, drop_last: bool = False) -> Iterator["np.ndarray"]:
    """Index arrays covering ``range(n)`` in batches of ``batch_size``.

    In order when ``rng`` is None; otherwise a permutation drawn from ``rng`` (a numpy
    Generator or a scratchae Generator; never the global NumPy RNG). The last, shorter
    batch is dropped when ``drop_last``.
    """
    try:
        n, batch_size = operator.index(n), operator.index(batch_size)
    except TypeError:
        raise TypeError(f"batches: n and batch_size must be ints, got {n!r}, {batch_size!r}") from None
    if n < 0:
        raise ValueError(f"batches: n must be >= 0, got {n}")
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be >= 1, got {batch_size}")
    if rng is None:
        order = np.arange(n)
    elif hasattr(rng, "permutation") and not isinstance(rng, np.random.RandomState):
        order = np.asarray(rng.permutation(n))
    else:
        raise TypeError(f"batches: rng must be a numpy Generator (np.random.default_rng(seed)) or "
                        f"a scratchae Generator, got {type(rng).__name__}")
    stop = n - n % batch_size if drop_last else n
    return (order[i:i + batch_size] for i in range(0, stop, batch_size))

"""Where arrays live: array namespaces, devices, random generators, host transfer.

With :mod:`scratchae.fast` (the speed code), the only module of scratchae that imports
NumPy or CuPy by name. All math
code asks the *data* which namespace it belongs to (``namespace(x)``) and uses that,
so the same layer runs on NumPy (CPU), CuPy (CUDA) and ``array_api_strict``, the
test stand-in for a GPU that refuses silent NumPy conversion and device mixing.

Device names
------------
``"cpu"``                       NumPy
``"cuda"``, ``"cuda:N"``        CuPy on GPU N (needs ``pip install 'scratchae[cuda12]'``)
``"array_api_strict"``          array_api_strict on its CPU_DEVICE (for tests)
``"array_api_strict:device1"``  array_api_strict on its non-CPU ``Device("device1")``

Speed code (fused kernels, scratch buffers, threads) lives in :mod:`scratchae.fast`, not here.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as _np
import array_api_compat
import array_api_compat.numpy as _cnp

__all__ = [
    "Backend", "Generator", "namespace", "device_of", "resolve", "to_numpy",
    "from_numpy", "synchronize", "cuda_available", "DeviceError", "is_numpy",
    "to_scalar", "dtype_name", "TRANSFERS", "is_array",
]


#: The host array library, for host-side bookkeeping only (data loading, checker reports).
host = _np


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


class Transfers:
    """Bytes and copies between the host and a device (NumPy moves nothing, so counts
    nothing). ``TRANSFERS.reset()`` then ``TRANSFERS.snapshot()`` measures a stretch of
    work: ``benchmarks/transfer_bytes.py`` reports it per training step."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.to_device_bytes = self.to_device_copies = 0
        self.to_host_bytes = self.to_host_copies = 0

    def count(self, direction: str, nbytes: int) -> None:
        setattr(self, f"{direction}_bytes", getattr(self, f"{direction}_bytes") + int(nbytes))
        setattr(self, f"{direction}_copies", getattr(self, f"{direction}_copies") + 1)

    def snapshot(self) -> dict:
        return {k: getattr(self, k) for k in ("to_device_bytes", "to_device_copies",
                                              "to_host_bytes", "to_host_copies")}


#: the process's count of host <-> device copies
TRANSFERS = Transfers()


def is_numpy(x) -> bool:
    return type(x) is _np.ndarray


def is_array(x) -> bool:
    """True for an array of any supported library (NumPy, CuPy, array_api_strict)."""
    return array_api_compat.is_array_api_obj(x)


def namespace(*arrays):
    """The array-API namespace of ``arrays`` (plain NumPy arrays are answered by a type
    check: every forward and backward asks, and the general lookup is slow)."""
    if all(type(a) is _np.ndarray for a in arrays):
        return _cnp
    return array_api_compat.array_namespace(*arrays)


def device_of(x):
    """The device object of an array (``"cpu"`` for NumPy, answered without a lookup)."""
    if type(x) is _np.ndarray:
        return "cpu"
    return array_api_compat.device(x)


def _cuda_hint(error=None) -> str:
    """The install command that fits this machine's NVIDIA driver, from ``scratchae doctor``."""
    try:
        from .doctor import cuda_install_hint
        return cuda_install_hint(None if error is None else str(error))
    except Exception:       # the hint must never hide the error it explains
        return 'pip install -e ".[cuda12]" (CUDA 12 driver) or ".[cuda13]" (CUDA 13)'


def _cupy():
    try:
        import cupy  # noqa: F401  (optional dependency)
    except ImportError as err:
        raise DeviceError(
            f"device 'cuda' needs CuPy, which is not installed ({err}): {_cuda_hint()}; "
            "'scratchae doctor' shows what this machine has"
        ) from None
    except Exception as err:        # CuPy is there but broken (a CUDA library missing, ...)
        raise DeviceError(
            f"device 'cuda': CuPy is installed but fails to import ({type(err).__name__}: {err}); "
            f"{_cuda_hint(err)}; 'scratchae doctor' shows what this machine has"
        ) from None
    return cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU (never raises)."""
    try:
        import cupy
        return bool(cupy.is_available())
    except Exception:
        return False


@dataclass(frozen=True)
class Backend:
    """An array namespace plus a device on it: where a model's arrays live.

    Build one with ``resolve("cpu" | "cuda:1" | "array_api_strict:device1")``.
    """
    name: str
    xp: Any
    device: Any

    def asarray(self, host, dtype=None):
        """Copy a NumPy (host) array onto this backend, cast to ``dtype`` on the host first
        (so a float32 copy moves 4 bytes an entry, whatever the host array held)."""
        h = _np.asarray(host, dtype=None if dtype is None else _np.dtype(str(dtype)))
        if self.xp is _cnp:
            return h
        TRANSFERS.count("to_device", h.nbytes)
        if _is_cupy_namespace(self.xp):
            with self.device:
                return self.xp.asarray(h)
        return self.xp.asarray(h, device=self.device)

    def zeros(self, shape, dtype="float64"):
        with self.context():
            return self.xp.zeros(shape, dtype=getattr(self.xp, str(dtype)), device=self.device)

    def context(self):
        """A ``with`` block in which new arrays land on this device: ``cuda:N`` makes GPU N
        CuPy's current device (CuPy creates arrays and runs kernels on the current device,
        whatever ``device=`` says); a no-op everywhere else."""
        if _is_cupy_namespace(self.xp):
            return self.device
        return contextlib.nullcontext()

    def __str__(self):
        return self.name

    def __hash__(self):             # a cupy.cuda.Device is unhashable: the name says it all
        return hash(self.name)


def _is_cupy_namespace(xp) -> bool:
    return array_api_compat.is_cupy_namespace(xp)


def resolve(device="cpu") -> Backend:
    """Turn a device name (or a Backend, or an array) into a :class:`Backend`.

    Raises :class:`DeviceError` with what to install when CUDA is asked for and
    CuPy or a GPU is missing.
    """
    if isinstance(device, Backend):
        return device
    if not isinstance(device, str):  # an array: its own backend
        xp = namespace(device)
        dev = device_of(device)
        return Backend(_backend_name(xp, dev), xp, dev)
    name = device.strip().lower()
    if name == "cpu":
        return Backend("cpu", _cnp, "cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index = 0
        if ":" in name:
            try:
                index = int(name.split(":", 1)[1])
            except ValueError:
                raise DeviceError(f"bad device name {device!r}: expected 'cuda' or 'cuda:N'") from None
        cupy = _cupy()
        if not cuda_available():
            raise DeviceError(
                f"device {device!r} was asked for, CuPy is installed, but no CUDA GPU is "
                "visible (cupy.is_available() is False); 'scratchae doctor' says why "
                "(driver, CuPy build), or use --device cpu"
            )
        count = cupy.cuda.runtime.getDeviceCount()
        if not 0 <= index < count:
            raise DeviceError(f"device {device!r} does not exist: this machine has {count} GPU(s)")
        import array_api_compat.cupy as ccp
        return Backend(f"cuda:{index}", ccp, cupy.cuda.Device(index))
    if name == "array_api_strict" or name.startswith("array_api_strict:"):
        import array_api_strict as xps
        dev_name = name.split(":", 1)[1] if ":" in name else "CPU_DEVICE"
        dev_name = {"cpu_device": "CPU_DEVICE"}.get(dev_name, dev_name)
        try:
            dev = xps.Device(dev_name)
        except ValueError:
            raise DeviceError(f"unknown array_api_strict device {dev_name!r}: use "
                              "'array_api_strict' or 'array_api_strict:device1'") from None
        return Backend(f"array_api_strict:{dev_name}", xps, dev)
    raise DeviceError(
        f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' "
        "(or 'array_api_strict[:device1]' for tests)"
    )


def _backend_name(xp, dev) -> str:
    if xp is _cnp:
        return "cpu"
    if _is_cupy_namespace(xp):
        return f"cuda:{dev.id}"
    if array_api_compat.is_array_api_strict_namespace(xp):
        return f"array_api_strict:{str(dev).split(chr(39))[1] if chr(39) in str(dev) else dev}"
    return f"{xp.__name__}:{dev}"


def to_numpy(x) -> _np.ndarray:
    """Copy any supported array to a NumPy array on the host (a no-op for NumPy)."""
    if isinstance(x, _np.ndarray):
        return x
    if isinstance(x, (float, int, bool, _np.generic)):
        return _np.asarray(x)
    mod = type(x).__module__
    if mod.startswith("cupy"):
        out = x.get()
    elif mod.startswith("array_api_strict"):
        import array_api_strict as xps
        out = _np.asarray(x.to_device(xps.Device("CPU_DEVICE")))
    else:
        out = _np.asarray(x)
    TRANSFERS.count("to_host", out.nbytes)
    return out


def from_numpy(host, device="cpu", dtype=None):
    """Copy a NumPy array onto ``device`` (name, Backend or an array to match)."""
    return resolve(device).asarray(host, dtype)


def to_scalar(x) -> float:
    """A Python float from a 0-d array (a host sync on CUDA: keep it out of hot loops)."""
    return float(to_numpy(x))


def synchronize(device="cpu") -> None:
    """Wait for queued GPU work (no-op off CUDA). Benchmarks call it before reading a clock."""
    b = resolve(device)
    if _is_cupy_namespace(b.xp):
        import cupy
        with b.device:
            cupy.cuda.get_current_stream().synchronize()


class Generator:
    """A seeded random stream, the same on every device: NumPy's ``default_rng`` on the host.

    Every draw (initial weights, shuffling, VAE noise, corruption and dropout masks, prior
    samples, IWAE samples) is made on the host in float64, cast there to the dtype asked
    for, and copied to the generator's device: CPU, ``array_api_strict`` and CUDA see the
    same numbers from the same seed, ``state()`` saves and restores on every device, and
    the path CI runs on ``array_api_strict:device1`` is the path CUDA runs. A draw of more
    than ``CHUNK`` entries is made and copied ``CHUNK`` entries at a time (the same numbers
    as one draw), so the host never holds a second copy of a large array. The cost, bytes
    copied per training step, is measured in ``docs/cuda.md``.

    Every stochastic piece of scratchae takes one of these: nothing touches global
    random state.
    """

    #: entries drawn and copied at a time (32 MiB of float64 on the host)
    CHUNK = 1 << 22

    def __init__(self, seed: int, device="cpu"):
        if seed is None or not isinstance(seed, (int, _np.integer)):
            raise TypeError(f"Generator needs an explicit integer seed, got {seed!r}")
        self.seed = int(seed)
        self.backend = resolve(device)
        self._rng = _np.random.default_rng(self.seed)

    # --- state, so training can resume exactly (on any device) -------------------
    def state(self) -> dict:
        """The stream's position: a JSON-able dict, the same whatever the device."""
        return self._rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state

    # --- draws -------------------------------------------------------------------
    def _draw(self, shape, host_values, dtype):
        """``host_values(n)`` gives the stream's next n values (a NumPy array): made into
        ``shape`` on this generator's device, cast to ``dtype`` on the host first."""
        shape = (shape,) if isinstance(shape, (int, _np.integer)) else tuple(shape)
        n = int(_np.prod(shape, dtype=_np.int64))
        if n <= self.CHUNK or self.backend.xp is _cnp:
            return self.backend.asarray(host_values(n).reshape(shape), dtype)
        xp = self.backend.xp
        with self.backend.context():
            flat = xp.empty((n,), dtype=getattr(xp, str(dtype)), device=self.backend.device)
        for start in range(0, n, self.CHUNK):
            stop = min(n, start + self.CHUNK)
            flat[start:stop] = self.backend.asarray(host_values(stop - start), dtype)
        with self.backend.context():
            return xp.reshape(flat, shape)

    def normal(self, shape, dtype="float32", mean=0.0, std=1.0):
        def values(n):
            a = self._rng.standard_normal(n)
            return a * std + mean if (mean != 0.0 or std != 1.0) else a
        return self._draw(shape, values, dtype)

    def uniform(self, shape, low=0.0, high=1.0, dtype="float32"):
        def values(n):
            a = self._rng.random(n)
            return a * (high - low) + low if (low != 0.0 or high != 1.0) else a
        return self._draw(shape, values, dtype)

    def bernoulli(self, shape, p, dtype="float32"):
        """0/1 array with P(1) = p (copied as 1-byte bools, made ``dtype`` on the device)."""
        mask = self._draw(shape, lambda n: self._rng.random(n) < p, "bool")
        with self.backend.context():
            return self.backend.xp.astype(mask, getattr(self.backend.xp, str(dtype)))

    def integers(self, low, high, shape):
        return self._draw(shape, lambda n: self._rng.integers(low, high, size=n), "int64")

    def permutation(self, n: int):
        """A permutation of range(n) *on the host* (indices for host-side batching)."""
        return self._rng.permutation(n)

    def host_generator(self):
        """The NumPy generator itself, for host-side draws: the same stream as the rest."""
        return self._rng


_DTYPE_NAMES: dict = {}


def dtype_name(dtype) -> str:
    """``"float32"`` for any namespace's float32 dtype object (strict prints a prefix);
    cached, since every layer's input check asks."""
    key = (type(dtype), dtype)      # the type first: dtypes of two libraries never meet in ==
    try:
        return _DTYPE_NAMES[key]
    except (KeyError, TypeError):
        pass
    name = str(dtype).rsplit(".", 1)[-1].replace("'>", "").replace("<class 'numpy", "")
    try:
        _DTYPE_NAMES[key] = name
    except TypeError:       # an unhashable dtype-like: just not cached
        pass
    return name

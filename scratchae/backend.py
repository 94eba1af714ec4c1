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

from dataclasses import dataclass
from typing import Any

import numpy as _np
import array_api_compat
import array_api_compat.numpy as _cnp

__all__ = [
    "Backend", "Generator", "namespace", "device_of", "resolve", "to_numpy",
    "from_numpy", "synchronize", "cuda_available", "DeviceError", "is_numpy",
    "to_scalar", "dtype_name",
]


#: The host array library, for host-side bookkeeping only (data loading, checker reports).
host = _np


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


def is_numpy(x) -> bool:
    return type(x) is _np.ndarray


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


def _cupy():
    try:
        import cupy  # noqa: F401  (optional dependency)
    except ImportError as err:
        raise DeviceError(
            "device 'cuda' needs CuPy, which is not installed: "
            "pip install 'scratchae[cuda12]' (CUDA 12) or 'scratchae[cuda13]' (CUDA 13)"
        ) from err
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
        """Copy a NumPy (host) array onto this backend."""
        dt = None if dtype is None else getattr(self.xp, str(dtype))
        if self.xp is _cnp:
            return _np.asarray(host, dtype=dt)
        if _is_cupy_namespace(self.xp):
            with self.device:
                return self.xp.asarray(host, dtype=dt)
        return self.xp.asarray(host, dtype=dt, device=self.device)

    def zeros(self, shape, dtype="float64"):
        return self.xp.zeros(shape, dtype=getattr(self.xp, str(dtype)), device=self.device)

    def __str__(self):
        return self.name


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
        if not cupy.is_available():
            raise DeviceError(
                f"device {device!r} was asked for, CuPy is installed, but no CUDA GPU is "
                "visible (cupy.is_available() is False); use --device cpu"
            )
        count = cupy.cuda.runtime.getDeviceCount()
        if index >= count:
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
        return x.get()
    if mod.startswith("array_api_strict"):
        import array_api_strict as xps
        return _np.asarray(x.to_device(xps.Device("CPU_DEVICE")))
    return _np.asarray(x)


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
    """A seeded random generator living on one backend.

    NumPy's ``default_rng`` on CPU, CuPy's on CUDA, and for any other namespace
    (array_api_strict) draws on the host with NumPy and moves the result, so tests
    on the strict namespace see exactly the numbers the CPU would.

    Every stochastic piece of scratchae takes one of these: nothing touches global
    random state.
    """

    def __init__(self, seed: int, device="cpu"):
        if seed is None or not isinstance(seed, (int, _np.integer)):
            raise TypeError(f"Generator needs an explicit integer seed, got {seed!r}")
        self.seed = int(seed)
        self.backend = resolve(device)
        if _is_cupy_namespace(self.backend.xp):
            import cupy
            with self.backend.device:
                self._rng = cupy.random.default_rng(self.seed)
            self._host = False
        else:
            self._rng = _np.random.default_rng(self.seed)
            self._host = True

    # --- state, so training can resume exactly --------------------------------
    def state(self) -> dict:
        if not self._host:
            raise NotImplementedError("saving CuPy generator state is not supported; reseed instead")
        return self._rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state

    # --- draws -----------------------------------------------------------------
    def _out(self, host_or_dev, dtype):
        if self._host:
            return self.backend.asarray(host_or_dev, dtype)
        return host_or_dev.astype(dtype, copy=False)

    def normal(self, shape, dtype="float32", mean=0.0, std=1.0):
        if self._host:
            a = self._rng.standard_normal(shape)
        else:
            with self.backend.device:
                a = self._rng.standard_normal(shape, dtype=_dt64(dtype))
        if mean != 0.0 or std != 1.0:
            a = a * std + mean
        return self._out(a, dtype)

    def uniform(self, shape, low=0.0, high=1.0, dtype="float32"):
        if self._host:
            a = self._rng.random(shape)
        else:
            with self.backend.device:
                a = self._rng.random(shape, dtype=_dt64(dtype))
        if low != 0.0 or high != 1.0:
            a = a * (high - low) + low
        return self._out(a, dtype)

    def bernoulli(self, shape, p, dtype="float32"):
        """0/1 array with P(1) = p."""
        u = self._rng.random(shape)
        return self._out(u < p, dtype)       # 0/1 straight from the bools (no float64 copy)

    def integers(self, low, high, shape):
        if self._host:
            return self.backend.asarray(self._rng.integers(low, high, size=shape), "int64")
        return self._rng.integers(low, high, size=shape)

    def permutation(self, n: int):
        """A permutation of range(n) *on the host* (indices for host-side batching)."""
        if self._host:
            return self._rng.permutation(n)
        return self._rng.permutation(n).get()

    def host_generator(self):
        """The NumPy generator for host-side draws (the same stream on CPU; a separate,
        seeded one beside a CuPy generator)."""
        if self._host:
            return self._rng
        if not hasattr(self, "_host_rng"):
            self._host_rng = _np.random.default_rng(self.seed)
        return self._host_rng



def _dt64(dtype):
    return "float32" if str(dtype) == "float32" else "float64"


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

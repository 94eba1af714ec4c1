"""Where arrays live: array namespaces, devices, random generators, host transfer.

This is the only module of scratchae that imports NumPy or CuPy by name. All math
code asks the *data* which namespace it belongs to (``namespace(x)``) and uses that,
so the same layer runs on NumPy (CPU), CuPy (CUDA) and ``array_api_strict``, the
test stand-in for a GPU that refuses silent NumPy conversion and device mixing.

Device names
------------
``"cpu"``                       NumPy
``"cuda"``, ``"cuda:N"``        CuPy on GPU N (needs ``pip install 'scratchae[cuda12]'``)
``"array_api_strict"``          array_api_strict on its CPU_DEVICE (for tests)
``"array_api_strict:device1"``  array_api_strict on its non-CPU ``Device("device1")``

Fast paths
----------
A few hot kernels have a NumPy fast path (in-place ``out=`` ufuncs, no temporaries)
and, on CUDA, a CuPy one: the BCE's value and gradient from one ``exp`` pass
(``bce_terms``), and a matmul written by the BLAS straight into an existing array
(``matmul_into``, what ``Gradients.add_matmul`` uses for ``dW``). Each is registered in
``FAST_PATHS`` beside the portable array-API version it must agree with; the tests
compare every one with its fallback. Optimizer steps over all of a model's arrays
at once (``adam_step``) are registered in ``FAST_STEPS``: one call per step, no
temporaries, the arrays cut into cache-sized pieces, and optionally split across a
small pool of threads (``set_num_threads``; NumPy releases the GIL inside a ufunc's
loop; see :func:`num_threads` for why the default is one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as _np
import array_api_compat
import array_api_compat.numpy as _cnp

__all__ = [
    "Backend", "Generator", "namespace", "device_of", "resolve", "to_numpy",
    "from_numpy", "synchronize", "cuda_available", "DeviceError", "is_numpy",
    "fast_path", "FAST_PATHS", "FAST_STEPS", "to_scalar", "dtype_name", "num_threads",
    "set_num_threads", "adam_scalars", "matmul_into",
]


#: The host array library, for host-side bookkeeping only (data loading, checker reports).
host = _np


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


def is_numpy(x) -> bool:
    return type(x) is _np.ndarray


def namespace(*arrays):
    """The array-API namespace of ``arrays`` (NumPy fast path: no per-call overhead).

    ``array_api_compat.array_namespace`` costs ~13 us per call; a layer calls this on
    every forward and backward, so plain NumPy arrays are answered by a type check.
    """
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

    def spawn(self, n: int = 1):
        """Independent child generators (for worker streams), same backend."""
        seeds = _np.random.SeedSequence(self.seed).spawn(n)
        return [Generator(int(s.generate_state(1)[0]), self.backend) for s in seeds]

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

    def host_uniform(self, shape):
        """Uniform draws on the host, for host-side decisions (data shuffling, choices)."""
        if self._host:
            return self._rng.random(shape)
        return self._rng.random(shape).get()


def _dt64(dtype):
    return "float32" if str(dtype) == "float32" else "float64"


# --- fast paths ---------------------------------------------------------------
# name -> {"numpy": fn, "cupy": fn}; each has a portable twin in the module that
# uses it, and tests/test_backend.py checks them against each other.
FAST_PATHS: dict[str, dict[str, Any]] = {}
# the same for optimizer steps over lists of arrays; twins in optim.py, checked by
# tests/test_backend_fastpaths.py
FAST_STEPS: dict[str, dict[str, Any]] = {}


def fast_path(name: str, x):
    """The registered fast implementation of ``name`` for ``x``'s library, or None."""
    table = FAST_PATHS.get(name) or FAST_STEPS.get(name)
    if not table:
        return None
    if type(x) is _np.ndarray:
        return table.get("numpy")
    if type(x).__module__.startswith("cupy"):
        return table.get("cupy")
    return None


_LOCAL = threading.local()


def _scratch(key, dtype, size: int):
    """A reusable 1-d work array of ``size`` entries, one per (key, dtype) and thread.

    NumPy kernels write their temporaries here instead of allocating fresh arrays
    every call; a scratch array is never handed back to a caller.
    """
    bufs = getattr(_LOCAL, "bufs", None)
    if bufs is None:
        bufs = _LOCAL.bufs = {}
    k = (key, _np.dtype(dtype).str)
    buf = bufs.get(k)
    if buf is None or buf.size < size:
        buf = bufs[k] = _np.empty(size, dtype)
    return buf[:size]


def _bce_terms_numpy(logits, target):
    """NumPy version of losses.bce_terms: (sum of softplus(l) - t*l, sigmoid(l)).

    The same single exp pass, with temporaries in scratch arrays, and two rewrites
    that avoid NumPy's slow element-wise select (``where`` branches on each sign):
    with ``e = exp(-|l|)`` and ``pos = (l >= 0)`` as 1.0 / 0.0,

        where(l >= 0, 1, e)  =  maximum(e, pos)        (0 <= e <= 1): the same sigmoid bits
        sum max(l, 0)        =  l . pos                (a dot product)
    """
    shape, dt, n = logits.shape, logits.dtype, logits.size
    pos = _scratch("bce_pos", dt, n).reshape(shape)
    e = _scratch("bce_e", dt, n).reshape(shape)
    log_one_plus_e = _scratch("bce_log1pe", dt, n).reshape(shape)
    _np.greater_equal(logits, 0, out=pos, casting="unsafe")    # 1.0 / 0.0
    _np.abs(logits, out=e)
    _np.negative(e, out=e)
    _np.exp(e, out=e)                                   # e = exp(-|l|), the one exp pass
    _np.add(e, 1.0, out=log_one_plus_e)                 # 1 + e
    sig = _np.maximum(e, pos)
    _np.divide(sig, log_one_plus_e, out=sig)            # sigmoid(l), overflow-free
    _np.log(log_one_plus_e, out=log_one_plus_e)         # log(1 + e) (log1p is far slower here)
    total = (log_one_plus_e.sum(dtype=_np.float64) + _np.vdot(logits, pos)
             - _np.vdot(target, logits))
    return _np.asarray(total, dtype=dt), sig


def _bce_terms_cupy(logits, target):  # pragma: no cover - needs a GPU
    import cupy
    kernel = _cupy_bce_kernel()
    loss, sig = kernel(logits, target)
    return cupy.sum(loss, dtype=logits.dtype), sig


_CUPY_KERNELS: dict[str, Any] = {}


def _cupy_bce_kernel():  # pragma: no cover - needs a GPU
    if "bce" not in _CUPY_KERNELS:
        import cupy
        _CUPY_KERNELS["bce"] = cupy.ElementwiseKernel(
            "T l, T t", "T loss, T sig",
            """
            T e = exp(-fabs(l));
            loss = fmax(l, (T)0) + log1p(e) - t * l;
            sig = (l >= 0) ? (T)1 / ((T)1 + e) : e / ((T)1 + e);
            """,
            "scratchae_bce_terms",
        )
    return _CUPY_KERNELS["bce"]


FAST_PATHS["bce_terms"] = {"numpy": _bce_terms_numpy, "cupy": _bce_terms_cupy}


def _matmul_into_portable(a, b, out):
    out[...] = a @ b


def _matmul_into_numpy(a, b, out):
    _np.matmul(a, b, out=out)


def _matmul_into_cupy(a, b, out):  # pragma: no cover - needs a GPU
    import cupy
    cupy.matmul(a, b, out=out)


FAST_PATHS["matmul_into"] = {"numpy": _matmul_into_numpy, "cupy": _matmul_into_cupy}


def matmul_into(a, b, out) -> None:
    """``out[...] = a @ b``. On NumPy and CuPy the product is written by the BLAS straight
    into ``out`` (no temporary, no copy); elsewhere it is computed, then copied in."""
    (fast_path("matmul_into", out) or _matmul_into_portable)(a, b, out)


# --- threads for bandwidth-bound NumPy kernels ------------------------------------
_THREADS = {"n": None, "pool": None}
_THREADS_LOCK = threading.Lock()


def num_threads() -> int:
    """Threads the NumPy fast steps use: ``set_num_threads(n)``, else ``$SCRATCHAE_NUM_THREADS``,
    else 1.

    Why 1 by default, measured on the project's 2-core machine (``docs/results.md``):

    - right after a matmul, OpenBLAS keeps its worker threads spinning on the other cores
      (for up to ``2**OPENBLAS_THREAD_TIMEOUT`` cycles, 2**28 by default), and a helper
      thread then competes with a spinner instead of using an idle core;
    - each of a step's ~240 ufunc calls (12 per cache-sized piece) hands the GIL back and
      forth between the two threads, which costs more than the pieces' work: even with a
      single-threaded BLAS the 2-thread VAE Adam step took 2.2 ms against 1.6 ms on one.

    Set 2 or more for large models on a BLAS that does not spin.
    """
    if _THREADS["n"] is None:
        env = os.environ.get("SCRATCHAE_NUM_THREADS", "").strip()
        _THREADS["n"] = max(1, int(env)) if env else 1
    return _THREADS["n"]


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (1: everything on the calling thread) in the NumPy fast steps."""
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: need n >= 1, got {n}")
    with _THREADS_LOCK:
        pool = _THREADS["pool"]
        _THREADS["n"], _THREADS["pool"] = n, None
    if pool is not None:
        pool.shutdown(wait=True)


def _run_parallel(tasks) -> None:
    """Run zero-argument callables at once: the first on this thread, the rest in the pool."""
    if len(tasks) > 1:
        with _THREADS_LOCK:
            pool = _THREADS["pool"]
            if pool is None or pool._max_workers < len(tasks) - 1:
                pool = _THREADS["pool"] = ThreadPoolExecutor(
                    max(len(tasks) - 1, num_threads() - 1), thread_name_prefix="scratchae")
        futures = [pool.submit(task) for task in tasks[1:]]
    tasks[0]()
    if len(tasks) > 1:
        for f in futures:
            f.result()


#: contiguous arrays are cut into pieces of at most this many entries (128 KiB of float32):
#: a step's dozen passes over one piece then run in the core's own cache (L2), instead of
#: a dozen trips through memory for every parameter array (1.7x faster for a 784x400 W)
_PIECE = 1 << 15


def _shares(groups, n, piece=_PIECE):
    """Deal aligned lists of same-shape arrays into ``n`` shares of about equal size.

    ``groups``: one tuple ``(a, b, ...)`` per parameter. If every array of a tuple is
    C-contiguous, the tuple is cut into flat pieces of at most ``piece`` entries;
    otherwise it stays whole. Pieces are dealt largest first to the least-loaded share.
    """
    pieces = []
    for arrays in groups:
        size = arrays[0].size
        if size > piece and all(a.flags.c_contiguous for a in arrays):
            flat = [a.reshape(-1) for a in arrays]
            count = -(-size // piece)
            bounds = [size * i // count for i in range(count + 1)]
            pieces += [tuple(f[lo:hi] for f in flat) for lo, hi in zip(bounds[:-1], bounds[1:])]
        else:
            pieces.append(arrays)
    pieces.sort(key=lambda pc: -pc[0].size)
    shares, loads = [[] for _ in range(n)], [0] * n
    for pc in pieces:
        i = loads.index(min(loads))
        shares[i].append(pc)
        loads[i] += pc[0].size
    return [sh for sh in shares if sh]


def _planned_shares(groups, n, plan):
    """``_shares(groups, n)``, kept in the dict ``plan`` while the same arrays come back.

    A training run hands the same parameter, gradient and moment arrays to every step;
    the plan holds them, and is reused only if every one of them is the same object.
    """
    arrays = [a for group in groups for a in group]
    if plan is not None and plan.get("n") == n and len(plan.get("arrays", ())) == len(arrays) \
            and all(a is b for a, b in zip(plan["arrays"], arrays)):
        return plan["shares"]
    shares = _shares(groups, n)
    if plan is not None:
        plan.update(n=n, arrays=arrays, shares=shares)
    return shares


def _adam_numpy(params, grads, ms, vs, *, lr, beta1, beta2, eps, weight_decay, decoupled, t,
                plan=None):
    """NumPy version of ``optim.Adam._update`` for all parameters at once.

    The same ufuncs on the same operands in the same order, so the same bits; but the
    arrays are cut into cache-sized pieces (``_shares``, remembered in ``plan``, a dict
    the optimizer keeps), each temporary is written into a reusable scratch array
    (``out=``: no allocation, no page faults), and the pieces are shared among
    ``num_threads()`` threads. Returns False (nothing done) unless every array is a NumPy
    array of one dtype, so the caller can run the portable version.
    """
    groups = list(zip(params, grads, ms, vs))
    dtype = params[0].dtype if params else None
    for arrays in groups:
        for a in arrays:
            if type(a) is not _np.ndarray or a.dtype != dtype:
                return False
        if any(a.shape != arrays[0].shape for a in arrays):
            return False
    b1, b2 = beta1, beta2
    step_size, eps_hat = adam_scalars(lr, b1, b2, eps, t)
    shrink = 1.0 - lr * weight_decay

    def work(share):
        biggest = max(p.size for p, *_ in share)
        scratch = _scratch("adam_tmp", dtype, biggest)
        scratch_g = _scratch("adam_g", dtype, biggest) if weight_decay != 0.0 else None
        for p, g, m, v in share:
            tmp = scratch[:p.size].reshape(p.shape)
            if weight_decay != 0.0:
                if decoupled:
                    p *= shrink
                else:                       # g = g + weight_decay * p
                    g2 = scratch_g[:p.size].reshape(p.shape)
                    _np.multiply(weight_decay, p, out=g2)
                    _np.add(g, g2, out=g2)
                    g = g2
            m *= b1
            _np.multiply(1.0 - b1, g, out=tmp)      # m += (1 - b1) * g
            m += tmp
            _np.multiply(g, g, out=tmp)             # v = b2 * v + (1 - b2) * g * g
            tmp *= 1.0 - b2
            v *= b2
            v += tmp
            _np.sqrt(v, out=tmp)                    # denom = sqrt(v) + eps_hat
            tmp += eps_hat
            _np.divide(m, tmp, out=tmp)             # p -= step_size * m / denom
            tmp *= step_size
            p -= tmp

    shares = _planned_shares(groups, num_threads(), plan)
    _run_parallel([lambda sh=sh: work(sh) for sh in shares])
    return True


def adam_scalars(lr, beta1, beta2, eps, t):
    """Adam's bias corrections folded into two scalars: ``(step_size, eps_hat)`` with

        step_size = lr * sqrt(1 - beta2**t) / (1 - beta1**t)
        eps_hat   = eps * sqrt(1 - beta2**t)

    so that ``p -= step_size * m / (sqrt(v) + eps_hat)`` is PyTorch's
    ``p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``
    (numerator and denominator multiplied by ``sqrt(1 - beta2**t)``) with one pass
    over the parameters fewer.
    """
    sqrt_bc2 = math.sqrt(1.0 - beta2 ** t)
    return lr * sqrt_bc2 / (1.0 - beta1 ** t), eps * sqrt_bc2


FAST_STEPS["adam_step"] = {"numpy": _adam_numpy}



_DTYPE_NAMES: dict = {}


def dtype_name(dtype) -> str:
    """``"float32"`` for any namespace's float32 dtype object (strict prints a prefix).

    Cached: ``str`` of a NumPy dtype costs several microseconds, and every layer's input
    check asks.
    """
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

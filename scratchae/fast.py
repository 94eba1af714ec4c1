"""Speed, behind one seam: every fast path of scratchae, each beside the reference it replaces.

The layers, losses and optimizers are written as their math (the *reference*); nothing in
them knows about pieces, threads or scratch buffers. This module is the only place that
does. Each fast path is registered here under the name of the reference function it
stands in for, per array library, and ``tests/test_fast.py`` checks every one against its
reference (bit for bit where that holds, else to the tolerance stated below).

======================  ================================  =====================================
fast path               replaces                          agrees with the reference
======================  ================================  =====================================
``bce_with_logits``     ``losses.bce_with_logits``        to rounding: ``value`` to 8 units of
(NumPy, CuPy)           (softplus and sigmoid, two        float eps relative, ``dlogits`` to 4
                        transcendental passes)            units of eps / N absolute (one
                                                          ``exp`` pass serves both)
``Adam.update``         ``Adam.update`` / ``AdamW``,      bit for bit (the same operations in
(NumPy)                 one parameter at a time           the same order, in cache-sized pieces,
                                                          temporaries in scratch buffers)
``flush_subnormals``    nothing: an addition to every     entries below ~1e-30 of the optimizer
(NumPy, CuPy)           optimizer step                    buffers become 0, every 32 steps
``conv2d``,             ``conv.conv2d``,                  to rounding: each entry within 2 K eps
``conv2d_input_grad``,  ``conv.conv2d_input_grad``,       of the sum of its K terms' magnitudes
``conv2d_weight_grad``  ``conv.conv2d_weight_grad``       (one im2col matmul instead of one
(NumPy)                 (one matmul per kernel offset)    per offset); deterministic
======================  ================================  =====================================

Turn every fast path off, so what runs is exactly the code you read:

- ``SCRATCHAE_REFERENCE=1`` in the environment (read when scratchae is imported), or
- ``scratchae.use_reference()`` (``use_reference(False)`` turns them back on), or
- ``with scratchae.fast.reference_mode(): ...`` for a block.

Arrays other than NumPy's and CuPy's (``array_api_strict``) always take the reference.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as _np

from . import backend as B

__all__ = [
    "use_reference", "reference_mode", "reference_enabled", "replaceable", "FAST_PATHS",
    "REFERENCES", "implementation", "optimizer_step", "flush_subnormals", "FLUSH_EVERY",
    "num_threads", "set_num_threads",
]

_STATE = {"reference": os.environ.get("SCRATCHAE_REFERENCE", "").strip() not in ("", "0")}


def use_reference(on: bool = True) -> None:
    """``True``: every fast path off (the reference code runs); ``False``: back on."""
    _STATE["reference"] = bool(on)


def reference_enabled() -> bool:
    """Whether the fast paths are off (``SCRATCHAE_REFERENCE=1`` or :func:`use_reference`)."""
    return _STATE["reference"]


@contextlib.contextmanager
def reference_mode(on: bool = True):
    """``with reference_mode(): ...`` runs the block with every fast path off."""
    before = _STATE["reference"]
    _STATE["reference"] = bool(on)
    try:
        yield
    finally:
        _STATE["reference"] = before


# --- the registry --------------------------------------------------------------------------
#: name -> {"numpy": fn, "cupy": fn}: the fast implementations
FAST_PATHS: dict[str, dict[str, Callable]] = {}
#: name -> the reference function each fast path must agree with
REFERENCES: dict[str, Callable] = {}


def _library(x) -> str | None:
    if type(x) is _np.ndarray:
        return "numpy"
    if type(x).__module__.startswith("cupy"):
        return "cupy"
    return None


def implementation(name: str, x):
    """The fast implementation of ``name`` for ``x``'s array library, or None (reference
    mode, no fast path for that library, or an array of another library)."""
    if _STATE["reference"]:
        return None
    table = FAST_PATHS.get(name)
    return table.get(_library(x)) if table else None


def replaceable(name: str):
    """Decorator for a reference function a fast path may stand in for (first argument: an
    array, which decides the library). In reference mode the reference always runs."""
    def wrap(reference):
        REFERENCES[name] = reference

        @functools.wraps(reference)
        def dispatch(*args, **kwargs):
            x = args[0] if args else next(iter(kwargs.values()), None)
            fast = implementation(name, x)
            return (fast or reference)(*args, **kwargs)
        dispatch.reference = reference
        return dispatch
    return wrap


# --- scratch buffers and threads ---------------------------------------------------------------
_LOCAL = threading.local()


def _scratch(key, dtype, size: int):
    """A reusable 1-d work array of ``size`` entries, one per (key, dtype) and thread.

    Fast paths write their temporaries here instead of allocating fresh arrays every call;
    a scratch array is never handed back to a caller.
    """
    bufs = getattr(_LOCAL, "bufs", None)
    if bufs is None:
        bufs = _LOCAL.bufs = {}
    k = (key, _np.dtype(dtype).str)
    buf = bufs.get(k)
    if buf is None or buf.size < size:
        buf = bufs[k] = _np.empty(size, dtype)
    return buf[:size]


_THREADS: dict[str, Any] = {"n": None, "pool": None, "workers": 0}
_THREADS_LOCK = threading.Lock()


def num_threads() -> int:
    """Threads of the NumPy Adam step: ``set_num_threads(n)``, else ``$SCRATCHAE_NUM_THREADS``,
    else 1. Why one by default is measured in ``docs/results.md`` (OpenBLAS keeps a worker
    spinning on the other core after each matmul, and two Python threads hand the GIL back
    and forth on every ufunc call)."""
    if _THREADS["n"] is None:
        env = os.environ.get("SCRATCHAE_NUM_THREADS", "").strip()
        _THREADS["n"] = max(1, int(env)) if env else 1
    return _THREADS["n"]


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (1: everything on the calling thread) in the NumPy Adam step."""
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: need n >= 1, got {n}")
    with _THREADS_LOCK:
        pool = _THREADS["pool"]
        _THREADS.update(n=n, pool=None, workers=0)
    if pool is not None:
        pool.shutdown(wait=True)


def _run_parallel(tasks) -> None:
    """Run zero-argument callables at once: the first on this thread, the rest in the pool."""
    futures = []
    if len(tasks) > 1:
        with _THREADS_LOCK:
            if _THREADS["pool"] is None or _THREADS["workers"] < len(tasks) - 1:
                workers = max(len(tasks) - 1, num_threads() - 1)
                _THREADS.update(pool=ThreadPoolExecutor(workers, thread_name_prefix="scratchae"),
                                workers=workers)
            pool = _THREADS["pool"]
        futures = [pool.submit(task) for task in tasks[1:]]
    tasks[0]()
    for f in futures:
        f.result()


# --- fast path: the BCE on logits, one exp pass ---------------------------------------------------
def _bce_numpy(logits, target):
    """``losses.bce_with_logits`` with one ``exp`` pass and no fresh temporaries.

    With ``e = exp(-|l|)`` and ``pos = (l >= 0)`` as 1.0 / 0.0::

        softplus(l) = max(l, 0) + log(1 + e),   sum max(l, 0) = l . pos   (a dot product)
        sigmoid(l)  = max(e, pos) / (1 + e)     (1 / (1 + e) where l >= 0, e / (1 + e) elsewhere)

    ``log(1 + e)`` rather than ``log1p(e)`` (several times slower in NumPy) loses terms
    below one unit of rounding of 1: at most eps per element of the sum.
    """
    from .losses import _same_shape
    n = _same_shape("bce_with_logits", logits=logits, target=target)
    shape, dt, size = logits.shape, logits.dtype, logits.size
    pos = _scratch("bce_pos", dt, size).reshape(shape)
    e = _scratch("bce_e", dt, size).reshape(shape)
    one_plus_e = _scratch("bce_1pe", dt, size).reshape(shape)
    _np.greater_equal(logits, 0, out=pos, casting="unsafe")
    _np.abs(logits, out=e)
    _np.negative(e, out=e)
    _np.exp(e, out=e)
    _np.add(e, 1.0, out=one_plus_e)
    dlogits = _np.maximum(e, pos)
    _np.divide(dlogits, one_plus_e, out=dlogits)                 # sigmoid(l)
    _np.log(one_plus_e, out=one_plus_e)
    total = one_plus_e.sum(dtype=_np.float64) + _np.vdot(logits, pos) - _np.vdot(target, logits)
    if dlogits.dtype != target.dtype:
        dlogits = dlogits.astype(_np.result_type(dlogits, target))
    dlogits -= target
    dlogits *= 1.0 / n
    return _np.asarray(total / n, dtype=dt), dlogits


_CUPY_KERNELS: dict[str, Any] = {}


def _bce_cupy(logits, target):  # pragma: no cover - needs a GPU
    import cupy
    from .losses import _same_shape, bce_with_logits
    if target.dtype != logits.dtype:    # the kernel takes one dtype; the reference promotes
        return bce_with_logits.reference(logits, target)
    n = _same_shape("bce_with_logits", logits=logits, target=target)
    if "bce" not in _CUPY_KERNELS:
        _CUPY_KERNELS["bce"] = cupy.ElementwiseKernel(
            "T l, T t, T inv_n", "T loss, T dl",
            """
            T e = exp(-fabs(l));
            loss = fmax(l, (T)0) + log1p(e) - t * l;
            dl = (((l >= 0) ? (T)1 : e) / ((T)1 + e) - t) * inv_n;
            """,
            "scratchae_bce_with_logits",
        )
    loss, dlogits = _CUPY_KERNELS["bce"](logits, target, logits.dtype.type(1.0 / n))
    return cupy.sum(loss, dtype=logits.dtype) / n, dlogits


FAST_PATHS["bce_with_logits"] = {"numpy": _bce_numpy, "cupy": _bce_cupy}


# --- fast path: convolution as one matmul (im2col) ---------------------------------------------
# The reference (scratchae/conv.py) sums one small matmul per kernel offset. Here the kh*kw
# slices are laid side by side into one matrix of windows (im2col), so the whole sum is one
# matmul with K = C_in*kh*kw, which BLAS runs near its peak. Results are kept in the memory
# order the matmul gives, (N, H, W, C), and handed back as an (N, C, H, W) view: nothing
# downstream depends on the memory order, and the windows of the next layer are read
# through strides either way. The scatter-add of the input gradient (col2im) goes over the
# offsets in the reference's row-major order: deterministic, as the reference.

def _windows(xpad, kernel, out_hw, stride, dilation):
    """A read-only view (N, Ho, Wo, kh, kw, C) of every window of ``xpad`` (N, C, Hp, Wp):
    ``[n, h, w, i, j, c] = xpad[n, c, i*dh + h*sh, j*dw + w*sw]`` (no copy). Channels come
    last: in the (N, H, W, C) memory these paths leave behind, a window's row is then one
    contiguous run of kw*C numbers per (n, h, w, i)."""
    (N, C, _, _), (kh, kw), (Ho, Wo), (sh, sw), (dh, dw) = xpad.shape, kernel, out_hw, stride, dilation
    sN, sC, sH, sW = xpad.strides
    return _np.lib.stride_tricks.as_strided(
        xpad, (N, Ho, Wo, kh, kw, C), (sN, sH * sh, sW * sw, sH * dh, sW * dw, sC), writeable=False)


def _padded(x, padding):
    """x with zero padding, in (N, H, W, C) memory, seen as (N, C, H, W)."""
    ph, pw = padding
    if not ph and not pw:
        return x
    N, C, H, W = x.shape
    out = _np.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype).transpose(0, 3, 1, 2)
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


def _im2col(x, kernel, out_hw, stride, padding, dilation):
    """The windows of x as rows: (N*Ho*Wo, kh*kw*C), one copy."""
    win = _windows(_padded(x, padding), kernel, out_hw, stride, dilation)
    N, Ho, Wo, kh, kw, C = win.shape
    return win.reshape(N * Ho * Wo, kh * kw * C)


def _rows(a):
    """(N, C, H, W) -> (N*H*W, C): free when a's memory is (N, H, W, C), else one copy."""
    N, C, H, W = a.shape
    return a.transpose(0, 2, 3, 1).reshape(N * H * W, C)


def _kernel_rows(W):
    """W (C_out, C_in, kh, kw) as (C_out, kh*kw*C_in): the column order of ``_im2col``."""
    C_out, C_in, kh, kw = W.shape
    return W.transpose(0, 2, 3, 1).reshape(C_out, kh * kw * C_in)


def _conv2d_numpy(x, W, stride=1, padding=0, dilation=1):
    from .conv import _check_fits, _step_args, conv2d_output_hw
    s, p, d = _step_args("conv2d", stride, padding, dilation)
    (N, C_in, H, Wd), (C_out, C_w, kh, kw) = x.shape, W.shape
    if C_w != C_in:
        return REFERENCES["conv2d"](x, W, stride, padding, dilation)     # its error message
    Ho, Wo = conv2d_output_hw((H, Wd), (kh, kw), s, p, d)
    _check_fits("conv2d", (H, Wd), (Ho, Wo), (kh, kw), s, p, d)
    y = _im2col(x, (kh, kw), (Ho, Wo), s, p, d) @ _kernel_rows(W).T
    return y.reshape(N, Ho, Wo, C_out).transpose(0, 3, 1, 2)


def _conv2d_input_grad_numpy(dy, W, x_hw, stride=1, padding=0, dilation=1):
    from .conv import _check_fits, _step_args
    s, p, d = _step_args("conv2d_input_grad", stride, padding, dilation)
    (N, C_out, Ho, Wo), (C_w, C_in, kh, kw), (H, Wd) = dy.shape, W.shape, tuple(x_hw)
    if C_w != C_out:
        return REFERENCES["conv2d_input_grad"](dy, W, x_hw, stride, padding, dilation)
    _check_fits("conv2d_input_grad", (H, Wd), (Ho, Wo), (kh, kw), s, p, d)
    cols = (_rows(dy) @ _kernel_rows(W)).reshape(N, Ho, Wo, kh, kw, C_in)
    dxpad = _col2im(cols, (H + 2 * p[0], Wd + 2 * p[1]), s, d)
    return dxpad[:, p[0]:p[0] + H, p[1]:p[1] + Wd, :].transpose(0, 3, 1, 2)


def _col2im(cols, padded_hw, stride, dilation):
    """Add each offset's block ``cols[:, :, :, i, j, :]`` (N, Ho, Wo, C) into the padded
    gradient (N, Hp, Wp, C) at rows ``i*dh + h*sh``, columns ``j*dw + w*sw``.

    By phase: the rows with ``row % sh == a`` (columns alike) form a dense grid, and offset
    ``i`` lands on phase ``a = i*dh % sh`` shifted by ``i*dh // sh`` whole rows, so each
    block is added into a contiguous slab of its phase's grid instead of a strided slice
    of the whole; each entry still receives its terms in the reference's row-major order
    of offsets (bit for bit the strided scatter-add)."""
    N, Ho, Wo, kh, kw, C = cols.shape
    (Hp, Wp), (sh, sw), (dh, dw) = padded_hw, stride, dilation
    dxpad = _np.zeros((N, Hp, Wp, C), dtype=cols.dtype)
    for a in range(sh):
        for b in range(sw):
            phase = None
            for i in range(kh):
                if (i * dh) % sh != a:
                    continue
                for j in range(kw):
                    if (j * dw) % sw != b:
                        continue
                    if phase is None:
                        phase = _np.zeros((N, -(-(Hp - a) // sh), -(-(Wp - b) // sw), C), cols.dtype)
                    t, u = i * dh // sh, j * dw // sw
                    phase[:, t:t + Ho, u:u + Wo, :] += cols[:, :, :, i, j, :]
            if phase is not None:
                dxpad[:, a::sh, b::sw, :] = phase
    return dxpad


def _conv2d_weight_grad_numpy(x, dy, kernel_size, stride=1, padding=0, dilation=1):
    from .conv import _check_fits, _pair, _step_args
    k = _pair(kernel_size, "kernel_size", "conv2d_weight_grad", 1)
    s, p, d = _step_args("conv2d_weight_grad", stride, padding, dilation)
    (N, C_in, H, Wd), (N_dy, C_out, Ho, Wo) = x.shape, dy.shape
    if N_dy != N:
        return REFERENCES["conv2d_weight_grad"](x, dy, kernel_size, stride, padding, dilation)
    _check_fits("conv2d_weight_grad", (H, Wd), (Ho, Wo), k, s, p, d)
    dW = _rows(dy).T @ _im2col(x, k, (Ho, Wo), s, p, d)          # (C_out, kh*kw*C_in)
    return _np.ascontiguousarray(dW.reshape(C_out, k[0], k[1], C_in).transpose(0, 3, 1, 2))


FAST_PATHS["conv2d"] = {"numpy": _conv2d_numpy}
FAST_PATHS["conv2d_input_grad"] = {"numpy": _conv2d_input_grad_numpy}
FAST_PATHS["conv2d_weight_grad"] = {"numpy": _conv2d_weight_grad_numpy}


# --- fast path: Adam over all parameters at once, in cache-sized pieces ---------------------------
#: arrays are cut into pieces of at most this many entries (128 KiB of float32): a step's
#: dozen passes over one piece then run in the core's own cache instead of a dozen trips
#: through memory for every parameter array
_PIECE = 1 << 15


def _shares(groups, n, piece=_PIECE):
    """Deal aligned tuples of same-shape arrays ``(p, g, m, v)`` into ``n`` shares of about
    equal size: contiguous tuples are cut into flat pieces of at most ``piece`` entries,
    others stay whole; pieces go largest first to the least-loaded share."""
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


#: optimizer -> its last plan, reused while the very same arrays come back (a plan holds
#: views of them; when any array is replaced, e.g. by ``model.to(...)``, it is rebuilt)
_PLANS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _planned_shares(opt, groups, n):
    arrays = [a for group in groups for a in group]
    plan = _PLANS.get(opt)
    if plan is not None and plan["n"] == n and len(plan["arrays"]) == len(arrays) \
            and all(a is b for a, b in zip(plan["arrays"], arrays)):
        return plan["shares"]
    shares = _shares(groups, n)
    _PLANS[opt] = {"n": n, "arrays": arrays, "shares": shares}
    return shares


def _adam_numpy(opt, work, t) -> bool:
    """``Adam.update`` for every parameter: the same ufuncs on the same operands in the same
    order (so the same bits), over cache-sized pieces, temporaries in scratch arrays, the
    pieces shared among ``num_threads()`` threads. False (nothing done) unless every array
    is a NumPy array of one dtype with its parameter's shape."""
    groups = [(p, g, state["m"], state["v"]) for p, g, state in work]
    if not groups:
        return False
    dtype = groups[0][0].dtype
    for arrays in groups:
        if any(type(a) is not _np.ndarray or a.dtype != dtype or a.shape != arrays[0].shape
               for a in arrays):
            return False
    lr, b1, b2, eps, wd = opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay
    decoupled = opt.decoupled
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t

    def run(share):
        biggest = max(p.size for p, *_ in share)
        tmp_buf = _scratch("adam_tmp", dtype, biggest)
        den_buf = _scratch("adam_den", dtype, biggest)
        g_buf = _scratch("adam_g", dtype, biggest) if wd != 0.0 and not decoupled else None
        for p, g, m, v in share:
            tmp = tmp_buf[:p.size].reshape(p.shape)
            den = den_buf[:p.size].reshape(p.shape)
            if wd != 0.0:
                if decoupled:                               # p *= 1 - lr * wd
                    p *= 1 - lr * wd
                else:                                       # g = g + wd * p
                    g2 = g_buf[:p.size].reshape(p.shape)
                    _np.multiply(wd, p, out=g2)
                    _np.add(g, g2, out=g2)
                    g = g2
            m *= b1                                         # m = b1 * m + (1 - b1) * g
            _np.multiply(1 - b1, g, out=tmp)
            m += tmp
            v *= b2                                         # v = b2 * v + (1 - b2) * g * g
            _np.multiply(1 - b2, g, out=tmp)
            tmp *= g
            v += tmp
            _np.divide(v, bc2, out=den)                     # v_hat = v / (1 - b2**t)
            _np.sqrt(den, out=den)                          # sqrt(v_hat) + eps
            den += eps
            _np.divide(m, bc1, out=tmp)                     # m_hat = m / (1 - b1**t)
            tmp *= lr                                       # p -= lr * m_hat / (sqrt(v_hat) + eps)
            tmp /= den
            p -= tmp

    shares = _planned_shares(opt, groups, num_threads())
    _run_parallel([functools.partial(run, sh) for sh in shares])
    return True


FAST_PATHS["Adam.update"] = {"numpy": _adam_numpy}


# --- fast path: keep optimizer buffers free of subnormal floats -------------------------------------
#: every this many steps, the fast step zeroes buffer entries about to become subnormal
FLUSH_EVERY = 32


def flush_subnormals(a) -> None:
    """Set the entries of ``a`` with ``|a| < 1e8 * tiny`` to zero, in place (tiny: the
    smallest normal number of a's dtype, 1.2e-38 for float32; so below ~1e-30).

    Why: a coordinate whose gradient has stopped (a dead ReLU, a pixel that is always
    black) keeps being multiplied by ``beta1 = 0.9`` in Adam's ``m`` (by the momentum in
    SGD's buffer, by ``beta2`` or ``alpha`` in ``v``), and after ~800 steps it is a
    *subnormal* float, and stays one: ``k * 2**-149`` times 0.9 rounds back to itself for
    ``k < 5``. x86 CPUs compute on subnormals through microcode, many times slower than on
    normal numbers (``docs/results.md`` has what it did to the VAE's Adam step). A value
    decaying by 0.9 a step needs 175 steps to cross the 8 decades above ``tiny``, so zeroing
    them every ``FLUSH_EVERY = 32`` steps keeps a buffer free of subnormals for any decay
    rate above 0.56 (all the defaults). What is dropped is below 1e-30: its share of any
    update is far below float32's resolution of the parameter. The reference keeps the
    subnormals, as PyTorch does.
    """
    xp = B.namespace(a)
    threshold = float(xp.finfo(a.dtype).smallest_normal) * 1e8
    a *= xp.astype(xp.abs(a) >= threshold, a.dtype)


FAST_PATHS["flush_subnormals"] = {"numpy": flush_subnormals, "cupy": flush_subnormals}


# --- the optimizer's seam ---------------------------------------------------------------------------
def optimizer_step(opt, work, t) -> bool:
    """Run ``opt``'s step ``t`` over ``work`` (a list of ``(param, grad, state)``) the fast
    way; False, with nothing done, in reference mode or for arrays without fast paths.

    The update is the registered ``"<Optimizer>.update"`` fast path where there is one
    (NumPy Adam, AdamW), else the optimizer's own ``update`` for each parameter; then, every
    ``FLUSH_EVERY`` steps, ``flush_subnormals`` on every buffer.
    """
    if not work or _STATE["reference"] or _library(work[0][0]) is None:
        return False
    names = [f"{cls.__name__}.update" for cls in type(opt).__mro__]
    kernel = next((implementation(n, work[0][0]) for n in names if n in FAST_PATHS), None)
    if kernel is None or not kernel(opt, work, t):
        for p, g, state in work:
            opt.update(p, g, state, t)
    if t % FLUSH_EVERY == 0:
        for _, _, state in work:
            for buf in state.values():
                flush_subnormals(buf)
    return True

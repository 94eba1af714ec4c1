"""Convolution, transposed convolution, pooling and upsampling, each with a hand-written
backward. Derivations: ``docs/conv.md``.

What is here
------------
Pure functions on arrays, the readable reference (each a loop over the kernel offsets
(i, j), one shifted matmul or one element-wise step per offset, and each marked
``@fast.replaceable`` so a faster path can be registered in ``fast.py`` without touching
this file):

    conv2d(x, W, stride, padding, dilation)                        y (no bias)
    conv2d_input_grad(dy, W, x_hw, stride, padding, dilation)      dx: the transposed convolution
    conv2d_weight_grad(x, dy, kernel_size, stride, padding, dilation)   dW
    max_pool2d, max_pool2d_input_grad, avg_pool2d, avg_pool2d_input_grad,
    upsample_nearest2d, upsample_nearest2d_input_grad

plus ``conv_transpose2d`` (``conv2d_input_grad`` with the output size worked out) and the
output-size formulas ``conv2d_output_hw`` and ``conv_transpose2d_output_hw``; and the
layers ``Conv2d``, ``ConvTranspose2d``, ``MaxPool2d``, ``AvgPool2d``, ``Upsample``.

PyTorch's layout and meaning, so code and weights port both ways
-----------------------------------------------------------------
- Images are NCHW: x (N, C_in, H_in, W_in), y (N, C_out, H_out, W_out).
- ``Conv2d``'s weight W is (C_out, C_in, kh, kw) and its bias b (C_out,), as
  ``torch.nn.Conv2d``'s ``weight`` and ``bias``; ``ConvTranspose2d``'s W is
  (C_in, C_out, kh, kw), as ``torch.nn.ConvTranspose2d``'s. Only the names differ
  (``"W"``, ``"b"`` here; ``"weight"``, ``"bias"`` there): the arrays are the same, entry
  for entry, so a state dict copies across with its keys renamed.
- "Convolution" is cross-correlation (the kernel is not flipped), as in PyTorch:

      y[n, o, h, w] = b[o] + sum over c, i, j of W[o, c, i, j] * xpad[n, c, h*sh + i*dh, w*sw + j*dw]

  with xpad the input with ``padding`` zeros on each side (ph rows above and below, pw
  columns left and right), ``(sh, sw) = stride``, ``(dh, dw) = dilation``.
- ``kernel_size``, ``stride``, ``padding``, ``dilation``, ``output_padding`` mean what they
  mean in PyTorch, and each is an int (both axes) or an (h, w) pair. Output size per axis,
  with floor division::

      H_out = floor((H_in + 2p - d*(k-1) - 1) / s) + 1                 Conv2d, MaxPool2d, AvgPool2d
      H_out = (H_in - 1)*s - 2p + d*(k-1) + output_padding + 1         ConvTranspose2d

  The floor drops the last ``(H_in + 2p - d*(k-1) - 1) mod s`` padded rows when the
  stride does not fit evenly, and a stride larger than the dilated kernel skips rows
  between windows: no output reads those input rows, so their gradient is exactly zero.
- Positional arguments follow PyTorch up to the first argument not supported here
  (``groups``); the rest are keyword-only, so no PyTorch call is read differently::

      Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
             *, bias=True, rng, dtype="float32")
      ConvTranspose2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
                      output_padding=0, *, dilation=1, bias=True, rng, dtype="float32")
      MaxPool2d(kernel_size, stride=None, padding=0, dilation=1)
      AvgPool2d(kernel_size, stride=None, padding=0)          count_include_pad=True
      Upsample(scale_factor, mode="nearest")                  integer factors

  ``Upsample``'s first positional argument is the scale factor, where
  ``torch.nn.Upsample``'s is ``size``: write ``Upsample(scale_factor=2)`` in both.
- Not supported: ``groups``, ``padding_mode`` other than zeros, ``padding="same"``,
  ``ceil_mode=True``, ``count_include_pad=False``, ``divisor_override``, ``return_indices``,
  non-integer scale factors and upsampling modes other than nearest.

Reading the Backward blocks: ``dW`` is ``self.grads["W"]``, ``W`` is ``self.params["W"]``,
``stride``, ``padding``, ... are the layer's attributes (always pairs), ``(H_in, W_in)``
is the input's spatial size. Each block is the body of its ``backward``, line for line.

Only array-API operations (2023.12) are used: slicing with steps, ``matmul``,
``tensordot``, ``reshape``, ``where``; no einsum, no stride tricks. Every sum runs over
the kernel offsets in one fixed order (row-major: (0, 0), (0, 1), ...), so every result
of the reference is the same, bit for bit, on every run (a fast path registered in
``fast.py`` states its own agreement with it).
"""
from __future__ import annotations

import math
import numbers
from itertools import product

from . import backend as B
from . import fast
from .module import InputError, Module

__all__ = [
    "conv2d", "conv2d_input_grad", "conv2d_weight_grad", "conv_transpose2d",
    "conv2d_output_hw", "conv_transpose2d_output_hw",
    "max_pool2d", "max_pool2d_input_grad", "avg_pool2d", "avg_pool2d_input_grad",
    "upsample_nearest2d", "upsample_nearest2d_input_grad",
    "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "Upsample",
]


# --- arguments: an int or an (h, w) pair ---------------------------------------------------------

def _pair(value, name: str, owner: str, minimum: int) -> tuple[int, int]:
    """``value`` as an (h, w) pair of ints >= ``minimum``; a ValueError naming ``name`` otherwise."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                  for v in items):
        raise ValueError(f"{owner}: {name} must be an int or a pair of ints, got {value!r}")
    if min(items) < minimum:
        what = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{owner}: {name} must be {what}, got {value!r}")
    return int(items[0]), int(items[1])


def _step_args(owner, stride, padding, dilation):
    """``(stride, padding, dilation)`` as pairs, checked."""
    return (_pair(stride, "stride", owner, 1), _pair(padding, "padding", owner, 0),
            _pair(dilation, "dilation", owner, 1))


def _conv_args(owner, kernel_size, stride, padding, dilation):
    """``(kernel_size, stride, padding, dilation)`` as pairs, checked."""
    return (_pair(kernel_size, "kernel_size", owner, 1),) + _step_args(owner, stride, padding, dilation)


# --- output sizes: one formula each ----------------------------------------------------------------

def conv2d_output_hw(in_hw, kernel_size, stride=1, padding=0, dilation=1) -> tuple[int, int]:
    """``(H_out, W_out)`` of a convolution or a pool, per axis (floor division)::

        H_out = floor((H_in + 2p - d*(k-1) - 1) / s) + 1

    Below 1 when the padded input ``H_in + 2p`` is smaller than the dilated kernel
    ``d*(k-1) + 1``.
    """
    k, s, p, d = _conv_args("conv2d_output_hw", kernel_size, stride, padding, dilation)
    return tuple((n + 2 * p[a] - d[a] * (k[a] - 1) - 1) // s[a] + 1 for a, n in enumerate(in_hw))


def conv_transpose2d_output_hw(in_hw, kernel_size, stride=1, padding=0, output_padding=0,
                               dilation=1) -> tuple[int, int]:
    """``(H_out, W_out)`` of a transposed convolution, per axis::

        H_out = (H_in - 1)*s - 2p + d*(k-1) + output_padding + 1

    the smallest input size whose convolution (same k, s, p, d) has ``H_in`` outputs, plus
    ``output_padding``: s sizes convolve to the same ``H_in`` (the floor above), and
    ``output_padding`` (below s) picks one of them.
    """
    k, s, p, d = _conv_args("conv_transpose2d_output_hw", kernel_size, stride, padding, dilation)
    op = _pair(output_padding, "output_padding", "conv_transpose2d_output_hw", 0)
    return tuple((n - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + op[a] + 1 for a, n in enumerate(in_hw))


# --- the building blocks: padding, and the slice one kernel offset reads ---------------------------

def _full(like, shape, value, dtype=None):
    """A new array of ``shape`` filled with ``value``, on ``like``'s device (and dtype)."""
    xp = B.namespace(like)
    with B.resolve(like).context():
        return xp.full(shape, value, dtype=like.dtype if dtype is None else dtype,
                       device=B.device_of(like))


def _pad(x, padding, value=0.0):
    """x (N, C, H, W) with ``padding`` rows/columns of ``value`` on each side: a new array
    set in its interior (the array API has no pad function)."""
    (ph, pw), (N, C, H, W) = padding, x.shape
    xpad = _full(x, (N, C, H + 2 * ph, W + 2 * pw), value)
    xpad[:, :, ph:ph + H, pw:pw + W] = x
    return xpad


def _crop(xpad, padding, hw):
    """The interior of a padded array: undoes ``_pad`` (and drops what landed on the padding)."""
    (ph, pw), (H, W) = padding, hw
    return xpad[:, :, ph:ph + H, pw:pw + W]


def _tap(i, j, out_hw, stride, dilation):
    """The index of the slice that kernel offset (i, j) reads from a padded input, at every
    output position: entry [n, c, h, w] of ``xpad[_tap(...)]`` is
    ``xpad[n, c, i*dh + h*sh, j*dw + w*sw]``, shape (N, C, H_out, W_out)."""
    (Ho, Wo), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return (slice(None), slice(None),
            slice(i * dh, i * dh + sh * (Ho - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (Wo - 1) + 1, sw))


def _offsets(kernel_size):
    """Kernel offsets (i, j) in the one fixed order every sum here uses: row-major."""
    kh, kw = kernel_size
    return product(range(kh), range(kw))


def _check_fits(what, in_hw, out_hw, k, s, p, d):
    """Refuse an ``out_hw`` that the windows over an ``in_hw`` input cannot produce."""
    most = conv2d_output_hw(in_hw, k, s, p, d)
    if min(most) < 1 or out_hw[0] > most[0] or out_hw[1] > most[1]:
        raise ValueError(f"{what}: an input of spatial size {tuple(in_hw)} with kernel_size={k}, "
                         f"stride={s}, padding={p}, dilation={d} has at most {most} outputs, "
                         f"got {tuple(out_hw)}")


# --- convolution: forward, input gradient (= the transposed convolution), weight gradient ----------

@fast.replaceable("conv2d")
def conv2d(x, W, stride=1, padding=0, dilation=1):
    """Cross-correlation of x with W, no bias: ``torch.nn.functional.conv2d(x, W, None,
    stride, padding, dilation)`` (pass them by keyword to port: F.conv2d's third argument is
    the bias).

    Shapes: x (N, C_in, H_in, W_in), W (C_out, C_in, kh, kw), y (N, C_out, H_out, W_out),
    ``(H_out, W_out) = conv2d_output_hw((H_in, W_in), (kh, kw), stride, padding, dilation)``.

    A sum over the kernel offsets (i, j) of one matmul each. x_tap, the slice of the padded
    input that offset (i, j) meets at every output position, has the shape of the output
    with C_in channels; W[:, :, i, j] (C_out, C_in) maps its channels to C_out::

        x_tap = xpad[:, :, i*dh : i*dh + sh*(H_out-1) + 1 : sh, j*dw : j*dw + sw*(W_out-1) + 1 : sw]
        y    += W[:, :, i, j] @ x_tap          (C_out, C_in) @ (N, C_in, H_out*W_out)
    """
    xp = B.namespace(x)
    s, p, d = _step_args("conv2d", stride, padding, dilation)
    (N, C_in, H_in, W_in), (C_out, C_w, kh, kw) = x.shape, W.shape
    if C_w != C_in:
        raise ValueError(f"conv2d: x has shape {tuple(x.shape)} ({C_in} channels) but W has shape "
                         f"{tuple(W.shape)}, which takes {C_w}")
    Ho, Wo = conv2d_output_hw((H_in, W_in), (kh, kw), s, p, d)
    _check_fits("conv2d", (H_in, W_in), (Ho, Wo), (kh, kw), s, p, d)
    xpad = _pad(x, p)
    y = _full(x, (N, C_out, Ho * Wo), 0.0)
    for i, j in _offsets((kh, kw)):
        x_tap = xpad[_tap(i, j, (Ho, Wo), s, d)]
        y += W[:, :, i, j] @ xp.reshape(x_tap, (N, C_in, Ho * Wo))
    return xp.reshape(y, (N, C_out, Ho, Wo))


@fast.replaceable("conv2d_input_grad")
def conv2d_input_grad(dy, W, x_hw, stride=1, padding=0, dilation=1):
    """dx of ``y = conv2d(x, W, ...)`` for an input of spatial size ``x_hw = (H_in, W_in)``:
    the transposed convolution of dy with W.

    Shapes: dy (N, C_out, H_out, W_out), W (C_out, C_in, kh, kw), dx (N, C_in, H_in, W_in).

    Each offset's forward matmul, transposed, ``W[:, :, i, j].T @ dy`` ((C_in, C_out) @
    (N, C_out, H_out*W_out)), added back into the slice that offset read (a scatter-add into
    a zero dxpad, offsets in the fixed row-major order); then the padding is cropped off::

        dxpad[:, :, i*dh : i*dh + sh*(H_out-1) + 1 : sh, j*dw : j*dw + sw*(W_out-1) + 1 : sw] += W[:, :, i, j].T @ dy
        dx = dxpad[:, :, ph : ph + H_in, pw : pw + W_in]

    Input rows no window touches (between windows when the stride exceeds the dilated
    kernel, e.g. k=2, s=3; past the last window when the floor in H_out drops some) get
    exactly zero. ``dy`` may have fewer rows than an (H_in, W_in) input gives (what
    ``ConvTranspose2d`` needs when ``output_padding >= stride``); more is an error.
    """
    xp = B.namespace(dy)
    s, p, d = _step_args("conv2d_input_grad", stride, padding, dilation)
    (N, C_out, Ho, Wo), (C_w, C_in, kh, kw), (H_in, W_in) = dy.shape, W.shape, x_hw
    if C_w != C_out:
        raise ValueError(f"conv2d_input_grad: dy has shape {tuple(dy.shape)} ({C_out} channels) "
                         f"but W has shape {tuple(W.shape)}, which gives {C_w}")
    _check_fits("conv2d_input_grad", (H_in, W_in), (Ho, Wo), (kh, kw), s, p, d)
    dy_rows = xp.reshape(dy, (N, C_out, Ho * Wo))
    dxpad = _full(dy, (N, C_in, H_in + 2 * p[0], W_in + 2 * p[1]), 0.0)
    for i, j in _offsets((kh, kw)):
        dxpad[_tap(i, j, (Ho, Wo), s, d)] += xp.reshape(W[:, :, i, j].T @ dy_rows, (N, C_in, Ho, Wo))
    return _crop(dxpad, p, (H_in, W_in))


@fast.replaceable("conv2d_weight_grad")
def conv2d_weight_grad(x, dy, kernel_size, stride=1, padding=0, dilation=1):
    """dW of ``y = conv2d(x, W, ...)`` for a kernel of ``kernel_size = (kh, kw)``: the
    correlation of the input with dy, one matmul per offset.

    Shapes: x (N, C_in, H_in, W_in), dy (N, C_out, H_out, W_out), dW (C_out, C_in, kh, kw).

    Each offset's forward matmul ``W[:, :, i, j] @ x_tap`` has the gradient ``dy @ x_tap.T``
    w.r.t. ``W[:, :, i, j]``, summed over the batch and the output positions::

        dW[:, :, i, j] = tensordot(dy, x_tap, axes=([0, 2], [0, 2]))      (C_out, C_in)
    """
    xp = B.namespace(x)
    k = _pair(kernel_size, "kernel_size", "conv2d_weight_grad", 1)
    s, p, d = _step_args("conv2d_weight_grad", stride, padding, dilation)
    (N, C_in, H_in, W_in), (N_dy, C_out, Ho, Wo) = x.shape, dy.shape
    if N_dy != N:
        raise ValueError(f"conv2d_weight_grad: x has shape {tuple(x.shape)} but dy has shape "
                         f"{tuple(dy.shape)}: batch sizes differ")
    _check_fits("conv2d_weight_grad", (H_in, W_in), (Ho, Wo), k, s, p, d)
    xpad = _pad(x, p)
    dy_rows = xp.reshape(dy, (N, C_out, Ho * Wo))
    dW = _full(x, (C_out, C_in, k[0], k[1]), 0.0)
    for i, j in _offsets(k):
        x_tap = xp.reshape(xpad[_tap(i, j, (Ho, Wo), s, d)], (N, C_in, Ho * Wo))
        dW[:, :, i, j] = xp.tensordot(dy_rows, x_tap, axes=([0, 2], [0, 2]))
    return dW


def conv_transpose2d(x, W, stride=1, padding=0, output_padding=0, dilation=1):
    """``torch.nn.functional.conv_transpose2d(x, W, None, stride, padding, output_padding,
    1, dilation)``: ``conv2d_input_grad`` with the output size worked out.

    Shapes: x (N, C_in, H_in, W_in), W (C_in, C_out, kh, kw), y (N, C_out, H_out, W_out),
    ``(H_out, W_out) = conv_transpose2d_output_hw(...)``::

        y = conv2d_input_grad(x, W, (H_out, W_out), stride, padding, dilation)
    """
    out_hw = conv_transpose2d_output_hw(x.shape[2:], W.shape[2:], stride, padding, output_padding,
                                        dilation)
    return conv2d_input_grad(x, W, out_hw, stride, padding, dilation)


# --- pooling and upsampling ------------------------------------------------------------------------

def _pool_args(owner, kernel_size, stride, padding, dilation=1):
    return _conv_args(owner, kernel_size, kernel_size if stride is None else stride, padding, dilation)


@fast.replaceable("max_pool2d")
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1):
    """Max over each window (x padded with -inf), and which offset won: ``(y, argmax)``.
    ``y`` is ``torch.nn.functional.max_pool2d(x, kernel_size, stride, padding, dilation)``;
    stride defaults to the kernel size.

    Shapes: x (N, C, H_in, W_in), y and argmax (N, C, H_out, W_out), argmax int64: the
    index ``i*kw + j`` of the winning offset.

    Tie rule: the first maximum in row-major window order wins (a later offset replaces
    the running maximum only when strictly larger); the backward gives it all the gradient::

        better = x_tap > y                  offsets in row-major order, y starting at -inf
        y      = where(better, x_tap, y)
        argmax = where(better, i*kw + j, argmax)

    NaN is never "larger", so a NaN propagates only from a window's first offset.
    """
    xp = B.namespace(x)
    k, s, p, d = _pool_args("max_pool2d", kernel_size, stride, padding, dilation)
    N, C, H_in, W_in = x.shape
    out_hw = conv2d_output_hw((H_in, W_in), k, s, p, d)
    _check_fits("max_pool2d", (H_in, W_in), out_hw, k, s, p, d)
    xpad = _pad(x, p, -math.inf)
    y = _full(x, (N, C) + out_hw, -math.inf)
    argmax = _full(x, (N, C) + out_hw, 0, dtype=xp.int64)
    for i, j in _offsets(k):
        x_tap = xpad[_tap(i, j, out_hw, s, d)]
        better = x_tap > y
        y = xp.where(better, x_tap, y)
        argmax = xp.where(better, xp.full_like(argmax, i * k[1] + j), argmax)
    return y, argmax


@fast.replaceable("max_pool2d_input_grad")
def max_pool2d_input_grad(dy, argmax, x_hw, kernel_size, stride=None, padding=0, dilation=1):
    """dx of ``max_pool2d``: each output's dy goes to its window's winner, ``argmax``
    (the first maximum in row-major order); overlapping windows add up.

    Shapes: dy, argmax (N, C, H_out, W_out), dx (N, C, H_in, W_in)::

        dxpad[:, :, i*dh : ... : sh, j*dw : ... : sw] += dy * (argmax == i*kw + j)
        dx = dxpad[:, :, ph : ph + H_in, pw : pw + W_in]
    """
    xp = B.namespace(dy)
    k, s, p, d = _pool_args("max_pool2d_input_grad", kernel_size, stride, padding, dilation)
    N, C, Ho, Wo = dy.shape
    _check_fits("max_pool2d_input_grad", x_hw, (Ho, Wo), k, s, p, d)
    dxpad = _full(dy, (N, C, x_hw[0] + 2 * p[0], x_hw[1] + 2 * p[1]), 0.0)
    for i, j in _offsets(k):
        dxpad[_tap(i, j, (Ho, Wo), s, d)] += dy * xp.astype(argmax == i * k[1] + j, dy.dtype)
    return _crop(dxpad, p, x_hw)


@fast.replaceable("avg_pool2d")
def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over each window of the zero-padded x, the padding counted:
    ``torch.nn.functional.avg_pool2d(x, kernel_size, stride, padding)`` with its default
    ``count_include_pad=True``; stride defaults to the kernel size.

    Shapes: x (N, C, H_in, W_in), y (N, C, H_out, W_out)::

        y = sum over (i, j) of x_tap(i, j) / (kh*kw)
    """
    k, s, p, d = _pool_args("avg_pool2d", kernel_size, stride, padding)
    N, C, H_in, W_in = x.shape
    out_hw = conv2d_output_hw((H_in, W_in), k, s, p, d)
    _check_fits("avg_pool2d", (H_in, W_in), out_hw, k, s, p, d)
    xpad = _pad(x, p)
    total = _full(x, (N, C) + out_hw, 0.0)
    for i, j in _offsets(k):
        total += xpad[_tap(i, j, out_hw, s, d)]
    return total / (k[0] * k[1])


@fast.replaceable("avg_pool2d_input_grad")
def avg_pool2d_input_grad(dy, x_hw, kernel_size, stride=None, padding=0):
    """dx of ``avg_pool2d``: each output's dy, divided by kh*kw, to every entry of its window.

    Shapes: dy (N, C, H_out, W_out), dx (N, C, H_in, W_in)::

        dxpad[:, :, i : ... : sh, j : ... : sw] += dy / (kh*kw)
        dx = dxpad[:, :, ph : ph + H_in, pw : pw + W_in]
    """
    k, s, p, d = _pool_args("avg_pool2d_input_grad", kernel_size, stride, padding)
    N, C, Ho, Wo = dy.shape
    _check_fits("avg_pool2d_input_grad", x_hw, (Ho, Wo), k, s, p, d)
    share = dy / (k[0] * k[1])
    dxpad = _full(dy, (N, C, x_hw[0] + 2 * p[0], x_hw[1] + 2 * p[1]), 0.0)
    for i, j in _offsets(k):
        dxpad[_tap(i, j, (Ho, Wo), s, d)] += share
    return _crop(dxpad, p, x_hw)


def _scale_pair(scale_factor, owner="Upsample"):
    items = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * 2
    ints = []
    for v in items:
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v).is_integer() and v >= 1:
            ints.append(int(v))
    if len(items) != 2 or len(ints) != 2:
        raise ValueError(f"{owner}: scale_factor must be a positive integer or a pair of them "
                         f"(2 and 2.0 are fine, 1.5 is not), got {scale_factor!r}")
    return ints[0], ints[1]


@fast.replaceable("upsample_nearest2d")
def upsample_nearest2d(x, scale_factor):
    """Each pixel repeated into an sh x sw block: ``torch.nn.functional.interpolate(x,
    scale_factor=scale_factor, mode="nearest")`` for integer factors.

    Shapes: x (N, C, H, W), y (N, C, H*sh, W*sw); ``y[n, c, h, w] = x[n, c, h // sh, w // sw]``::

        y = reshape(broadcast_to(reshape(x, (N, C, H, 1, W, 1)), (N, C, H, sh, W, sw)),
                    (N, C, H*sh, W*sw))
    """
    xp = B.namespace(x)
    sh, sw = _scale_pair(scale_factor, "upsample_nearest2d")
    N, C, H, W = x.shape
    blocks = xp.broadcast_to(xp.reshape(x, (N, C, H, 1, W, 1)), (N, C, H, sh, W, sw))
    return xp.reshape(blocks, (N, C, H * sh, W * sw))


@fast.replaceable("upsample_nearest2d_input_grad")
def upsample_nearest2d_input_grad(dy, scale_factor):
    """dx of ``upsample_nearest2d``: the sum of each sh x sw block of dy (the transpose of
    the broadcast in the forward).

    Shapes: dy (N, C, H*sh, W*sw), dx (N, C, H, W)::

        dx = sum(reshape(dy, (N, C, H, sh, W, sw)), axis=(3, 5))
    """
    xp = B.namespace(dy)
    sh, sw = _scale_pair(scale_factor, "upsample_nearest2d_input_grad")
    N, C, Hs, Ws = dy.shape
    if Hs % sh or Ws % sw:
        raise ValueError(f"upsample_nearest2d_input_grad: dy has shape {tuple(dy.shape)}, not a "
                         f"multiple of the scale factor {(sh, sw)}")
    return xp.sum(xp.reshape(dy, (N, C, Hs // sh, sh, Ws // sw, sw)), axis=(3, 5))


# --- the layers --------------------------------------------------------------------------------------

def _check_images(layer, x, channels=None):
    """One InputError for an input that is not (N, channels, H, W) floats like the parameters."""
    shape = tuple(getattr(x, "shape", ()))
    if hasattr(x, "shape") and len(shape) != 4:
        c = "C" if channels is None else channels
        raise InputError(f"{layer.label}: x has shape {shape}, expected 4 dimensions "
                         f"(N, {c}, H, W): images in NCHW (Reshape(1, 28, 28) turns MNIST rows into that)")
    layer.check_input(x, ndim=4)
    if channels is not None and shape[1] != channels:
        raise InputError(f"{layer.label}: x has shape {shape} with {shape[1]} channels, but this layer "
                         f"takes {channels}: expected (N, {channels}, H, W)")


def _check_window_fits(layer, x, out_hw):
    """One InputError for an input too small for the (dilated) kernel, padding included."""
    if min(out_hw) < 1:
        (kh, kw), (ph, pw), (dh, dw) = layer.kernel_size, layer.padding, layer.dilation
        H, W = x.shape[2:]
        raise InputError(
            f"{layer.label}: x has shape {tuple(x.shape)}: its padded size ({H + 2 * ph}, {W + 2 * pw}) "
            f"is smaller than the dilated kernel ({dh * (kh - 1) + 1}, {dw * (kw - 1) + 1}), "
            f"so the output size would be {tuple(out_hw)}")


def _check_pool_padding(owner, kernel_size, padding):
    """PyTorch's rule for pools: padding at most half the kernel, so no window is all padding."""
    if 2 * padding[0] > kernel_size[0] or 2 * padding[1] > kernel_size[1]:
        raise ValueError(f"{owner}: padding must be at most half the kernel size (PyTorch's rule), "
                         f"got padding={padding} for kernel_size={kernel_size}")


def _channels(value, name, owner):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def _conv_repr(layer, extra=()):
    parts = [f"{layer.in_channels} -> {layer.out_channels}", f"kernel_size={layer.kernel_size}",
             f"stride={layer.stride}"]
    for name, default in (("padding", (0, 0)), *extra, ("dilation", (1, 1))):
        if getattr(layer, name) != default:
            parts.append(f"{name}={getattr(layer, name)}")
    if "b" not in layer.params:
        parts.append("bias=False")
    return ", ".join(parts)


class Conv2d(Module):
    r"""2-D convolution (cross-correlation), as ``torch.nn.Conv2d`` with ``groups=1``:
    ``y = conv2d(x, W, stride, padding, dilation) + b``.

    Shapes: x (N, C_in, H_in, W_in), W (C_out, C_in, kh, kw), b (C_out,),
    y (N, C_out, H_out, W_out) with, per axis, H_out = floor((H_in + 2p - d*(k-1) - 1)/s) + 1.
    The bias is broadcast over N, H_out and W_out.

    Backward, with dy = dL/dy (N, C_out, H_out, W_out)::

        dW += conv2d_weight_grad(x, dy, kernel_size, stride, padding, dilation)   (C_out, C_in, kh, kw)
        db += sum(dy, axis=(0, 2, 3))                                              (C_out,)
        dx  = conv2d_input_grad(dy, W, (H_in, W_in), stride, padding, dilation)    (N, C_in, H_in, W_in)

    Cache: x.

    With ``input_grad=False`` the last line is skipped and ``backward`` returns ``None``: for
    the first convolution of an encoder, whose input is data, as ``Linear(input_grad=False)``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation : int or (int, int)
        PyTorch's meaning; padding is zeros on each side.
    bias : bool, keyword-only
    input_grad : bool, keyword-only
        Compute and return ``dx`` (default). ``False``: backward returns ``None``.
    rng : scratchae.backend.Generator, keyword-only
        Draws the initial weights, on its device: PyTorch's default, W, b ~ U(-1/sqrt(fan_in),
        1/sqrt(fan_in)) with fan_in = in_channels * kh * kw (He's uniform scheme with
        a = sqrt(5), as Linear's ``"uniform"``).
    dtype : str, keyword-only
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, *, bias: bool = True, rng, dtype: str = "float32",
                 input_grad: bool = True):
        super().__init__()
        name = type(self).__name__
        self.input_grad = bool(input_grad)
        self.in_channels = _channels(in_channels, "in_channels", name)
        self.out_channels = _channels(out_channels, "out_channels", name)
        self.kernel_size, self.stride, self.padding, self.dilation = _conv_args(
            name, kernel_size, stride, padding, dilation)
        kh, kw = self.kernel_size
        bound = 1.0 / math.sqrt(self.in_channels * kh * kw)
        self.add_param("W", rng.uniform((self.out_channels, self.in_channels, kh, kw), -bound, bound, dtype))
        if bias:
            self.add_param("b", rng.uniform((self.out_channels,), -bound, bound, dtype))

    def extra_repr(self):
        return _conv_repr(self)

    def output_hw(self, in_hw) -> tuple[int, int]:
        """(H_out, W_out) for an input of spatial size ``in_hw``."""
        return conv2d_output_hw(in_hw, self.kernel_size, self.stride, self.padding, self.dilation)

    def forward(self, x):
        _check_images(self, x, self.in_channels)
        _check_window_fits(self, x, self.output_hw(x.shape[2:]))
        xp = B.namespace(x)
        self.save_cache(x)
        y = conv2d(x, self.params["W"], self.stride, self.padding, self.dilation)
        if "b" in self.params:
            y += xp.reshape(self.params["b"], (self.out_channels, 1, 1))
        return y

    def backward(self, dy):
        (x,) = self.pop_cache()
        N, _, H_in, W_in = x.shape
        self.check_dy(dy, (N, self.out_channels) + self.output_hw((H_in, W_in)))
        xp = B.namespace(dy)
        W, kernel_size = self.params["W"], self.kernel_size
        stride, padding, dilation = self.stride, self.padding, self.dilation
        self.grads["W"] += conv2d_weight_grad(x, dy, kernel_size, stride, padding, dilation)
        if "b" in self.params:
            self.grads["b"] += xp.sum(dy, axis=(0, 2, 3))
        if not self.input_grad:
            return None
        return conv2d_input_grad(dy, W, (H_in, W_in), stride, padding, dilation)


class ConvTranspose2d(Module):
    r"""Transposed convolution, as ``torch.nn.ConvTranspose2d`` with ``groups=1``: the
    adjoint of ``Conv2d`` (each one's forward is the other's input gradient)::

        y = conv2d_input_grad(x, W, (H_out, W_out), stride, padding, dilation) + b

    Shapes: x (N, C_in, H_in, W_in), W (C_in, C_out, kh, kw) (PyTorch's layout: it is the
    weight of the Conv2d from C_out to C_in channels whose input gradient this is),
    b (C_out,), y (N, C_out, H_out, W_out) with, per axis,
    H_out = (H_in - 1)*s - 2p + d*(k-1) + output_padding + 1.

    ``output_padding`` makes the output that many rows taller at the bottom (columns
    wider at the right): a Conv2d maps s input sizes to the same H_in outputs, and it says
    which one to give back. The last ``max(0, output_padding - padding)`` rows are reached
    by no input and hold only the bias. It must be smaller than the stride or the
    dilation, per axis (PyTorch's rule).

    Backward, with dy = dL/dy (N, C_out, H_out, W_out)::

        dW += conv2d_weight_grad(dy, x, kernel_size, stride, padding, dilation)   (C_in, C_out, kh, kw)
        db += sum(dy, axis=(0, 2, 3))                                              (C_out,)
        dx  = conv2d(dy, W, stride, padding, dilation)[:, :, :H_in, :W_in]         (N, C_in, H_in, W_in)

    The crop in dx is a no-op unless ``output_padding >= stride`` (allowed when it is below
    the dilation): then the convolution of dy has windows past the input, which are dropped.

    Cache: x.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, output_padding : int or (int, int)
    dilation : int or (int, int), keyword-only (PyTorch's comes after groups and bias)
    bias : bool, keyword-only
    rng : scratchae.backend.Generator, keyword-only
        W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as in PyTorch, whose fan_in is taken from
        W.shape[1] * kh * kw, which for this layout is out_channels * kh * kw.
    dtype : str, keyword-only
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, *, dilation=1, bias: bool = True, rng, dtype: str = "float32"):
        super().__init__()
        name = type(self).__name__
        self.in_channels = _channels(in_channels, "in_channels", name)
        self.out_channels = _channels(out_channels, "out_channels", name)
        self.kernel_size, self.stride, self.padding, self.dilation = _conv_args(
            name, kernel_size, stride, padding, dilation)
        self.output_padding = _pair(output_padding, "output_padding", name, 0)
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if not (op < s or op < d):
                raise ValueError(f"{name}: output_padding must be smaller than stride or dilation "
                                 f"(PyTorch's rule, per axis), got output_padding={self.output_padding}, "
                                 f"stride={self.stride}, dilation={self.dilation}")
        kh, kw = self.kernel_size
        bound = 1.0 / math.sqrt(self.out_channels * kh * kw)
        self.add_param("W", rng.uniform((self.in_channels, self.out_channels, kh, kw), -bound, bound, dtype))
        if bias:
            self.add_param("b", rng.uniform((self.out_channels,), -bound, bound, dtype))

    def extra_repr(self):
        return _conv_repr(self, extra=(("output_padding", (0, 0)),))

    def output_hw(self, in_hw) -> tuple[int, int]:
        """(H_out, W_out) for an input of spatial size ``in_hw``."""
        return conv_transpose2d_output_hw(in_hw, self.kernel_size, self.stride, self.padding,
                                          self.output_padding, self.dilation)

    def forward(self, x):
        _check_images(self, x, self.in_channels)
        out_hw = self.output_hw(x.shape[2:])
        if min(out_hw) < 1:
            raise InputError(
                f"{self.label}: x has shape {tuple(x.shape)}: the output size (H_in - 1)*s - 2p + "
                f"d*(k-1) + output_padding + 1 is {out_hw}, below 1 (too much padding for this input)")
        xp = B.namespace(x)
        self.save_cache(x)
        y = conv2d_input_grad(x, self.params["W"], out_hw, self.stride, self.padding, self.dilation)
        if "b" in self.params:
            y += xp.reshape(self.params["b"], (self.out_channels, 1, 1))
        return y

    def backward(self, dy):
        (x,) = self.pop_cache()
        N, _, H_in, W_in = x.shape
        self.check_dy(dy, (N, self.out_channels) + self.output_hw((H_in, W_in)))
        xp = B.namespace(dy)
        W, kernel_size = self.params["W"], self.kernel_size
        stride, padding, dilation = self.stride, self.padding, self.dilation
        self.grads["W"] += conv2d_weight_grad(dy, x, kernel_size, stride, padding, dilation)
        if "b" in self.params:
            self.grads["b"] += xp.sum(dy, axis=(0, 2, 3))
        return conv2d(dy, W, stride, padding, dilation)[:, :, :H_in, :W_in]


class MaxPool2d(Module):
    r"""Max over each window, as ``torch.nn.MaxPool2d`` (``ceil_mode=False``): the input is
    padded with -inf, ``padding`` at most half the kernel (PyTorch's rule), and ``stride``
    defaults to ``kernel_size``.

    Shapes: x (N, C, H_in, W_in), y (N, C, H_out, W_out) with, per axis,
    H_out = floor((H_in + 2p - d*(k-1) - 1)/s) + 1.

    Tie rule: within a window, the **first** maximum in row-major order (offset (i, j)
    before (i, j+1) before (i+1, 0)) is the winner and gets all of that output's gradient,
    as PyTorch's CPU kernel does. ``argmax`` records it in the forward, and the backward
    follows it exactly; windows that overlap add their shares in the fixed offset order.

    Backward, with dy = dL/dy (N, C, H_out, W_out)::

        dx = max_pool2d_input_grad(dy, argmax, (H_in, W_in), kernel_size, stride, padding, dilation)

    Cache: argmax (N, C, H_out, W_out), (H_in, W_in).
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = _pool_args(
            "MaxPool2d", kernel_size, stride, padding, dilation)
        _check_pool_padding("MaxPool2d", self.kernel_size, self.padding)

    def extra_repr(self):
        extra = "" if self.dilation == (1, 1) else f", dilation={self.dilation}"
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}{extra}"

    def forward(self, x):
        _check_images(self, x)
        _check_window_fits(self, x, conv2d_output_hw(x.shape[2:], self.kernel_size, self.stride,
                                                     self.padding, self.dilation))
        y, argmax = max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)
        self.save_cache(argmax, tuple(x.shape[2:]))
        return y

    def backward(self, dy):
        argmax, (H_in, W_in) = self.pop_cache()
        self.check_dy(dy, argmax.shape)
        kernel_size, stride, padding, dilation = self.kernel_size, self.stride, self.padding, self.dilation
        return max_pool2d_input_grad(dy, argmax, (H_in, W_in), kernel_size, stride, padding, dilation)


class AvgPool2d(Module):
    r"""Mean over each window of the zero-padded input, as ``torch.nn.AvgPool2d`` with its
    defaults ``count_include_pad=True`` (padded zeros count: every window divides by
    kh*kw) and ``ceil_mode=False``; ``padding`` at most half the kernel, ``stride``
    defaults to ``kernel_size``.

    Shapes: x (N, C, H_in, W_in), y (N, C, H_out, W_out) with, per axis,
    H_out = floor((H_in + 2p - k)/s) + 1.

    Backward, with dy = dL/dy (N, C, H_out, W_out)::

        dx = avg_pool2d_input_grad(dy, (H_in, W_in), kernel_size, stride, padding)

    Cache: x.shape.
    """

    dilation = (1, 1)

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding, _ = _pool_args("AvgPool2d", kernel_size, stride, padding)
        _check_pool_padding("AvgPool2d", self.kernel_size, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def forward(self, x):
        _check_images(self, x)
        _check_window_fits(self, x, conv2d_output_hw(x.shape[2:], self.kernel_size, self.stride,
                                                     self.padding))
        self.save_cache(tuple(x.shape))
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding)

    def backward(self, dy):
        (x_shape,) = self.pop_cache()
        N, C, H_in, W_in = x_shape
        kernel_size, stride, padding = self.kernel_size, self.stride, self.padding
        self.check_dy(dy, (N, C) + conv2d_output_hw((H_in, W_in), kernel_size, stride, padding))
        return avg_pool2d_input_grad(dy, (H_in, W_in), kernel_size, stride, padding)


class Upsample(Module):
    r"""Nearest-neighbour upsampling by integer factors, as
    ``torch.nn.Upsample(scale_factor=s, mode="nearest")``: each pixel becomes an sh x sw
    block, ``y[n, c, h, w] = x[n, c, h // sh, w // sw]``.

    Shapes: x (N, C, H, W), y (N, C, H*sh, W*sw).

    Backward, with dy = dL/dy (N, C, H*sh, W*sw)::

        dx = upsample_nearest2d_input_grad(dy, scale_factor)

    Each input pixel was copied into one block, so its gradient is the sum of that block.

    Cache: x.shape.

    ``scale_factor`` is a positive integer or a pair of them (2.0 is accepted as 2);
    ``torch.nn.Upsample``'s first positional argument is ``size``, so write
    ``scale_factor=`` when porting.
    """

    def __init__(self, scale_factor, mode: str = "nearest"):
        super().__init__()
        if mode != "nearest":
            raise ValueError(f"Upsample: mode must be 'nearest' (the only one here), got {mode!r}")
        self.scale_factor, self.mode = _scale_pair(scale_factor), mode

    def extra_repr(self):
        return f"scale_factor={self.scale_factor}, mode={self.mode!r}"

    def forward(self, x):
        _check_images(self, x)
        self.save_cache(tuple(x.shape))
        return upsample_nearest2d(x, self.scale_factor)

    def backward(self, dy):
        (x_shape,) = self.pop_cache()
        N, C, H, W = x_shape
        scale_factor = (sh, sw) = self.scale_factor
        self.check_dy(dy, (N, C, H * sh, W * sw))
        return upsample_nearest2d_input_grad(dy, scale_factor)

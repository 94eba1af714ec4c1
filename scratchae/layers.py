"""Layers with a hand-written backward. Derivations: ``docs/layers.md`` (and for the
convolutions and pools, defined in :mod:`scratchae.conv` and importable from here,
``docs/conv.md``).

Conventions (``docs/conventions.md``): ``x`` is the input, ``y`` the output, ``dy``
means dL/dy for the scalar loss L; shapes are written ``(N, d)`` with N the batch.
Each class's *Backward* block is the body of its ``backward``, line for line.
Parameter gradients are *added* into ``grads`` (``self.grads["W"] += x.T @ dy``), so a
weight used twice (tied weights) gets the sum of both uses; ``zero_grad()`` writes zeros.
Activations cache Boolean masks (``x > 0``) and, where the derivative is written in y, y.
"""
from __future__ import annotations

import math

from . import backend as B
from .conv import AvgPool2d, Conv2d, ConvTranspose2d, MaxPool2d, Upsample
from .module import InputError, Module, Sequential

__all__ = [
    "Linear", "TiedLinear", "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Softplus",
    "Identity", "Dropout", "BatchNorm1d", "Reshape", "Flatten", "Sequential", "ACTIVATIONS",
    "sigmoid", "softplus", "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "Upsample",
]


def sigmoid(x):
    """Overflow-free logistic function, ``0.5 * (1 + tanh(x / 2))`` (as Chainer does)."""
    xp = B.namespace(x)
    return 0.5 * xp.tanh(0.5 * x) + 0.5


def softplus(x):
    """``log(1 + exp(x))`` computed as ``max(x, 0) + log1p(exp(-|x|))``: finite for any x."""
    xp = B.namespace(x)
    return xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))


class Linear(Module):
    r"""Affine map ``y = x @ W + b``.

    Shapes: x (N, d_in), W (d_in, d_out), b (d_out,), y (N, d_out).

    Backward, with dy = dL/dy (N, d_out)::

        dW += x.T @ dy          (d_in, d_out)
        db += sum(dy, axis=0)   (d_out,)
        dx  = dy @ W.T          (N, d_in)

    Cache: x.

    With ``input_grad=False`` the last line is skipped and ``backward`` returns
    ``None``: for a layer whose input is data (the first layer of an encoder),
    ``dx`` is never used, and it is a whole matmul (a third of the layer's
    backward work). Only a first layer may do this: ``Sequential`` refuses it anywhere
    else, and a layer handed ``None`` as its dy says where it came from.

    Parameters
    ----------
    d_in, d_out : int
    rng : scratchae.backend.Generator
        Draws the initial weights, on its device.
    init : {"uniform", "he", "glorot"}
        ``"uniform"`` (default, PyTorch's ``nn.Linear``): W, b ~ U(-1/sqrt(d_in), 1/sqrt(d_in)),
        which is He et al. (2015)'s uniform scheme with negative slope sqrt(5).
        ``"he"``: W ~ N(0, 2/d_in), b = 0 (He et al. 2015, for ReLU nets).
        ``"glorot"``: W ~ U(-a, a), a = sqrt(6/(d_in+d_out)), b = 0 (Glorot & Bengio 2010).
    bias : bool
    dtype : str
    input_grad : bool
        Compute and return ``dx`` (default). ``False``: backward returns ``None``.

    References
    ----------
    K. He, X. Zhang, S. Ren, J. Sun. Delving Deep into Rectifiers. ICCV 2015.
    X. Glorot, Y. Bengio. Understanding the difficulty of training deep feedforward
    neural networks. AISTATS 2010.
    """

    def __init__(self, d_in: int, d_out: int, rng, init: str = "uniform", bias: bool = True,
                 dtype: str = "float32", input_grad: bool = True):
        super().__init__()
        self.d_in, self.d_out, self.init = int(d_in), int(d_out), init
        self.input_grad = bool(input_grad)
        if init == "uniform":
            bound = 1.0 / math.sqrt(d_in)
            W = rng.uniform((d_in, d_out), -bound, bound, dtype)
            b = rng.uniform((d_out,), -bound, bound, dtype)
        elif init == "he":
            W = rng.normal((d_in, d_out), dtype, std=math.sqrt(2.0 / d_in))
            b = rng.backend.zeros((d_out,), dtype)
        elif init == "glorot":
            a = math.sqrt(6.0 / (d_in + d_out))
            W = rng.uniform((d_in, d_out), -a, a, dtype)
            b = rng.backend.zeros((d_out,), dtype)
        else:
            raise ValueError(f"Linear: unknown init {init!r}; use 'uniform', 'he' or 'glorot'")
        self.add_param("W", W)
        if bias:
            self.add_param("b", b)

    def extra_repr(self):
        return f"{self.d_in} -> {self.d_out}"

    def forward(self, x):
        self.check_input(x, features=self.d_in, ndim=2)
        self.save_cache(x)
        y = x @ self.params["W"]
        if "b" in self.params:
            y += self.params["b"]
        return y

    def backward(self, dy):
        (x,) = self.pop_cache()
        self.check_dy(dy, (x.shape[0], self.d_out))
        xp = B.namespace(dy)
        self.grads["W"] += x.T @ dy
        if "b" in self.params:
            self.grads["b"] += xp.sum(dy, axis=0)
        if not self.input_grad:
            return None
        return dy @ self.params["W"].T


class TiedLinear(Module):
    r"""The transpose of another Linear, sharing its W: ``y = x @ W.T + c``.

    For tied-weight autoencoders (decoder weight = encoder weight transposed).
    Shapes: x (N, d_out of the tied layer), W (d_in, d_out), c (d_in,), y (N, d_in).

    Backward, with dy (N, d_in)::

        dW += dy.T @ x          (d_in, d_out)  added to the *tied layer's* grads["W"]
        dc += sum(dy, axis=0)   (d_in,)
        dx  = dy @ W            (N, d_out)

    Cache: x.
    """

    def __init__(self, tied: Linear, dtype: str = "float32"):
        super().__init__()
        object.__setattr__(self, "tied", tied)  # not a child: its W is owned elsewhere
        self.add_param("c", B.resolve(tied.params["W"]).zeros((tied.d_in,), dtype))

    def extra_repr(self):
        return f"{self.tied.d_out} -> {self.tied.d_in}, tied"

    def forward(self, x):
        self.check_input(x, features=self.tied.d_out, ndim=2)
        self.save_cache(x)
        return x @ self.tied.params["W"].T + self.params["c"]

    def backward(self, dy):
        (x,) = self.pop_cache()
        self.check_dy(dy, (x.shape[0], self.tied.d_in))
        xp = B.namespace(dy)
        self.tied.grads["W"] += dy.T @ x
        self.grads["c"] += xp.sum(dy, axis=0)
        return dy @ self.tied.params["W"]


class ReLU(Module):
    r"""``y = max(x, 0)``.

    Backward, with ``(x > 0)`` as 1.0 / 0.0::

        dx = dy * (x > 0)

    The derivative at exactly 0 is taken as 0 (a kink: the gradient checker reports it).
    Cache: x > 0 (a Boolean mask, as every activation's).
    """

    def forward(self, x):
        xp = B.namespace(x)
        self.save_cache(x > 0)
        return xp.maximum(x, 0.0)

    def backward(self, dy):
        (positive,) = self.pop_cache()
        self.check_dy(dy, positive.shape)
        xp = B.namespace(dy)
        return dy * xp.astype(positive, dy.dtype)


class LeakyReLU(Module):
    r"""``y = x`` for x > 0, ``slope * x`` otherwise.

    Backward::

        dx = where(x > 0, dy, slope * dy)

    Cache: x > 0.
    """

    def __init__(self, slope: float = 0.01):
        super().__init__()
        self.slope = float(slope)

    def extra_repr(self):
        return f"slope={self.slope}"

    def forward(self, x):
        xp = B.namespace(x)
        positive = x > 0
        self.save_cache(positive)
        return xp.where(positive, x, self.slope * x)

    def backward(self, dy):
        (positive,) = self.pop_cache()
        self.check_dy(dy, positive.shape)
        xp = B.namespace(dy)
        return xp.where(positive, dy, self.slope * dy)


class ELU(Module):
    r"""``y = x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise (Clevert et al. 2016).

    ``expm1`` is taken of ``min(x, 0)`` so large positive x never overflows.

    Backward (for x <= 0, dy/dx = alpha*exp(x) = y + alpha)::

        dx = dy * where(x > 0, 1, y + alpha)

    Cache: x > 0, y.
    """

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = float(alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"

    def forward(self, x):
        xp = B.namespace(x)
        positive = x > 0
        y = xp.where(positive, x, self.alpha * xp.expm1(xp.minimum(x, 0.0)))
        self.save_cache(positive, y)
        return y

    def backward(self, dy):
        positive, y = self.pop_cache()
        self.check_dy(dy, y.shape)
        xp = B.namespace(dy)
        return dy * xp.where(positive, 1.0, y + self.alpha)


class Sigmoid(Module):
    r"""``y = 1 / (1 + exp(-x))``, computed as ``0.5 * (1 + tanh(x / 2))``: no overflow.

    Backward::

        dx = dy * y * (1 - y)

    Cache: y.
    """

    def forward(self, x):
        y = sigmoid(x)
        self.save_cache(y)
        return y

    def backward(self, dy):
        (y,) = self.pop_cache()
        self.check_dy(dy, y.shape)
        return dy * y * (1.0 - y)


class Tanh(Module):
    r"""``y = tanh(x)``.

    Backward::

        dx = dy * (1 - y**2)

    Cache: y.
    """

    def forward(self, x):
        xp = B.namespace(x)
        y = xp.tanh(x)
        self.save_cache(y)
        return y

    def backward(self, dy):
        (y,) = self.pop_cache()
        self.check_dy(dy, y.shape)
        return dy * (1.0 - y * y)


class Softplus(Module):
    r"""``y = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))``.

    Backward (d softplus / dx = sigmoid(x))::

        dx = dy * sigmoid(x)

    Cache: x.
    """

    def forward(self, x):
        self.save_cache(x)
        return softplus(x)

    def backward(self, dy):
        (x,) = self.pop_cache()
        self.check_dy(dy, x.shape)
        return dy * sigmoid(x)


class Identity(Module):
    r"""``y = x``.

    Backward::

        dx = dy

    Cache: the shape of x (to refuse a dy of another shape).
    """

    def forward(self, x):
        self.save_cache(tuple(x.shape))
        return x

    def backward(self, dy):
        (shape,) = self.pop_cache()
        self.check_dy(dy, shape)
        return dy


class Dropout(Module):
    r"""Inverted dropout: ``y = x * mask / (1 - p)`` in training, ``y = x`` in eval.

    ``mask`` is 0/1 with P(1) = 1 - p, drawn from ``rng`` unless passed in
    (``forward(x, mask=m)``), which is how a gradient check holds it fixed.
    Scaling by 1/(1-p) at training time keeps E[y] = x, so eval needs no rescaling.

    Backward (training)::

        dx = dy * mask / (1 - p)

    Cache: mask / (1 - p).
    """

    def __init__(self, p: float, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p, self.rng = float(p), rng

    def extra_repr(self):
        return f"p={self.p}"

    def forward(self, x, mask=None):
        if not self.training:
            return x
        if mask is None:
            if self.rng is None:
                raise ValueError(f"{self.label}: needs rng=Generator(...) to draw masks (or pass mask=)")
            mask = self.rng.bernoulli(tuple(x.shape), 1.0 - self.p, B.dtype_name(x.dtype))
        elif tuple(mask.shape) != tuple(x.shape):
            raise InputError(f"{self.label}: mask has shape {tuple(mask.shape)}, x has {tuple(x.shape)}")
        scaled_mask = mask * (1.0 / (1.0 - self.p))
        self.save_cache(scaled_mask)
        return x * scaled_mask

    def backward(self, dy):
        (scaled_mask,) = self.pop_cache()
        self.check_dy(dy, scaled_mask.shape)
        return dy * scaled_mask


class BatchNorm1d(Module):
    r"""Batch normalisation over the batch axis (Ioffe & Szegedy 2015).

    Training, per feature j over the N rows::

        mu = mean(x, 0);  var = mean((x - mu)**2, 0)       (biased)
        xhat = (x - mu) / sqrt(var + eps);  y = gamma * xhat + beta

    and the running statistics move by ``momentum`` (running_var uses the unbiased
    N/(N-1) var, as PyTorch). Eval uses the running statistics and keeps no cache.

    Backward (training), with inv_std = 1/sqrt(var + eps)::

        dgamma += sum(dy * xhat, 0)
        dbeta  += sum(dy, 0)
        dxhat   = dy * gamma
        dx      = inv_std / N * (N * dxhat - sum(dxhat, 0) - xhat * sum(dxhat * xhat, 0))

    Cache: xhat, inv_std.
    """

    def __init__(self, d: int, rng=None, eps: float = 1e-5, momentum: float = 0.1,
                 dtype: str = "float32", device="cpu"):
        super().__init__()
        be = rng.backend if rng is not None else B.resolve(device)
        self.d, self.eps, self.momentum = int(d), float(eps), float(momentum)
        self.add_param("gamma", be.asarray([1.0] * d, dtype))
        self.add_param("beta", be.zeros((d,), dtype))
        self.buffers["running_mean"] = be.zeros((d,), dtype)
        self.buffers["running_var"] = be.asarray([1.0] * d, dtype)

    def extra_repr(self):
        return f"{self.d}"

    def forward(self, x):
        self.check_input(x, features=self.d, ndim=2)
        xp = B.namespace(x)
        gamma, beta = self.params["gamma"], self.params["beta"]
        if not self.training:
            inv_std = 1.0 / xp.sqrt(self.buffers["running_var"] + self.eps)
            return gamma * (x - self.buffers["running_mean"]) * inv_std + beta
        n = x.shape[0]
        if n < 2:
            raise InputError(f"{self.label}: training needs a batch of at least 2 rows, got shape {tuple(x.shape)}")
        mu = xp.mean(x, axis=0)
        centered = x - mu
        var = xp.mean(centered * centered, axis=0)
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        xhat = centered * inv_std
        m = self.momentum
        self.buffers["running_mean"] = (1 - m) * self.buffers["running_mean"] + m * mu
        self.buffers["running_var"] = (1 - m) * self.buffers["running_var"] + m * var * (n / (n - 1))
        self.save_cache(xhat, inv_std)
        return gamma * xhat + beta

    def backward(self, dy):
        xhat, inv_std = self.pop_cache()
        self.check_dy(dy, xhat.shape)
        xp = B.namespace(dy)
        n = dy.shape[0]
        self.grads["gamma"] += xp.sum(dy * xhat, axis=0)
        self.grads["beta"] += xp.sum(dy, axis=0)
        dxhat = dy * self.params["gamma"]
        return inv_std / n * (n * dxhat - xp.sum(dxhat, axis=0)
                              - xhat * xp.sum(dxhat * xhat, axis=0))


class Reshape(Module):
    r"""``y = reshape(x, (N, *shape))``; the batch axis is kept.

    Backward::

        dx = reshape(dy, x.shape)

    Cache: x.shape.
    """

    def __init__(self, *shape: int):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def extra_repr(self):
        return ", ".join(map(str, self.shape))

    def forward(self, x):
        xp = B.namespace(x)
        if math.prod(x.shape[1:]) != math.prod(self.shape):
            raise InputError(f"{self.label}: cannot reshape x of shape {tuple(x.shape)} to (N, {self.shape})")
        self.save_cache(tuple(x.shape))
        return xp.reshape(x, (x.shape[0], *self.shape))

    def backward(self, dy):
        (shape,) = self.pop_cache()
        xp = B.namespace(dy)
        self.check_dy(dy, (shape[0], *self.shape))
        return xp.reshape(dy, shape)


class Flatten(Module):
    r"""``y = reshape(x, (N, -1))``.

    Backward::

        dx = reshape(dy, x.shape)

    Cache: x.shape.
    """

    def forward(self, x):
        xp = B.namespace(x)
        self.save_cache(tuple(x.shape))
        return xp.reshape(x, (x.shape[0], -1))

    def backward(self, dy):
        (shape,) = self.pop_cache()
        xp = B.namespace(dy)
        self.check_dy(dy, (shape[0], math.prod(shape[1:])))
        return xp.reshape(dy, shape)


ACTIVATIONS = {
    "relu": ReLU, "leaky_relu": LeakyReLU, "elu": ELU, "sigmoid": Sigmoid,
    "tanh": Tanh, "softplus": Softplus, "identity": Identity,
}

"""What every autoencoder shares: the MLP builder, reconstruction likelihoods, batch checks,
and the :class:`Objective` that ``loss`` returns and ``backward`` consumes."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .. import backend as B
from .. import losses
from ..layers import ACTIVATIONS, Linear
from ..module import InputError, Module, Sequential

__all__ = ["Objective", "mlp", "mlp_decoder", "ARCHS", "CONV_CHANNELS", "encoder_network",
           "decoder_network", "image_shape_of", "arch_config", "LIKELIHOODS", "reconstruction", "log_likelihood",
           "likelihood_width", "decoded_mean", "AutoencoderBase"]


@dataclass
class Objective:
    """A forward pass's result: the scalar to minimise, its named terms, and the
    gradients of the scalar with respect to the model's outputs (for ``backward``)."""
    value: Any
    terms: dict
    grads: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)


def mlp(sizes, activation="relu", rng=None, dtype="float32", init="uniform",
        input_grad=True) -> Sequential:
    """``Linear(s0, s1), act, Linear(s1, s2), act, ..., Linear(s_{k-1}, s_k)`` (no final activation).

    ``input_grad=False`` builds the first Linear with ``input_grad=False``: the
    network's ``backward`` then returns ``None`` instead of dL/dx, and skips that
    matmul. Encoders use it, since their input is data.
    """
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least an input and an output size, got {sizes}")
    act = ACTIVATIONS[activation]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b, rng, init=init, dtype=dtype, input_grad=input_grad or i > 0))
        if i < len(sizes) - 2:
            layers.append(act())
    return Sequential(*layers)


#: "bernoulli": decoder outputs logits (D,); -log p(x|z) = softplus(l) - x*l, x in [0, 1].
#: "gaussian": decoder outputs mean and log-variance (2D,); -log N(x; mean, exp(logvar)).
#: "mse": decoder outputs x_hat (D,); squared error (not a likelihood: reported as is).
LIKELIHOODS = ("bernoulli", "gaussian", "mse")


def likelihood_width(likelihood: str, d: int) -> int:
    """How many numbers the decoder outputs per example for ``likelihood``."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; use one of {LIKELIHOODS}")
    return 2 * d if likelihood == "gaussian" else d


def mlp_decoder(sizes, likelihood, activation="relu", rng=None, dtype="float32") -> Sequential:
    """The decoder that mirrors an encoder of widths ``sizes`` (input first, code last):
    ``mlp(reversed(sizes))`` whose last layer outputs what ``likelihood`` needs."""
    dec_sizes = [int(s) for s in sizes[::-1]]
    dec_sizes[-1] = likelihood_width(likelihood, dec_sizes[-1])
    return mlp(dec_sizes, activation, rng, dtype)


#: "mlp": Linear layers of the widths ``sizes``; "conv": the convolutional encoder and decoder
#: below (images as rows of C*H*W pixels, reshaped to (C, H, W) inside the networks).
ARCHS = ("mlp", "conv")
#: the channels of the convolutional encoder, one k4 s2 p1 Conv2d each (the decoder mirrors them)
CONV_CHANNELS = (32, 64)


def image_shape_of(input_dim: int, image_shape=None) -> tuple:
    """``(C, H, W)`` of images stored as rows of ``input_dim`` pixels: as given, or a square
    single-channel image (784 -> (1, 28, 28))."""
    if image_shape is None:
        side = math.isqrt(int(input_dim))
        if side * side != input_dim:
            raise ValueError(f"arch 'conv': input_dim {input_dim} is not a square image; pass "
                             "image_shape=(C, H, W)")
        return (1, side, side)
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1 or math.prod(shape) != input_dim:
        raise ValueError(f"arch 'conv': image_shape {tuple(image_shape)} is not (C, H, W) with "
                         f"C*H*W = input_dim = {input_dim}")
    return shape


def _conv_grid(sizes, channels, image_shape):
    """Check a conv architecture; give ``(C, H, W)`` and the code grid ``(h, w)``."""
    if len(sizes) != 2:
        raise ValueError(f"arch 'conv': sizes is [input_dim, code], got {list(sizes)} (the hidden "
                         "layers are the convolutions: pass channels=...)")
    if len(channels) < 1 or min(channels) < 1:
        raise ValueError(f"arch 'conv': channels must be one or more positive widths, got {channels}")
    C, H, W = image_shape_of(sizes[0], image_shape)
    k = 2 ** len(channels)
    if H % k or W % k:
        raise ValueError(f"arch 'conv': {len(channels)} stride-2 convolutions need H and W divisible "
                         f"by {k}, got an image of {H}x{W}")
    return (C, H, W), (H // k, W // k)


def arch_config(arch, channels, image_shape, input_dim) -> dict:
    """The architecture's entries of a model's ``config`` (what a checkpoint rebuilds it from)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; use one of {ARCHS}")
    if arch == "mlp":
        return {"arch": "mlp"}
    return {"arch": "conv", "channels": [int(c) for c in channels],
            "image_shape": list(image_shape_of(input_dim, image_shape))}


def encoder_network(arch, sizes, code_width, activation="relu", rng=None, dtype="float32",
                    channels=CONV_CHANNELS, image_shape=None) -> Sequential:
    """The encoder, from pixels (N, input_dim) to ``code_width`` numbers per example.

    ``"mlp"``: ``mlp([*sizes[:-1], code_width])``. ``"conv"``, for channels (32, 64) and 28x28
    images (the recipe of docs/conv.md)::

        Reshape(1, 28, 28), Conv2d(1, 32, 4, 2, 1), ReLU, Conv2d(32, 64, 4, 2, 1), ReLU,
        Flatten, Linear(64*7*7, code_width)

    Its first layer's input is data, so ``backward`` returns no dL/dx (``input_grad=False``).
    """
    if arch == "mlp":
        return mlp([*sizes[:-1], code_width], activation, rng, dtype, input_grad=False)
    if arch != "conv":
        raise ValueError(f"unknown arch {arch!r}; use one of {ARCHS}")
    from ..conv import Conv2d
    from ..layers import Flatten, Reshape
    (c, h, w), _ = _conv_grid(sizes, channels, image_shape)
    layers = [Reshape(c, h, w)]
    for i, width in enumerate(channels):
        layers += [Conv2d(c, width, 4, 2, 1, rng=rng, dtype=dtype, input_grad=i > 0),
                   ACTIVATIONS[activation]()]
        c, h, w = width, h // 2, w // 2
    layers += [Flatten(), Linear(c * h * w, code_width, rng, dtype=dtype)]
    return Sequential(*layers)


def decoder_network(arch, sizes, likelihood, activation="relu", rng=None, dtype="float32",
                    channels=CONV_CHANNELS, image_shape=None) -> Sequential:
    """The decoder, from codes (N, sizes[-1]) to what ``likelihood`` needs per example.

    ``"mlp"``: :func:`mlp_decoder`. ``"conv"`` mirrors the conv encoder (28x28, (32, 64))::

        Linear(code, 64*7*7), ReLU, Reshape(64, 7, 7), ConvTranspose2d(64, 32, 4, 2, 1), ReLU,
        ConvTranspose2d(32, C_out, 4, 2, 1), Flatten

    with ``C_out = C`` (logits, or x_hat for "mse") or ``2C`` for "gaussian" (mean channels,
    then log-variance channels: flattened, ``[mean | logvar]`` as the MLP's).
    """
    if arch == "mlp":
        return mlp_decoder(sizes, likelihood, activation, rng, dtype)
    if arch != "conv":
        raise ValueError(f"unknown arch {arch!r}; use one of {ARCHS}")
    from ..conv import ConvTranspose2d
    from ..layers import Flatten, Reshape
    (c, _, _), (h, w) = _conv_grid(sizes, channels, image_shape)
    act = ACTIVATIONS[activation]
    widths = [*reversed(channels), likelihood_width(likelihood, c)]
    layers = [Linear(sizes[-1], widths[0] * h * w, rng, dtype=dtype), act(), Reshape(widths[0], h, w)]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(ConvTranspose2d(a, b, 4, 2, 1, rng=rng, dtype=dtype))
        if i < len(widths) - 2:
            layers.append(act())
    layers.append(Flatten())
    return Sequential(*layers)


def reconstruction(out, x, likelihood: str):
    r"""``(value, dout)``: -log p(x | decoder output), summed over features, mean over batch.

    For "gaussian" the output is ``[mean | logvar]`` along features and
    ``dout = [dmean | dlogvar]``.
    """
    if likelihood == "bernoulli":
        return losses.bce_with_logits(out, x)
    if likelihood == "mse":
        return losses.mse(out, x)
    xp = B.namespace(out)
    d = x.shape[1]
    value, dmean, dlogvar = losses.gaussian_nll(x, out[:, :d], out[:, d:])
    return value, xp.concat([dmean, dlogvar], axis=1)


def log_likelihood(out, x, likelihood: str):
    """``log p(x | decoder output)`` per example (N,), in nats: minus the per-example term
    that :func:`reconstruction` averages (for the ELBO and IWAE; "mse" is no likelihood)."""
    if likelihood == "bernoulli":
        return -losses.bce_per_example(out, x)
    if likelihood == "gaussian":
        d = x.shape[1]
        return -losses.gaussian_nll_per_example(x, out[:, :d], out[:, d:])
    raise ValueError("log-likelihoods need a likelihood (bernoulli or gaussian), not mse")


def decoded_mean(out, likelihood: str, d: int):
    """The reconstruction's expected value: sigmoid(logits), the Gaussian mean, or x_hat."""
    from ..layers import sigmoid
    if likelihood == "bernoulli":
        return sigmoid(out)
    if likelihood == "gaussian":
        return out[:, :d]
    return out


class AutoencoderBase(Module):
    """Shared plumbing: batch validation, train steps over named optimizers, configs."""

    kind = "base"

    def __init__(self):
        super().__init__()
        self.optimizers = {}
        self.check_values = True  # NaN/Inf check of each batch (fit checks the data once, then turns it off)

    def check_batch(self, x, name="x"):
        """Refuse a batch of the wrong width, dtype or device, or with NaN/Inf, naming the model."""
        d = self.config["input_dim"]
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 2 or shape[1] != d:
            raise InputError(f"{type(self).__name__}: {name} has shape {shape}, expected (N, {d}) "
                             "(flatten images to rows first)")
        ref = next(iter(self.named_parameters()))[1]
        dt = B.dtype_name(x.dtype)
        if dt != B.dtype_name(ref.dtype):
            raise InputError(f"{type(self).__name__}: {name} has dtype {dt}, the model is "
                             f"{B.dtype_name(ref.dtype)}; convert the batch (x.astype(...)) or the model (.to(dtype=...))")
        if B.device_of(x) != B.device_of(ref):
            raise InputError(f"{type(self).__name__}: {name} is on {B.device_of(x)}, the model on {B.device_of(ref)}")
        if self.check_values:
            xp = B.namespace(x)
            if not bool(xp.all(xp.isfinite(x))):
                raise InputError(f"{type(self).__name__}: {name} of shape {shape} contains NaN or Inf")

    def configure_optimizers(self, name="adam", lr=1e-3, **kw):
        """Create the optimizer(s) a train step uses (one for AE/DAE/VAE; three for the AAE)."""
        from ..optim import make_optimizer
        self.optimizers = {"model": make_optimizer(name, self, lr=lr, **kw)}
        return self

    def train_step(self, x, y=None):
        """zero_grad, loss, backward, step. Returns the terms (0-d arrays: no host sync)."""
        opt = self.optimizers["model"]
        opt.zero_grad()
        obj = self.loss(x)
        self.backward(obj)
        opt.step()
        return obj.terms

    # --- using a trained model (eval mode: no cache, no noise) ---------------------------
    def encode(self, x):
        """The code of x (for the VAE: the posterior mean)."""
        return self._eval(self.encoder, x)

    def decode(self, z):
        """The expected reconstruction from codes z: sigmoid(logits), the Gaussian mean, or x_hat."""
        return decoded_mean(self._eval(self.decoder, z), self.likelihood, self.config["input_dim"])

    def reconstruct(self, x):
        """``decode(encode(x))``."""
        return self.decode(self.encode(x))

    @property
    def dtype(self) -> str:
        """The parameters' dtype name (``"float32"``)."""
        return B.dtype_name(next(iter(self.named_parameters()))[1].dtype)

    def _eval(self, fn, *args):
        """``fn(*args)`` in eval mode (no cache, no corruption, BatchNorm running stats),
        restoring the mode after."""
        was = self.training
        self.eval()
        try:
            return fn(*args)
        finally:
            self.train(was)

    def eval_terms(self, x, y=None, rng=None):
        """Loss terms on a batch without training (eval mode, no cache). ``rng``: where any
        noise the terms need comes from (the evaluation's own stream, never the model's)."""
        return self._eval(lambda: self.loss(x).terms)

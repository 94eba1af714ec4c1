"""The plain autoencoder ``x -> code = f(x) -> out = g(code)``, optionally with tied weights
and an L1 sparsity penalty on the code. Derivations: ``docs/autoencoders.md``."""
from __future__ import annotations

from .. import backend as B
from ..layers import ACTIVATIONS, Linear, Sequential, TiedLinear
from .base import (CONV_CHANNELS, AutoencoderBase, Objective, arch_config, decoder_network,
                   encoder_network, likelihood_width, reconstruction)

__all__ = ["Autoencoder"]


class Autoencoder(AutoencoderBase):
    r"""Autoencoder with an MLP encoder and decoder.

    Objective per batch (sum over features, mean over the batch)::

        L = -log p(x | g(f(x))) + sparsity * (1/N) sum |code|

    (with likelihood "mse" the first term is the squared error itself, which is a
    Gaussian negative log-likelihood only up to scale and a constant)

    Backward, with dout = dL/dout from the likelihood::

        dcode  = decoder.backward(dout)
        dcode += sparsity * sign(code) / N        (if sparsity > 0)
        encoder.backward(dcode)                   (parameter gradients only: x is data,
                                                   the first Linear has input_grad=False)

    Parameters
    ----------
    sizes : list of int
        Encoder widths, input first, code last, e.g. ``[784, 256, 32]``. The decoder
        mirrors them (its last layer outputs what the likelihood needs).
    tied : bool
        Decoder weights are the encoder's transposed (``TiedLinear``); needs
        likelihood "bernoulli" or "mse" (the output width must equal the input's), and
        arch "mlp".
    arch : {"mlp", "conv"}
        "conv": the convolutional encoder and decoder of ``models.base.encoder_network``
        (``sizes`` is then ``[input_dim, code]``; ``channels`` the convolutions' widths;
        ``image_shape`` (C, H, W), by default a square single-channel image).
    """

    kind = "ae"

    def __init__(self, sizes=(784, 256, 32), activation="relu", likelihood="bernoulli",
                 tied=False, sparsity=0.0, rng=None, dtype="float32", arch="mlp",
                 channels=CONV_CHANNELS, image_shape=None):
        super().__init__()
        sizes = [int(s) for s in sizes]
        self.config = {"kind": self.kind, "input_dim": sizes[0], "sizes": sizes,
                       "activation": activation, "likelihood": likelihood, "tied": bool(tied),
                       "sparsity": float(sparsity), "dtype": dtype,
                       **arch_config(arch, channels, image_shape, sizes[0])}
        self.likelihood, self.sparsity = likelihood, float(sparsity)
        net = dict(arch=arch, activation=activation, rng=rng, dtype=dtype, channels=channels,
                   image_shape=image_shape)
        self.encoder = encoder_network(sizes=sizes, code_width=sizes[-1], **net)
        if tied and arch != "mlp":
            raise ValueError(f"tied weights need arch 'mlp' (TiedLinear), not {arch!r}")
        if tied:
            if likelihood_width(likelihood, sizes[0]) != sizes[0]:
                raise ValueError("tied weights need an output as wide as the input (bernoulli or mse)")
            linears = [l for l in self.encoder if isinstance(l, Linear)]
            layers = []
            for i, lin in enumerate(reversed(linears)):
                layers.append(TiedLinear(lin, dtype))
                if i < len(linears) - 1:
                    layers.append(ACTIVATIONS[activation]())
            self.decoder = Sequential(*layers)
        else:
            self.decoder = decoder_network(sizes=sizes, likelihood=likelihood, **net)

    def loss(self, x, x_in=None):
        """Forward-only: terms and dL/d(outputs). ``x_in``: the encoder's input if not x (DAE)."""
        self.check_batch(x)
        code = self.encoder(x if x_in is None else x_in)
        out = self.decoder(code)
        recon, dout = reconstruction(out, x, self.likelihood)
        terms = {"recon": recon}
        grads = {"out": dout}
        value = recon
        if self.sparsity > 0:
            xp = B.namespace(code)
            n = code.shape[0]
            l1 = self.sparsity * xp.sum(xp.abs(code)) / n
            terms["l1"] = l1
            grads["code"] = (self.sparsity / n) * xp.sign(code)
            value = value + l1
        terms["loss"] = value
        return Objective(value, terms, grads, {"code": code, "out": out})

    def backward(self, obj):
        dcode = self.decoder.backward(obj.grads["out"])
        if "code" in obj.grads:
            dcode = dcode + obj.grads["code"]
        return self.encoder.backward(dcode)


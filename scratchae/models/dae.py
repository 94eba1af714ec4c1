"""The denoising autoencoder (Vincent et al. 2008): reconstruct clean x from a corrupted copy.
Derivations and why corruption prevents the identity: ``docs/autoencoders.md``."""
from __future__ import annotations

from ..stochastic import CORRUPTIONS, corrupt
from .ae import Autoencoder
from .base import CONV_CHANNELS

__all__ = ["DenoisingAutoencoder"]


class DenoisingAutoencoder(Autoencoder):
    r"""``L = -log p(x | g(f(x_tilde)))`` with ``x_tilde = corrupt(x)`` in training only.

    The loss is against the *clean* x. Corruption is not differentiated (it acts on the
    data, not on parameters), so the backward is the autoencoder's::

        dcode = decoder.backward(dout);  encoder.backward(dcode)   (no dx_tilde: it is data)

    ``loss(x, noise=...)`` takes the corruption's noise (a keep mask for "masking",
    N(0,1) draws for "gaussian", U(0,1) draws for "salt_pepper") so a gradient check can
    hold it fixed; otherwise it is drawn from ``rng``. In eval mode nothing is corrupted.

    References
    ----------
    P. Vincent, H. Larochelle, Y. Bengio, P.-A. Manzagol. Extracting and composing robust
    features with denoising autoencoders. ICML 2008.
    """

    kind = "dae"

    def __init__(self, sizes=(784, 256, 32), activation="relu", likelihood="bernoulli",
                 corruption="masking", level=0.5, tied=False, sparsity=0.0, rng=None,
                 dtype="float32", arch="mlp", channels=CONV_CHANNELS, image_shape=None):
        if corruption not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {corruption!r}; use one of {CORRUPTIONS}")
        super().__init__(sizes, activation, likelihood, tied, sparsity, rng, dtype, arch=arch,
                         channels=channels, image_shape=image_shape)
        self.config.update(kind=self.kind, corruption=corruption, level=float(level))
        self.corruption, self.level, self.rng = corruption, float(level), rng

    def corrupt(self, x, noise=None):
        return corrupt(x, self.corruption, self.level, rng=self.rng, noise=noise)

    def eval_terms(self, x, y=None, rng=None):
        """Test terms: ``recon`` on the clean input (the model as used), and
        ``recon_corrupted``, the denoising error: clean x reconstructed from a copy corrupted
        with noise from ``rng`` (the evaluation's stream; default a fixed seed per call, so
        evaluations are comparable). The model's own generator is never drawn from."""
        from ..backend import Generator
        terms = dict(super().eval_terms(x, y))
        rng = rng if rng is not None else Generator(1234, device=x)
        fixed = corrupt(x, self.corruption, self.level, rng=rng)
        plain_loss = super().loss  # the autoencoder's loss: it corrupts nothing itself
        terms["recon_corrupted"] = self._eval(lambda: plain_loss(x, x_in=fixed).terms["recon"])
        return terms

    def loss(self, x, noise=None):
        self.check_batch(x)  # before drawing noise: a refused batch leaves the rng untouched
        x_in = self.corrupt(x, noise) if self.training else x
        return super().loss(x, x_in=x_in)

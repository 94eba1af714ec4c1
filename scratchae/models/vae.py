"""The variational autoencoder (Kingma & Welling 2014). Derivations: ``docs/vae.md``."""
from __future__ import annotations

from .. import backend as B
from ..stochastic import GaussianSample, SoftClamp, gaussian_kl
from .base import (CONV_CHANNELS, AutoencoderBase, Objective, arch_config, decoder_network,
                   encoder_network, reconstruction)

__all__ = ["VAE"]


class VAE(AutoencoderBase):
    r"""VAE with a diagonal Gaussian q(z|x), prior N(0, I) and a Bernoulli or Gaussian p(x|z).

    Forward (the encoder's last layer outputs 2d numbers: mu and logvar)::

        [mu | logvar] = encoder(x)                 (N, 2d)
        z      = mu + exp(0.5 * logvar) * eps      eps ~ N(0, I), (N, d)
        out    = decoder(z)                        logits (N, D), or [mean | logvar] (N, 2D)
        L      = -log p(x | z) + beta * KL(q(z|x) || N(0, I))      (= -ELBO for beta = 1)

    (``-L`` is the ELBO, a lower bound on log p(x), for beta = 1; for beta > 1 it is a looser
    lower bound, since KL >= 0; for beta < 1 it is no bound at all.)

    Backward, with std = exp(0.5 * logvar)::

        dz       = decoder.backward(dout)
        dmu      = dz + beta * mu / N                              (sampler + KL)
        dlogvar  = dz * eps * 0.5 * std + beta * 0.5 * (exp(logvar) - 1) / N
        dlogvar  = clamp.backward(dlogvar)         only with logvar_bound (see SoftClamp)
        encoder.backward([dmu | dlogvar])          parameter gradients only: x is data, so
                                                   the first Linear has input_grad=False

    The default recipe is the literature's and PyTorch's example: sizes (784, 400, 20),
    ReLU, Bernoulli likelihood on pixels/255, Adam 1e-3, batch 128. ``arch="conv"`` swaps the
    MLPs for the convolutional encoder and decoder of ``models.base.encoder_network`` (sizes
    ``[784, 20]``), the same objective.

    The ELBO and IWAE estimates of a trained model are in ``scratchae.evaluation``.

    References
    ----------
    D. P. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014.
    """

    kind = "vae"

    def __init__(self, sizes=(784, 400, 20), activation="relu", likelihood="bernoulli",
                 beta=1.0, logvar_bound=None, rng=None, dtype="float32", arch="mlp",
                 channels=CONV_CHANNELS, image_shape=None):
        super().__init__()
        sizes = [int(s) for s in sizes]
        self.config = {"kind": self.kind, "input_dim": sizes[0], "sizes": sizes,
                       "activation": activation, "likelihood": likelihood, "beta": float(beta),
                       "logvar_bound": logvar_bound, "dtype": dtype,
                       **arch_config(arch, channels, image_shape, sizes[0])}
        self.likelihood, self.beta, self.rng = likelihood, float(beta), rng
        self.latent_dim = sizes[-1]
        net = dict(arch=arch, activation=activation, rng=rng, dtype=dtype, channels=channels,
                   image_shape=image_shape)
        self.encoder = encoder_network(sizes=sizes, code_width=2 * sizes[-1], **net)
        self.decoder = decoder_network(sizes=sizes, likelihood=likelihood, **net)
        self.sampler = GaussianSample(rng)
        self.clamp = SoftClamp(logvar_bound) if logvar_bound else None

    # --- the objective -------------------------------------------------------------------
    def loss(self, x, eps=None):
        """Forward-only: terms {"recon", "kl", "loss"} and dL/d(outputs). ``eps``: injectable noise."""
        self.check_batch(x)
        d = self.latent_dim
        h = self.encoder(x)
        mu, logvar = h[:, :d], h[:, d:]
        if self.clamp is not None:
            logvar = self.clamp(logvar)
        z = self.sampler(mu, logvar, eps=eps)
        out = self.decoder(z)
        recon, dout = reconstruction(out, x, self.likelihood)
        kl, dmu_kl, dlogvar_kl = gaussian_kl(mu, logvar)
        value = recon + self.beta * kl
        terms = {"recon": recon, "kl": kl, "loss": value}
        grads = {"out": dout, "mu": dmu_kl, "logvar": dlogvar_kl}
        return Objective(value, terms, grads, {"mu": mu, "logvar": logvar, "z": z, "out": out})

    def backward(self, obj):
        xp = B.namespace(obj.grads["out"])
        dz = self.decoder.backward(obj.grads["out"])
        dmu, dlogvar = self.sampler.backward(dz)
        dmu = dmu + self.beta * obj.grads["mu"]
        dlogvar = dlogvar + self.beta * obj.grads["logvar"]
        if self.clamp is not None:
            dlogvar = self.clamp.backward(dlogvar)
        return self.encoder.backward(xp.concat([dmu, dlogvar], axis=1))

    def eval_terms(self, x, y=None, rng=None):
        """Test terms: the single-sample objective with eps drawn from ``rng`` (the
        evaluation's stream; default a fixed seed per call, so evaluations are comparable).
        The model's own generator is never drawn from."""
        rng = rng if rng is not None else B.Generator(1234, device=x)
        eps = rng.normal((x.shape[0], self.latent_dim), B.dtype_name(x.dtype))
        return self._eval(lambda: self.loss(x, eps=eps).terms)

    # --- using a trained model -----------------------------------------------------------
    def posterior(self, x):
        """``(mu, logvar)`` of q(z|x) (eval mode)."""
        def f(x):
            h = self.encoder(x)
            mu, logvar = h[:, :self.latent_dim], h[:, self.latent_dim:]
            return mu, (self.clamp(logvar) if self.clamp is not None else logvar)
        return self._eval(f, x)

    def encode(self, x):
        """The code of x: the posterior mean mu (``posterior`` gives mu and logvar)."""
        return self.posterior(x)[0]

    def sample(self, n, rng):
        """n draws z ~ N(0, I) from ``rng``, decoded to expected images (N, D)."""
        return self.decode(rng.normal((n, self.latent_dim), self.dtype))

"""The variational autoencoder (Kingma & Welling 2014). Derivations: ``docs/vae.md``."""
from __future__ import annotations

import math

from .. import backend as B
from .. import losses
from ..stochastic import GaussianSample, SoftClamp, gaussian_kl
from .base import AutoencoderBase, Objective, decoded_mean, likelihood_width, mlp, reconstruction

__all__ = ["VAE"]


class VAE(AutoencoderBase):
    r"""VAE with a diagonal Gaussian q(z|x), prior N(0, I) and a Bernoulli or Gaussian p(x|z).

    Forward (the encoder's last layer outputs 2d numbers: mu and logvar)::

        [mu | logvar] = encoder(x)                 (N, 2d)
        z      = mu + exp(0.5 * logvar) * eps      eps ~ N(0, I), (N, d)
        out    = decoder(z)                        logits (N, D), or [mean | logvar] (N, 2D)
        L      = -log p(x | z) + beta * KL(q(z|x) || N(0, I))      (= -ELBO for beta = 1)

    Backward, with std = exp(0.5 * logvar)::

        dz       = decoder.backward(dout)
        dmu      = dz + beta * mu / N                              (sampler + KL)
        dlogvar  = dz * eps * 0.5 * std + beta * 0.5 * (exp(logvar) - 1) / N
        dlogvar  = clamp.backward(dlogvar)         only with logvar_bound (see SoftClamp)
        encoder.backward([dmu | dlogvar])          parameter gradients only: x is data, so
                                                   the first Linear has input_grad=False

    The default recipe is the literature's and PyTorch's example: sizes (784, 400, 20),
    ReLU, Bernoulli likelihood on pixels/255, Adam 1e-3, batch 128.

    References
    ----------
    D. P. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014.
    Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    """

    kind = "vae"

    def __init__(self, sizes=(784, 400, 20), activation="relu", likelihood="bernoulli",
                 beta=1.0, logvar_bound=None, rng=None, dtype="float32"):
        super().__init__()
        sizes = [int(s) for s in sizes]
        self.config = {"kind": self.kind, "input_dim": sizes[0], "sizes": sizes,
                       "activation": activation, "likelihood": likelihood, "beta": float(beta),
                       "logvar_bound": logvar_bound, "dtype": dtype}
        self.likelihood, self.beta, self.rng = likelihood, float(beta), rng
        self.latent_dim = sizes[-1]
        self.encoder = mlp(sizes[:-1] + [2 * sizes[-1]], activation, rng, dtype, input_grad=False)
        dec_sizes = sizes[::-1]
        dec_sizes[-1] = likelihood_width(likelihood, sizes[0])
        self.decoder = mlp(dec_sizes, activation, rng, dtype)
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

    # --- using a trained model -----------------------------------------------------------
    def encode(self, x):
        """``(mu, logvar)`` of q(z|x)."""
        def f(x):
            h = self.encoder(x)
            lv = h[:, self.latent_dim:]
            return h[:, :self.latent_dim], (self.clamp(lv) if self.clamp is not None else lv)
        return self._eval(f, x)

    def decode(self, z):
        """Expected x given z: sigmoid(logits) (Bernoulli) or the Gaussian mean."""
        return decoded_mean(self._eval(self.decoder, z), self.likelihood, self.config["input_dim"])

    def reconstruct(self, x):
        """Decode the posterior mean: ``decode(mu(x))``."""
        return self.decode(self.encode(x)[0])

    def sample(self, n, rng=None):
        """n draws z ~ N(0, I), decoded to expected images (N, D)."""
        rng = rng or self.rng
        dt = B.dtype_name(self.decoder[0].params["W"].dtype)
        return self.decode(rng.normal((n, self.latent_dim), dt))

    def log_px_given_z(self, out, x):
        """log p(x|z) per example (N,): the likelihood's log-density summed over features."""
        xp = B.namespace(out, x)
        if self.likelihood == "bernoulli":
            e = xp.log1p(xp.exp(-xp.abs(out)))
            return -xp.sum(xp.maximum(out, 0.0) + e - x * out, axis=1)
        if self.likelihood == "gaussian":
            dd = self.config["input_dim"]
            mean, lv = out[:, :dd], out[:, dd:]
            r = (x - mean) * (x - mean) * xp.exp(-lv)
            return -0.5 * xp.sum(losses.LOG_2PI + lv + r, axis=1)
        raise ValueError("log-likelihood bounds need a likelihood (bernoulli or gaussian), not mse")

    def iwae_bound(self, x, k=5000, rng=None, max_rows=32768):
        r"""One Monte Carlo draw of the importance-weighted bound IWAE_k, per example (N,), in nats.

        ``IWAE_k = log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)``, z_i ~ q(z|x). Its *expectation*
        bounds log p(x) from below; k = 1 is the ELBO, and the bound grows with k towards
        log p(x) (Burda et al. 2016). A single draw can land above log p(x).
        Samples are processed in chunks of at most ``max_rows`` decoder rows and combined
        with a running log-sum-exp, so memory stays bounded for k up to 5000 and beyond.
        """
        rng = rng or self.rng
        xp = B.namespace(x)
        mu, logvar = self.encode(x)
        n, d = mu.shape
        dt = B.dtype_name(mu.dtype)
        chunk = max(1, min(k, max_rows // max(n, 1)))
        total = None
        done = 0
        std = xp.exp(0.5 * logvar)
        half_log2pi = 0.5 * losses.LOG_2PI
        while done < k:
            m = min(chunk, k - done)
            eps = rng.normal((m, n, d), dt)
            z = mu[None, :, :] + std[None, :, :] * eps                    # (m, n, d)
            log_q = -xp.sum(0.5 * eps * eps + half_log2pi + 0.5 * logvar[None, :, :], axis=2)
            log_p = -xp.sum(0.5 * z * z + half_log2pi, axis=2)
            zf = xp.reshape(z, (m * n, d))
            out = self._eval(self.decoder, zf)
            xr = xp.reshape(xp.broadcast_to(x[None, :, :], (m, n, x.shape[1])), (m * n, x.shape[1]))
            log_px = xp.reshape(self.log_px_given_z(out, xr), (m, n))
            lw = log_px + log_p - log_q                                     # (m, n)
            part = losses.logsumexp(lw, axis=0)
            total = part if total is None else xp.logaddexp(total, part)
            done += m
        return total - math.log(k)

    def elbo(self, x, rng=None):
        """Single-sample ELBO per example (N,), the estimate PyTorch's example reports."""
        rng = rng or self.rng
        xp = B.namespace(x)
        mu, logvar = self.encode(x)
        eps = rng.normal(tuple(mu.shape), B.dtype_name(mu.dtype))
        z = mu + xp.exp(0.5 * logvar) * eps
        out = self._eval(self.decoder, z)
        kl = 0.5 * xp.sum(xp.exp(logvar) + mu * mu - 1.0 - logvar, axis=1)
        return self.log_px_given_z(out, x) - kl

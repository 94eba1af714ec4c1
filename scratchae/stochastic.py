"""Stochastic pieces: the reparameterised Gaussian sample, analytic KL, corruptions, priors.

Derivations: ``docs/vae.md`` (sampler, KL), ``docs/autoencoders.md`` (corruptions),
``docs/aae.md`` (priors). Convention, used by the sampler and the KL alike:
**sigma**2 = exp(logvar)**, so sigma = exp(0.5 * logvar).
Every random draw comes from a :class:`~scratchae.backend.Generator` passed in, or
from noise passed in explicitly (``eps=``, ``mask=``), which is how a gradient
check holds it fixed.
"""
from __future__ import annotations

from . import backend as B
from .losses import batch_mean
from .module import InputError, Module

__all__ = [
    "GaussianSample", "gaussian_kl", "gaussian_kl_per_example", "gaussian_kl_between", "SoftClamp",
    "corrupt", "CORRUPTIONS", "Prior", "StandardGaussianPrior", "GaussianMixturePrior",
    "SwissRollPrior", "UniformPrior", "make_prior",
]


class GaussianSample(Module):
    r"""Reparameterised sample ``z = mu + exp(0.5 * logvar) * eps``, eps ~ N(0, I).

    Shapes: mu, logvar, eps, z all (N, d).

    Backward, with std = exp(0.5 * logvar) and dz = dL/dz::

        dmu     = dz
        dlogvar = dz * eps * 0.5 * std

    (dz/dlogvar = eps * d exp(0.5 logvar)/dlogvar = eps * 0.5 * std.)
    ``eps`` is drawn from ``rng`` unless given: ``forward(mu, logvar, eps=e)``.
    Cache: eps * 0.5 * std.
    """

    def __init__(self, rng=None):
        super().__init__()
        self.rng = rng

    def forward(self, mu, logvar, eps=None):
        if tuple(mu.shape) != tuple(logvar.shape):
            raise InputError(f"{self.label}: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} differ")
        xp = B.namespace(mu, logvar)
        if eps is None:
            if self.rng is None:
                raise ValueError(f"{self.label}: needs rng=Generator(...) or eps=")
            eps = self.rng.normal(tuple(mu.shape), B.dtype_name(mu.dtype))
        elif tuple(eps.shape) != tuple(mu.shape):
            raise InputError(f"{self.label}: eps {tuple(eps.shape)} differs from mu {tuple(mu.shape)}")
        std = xp.exp(0.5 * logvar)
        self.save_cache(eps * 0.5 * std)
        return mu + std * eps

    def backward(self, dz):
        (dz_dlogvar,) = self.pop_cache()
        self.check_dy(dz, dz_dlogvar.shape, "dz")
        return dz, dz * dz_dlogvar


def gaussian_kl_per_example(mu, logvar):
    r"""KL(N(mu, exp(logvar)) || N(0, I)) per example (N,): ``sum_j 0.5 * (exp(logvar) + mu**2 - 1 - logvar)``."""
    xp = B.namespace(mu, logvar)
    return 0.5 * xp.sum(xp.exp(logvar) + mu * mu - 1.0 - logvar, axis=1)


def gaussian_kl(mu, logvar):
    r"""KL(N(mu, exp(logvar)) || N(0, I)), summed over d, mean over the batch::

        KL = (1/N) sum_{n,j} 0.5 * (exp(logvar) + mu**2 - 1 - logvar)

    Backward::

        dmu     = mu / N
        dlogvar = 0.5 * (exp(logvar) - 1) / N

    Returns ``(value, dmu, dlogvar)``.
    """
    if tuple(mu.shape) != tuple(logvar.shape):
        raise InputError(f"gaussian_kl: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} differ")
    xp = B.namespace(mu, logvar)
    n = mu.shape[0]
    value = batch_mean(gaussian_kl_per_example(mu, logvar))
    return value, mu / n, 0.5 * (xp.exp(logvar) - 1.0) / n


def gaussian_kl_between(mu_q, logvar_q, mu_p, logvar_p):
    r"""KL(q || p) for diagonal Gaussians q = N(mu_q, exp(logvar_q)), p = N(mu_p, exp(logvar_p))::

        KL = (1/N) sum 0.5 * (logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)**2) / exp(logvar_p) - 1)

    Backward, with r = exp(-logvar_p), diff = mu_q - mu_p::

        dmu_q     =  diff * r / N
        dlogvar_q =  0.5 * (exp(logvar_q) * r - 1) / N
        dmu_p     = -diff * r / N
        dlogvar_p =  0.5 * (1 - (exp(logvar_q) + diff**2) * r) / N

    Returns ``(value, dmu_q, dlogvar_q, dmu_p, dlogvar_p)``. No broadcasting: all four
    arrays have the same shape.
    """
    shapes = {tuple(a.shape) for a in (mu_q, logvar_q, mu_p, logvar_p)}
    if len(shapes) != 1:
        raise InputError(f"gaussian_kl_between: shapes differ: {sorted(shapes)}")
    xp = B.namespace(mu_q, logvar_q, mu_p, logvar_p)
    n = mu_q.shape[0]
    r = xp.exp(-logvar_p)
    var_q = xp.exp(logvar_q)
    diff = mu_q - mu_p
    value = 0.5 * xp.sum(logvar_p - logvar_q + (var_q + diff * diff) * r - 1.0) / n
    return (value, diff * r / n, 0.5 * (var_q * r - 1.0) / n, -diff * r / n,
            0.5 * (1.0 - (var_q + diff * diff) * r) / n)


class SoftClamp(Module):
    r"""``y = bound * tanh(x / bound)``: keeps logvar in (-bound, bound), smoothly.

    Off by default in the VAE (it changes the model); with a large bound it is ~identity
    near 0. Backward::

        dx = dy * (1 - (y / bound)**2)

    Cache: y / bound.
    """

    def __init__(self, bound: float):
        super().__init__()
        self.bound = float(bound)

    def extra_repr(self):
        return f"bound={self.bound}"

    def forward(self, x):
        xp = B.namespace(x)
        t = xp.tanh(x / self.bound)
        self.save_cache(t)
        return self.bound * t

    def backward(self, dy):
        (t,) = self.pop_cache()
        self.check_dy(dy, t.shape)
        return dy * (1.0 - t * t)


# --- corruptions for the denoising autoencoder ----------------------------------------------

def corrupt(x, kind: str, level: float, rng=None, noise=None):
    r"""Corrupt x (values in [0, 1]) for a denoising autoencoder; no gradient flows through.

    kind        what it does                                    injectable ``noise``
    ---------   ---------------------------------------------   ---------------------------
    "gaussian"  x + level * n,   n ~ N(0, 1)                    n (same shape as x)
    "masking"   x * m,           m ~ Bernoulli(1 - level)       m (0/1, keep mask)
    "salt_pepper" with u ~ U(0,1): u < level/2 -> 0,            u (same shape as x)
                u > 1 - level/2 -> 1, else x
    """
    xp = B.namespace(x)
    shape, dt = tuple(x.shape), B.dtype_name(x.dtype)
    if noise is not None and tuple(noise.shape) != shape:
        raise InputError(f"corrupt({kind}): noise has shape {tuple(noise.shape)}, x has {shape}")
    if noise is None and rng is None:
        raise ValueError(f"corrupt({kind}): pass rng=Generator(...) or noise=")
    if kind != "gaussian" and not 0.0 <= level <= 1.0:
        raise ValueError(f"corrupt({kind}): level is a probability, got {level}")
    if kind == "gaussian":
        n = rng.normal(shape, dt) if noise is None else noise
        return x + level * n
    if kind == "masking":
        m = rng.bernoulli(shape, 1.0 - level, dt) if noise is None else noise
        return x * m
    if kind == "salt_pepper":
        u = rng.uniform(shape, dtype=dt) if noise is None else noise
        return xp.where(u < 0.5 * level, 0.0, xp.where(u > 1.0 - 0.5 * level, 1.0, x))
    raise ValueError(f"unknown corruption {kind!r}; use one of {CORRUPTIONS}")


CORRUPTIONS = ("gaussian", "masking", "salt_pepper")


# --- priors for the adversarial autoencoder -------------------------------------------------

class Prior:
    """A distribution to sample latent codes from: ``sample(n, rng, labels=None)``."""
    dim: int = 2
    n_classes: int = 0

    def sample(self, n, rng, labels=None, dtype="float32"):  # pragma: no cover - abstract
        raise NotImplementedError


    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim})"


class StandardGaussianPrior(Prior):
    """N(0, I) in ``dim`` dimensions."""

    def __init__(self, dim: int):
        self.dim = int(dim)

    def sample(self, n, rng, labels=None, dtype="float32"):
        return rng.normal((n, self.dim), dtype)


class UniformPrior(Prior):
    """Uniform on [-1, 1]^dim."""

    def __init__(self, dim: int):
        self.dim = int(dim)

    def sample(self, n, rng, labels=None, dtype="float32"):
        return rng.uniform((n, self.dim), -1.0, 1.0, dtype)


class GaussianMixturePrior(Prior):
    r"""Mixture of ``k`` elongated 2-D Gaussians placed around a circle, the prior of Makhzani
    et al.'s 2-D MNIST figures. The paper gives no numbers for it; shift 1.4 and stds
    (0.5, 0.1) are the values common AAE implementations use.

    Component c: a point ``(shift, 0) + (x_std * a, y_std * b)``, a, b ~ N(0, 1), rotated by
    2 pi c / k. Given ``labels`` (the paper's supervised variant), sample n uses component
    ``labels[n] % k``; otherwise components are chosen uniformly.
    """

    def __init__(self, k: int = 10, shift: float = 1.4, x_std: float = 0.5, y_std: float = 0.1):
        self.dim, self.k, self.n_classes = 2, int(k), int(k)
        self.shift, self.x_std, self.y_std = float(shift), float(x_std), float(y_std)

    def host_sample(self, n, gen, labels=None):
        np_ = B.host
        c = gen.integers(0, self.k, size=n) if labels is None else np_.asarray(labels) % self.k
        a = gen.standard_normal((n, 2)) * np_.asarray([self.x_std, self.y_std]) + np_.asarray([self.shift, 0.0])
        theta = 2 * np_.pi * c / self.k
        cos, sin = np_.cos(theta), np_.sin(theta)
        return np_.stack([a[:, 0] * cos - a[:, 1] * sin, a[:, 0] * sin + a[:, 1] * cos], axis=1)

    def sample(self, n, rng, labels=None, dtype="float32"):
        return rng.backend.asarray(self.host_sample(n, rng.host_generator(), _host_labels(labels, n)), dtype)


class SwissRollPrior(Prior):
    r"""2-D swiss roll: t ~ U(0, 1), radius 3 sqrt(t), angle 3 pi sqrt(t);
    with ``labels``, t is drawn within the label's 1/k of [0, 1]: [c/k, (c+1)/k) for label c."""

    def __init__(self, k: int = 10):
        self.dim, self.k, self.n_classes = 2, int(k), int(k)

    def host_sample(self, n, gen, labels=None):
        np_ = B.host
        u = gen.random(n)
        t = u if labels is None else (np_.asarray(labels) % self.k + u) / self.k
        r = np_.sqrt(t) * 3.0
        ang = np_.sqrt(t) * 3.0 * np_.pi
        return np_.stack([r * np_.cos(ang), r * np_.sin(ang)], axis=1)

    def sample(self, n, rng, labels=None, dtype="float32"):
        return rng.backend.asarray(self.host_sample(n, rng.host_generator(), _host_labels(labels, n)), dtype)


def _host_labels(labels, n):
    if labels is None:
        return None
    host = B.to_numpy(labels)
    if host.shape != (n,):
        raise InputError(f"prior sample: labels have shape {host.shape}, expected ({n},)")
    return host


def make_prior(name: str, dim: int = 2) -> Prior:
    """``"gaussian"``, ``"mixture"`` (10 Gaussians, 2-D), ``"swiss_roll"`` (2-D), ``"uniform"``."""
    if name == "gaussian":
        return StandardGaussianPrior(dim)
    if name == "uniform":
        return UniformPrior(dim)
    if name in ("mixture", "swiss_roll") and dim != 2:
        raise ValueError(f"prior {name!r} is 2-D; got latent dim {dim}")
    if name == "mixture":
        return GaussianMixturePrior()
    if name == "swiss_roll":
        return SwissRollPrior()
    raise ValueError(f"unknown prior {name!r}: gaussian, mixture, swiss_roll, uniform")



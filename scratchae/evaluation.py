"""Evaluating a trained autoencoder: test loss terms, ELBO, IWAE, a linear probe on the codes,
and for the AAE, how well the discriminator tells codes from prior samples and the MMD
between them. Derivations: ``docs/vae.md`` (ELBO, IWAE), ``docs/aae.md`` (MMD).

Every function that draws random numbers takes its own ``rng`` (or makes one from a
``seed``): evaluating never draws from the model's generator, so it never changes the
noise of later training.
"""
from __future__ import annotations

import functools
import math
import numbers

from . import backend as B
from . import losses
from .models.base import log_likelihood
from .stochastic import gaussian_kl_per_example

__all__ = ["evaluate", "EVAL_SEED", "elbo", "iwae_bound", "codes", "linear_probe",
           "discriminator_accuracy", "mmd2"]

#: the seed of the evaluation stream ``evaluate`` uses when given none (the same noise at
#: every call, so test losses of successive epochs are comparable)
EVAL_SEED = 1234


def _backend_and_dtype(model):
    p0 = next(iter(model.named_parameters()))[1]
    return B.resolve(p0), B.dtype_name(p0.dtype)


def _on_the_model_device(fn):
    """Run ``fn(model, ...)`` with the model's device current (``cuda:N``: GPU N)."""
    @functools.wraps(fn)
    def run(model, *args, **kwargs):
        with _backend_and_dtype(model)[0].context():
            return fn(model, *args, **kwargs)
    return run


@_on_the_model_device
def evaluate(model, x, y=None, batch_size=1000, rng=None):
    """Mean of each loss term over a data set (host float array x), in eval mode.

    Terms are per-example means (nats per example for likelihood terms). Noise (the VAE's
    eps, the DAE's corruption, the AAE's prior samples) comes from ``rng``, by default a
    fresh ``Generator(EVAL_SEED)``.
    """
    backend, dt = _backend_and_dtype(model)
    rng = rng if rng is not None else B.Generator(EVAL_SEED, device=backend)
    sums, n = {}, 0
    for start in range(0, len(x), batch_size):
        xb = backend.asarray(x[start:start + batch_size], dt)
        yb = None if y is None else backend.asarray(y[start:start + batch_size], "int64")
        terms = model.eval_terms(xb, yb, rng=rng)
        m = xb.shape[0]
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v * m        # stays on device until the end
        n += m
    return {k: B.to_scalar(v) / n for k, v in sums.items()}


# --- the VAE's bounds on log p(x) ------------------------------------------------------------
@_on_the_model_device
def elbo(model, x, rng):
    """Single-sample ELBO per example (N,), in nats: ``log p(x|z) - KL(q(z|x) || p(z))``,
    z ~ q(z|x) drawn with ``rng``; the estimate PyTorch's example reports."""
    xp = B.namespace(x)
    mu, logvar = model.posterior(x)
    z = mu + xp.exp(0.5 * logvar) * rng.normal(tuple(mu.shape), B.dtype_name(mu.dtype))
    out = model._eval(model.decoder, z)
    return log_likelihood(out, x, model.likelihood) - gaussian_kl_per_example(mu, logvar)


@_on_the_model_device
def iwae_bound(model, x, k, rng, max_rows=4096):
    r"""One Monte Carlo draw of the importance-weighted bound IWAE_k, per example (N,), in nats.

    ``IWAE_k = log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)``, z_i ~ q(z|x), formed as
    ``logsumexp(log w) - log k``. Its *expectation* bounds log p(x) from below; k = 1 is the
    ELBO, and the bound grows with k towards log p(x) (Burda et al. 2016). A single draw can
    land above log p(x). Samples are processed in chunks of at most ``max_rows`` decoder rows
    (at least one sample per chunk: N rows when N > max_rows) and combined with a running
    log-sum-exp, so memory stays bounded for any k.

    References
    ----------
    Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    """
    xp = B.namespace(x)
    mu, logvar = model.posterior(x)
    n, d = mu.shape
    dt = B.dtype_name(mu.dtype)
    chunk = max(1, min(k, max_rows // max(n, 1)))
    std = xp.exp(0.5 * logvar)
    total, done = None, 0
    while done < k:
        m = min(chunk, k - done)
        z = mu[None, :, :] + std[None, :, :] * rng.normal((m, n, d), dt)            # (m, n, d)
        log_q = losses.gaussian_log_density(z, mu[None, :, :], logvar[None, :, :])  # (m, n)
        zeros = xp.zeros_like(z)
        log_p = losses.gaussian_log_density(z, zeros, zeros)                         # N(0, I)
        out = model._eval(model.decoder, xp.reshape(z, (m * n, d)))
        xr = xp.reshape(xp.broadcast_to(x[None, :, :], (m, n, x.shape[1])), (m * n, x.shape[1]))
        log_px = xp.reshape(log_likelihood(out, xr, model.likelihood), (m, n))
        part = losses.logsumexp(log_px + log_p - log_q, axis=0)
        total = part if total is None else xp.logaddexp(total, part)
        done += m
    return total - math.log(k)


# --- what the codes know ------------------------------------------------------------------------
@_on_the_model_device
def codes(model, x, batch_size=1000):
    """``model.encode`` of a host array x, batch by batch, back on the host (N, code size)."""
    backend, dt = _backend_and_dtype(model)
    out = [B.to_numpy(model.encode(backend.asarray(x[s:s + batch_size], dt)))
           for s in range(0, len(x), batch_size)]
    return B.host.concatenate(out)


@_on_the_model_device
def linear_probe(model, x_train, y_train, x_test, y_test, epochs=20, seed=0, limit=10000):
    """Test accuracy of softmax regression on the codes (standardised with the training
    codes' mean and std), trained with scratchae's own Linear + Adam on the first ``limit``
    training images; its initial weights and batch order come from ``seed``."""
    from .layers import Linear
    from .optim import Adam
    backend, dt = _backend_and_dtype(model)
    ctr, cte = codes(model, x_train[:limit]), codes(model, x_test)
    mean, std = ctr.mean(0), ctr.std(0) + 1e-6
    ctr, cte = (ctr - mean) / std, (cte - mean) / std
    rng = B.Generator(seed, device=backend)
    probe = Linear(ctr.shape[1], 10, rng, dtype=dt)
    opt = Adam(probe, lr=1e-2)
    ytr = B.host.asarray(y_train[:limit], dtype="int64")
    for _ in range(epochs):
        order = rng.permutation(len(ctr))
        for s in range(0, len(ctr), 256):
            idx = order[s:s + 256]
            opt.zero_grad()
            logits = probe(backend.asarray(ctr[idx], dt))
            _, dlogits = losses.softmax_cross_entropy(logits, backend.asarray(ytr[idx], "int64"))
            probe.backward(dlogits)
            opt.step()
    probe.eval()
    pred = B.to_numpy(probe(backend.asarray(cte, dt))).argmax(1)
    return float((pred == B.host.asarray(y_test)).mean())


# --- the AAE: do the codes look like the prior? ------------------------------------------------
@_on_the_model_device
def discriminator_accuracy(model, x, rng, labels=None):
    """Fraction of ``[prior samples; codes of x]`` the AAE's discriminator classifies right
    (prior as 1: logit > 0; codes as 0); 0.5 when it cannot tell them apart. Prior samples
    from ``rng``."""
    xp = B.namespace(x)
    code = model.encode(x)
    n = code.shape[0]
    z_prior = model.prior.sample(n, rng, labels, B.dtype_name(code.dtype))
    both = None if labels is None else xp.concat([labels, labels])
    logits = model._eval(model.discriminator,
                         model.discriminator_input(xp.concat([z_prior, code], axis=0), both))
    right = (xp.sum(xp.astype(logits[:n, :] > 0, code.dtype))
             + xp.sum(xp.astype(logits[n:, :] <= 0, code.dtype)))
    return right / (2 * n)


def mmd2(a, b, bandwidth=None):
    r"""Unbiased MMD^2 between samples a (n, d) and b (m, d), a Python float, in float64.

    Kernel k(u, v) = exp(-|u - v|^2 / (2 h^2)), with h = ``bandwidth``, or by default
    (``None``) h^2 the median of the squared pairwise distances of the pooled sample (the
    median heuristic)::

        MMD^2 = mean_{i != j} k(a_i, a_j) + mean_{i != j} k(b_i, b_j) - 2 mean_{i, j} k(a_i, b_j)
    """
    if bandwidth is not None and (isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real)
                                  or not math.isfinite(bandwidth) or bandwidth <= 0):
        raise ValueError(f"mmd2: bandwidth must be a positive finite number or None, got {bandwidth!r}")
    if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[1] != b.shape[1] or a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"mmd2: expected two samples (n, d) and (m, d) with n, m >= 2, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    xp = B.namespace(a, b)
    z = xp.astype(xp.concat([a, b], axis=0), xp.float64)
    big_n, n, m = z.shape[0], a.shape[0], b.shape[0]
    sq = xp.sum(z * z, axis=1)
    d2 = xp.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
    eye = xp.eye(big_n, dtype=xp.float64, device=B.device_of(z))
    d2 = xp.where(eye > 0, 0.0, d2)                      # exact zeros on the diagonal
    if bandwidth is None:
        # median of the off-diagonal entries: after sorting, the N diagonal zeros come first
        flat = xp.sort(xp.reshape(d2, (-1,)))
        off = big_n * (big_n - 1)
        h2 = 0.5 * (flat[big_n + (off - 1) // 2] + flat[big_n + off // 2])
    else:
        h2 = float(bandwidth) ** 2
    k = xp.exp(-d2 / (2.0 * h2))
    k_aa = (xp.sum(k[:n, :n]) - n) / (n * (n - 1))      # the diagonal's k = 1 left out
    k_bb = (xp.sum(k[n:, n:]) - m) / (m * (m - 1))
    k_ab = xp.mean(k[:n, n:])
    return B.to_scalar(k_aa + k_bb - 2.0 * k_ab)

"""Losses: ``loss(pred, target) -> (value, dpred)``. Derivations: ``docs/layers.md``.

(``gaussian_nll(x, mean, logvar) -> (value, dmean, dlogvar)`` has two predicted arrays.)

One reduction everywhere: **sum over features, mean over the batch**. Each likelihood has
one per-example function (``*_per_example``: shape (N,), summed over features, in nats),
and every loss is :func:`batch_mean` of it; the VAE's ``log p(x|z)``, ELBO and IWAE use the
same per-example functions. ``value`` is a 0-d array (no host sync); ``dpred`` has pred's
shape and already carries the 1/N. Inputs must have identical shapes: nothing is
broadcast silently.
"""
from __future__ import annotations

import math

from . import backend as B
from . import fast
from .layers import sigmoid, softplus
from .module import InputError

__all__ = [
    "mse", "bce_with_logits", "gaussian_nll", "softmax_cross_entropy", "logsumexp",
    "batch_mean", "squared_error_per_example", "bce_per_example", "gaussian_nll_per_example",
    "gaussian_log_density", "LOG_2PI",
]

LOG_2PI = math.log(2.0 * math.pi)


def _same_shape(fn, **arrays):
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    if len(set(shapes.values())) != 1:
        desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise InputError(f"{fn}: shapes differ ({desc}); losses never broadcast")
    first = next(iter(arrays.values()))
    if len(first.shape) < 1 or first.shape[0] < 1:
        raise InputError(f"{fn}: expected a batch (N, ...), got shape {tuple(first.shape)}")
    return first.shape[0]


def _sum_features(a):
    """Sum over every axis but the first: (N, ...) -> (N,)."""
    xp = B.namespace(a)
    return xp.sum(xp.reshape(a, (a.shape[0], -1)), axis=1)


def batch_mean(per_example):
    """The one reduction: ``(1/N) sum_n per_example[n]``, a 0-d array."""
    xp = B.namespace(per_example)
    return xp.sum(per_example) / per_example.shape[0]


# --- per-example terms (N,) ------------------------------------------------------------------
def squared_error_per_example(pred, target):
    r"""``sum_j (pred - target)**2`` per example."""
    diff = pred - target
    return _sum_features(diff * diff)


def bce_per_example(logits, target):
    r"""Bernoulli negative log-likelihood per example, on logits: ``sum_j softplus(l) - t*l``.

    With p = sigmoid(l): ``-[t log p + (1-t) log(1-p)] = softplus(l) - t*l``, finite for any l.
    """
    return _sum_features(softplus(logits) - target * logits)


def gaussian_log_density(x, mean, logvar):
    r"""``log N(x; mean, exp(logvar))`` of a diagonal Gaussian, summed over the last axis::

        -0.5 * sum_j (log(2 pi) + logvar + (x - mean)**2 * exp(-logvar))

    Any leading shape (the IWAE passes (k, N, d)); arrays of equal shape, or scalars.
    """
    xp = B.namespace(x)
    diff = x - mean
    return -0.5 * xp.sum(LOG_2PI + logvar + diff * diff * xp.exp(-logvar), axis=-1)


def gaussian_nll_per_example(x, mean, logvar):
    r"""``-log N(x; mean, exp(logvar))`` per example (rows of (N, D))."""
    return -gaussian_log_density(x, mean, logvar)


# --- losses: value and gradient ------------------------------------------------------------------
def mse(pred, target):
    r"""Squared error ``L = (1/N) sum_{n,j} (pred - target)**2``.

    Backward::

        dpred = 2 * (pred - target) / N
    """
    n = _same_shape("mse", pred=pred, target=target)
    return batch_mean(squared_error_per_example(pred, target)), (2.0 / n) * (pred - target)


@fast.replaceable("bce_with_logits")
def bce_with_logits(logits, target):
    r"""Bernoulli negative log-likelihood on logits (cross-entropy with a sigmoid inside)::

        L = (1/N) sum_{n,j} softplus(l) - t * l

    Backward (d softplus/dl = sigmoid(l))::

        dlogits = (sigmoid(l) - t) / N

    Targets may be any value in [0, 1] (grey pixels), not only 0/1. Exact and finite at
    logits of +-1e4. On NumPy and CuPy, ``scratchae.fast`` computes the same with one
    ``exp`` pass (switched off by ``SCRATCHAE_REFERENCE=1``).
    """
    n = _same_shape("bce_with_logits", logits=logits, target=target)
    return batch_mean(bce_per_example(logits, target)), (sigmoid(logits) - target) / n


def gaussian_nll(x, mean, logvar):
    r"""Diagonal Gaussian negative log-likelihood of x, with sigma**2 = exp(logvar)::

        L = (1/N) sum_{n,j} 0.5 * (log(2 pi) + logvar + (x - mean)**2 * exp(-logvar))

    Backward, with r = (x - mean) * exp(-logvar)::

        dmean   = -r / N
        dlogvar = 0.5 * (1 - (x - mean) * r) / N

    Returns ``(value, dmean, dlogvar)`` (no gradient for the data x).
    """
    n = _same_shape("gaussian_nll", x=x, mean=mean, logvar=logvar)
    xp = B.namespace(x, mean, logvar)
    r = (x - mean) * xp.exp(-logvar)
    value = batch_mean(gaussian_nll_per_example(x, mean, logvar))
    return value, -r / n, 0.5 * (1.0 - (x - mean) * r) / n


def logsumexp(a, axis=-1, keepdims=False):
    r"""``log(sum(exp(a), axis))`` without overflow: ``m + log(sum(exp(a - m)))``, m = max.

    Rows that are all -inf give -inf (not NaN). A log-mean-exp is ``logsumexp(a) - log(K)``.
    """
    xp = B.namespace(a)
    m = xp.max(a, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)
    total = xp.sum(xp.exp(a - m), axis=axis, keepdims=True)        # 0 only for an all -inf row
    out = xp.where(total > 0, xp.log(xp.where(total > 0, total, 1.0)), -math.inf) + m
    return out if keepdims else xp.squeeze(out, axis=axis)


def softmax_cross_entropy(logits, labels):
    r"""Categorical cross-entropy on logits, labels as class indices (N,) or probabilities (N, C)::

        L = (1/N) sum_n [logsumexp(l_n) - sum_c t_nc l_nc]      (t = one-hot(labels))

    Backward (exact for this value; it is the cross-entropy when sum_c t_nc = 1)::

        dlogits = (softmax(l) - t) / N

    Integer labels outside [0, C) are refused.
    """
    xp = B.namespace(logits, labels)
    if len(logits.shape) != 2:
        raise InputError(f"softmax_cross_entropy: logits must be (N, C), got {tuple(logits.shape)}")
    n, c = logits.shape
    if xp.isdtype(labels.dtype, "integral"):
        if tuple(labels.shape) != (n,):
            raise InputError(f"softmax_cross_entropy: integer labels must be (N,) = ({n},), got {tuple(labels.shape)}")
        if not bool(xp.all((labels >= 0) & (labels < c))):
            raise InputError(f"softmax_cross_entropy: labels must lie in [0, {c})")
        classes = xp.arange(c, device=B.device_of(logits))
        t = xp.astype(labels[:, None] == classes[None, :], logits.dtype)
    else:
        _same_shape("softmax_cross_entropy", logits=logits, labels=labels)
        t = labels
    lse = logsumexp(logits, axis=1, keepdims=True)
    value = batch_mean(lse[:, 0] - xp.sum(t * logits, axis=1))
    return value, (xp.exp(logits - lse) - t) / n

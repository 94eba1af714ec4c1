"""Losses: ``loss(pred, target) -> (value, dpred)``. Derivations: ``docs/layers.md``.

(``gaussian_nll(x, mean, logvar) -> (value, dmean, dlogvar)`` has two predicted arrays.)

One reduction everywhere: **sum over features, mean over the batch**. ``value`` is a
0-d array (no host sync); ``dpred`` has pred's shape and already carries the 1/N.
All log-likelihood losses are in nats per example. Inputs must have identical shapes:
nothing is broadcast silently.
"""
from __future__ import annotations

import math

from . import backend as B
from .module import InputError

__all__ = [
    "mse", "bce_with_logits", "bce_terms", "gaussian_nll", "softmax_cross_entropy",
    "logsumexp", "log_mean_exp", "softmax",
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


def mse(pred, target):
    r"""Squared error ``L = (1/N) sum_{n,j} (pred - target)**2``.

    Backward::

        dpred = 2 * (pred - target) / N
    """
    n = _same_shape("mse", pred=pred, target=target)
    xp = B.namespace(pred, target)
    diff = pred - target
    return xp.sum(diff * diff) / n, (2.0 / n) * diff


def bce_terms(logits, target):
    r"""Portable core of :func:`bce_with_logits`: ``(sum of softplus(l) - t*l, sigmoid(l))``.

    One transcendental pass ``e = exp(-|l|)`` serves both::

        softplus(l) = max(l, 0) + log(1 + e)
        sigmoid(l)  = 1 / (1 + e)   if l >= 0   else   e / (1 + e)

    Both are finite for any |l| (``e`` underflows to 0) and exact to rounding: log(1 + e)
    rather than log1p(e) drops terms below one ulp of 1, i.e. losses under ~1e-16 (float64).
    """
    xp = B.namespace(logits, target)
    e = xp.exp(-xp.abs(logits))
    one_plus_e = 1.0 + e
    sig = xp.where(logits >= 0, 1.0, e) / one_plus_e
    total = xp.sum(xp.maximum(logits, 0.0) + xp.log(one_plus_e) - target * logits)
    return total, sig


def bce_with_logits(logits, target):
    r"""Bernoulli negative log-likelihood on logits (cross-entropy with a sigmoid inside).

    With p = sigmoid(l): ``-[t log p + (1-t) log(1-p)] = softplus(l) - t*l``, so::

        L = (1/N) sum_{n,j} softplus(l) - t * l

    Backward (d softplus/dl = sigmoid(l))::

        dlogits = (sigmoid(l) - t) / N

    Targets may be any value in [0, 1] (grey pixels), not only 0/1. Exact and finite at
    logits of +-1e4. On NumPy and CuPy a fused fast path computes the same
    (``backend.FAST_PATHS["bce_terms"]``), tested against :func:`bce_terms`.
    """
    n = _same_shape("bce_with_logits", logits=logits, target=target)
    terms = B.fast_path("bce_terms", logits) or bce_terms
    total, sig = terms(logits, target)
    if sig.dtype != target.dtype:
        return total / n, (sig - target) * (1.0 / n)
    dlogits = sig               # a fresh array: made into (sig - t) / N in place, no temporaries
    dlogits -= target
    dlogits *= 1.0 / n
    return total / n, dlogits


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
    diff = x - mean
    r = diff * xp.exp(-logvar)
    value = 0.5 * xp.sum(LOG_2PI + logvar + diff * r) / n
    return value, -r / n, 0.5 * (1.0 - diff * r) / n


def logsumexp(a, axis=-1, keepdims=False):
    r"""``log(sum(exp(a), axis))`` without overflow: ``m + log(sum(exp(a - m)))``, m = max.

    Rows that are all -inf give -inf (not NaN).
    """
    xp = B.namespace(a)
    m = xp.max(a, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)
    out = xp.log(xp.sum(xp.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdims else xp.squeeze(out, axis=axis)


def log_mean_exp(a, axis=-1, keepdims=False):
    r"""``log(mean(exp(a), axis)) = logsumexp(a, axis) - log(K)``, K = a.shape[axis]."""
    return logsumexp(a, axis=axis, keepdims=keepdims) - math.log(a.shape[axis])


def softmax(a, axis=-1):
    """``exp(a - logsumexp(a))`` along ``axis``."""
    xp = B.namespace(a)
    return xp.exp(a - logsumexp(a, axis=axis, keepdims=True))


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
    value = xp.sum(lse - xp.sum(t * logits, axis=1, keepdims=True)) / n
    return value, (xp.exp(logits - lse) - t) / n

"""The checker's contracts on arrays: what may be checked, and what a gradient must be.

Host-side bookkeeping (NumPy via ``backend.host``), never the math being checked.
"""
from __future__ import annotations

from .. import backend as B

#: the checker's own random streams are keyed apart from any user seed (dy can never equal x)
_STREAM_KEY = 0x67726164


class GradcheckError(ValueError):
    """The check cannot be run as asked (wrong dtype, nondeterministic forward, misuse, ...)."""


def _streams(seed):
    """Independent host generators for dy, the pre-fill and the directions."""
    seq = B.host.random.SeedSequence(int(seed), spawn_key=(_STREAM_KEY,))
    return dict(zip(("dy", "prefill", "directions"),
                    (B.host.random.default_rng(s) for s in seq.spawn(3))))


def _draw(rng, like_shape, like):
    """A standard normal array on ``like``'s backend and dtype."""
    host = rng.standard_normal(tuple(like_shape))
    return B.resolve(like).asarray(host, B.dtype_name(like.dtype))


def _is_array(a) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype") and not isinstance(a, (list, tuple))


def _copy(a):
    return B.namespace(a).asarray(a, copy=True)


def _host(a):
    return B.host.array(B.to_numpy(a), copy=True)


def _where(a) -> str:
    try:
        return B.resolve(a).name
    except Exception:          # not an array of a supported library
        return type(a).__module__.split(".")[0]


def _check_input_array(what, name, a):
    if not _is_array(a):
        raise GradcheckError(f"{what}: {name} must be an array, got {type(a).__name__}")
    dt = B.dtype_name(a.dtype)
    if not dt.startswith("float"):
        raise GradcheckError(f"{what}: {name} has dtype {dt}; arrays must be float64 to check (an input "
                             "that takes no gradient, such as integer labels, goes in forward_kwargs)")
    host = B.to_numpy(a)
    if not bool(B.host.all(B.host.isfinite(host))):
        raise GradcheckError(f"{what}: {name} contains NaN or inf; check at finite values")


def _contract(name, grad, ref, ref_name):
    """'' if ``grad`` can be the gradient of ``ref``: same shape, dtype and backend; else why not."""
    if grad is None:
        return f"{name} is None: backward produced no gradient for {ref_name}"
    if not _is_array(grad):
        return f"{name} is a {type(grad).__name__}, not an array like {ref_name}"
    if tuple(grad.shape) != tuple(ref.shape):
        return f"gradient has shape {tuple(grad.shape)}, expected {tuple(ref.shape)} (the shape of {ref_name})"
    gd, rd = B.dtype_name(grad.dtype), B.dtype_name(ref.dtype)
    if gd != rd:
        return f"gradient has dtype {gd}, expected {rd} (the dtype of {ref_name})"
    gw, rw = _where(grad), _where(ref)
    if gw != rw:
        return f"gradient lives on {gw}, expected {rw} (where {ref_name} lives)"
    bad = int(B.host.sum(~B.host.isfinite(B.to_numpy(grad))))
    if bad:
        return f"gradient has {bad} NaN or inf entr{'ies' if bad > 1 else 'y'} (a division by zero?)"
    return ""


def _changed(before_host, after) -> int:
    """How many entries of ``after`` differ from the host snapshot ``before_host``."""
    now = B.to_numpy(after)
    if now.shape != before_host.shape:
        return before_host.size
    return int(B.host.sum(~((now == before_host) | (B.host.isnan(now) & B.host.isnan(before_host)))))


def _unit_roundoff(dtypes) -> float:
    return max(float(B.host.finfo(B.dtype_name(d)).eps) / 2 for d in dtypes)

"""Check a backward pass against central finite differences. Guide: ``docs/gradcheck.md``.

Public, for coursework::

    from scratchae.gradcheck import check_layer
    report = check_layer(MyLayer(...).to(dtype="float64"), x64)
    print(report)          # a table: one row per array, worst entry, and a hint
    assert report.passed

How it works: for a layer y = f(x; theta) and a fixed random ``dy``, the scalar
``L = sum(f(x) * dy)`` has gradient ``dL/dx = backward(dy)`` and
``dL/dtheta = grads[...]``. Each entry (or, for big arrays, a few random unit
directions v) is compared with ``(L(a + eps e) - L(a - eps e)) / (2 eps)``.
Gradients are pre-filled with random values before backward, so a backward that
overwrites ``grads`` instead of adding into it fails. A one-sided difference on each
side spots kinks (ReLU at 0): entries there are reported as kinks, not failures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import backend as B

__all__ = [
    "TOLERANCES", "GradcheckError", "Row", "GradcheckReport", "numerical_gradient",
    "check_layer", "check_function", "check_objective",
]

#: eps, rtol, atol per dtype. An entry passes when |a - n| <= atol + rtol * |n|.
#: float64: rounding noise of a central difference is ~1e-16 * |L| / eps ~ 1e-9 here,
#: truncation ~eps**2 * |L'''| ~ 1e-12, so rtol 1e-5 leaves room yet catches a 0.1% error.
#: float32: noise ~1e-7 * |L| / eps is ~1e-4 relative at best: a 1% bug can hide in it.
TOLERANCES = {
    "float64": {"eps": 1e-6, "rtol": 1e-5, "atol": 1e-7},
    "float32": {"eps": 1e-2, "rtol": 5e-2, "atol": 1e-3},
}
#: above this many entries an array is checked along random directions, not entry by entry
MAX_ELEMENTWISE = 2048
#: |right difference - left difference| above this marks a kink (smooth: ~eps * |L''|)
KINK_TOL = 1e-3


class GradcheckError(ValueError):
    """The check cannot be run as asked (wrong dtype, nondeterministic forward, ...)."""


@dataclass
class Row:
    """The comparison for one array (``dx`` or a parameter)."""
    name: str
    shape: tuple
    mode: str                      # "elementwise" or "directional(k)"
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0       # |a - n| / max(|a|, |n|) at the worst entry
    worst: object = None           # index (elementwise) or direction number
    analytic: float = 0.0          # at the worst entry
    numerical: float = 0.0
    passed: bool = True
    kinks: int = 0
    analytic_norm: float = 0.0
    numerical_norm: float = 0.0
    hint: str = ""


@dataclass
class GradcheckReport:
    """Result of a check: ``.passed``, ``.rows`` (one per array); prints as a table."""
    title: str
    dtype: str
    eps: float
    rtol: float
    atol: float
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def __bool__(self):
        return self.passed

    def row(self, name) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def __str__(self):
        bad = [r for r in self.rows if not r.passed]
        head = (f"gradcheck {self.title}: {'passed' if not bad else 'FAILED'}"
                f"{'' if not bad else f' ({len(bad)} of {len(self.rows)} arrays wrong)'}"
                f"   [{self.dtype}, eps={self.eps:g}, rtol={self.rtol:g}, atol={self.atol:g}]")
        cols = ["array", "shape", "mode", "max rel err", "worst at", "analytic", "numerical", "status"]
        table = [cols]
        for r in self.rows:
            status = "ok" if r.passed else "FAIL"
            if r.kinks:
                status += f" ({r.kinks} kink{'s' if r.kinks > 1 else ''} skipped)"
            if r.hint:
                status += f"  <- {r.hint}"
            table.append([r.name, str(r.shape), r.mode, f"{r.max_rel_err:.2e}", str(r.worst),
                          f"{r.analytic:+.6g}", f"{r.numerical:+.6g}", status])
        widths = [max(len(t[i]) for t in table) for i in range(len(cols) - 1)]
        lines = [head]
        for t in table:
            lines.append("  ".join(c.ljust(w) for c, w in zip(t, widths)) + "  " + t[-1])
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    __repr__ = __str__


# --- numerical differentiation -------------------------------------------------------------

def _unravel(i, shape):
    idx = []
    for s in reversed(shape):
        idx.append(i % s)
        i //= s
    return tuple(reversed(idx))


def _size(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _elementwise(f, a, eps, f0):
    """Central, right and left differences of f() w.r.t. every entry of ``a`` (perturbed in place)."""
    n = _size(a.shape)
    central, right, left = [0.0] * n, [0.0] * n, [0.0] * n
    for i in range(n):
        idx = _unravel(i, a.shape)
        old = float(a[idx])
        a[idx] = old + eps
        fp = f()
        a[idx] = old - eps
        fm = f()
        a[idx] = old
        central[i] = (fp - fm) / (2 * eps)
        right[i] = (fp - f0) / eps
        left[i] = (f0 - fm) / eps
    return central, right, left


def _directional(f, a, eps, f0, v):
    """Differences of f() along direction v (same shape as a), a perturbed in place then restored."""
    xp = B.namespace(a)
    orig = xp.asarray(a, copy=True)
    a += eps * v
    fp = f()
    a[...] = orig
    a -= eps * v
    fm = f()
    a[...] = orig
    return (fp - fm) / (2 * eps), (fp - f0) / eps, (f0 - fm) / eps


def numerical_gradient(f, x, eps: float = 1e-6):
    """Central-difference gradient of a scalar function ``f(x)``, entry by entry.

    ``f`` takes an array shaped like ``x`` and returns a scalar (Python float or 0-d
    array). ``x`` is not modified (a copy is perturbed). Returns an array on x's device.
    """
    xp = B.namespace(x)
    xc = xp.asarray(x, copy=True)
    central, _, _ = _elementwise(lambda: B.to_scalar(f(xc)), xc, eps, B.to_scalar(f(xc)))
    return B.resolve(x).asarray(_host_array(central, x.shape), B.dtype_name(x.dtype))


def _host_array(values, shape):
    return B.host.asarray(values, dtype="float64").reshape(shape)


# --- comparing -------------------------------------------------------------------------------

def _confirm_kinks(f, a, eps, f0, candidates, gap, central):
    """Re-difference candidate kinks at eps/4. At a kink the one-sided gap stays (the
    derivative jumps); on a smooth but curved function it shrinks with eps (gap ~ eps * |L''|),
    so such an entry is a false alarm and is scored with the finer central difference."""
    hnp = B.host
    kink = hnp.zeros(len(central), dtype=bool)
    for i in candidates:
        idx = _unravel(int(i), a.shape)
        old = float(a[idx])
        a[idx] = old + eps / 4
        fp = f()
        a[idx] = old - eps / 4
        fm = f()
        a[idx] = old
        gap4 = abs((fp - f0) - (f0 - fm)) / (eps / 4)
        if gap4 > 0.5 * gap[i]:
            kink[i] = True
        else:
            central[i] = (fp - fm) / (eps / 2)
    return kink


def _compare_elementwise(name, analytic, f, a, tol, f0, extra_host=None):
    """Row for one array: analytic (device array) vs numerical differences of f() w.r.t. a."""
    hnp = B.host  # the comparison is host-side bookkeeping, not math code
    shape = tuple(a.shape)
    central, right, left = _elementwise(f, a, tol["eps"], f0)
    n = hnp.asarray(central)
    gap = hnp.abs(hnp.asarray(right) - hnp.asarray(left))
    candidates = hnp.nonzero(gap > KINK_TOL * (1.0 + hnp.abs(n)))[0]
    kink = _confirm_kinks(f, a, tol["eps"], f0, candidates, gap, n)
    an = B.to_numpy(analytic).astype("float64").ravel()
    err = hnp.abs(an - n)
    wrong = err > tol["atol"] + tol["rtol"] * hnp.abs(n)
    row = Row(name, shape, "elementwise", kinks=int(hnp.sum(kink & wrong)))
    scored = hnp.where(kink, -hnp.inf, err - tol["rtol"] * hnp.abs(n))
    if n.size and not bool(hnp.all(kink)):
        w = int(hnp.argmax(scored))
        row.worst = _unravel(w, shape) if shape else ()
        row.analytic, row.numerical = float(an[w]), float(n[w])
        row.max_abs_err = float(hnp.max(hnp.where(kink, 0.0, err)))
        row.max_rel_err = float(err[w] / max(abs(an[w]), abs(n[w]), 1e-300)) if err[w] > 0 else 0.0
    row.passed = not bool(hnp.any(wrong & ~kink))
    row.analytic_norm, row.numerical_norm = float(hnp.linalg.norm(an)), float(hnp.linalg.norm(n))
    if not row.passed:
        row.hint = _hint(an, n, shape, extra_host)
    return row


def _compare_directional(name, analytic, f, a, tol, f0, rng, k):
    hnp = B.host  # the comparison is host-side bookkeeping, not math code
    xp = B.namespace(a)
    shape = tuple(a.shape)
    row = Row(name, shape, f"directional({k})")
    an_all, n_all = [], []
    worst_score = -math.inf
    for j in range(k):
        v = rng.normal(shape, B.dtype_name(a.dtype))
        v = v / xp.sqrt(xp.sum(v * v))
        num, right, left = _directional(f, a, tol["eps"], f0, v)
        ana = B.to_scalar(xp.sum(analytic * v))
        an_all.append(ana)
        n_all.append(num)
        err = abs(ana - num)
        kink = abs(right - left) > KINK_TOL * (1.0 + abs(num))
        ok = err <= tol["atol"] + tol["rtol"] * abs(num)
        if kink and not ok:
            row.kinks += 1
            continue
        score = err - tol["rtol"] * abs(num)
        if score > worst_score:
            worst_score = score
            row.worst, row.analytic, row.numerical = f"dir {j}", ana, num
            row.max_abs_err = max(row.max_abs_err, err)
            row.max_rel_err = err / max(abs(ana), abs(num), 1e-300) if err > 0 else 0.0
        if not ok:
            row.passed = False
    row.analytic_norm = B.to_scalar(xp.sqrt(xp.sum(analytic * analytic)))
    row.numerical_norm = float(hnp.linalg.norm(n_all))
    if not row.passed:
        row.hint = _hint(hnp.asarray(an_all), hnp.asarray(n_all), None, None)
        if row.analytic_norm == 0.0:
            row.hint = "backward gives an all-zero gradient here (not routed to this array?)"
    return row


def _hint(an, n, shape, overwritten):
    """A guess at the classic mistake behind a mismatch, for the report."""
    hnp = B.host  # the comparison is host-side bookkeeping, not math code
    nn = float(hnp.dot(n, n))
    if float(hnp.max(hnp.abs(an), initial=0.0)) == 0.0:
        return "backward gives an all-zero gradient here (not routed to this array?)"
    if overwritten is not None and hnp.allclose(overwritten, n, rtol=1e-4, atol=1e-7):
        return "grads were overwritten, not added to: use += in backward"
    if shape is not None and len(shape) == 2 and shape[0] == shape[1]:
        nt = n.reshape(shape).T.ravel()
        if hnp.allclose(an, nt, rtol=1e-4, atol=1e-7):
            return "looks transposed"
    if nn > 0 and n.size >= 2:  # one entry always "fits" a scale: no hint from it
        c = float(hnp.dot(an, n) / nn)
        resid = hnp.linalg.norm(an - c * n) / max(hnp.linalg.norm(an), 1e-300)
        if resid < 1e-3:
            if abs(c + 1) < 1e-3:
                return "sign flipped"
            for k, why in ((0.5, "a missing 2 or an extra 0.5?"), (2.0, "a missing 0.5 or an extra 2?")):
                if abs(c - k) < 1e-3:
                    return f"off by a factor {c:.4g} ({why})"
            return f"analytic = {c:.6g} x numerical (a scale error)"
    return "entries disagree in pattern, not just scale"


# --- public checkers -------------------------------------------------------------------------

def _tolerances(dtypes, allow_float32, eps, rtol, atol, what):
    names = {B.dtype_name(d) for d in dtypes}
    if names - {"float64", "float32"}:
        raise GradcheckError(f"{what}: arrays must be float64 to check, got {sorted(names)}")
    if "float32" in names and not allow_float32:
        raise GradcheckError(
            f"{what}: got float32 arrays. A central difference in float32 carries ~1e-4 relative "
            "rounding noise, enough to hide a 1% error in a backward pass, so the check runs in "
            "float64: use layer.to(dtype='float64') and x.astype(float64). Pass allow_float32=True "
            f"to check anyway with the loose float32 tolerances {TOLERANCES['float32']}.")
    tol = dict(TOLERANCES["float32" if "float32" in names else "float64"])
    for k, v in (("eps", eps), ("rtol", rtol), ("atol", atol)):
        if v is not None:
            tol[k] = float(v)
    return tol, ("float32" if "float32" in names else "float64")


def _check_arrays(title, dtype, tol, items, f, rng, mode, directions):
    """items: list of (name, analytic array, perturbable array, overwritten-host or None)."""
    f0 = f()
    if f() != f0:
        raise GradcheckError(
            f"{title}: forward gives different values on identical inputs, so finite differences "
            "mean nothing. Hold its noise fixed (e.g. forward_kwargs={'mask': m}, eps=..., or a "
            "freshly seeded rng per call).")
    report = GradcheckReport(title, dtype, tol["eps"], tol["rtol"], tol["atol"])
    for name, analytic, a, overwritten in items:
        if tuple(analytic.shape) != tuple(a.shape):
            report.rows.append(Row(name, tuple(a.shape), "-", passed=False, max_rel_err=math.inf,
                                   hint=f"gradient has shape {tuple(analytic.shape)}, expected {tuple(a.shape)}"))
            continue
        use_dir = mode == "directional" or (mode == "auto" and _size(a.shape) > MAX_ELEMENTWISE)
        if use_dir:
            report.rows.append(_compare_directional(name, analytic, f, a, tol, f0, rng, directions))
        else:
            report.rows.append(_compare_elementwise(name, analytic, f, a, tol, f0, overwritten))
    rows = report.rows
    scored_rows = [r for r in rows if r.mode != "-"]
    if scored_rows and all(r.analytic_norm == 0.0 and r.numerical_norm == 0.0 for r in scored_rows):
        report.notes.append("every gradient is zero: this check proves nothing; choose other inputs")
    if any(r.kinks for r in rows):
        report.notes.append("kinks: entries where the left and right differences disagree (a "
                            "non-differentiable point such as ReLU at 0) are not scored")
    return report


def check_layer(layer, x, dy=None, *, seed: int = 0, forward_kwargs=None, check_input=True,
                params=None, mode: str = "auto", directions: int = 3, eps=None, rtol=None,
                atol=None, allow_float32: bool = False) -> GradcheckReport:
    """Check ``layer.backward`` (``dx`` and every ``grads[k]``) against finite differences.

    Parameters
    ----------
    layer : Module
        In training mode (eval keeps no cache for backward). Its parameters must be float64.
    x : array
        float64 input. Keep it away from kinks (ReLU at 0); kinks are reported, not failed.
    dy : array, optional
        Upstream gradient; a seeded standard normal of y's shape by default.
    forward_kwargs : dict, optional
        Extra forward arguments that hold noise fixed, e.g. ``{"mask": m}`` for Dropout.
    check_input : bool
        Also check ``dx`` (turn off for layers whose input is not differentiable).
        A backward that returns ``None`` (``Linear(..., input_grad=False)``) has no
        ``dx``: it is treated as ``check_input=False``.
    params : list of str, optional
        Parameter keys to check (default: all of ``layer.params``).
    mode : {"auto", "elementwise", "directional"}
        ``auto``: entry by entry up to ``MAX_ELEMENTWISE`` entries, else ``directions``
        random unit directions (two evaluations each, as Chainer's ``check_backward``).

    Returns
    -------
    GradcheckReport
        ``.passed``; prints as a table with the worst entry per array and a hint.
    """
    fk = dict(forward_kwargs or {})
    keys = list(layer.params) if params is None else list(params)
    tol, dtype = _tolerances([x.dtype] + [layer.params[k].dtype for k in keys], allow_float32,
                             eps, rtol, atol, f"check_layer({layer!r})")
    if not layer.training:
        raise GradcheckError(f"check_layer({layer!r}): the layer is in eval mode, which keeps no "
                             "cache for backward; call layer.train() first")
    rng = B.Generator(seed, device=x)
    saved_buffers = {k: v for k, v in layer.buffers.items()}
    layer.clear_cache()
    y = layer.forward(x, **fk)
    if dy is None:
        dy = rng.normal(tuple(y.shape), B.dtype_name(y.dtype))
    xp = B.namespace(y)
    # pre-fill the gradients so that an overwrite (= instead of +=) shows
    prefill = {k: rng.normal(tuple(layer.grads[k].shape), B.dtype_name(layer.grads[k].dtype)) for k in keys}
    for k in keys:
        layer.grads[k][...] = prefill[k]
    dx = layer.backward(dy)
    items = []
    if check_input and dx is not None:
        xc = xp.asarray(x, copy=True)
        items.append(("dx", dx, xc, None))
    else:
        xc = x
    for k in keys:
        g = layer.grads[k]
        if tuple(g.shape) != tuple(prefill[k].shape):
            items.append((k, g, layer.params[k], None))
            continue
        items.append((k, g - prefill[k], layer.params[k], B.to_numpy(g).astype("float64").ravel()))

    def f():
        out = layer.forward(xc, **fk)
        layer.clear_cache()
        return B.to_scalar(xp.sum(out * dy))

    try:
        report = _check_arrays(repr(layer), dtype, tol, items, f, rng, mode, directions)
    finally:
        layer.clear_cache()
        layer.buffers.update(saved_buffers)
    return report


def check_function(f, *inputs, wrt=(0,), seed: int = 0, mode: str = "auto", directions: int = 3,
                   eps=None, rtol=None, atol=None, allow_float32: bool = False,
                   title=None) -> GradcheckReport:
    """Check a function returning ``(value, grad_a, grad_b, ...)`` against finite differences.

    ``f(*inputs)`` returns the scalar value first, then one gradient per input named in
    ``wrt`` (positions), in that order: ``mse(pred, target) -> (value, dpred)`` fits with
    ``wrt=(0,)``; ``gaussian_nll(x, mean, logvar) -> (value, dmean, dlogvar)`` with ``wrt=(1, 2)``.
    """
    wrt = tuple(wrt)
    tol, dtype = _tolerances([inputs[i].dtype for i in wrt], allow_float32, eps, rtol, atol,
                             "check_function")
    copies = list(inputs)
    for i in wrt:
        copies[i] = B.namespace(inputs[i]).asarray(inputs[i], copy=True)
    out = f(*copies)
    if len(out) != 1 + len(wrt):
        raise GradcheckError(f"check_function: f returned {len(out)} values; expected the value "
                             f"and {len(wrt)} gradient(s) for wrt={wrt}")
    items = [(f"d(input {i})", out[1 + j], copies[i], None) for j, i in enumerate(wrt)]
    name = title or getattr(f, "__name__", "function")
    return _check_arrays(name, dtype, tol, items, lambda: B.to_scalar(f(*copies)[0]),
                         B.Generator(seed, device=inputs[wrt[0]]), mode, directions)


def check_objective(model, forward, backward, *, params=None, seed: int = 0, mode: str = "auto",
                    directions: int = 3, eps=None, rtol=None, atol=None,
                    allow_float32: bool = False, title=None) -> GradcheckReport:
    """Check a model objective: ``out = forward()`` then ``backward(out)`` fills ``model``'s grads.

    ``forward()`` must be deterministic (pass the noise in: ``lambda: vae.loss(x, eps=e)``)
    and return a scalar or an object with ``.value``. ``params``: qualified-name prefixes to
    check (default: every parameter of ``model``), e.g. ``["encoder"]`` to check the
    generator objective of an adversarial autoencoder *through* its discriminator.
    """
    slots = [(name, m, k) for name, m, k in model.parameter_slots()
             if params is None or any(name == p or name.startswith(p + ".") for p in params)]
    if not slots:
        raise GradcheckError(f"check_objective: no parameter of the model matches {params}")
    tol, dtype = _tolerances([m.params[k].dtype for _, m, k in slots], allow_float32, eps, rtol,
                             atol, "check_objective")
    rng = B.Generator(seed, device=slots[0][1].params[slots[0][2]])
    saved_buffers = [(m, dict(m.buffers)) for m in model.modules()]
    model.clear_cache()
    prefill = {}
    for name, m, k in slots:
        g = m.grads[k]
        prefill[name] = rng.normal(tuple(g.shape), B.dtype_name(g.dtype))
        g[...] = prefill[name]
    backward(forward())
    stuck = [m.label for m in model.modules() if m.has_cache]
    if stuck:
        model.clear_cache()
        raise GradcheckError(f"check_objective: backward never reached {', '.join(stuck)} "
                             "(a forward's cache is still waiting): the chain rule stops early")
    items = [(name, m.grads[k] - prefill[name], m.params[k],
              B.to_numpy(m.grads[k]).astype("float64").ravel()) for name, m, k in slots]

    def f():
        out = forward()
        model.clear_cache()
        return B.to_scalar(getattr(out, "value", out))

    try:
        report = _check_arrays(title or f"{type(model).__name__} objective", dtype, tol, items, f,
                               rng, mode, directions)
    finally:
        model.clear_cache()
        for m, bufs in saved_buffers:
            m.buffers.update(bufs)
    return report

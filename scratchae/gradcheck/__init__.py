"""Check a backward pass against finite differences. Guide: ``docs/gradcheck.md``.

Public, for coursework::

    from scratchae.gradcheck import check_layer
    report = check_layer(MyLayer(...).to(dtype="float64"), x64)      # or (layer, x1, x2, ...)
    print(report)          # a table: one row per array, the worst entry, and a hint
    assert report.passed   # True only for the verdict "passed" (not "inconclusive")

How it works: for a layer y = f(x; theta) and a random ``dy`` drawn from the checker's own
stream, the scalar ``L = sum(f(x) * dy)`` has gradient ``dL/dx = backward(dy)`` and
``dL/dtheta = grads[...]`` for every parameter reachable from the layer (children, tied and
shared weights once, by qualified name). Each entry (or, for big arrays, a few random
directions, with failures localised by bisection) is compared with a Richardson-extrapolated
central difference, within a tolerance made from the measured rounding noise of L and the
truncation error of the difference (``differences.py``). The layer works on private copies;
gradients are pre-filled with random values, so an overwrite (``=`` for ``+=``) fails; the
shape, dtype and device of every gradient are checked; an input or ``dy`` modified in place
fails the check. Verdicts: passed, FAILED, inconclusive (``report.py``).
"""
from __future__ import annotations

import math

from .. import backend as B
from ..module import Module
from .contracts import (GradcheckError, _changed, _check_input_array, _contract, _copy, _draw, _host,
                        _is_array, _streams, _unit_roundoff)
from .differences import Differencer, Target, size, unravel
from .report import FAILED, INCONCLUSIVE, PASSED, GradcheckReport, Row
from .tree import (_State, _after_backward, _clear, _declares_no_input_grad, _parameter_targets,
                   _parameters, _prefill, _sharing_problems)

__all__ = [
    "TOLERANCES", "MAX_ELEMENTWISE", "GradcheckError", "Row", "GradcheckReport",
    "numerical_gradient", "check_layer", "check_function", "check_objective",
    "PASSED", "FAILED", "INCONCLUSIVE",
]

#: Per dtype: ``eps``, the relative step (h = eps * max(|a_i|, rms(a))), and the floors ``rtol``
#: and ``atol`` of the tolerance, to which the measured noise is added (see differences.py).
#: float32 is refused unless ``allow_float32=True``: its rounding noise hides small bugs.
TOLERANCES = {
    "float64": {"eps": 1e-4, "rtol": 1e-7, "atol": 0.0},
    "float32": {"eps": 1e-2, "rtol": 1e-3, "atol": 0.0},
}
#: above this many entries an array is checked along random directions, not entry by entry
MAX_ELEMENTWISE = 2048


def _tolerances(dtypes, allow_float32, eps, rtol, atol, what):
    names = {B.dtype_name(d) for d in dtypes}
    if names - {"float64", "float32"}:
        raise GradcheckError(f"{what}: arrays must be float64 to check, got {sorted(names)}")
    if "float32" in names and not allow_float32:
        raise GradcheckError(
            f"{what}: got float32 arrays. A central difference in float32 carries ~1e-4 relative "
            "rounding noise, enough to hide a 1% error in a backward pass, so the check runs in "
            "float64: use layer.to(dtype='float64') and x.astype(float64). Pass allow_float32=True "
            f"to check anyway with the loose float32 settings {TOLERANCES['float32']}.")
    dtype = "float32" if "float32" in names else "float64"
    tol = dict(TOLERANCES[dtype])
    for k, v in (("eps", eps), ("rtol", rtol), ("atol", atol)):
        if v is not None:
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 and (k != "eps" or v > 0)):
                raise GradcheckError(f"{what}: {k} must be a {'positive' if k == 'eps' else 'non-negative'} "
                                     f"number, got {v!r}")
            tol[k] = float(v)
    return tol, dtype


#: dy and the pre-fill are scaled by this in the second backward (its rounding differs)
_RESCALE = 1.0 + 2.0 ** -20


def _add_backward_rounding(layer, xs, fk, dys, multi_out, prefilled, targets, grad_names):
    """Add backward's own rounding error to each target's slack.

    A backward is linear in (dy, pre-fill) jointly, the right one and the usual wrong ones
    alike (an overwrite, a wrong factor), so a second backward with both scaled by
    c = 1 + 2^-20 must give c times the first: what differs is rounding. A backward that is
    affine or nonlinear in dy (a bug) differs by only ~(c - 1) = 1e-6 of its error, so the
    slack cannot hide it. Without this, a gradient that is zero in exact arithmetic but
    computed as rounding (a degenerate batch through BatchNorm) would be a false alarm.
    """
    by_name = {t.name: t for t in targets if not t.problem}
    try:
        for e, fills in prefilled:
            for (d, k), _, fill in fills:
                d[k][...] = _RESCALE * fill
        _clear(layer)
        layer.forward(*[_copy(x) for x in xs], **fk)
        scaled = [_RESCALE * d for d in dys]
        dx = layer.backward(*scaled) if multi_out else layer.backward(scaled[0])
    except Exception:          # a backward that cannot run twice: no estimate, no slack
        _clear(layer)
        return
    _clear(layer)
    again = {}
    if dx is not None:
        dxs = [dx] if len(grad_names) == 1 else (list(dx) if isinstance(dx, (tuple, list)) else [])
        for name, g in zip(grad_names, dxs):
            if _is_array(g):
                again[name] = B.to_numpy(g).astype("float64").ravel() / _RESCALE
    for e, fills in prefilled:
        total = 0.0
        for (d, k), _, fill in fills:
            total = total + (B.to_numpy(d[k]).astype("float64") - _RESCALE * B.to_numpy(fill)).ravel()
        again[e.name] = total / _RESCALE
    for name, t in by_name.items():
        if name not in again or t.analytic is None:
            continue
        first = B.to_numpy(t.analytic).astype("float64").ravel()
        if again[name].shape != first.shape:
            continue
        nu = B.host.abs(again[name] - first)
        t.slack = 4.0 * nu if t.slack is None else t.slack + 4.0 * nu


def _run(title, dtype, tol, targets, f, magnitude, dtypes, rng, mode, directions, nondet_tol,
         problems, notes):
    """Difference f() around the targets and build the report."""
    f0 = f()
    again = f()
    if not (math.isfinite(f0) and math.isfinite(again)):
        raise GradcheckError(f"{title}: the checked scalar is {f0} (NaN or inf): check at finite values")
    if abs(again - f0) > nondet_tol:
        raise GradcheckError(
            f"{title}: forward gives different values on identical inputs ({f0!r} then {again!r}), "
            "so finite differences mean nothing. Hold its noise fixed (e.g. forward_kwargs="
            "{'mask': m}, eps=..., or a freshly seeded rng per call).")
    report = GradcheckReport(title, dtype, tol["eps"], tol["rtol"], tol["atol"],
                             problems=list(problems), notes=list(notes))
    engine = Differencer(f, f0, magnitude, _unit_roundoff(dtypes), tol, rng, nondet_tol)
    report.noise = engine.measure_noise(targets)
    # where the numerical derivative is zero, backward's rounding of cancelling terms is judged
    # against the largest gradient of the check (differences.FLAT_FLOOR)
    largest = max([float(B.host.max(B.host.abs(B.to_numpy(t.analytic)), initial=0.0))
                   for t in targets if t.analytic is not None] + [0.0])
    engine.largest = largest
    scale = max(abs(f0), magnitude)
    if scale > 0 and report.noise > 1e-9 * scale and _unit_roundoff(dtypes) < 1e-12:
        report.notes.append(f"L is noisier than float64 rounding ({report.noise / scale:.1g} of its size, "
                            "where float64 gives ~1e-16): a float32 step inside forward, rounding "
                            "amplified by the layer, or a function that changes on a scale below the "
                            "step. The tolerance grew to match, so this check is weaker")
    for t in targets:
        shape = tuple(t.array.shape)
        if t.problem:
            report.rows.append(Row(t.name, shape, "-", status=FAILED, max_rel_err=math.inf, hint=t.problem))
            continue
        if size(shape) == 0:
            report.rows.append(Row(t.name, shape, "-", status=INCONCLUSIVE, hint="empty array"))
            continue
        use_dir = mode == "directional" or (mode == "auto" and size(shape) > MAX_ELEMENTWISE)
        report.rows.append(engine.directional(t, directions) if use_dir else engine.elementwise(t))
    if any(r.kinks for r in report.rows):
        report.notes.append("kinks and other non-differentiable points (ReLU at 0, a tie in a max, a "
                            "degenerate batch): entries whose one-sided differences disagree are not scored")
    return report


def _takes(fn, n) -> bool:
    """Whether ``fn`` can be called with n positional arguments (True when it cannot be told)."""
    import inspect
    try:
        inspect.signature(fn).bind(*([None] * n))
        return True
    except TypeError:
        return False
    except ValueError:
        return True


def _validate_seed(seed, what):
    import numbers
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise GradcheckError(f"{what}: seed must be a non-negative integer, got {seed!r}")


def _validate_mode(mode, directions, what):
    if mode not in ("auto", "elementwise", "directional"):
        raise GradcheckError(f"{what}: mode must be 'auto', 'elementwise' or 'directional', got {mode!r}")
    if not isinstance(directions, int) or directions < 1:
        raise GradcheckError(f"{what}: directions must be a positive integer, got {directions!r}")


# --- public checkers -------------------------------------------------------------------------

def check_layer(layer, *inputs, dy=None, seed: int = 0, forward_kwargs=None, check_input=True,
                params=None, mode: str = "auto", directions: int = 3, eps=None, rtol=None,
                atol=None, allow_float32: bool = False, nondet_tol: float = 0.0) -> GradcheckReport:
    """Check ``layer.backward``: its input gradient(s) and every reachable parameter gradient.

    Parameters
    ----------
    layer : Module
        In training mode (eval keeps no cache for backward), float64. Every parameter reachable
        from it is checked: its own, its children's (``0.W``, ``encoder.1.b``), and those of
        modules kept in attributes (a TiedLinear's tied layer); a shared array once.
    *inputs : arrays
        float64 input(s): ``check_layer(layer, x)`` or ``check_layer(layer, x1, x2)`` for a
        layer whose ``forward(x1, x2)`` returns y and whose ``backward(dy)`` returns
        ``(dx1, dx2)`` (an entry may be None for an input with no gradient). A forward that
        returns a tuple ``(y1, y2)`` gets ``backward(dy1, dy2)``. The layer only ever sees
        private copies; modifying them in place fails the check.
    dy : array or tuple, optional
        Upstream gradient(s); by default standard normal, from the checker's own stream.
    seed : int
        Seeds the checker's streams (dy, pre-fill, directions), kept apart from any
        ``Generator(seed)`` of yours, so dy never equals an x drawn with the same seed.
    forward_kwargs : dict, optional
        Extra forward arguments that hold noise fixed, e.g. ``{"mask": m}`` for Dropout.
    check_input : bool
        Also check the input gradient(s). A backward returning None (``Linear(...,
        input_grad=False)``) has no input gradient to check.
    params : list of str, optional
        Qualified names or prefixes of the parameters to check (default: all).
    mode : {"auto", "elementwise", "directional"}
        ``auto``: entry by entry up to ``MAX_ELEMENTWISE`` entries, else ``directions``
        random unit directions, a failing one localised to an entry by bisection.
    eps, rtol, atol : float, optional
        Relative step and the tolerance floors (defaults in ``TOLERANCES``).
    nondet_tol : float
        Allowed difference between two evaluations at the same point (0: deterministic).

    Returns
    -------
    GradcheckReport
        ``.verdict`` ("passed", "FAILED", "inconclusive"), ``.passed``; prints as a table.
    """
    what = f"check_layer({type(layer).__name__})"
    if isinstance(layer, Module) and hasattr(layer, "_modules"):
        try:
            what = f"check_layer({layer!r})"
        except Exception:          # a repr that needs attributes __init__ never set
            pass
    if not isinstance(layer, Module):
        raise GradcheckError(f"check_layer: the first argument must be a scratchae Module, got "
                             f"{type(layer).__name__}")
    if not all(hasattr(layer, a) for a in ("training", "params", "grads", "_modules")):
        raise GradcheckError(f"check_layer({type(layer).__name__}): the layer is not set up; call "
                             "super().__init__() first in its __init__")
    if not inputs:
        raise GradcheckError(f"{what}: give the input array(s): check_layer(layer, x)")
    for i, x in enumerate(inputs):
        _check_input_array(what, "x" if len(inputs) == 1 else f"input {i}", x)
    if not layer.training:
        raise GradcheckError(f"{what}: the layer is in eval mode, which keeps no cache for backward; "
                             "call layer.train() first")
    _validate_mode(mode, directions, what)
    _validate_seed(seed, what)
    fk = dict(forward_kwargs or {})
    entries = _parameters(layer, params, what)
    tol, dtype = _tolerances([x.dtype for x in inputs] + [e.array.dtype for e in entries],
                             allow_float32, eps, rtol, atol, what)
    streams = _streams(seed)
    state = _State(layer)
    input_names = ["x"] if len(inputs) == 1 else [f"input {i}" for i in range(len(inputs))]
    grad_names = ["dx"] if len(inputs) == 1 else [f"dx[{i}]" for i in range(len(inputs))]
    problems, notes = _sharing_problems(layer), []
    try:
        _clear(layer)
        xs = [_copy(x) for x in inputs]
        x_snap = [_host(x) for x in xs]
        p_snap = [(e, _host(e.array)) for e in entries]
        out = layer.forward(*xs, **fk)
        multi_out = isinstance(out, (tuple, list))
        outs = list(out) if multi_out else [out]
        out_names = ["y"] if not multi_out else [f"y[{i}]" for i in range(len(outs))]
        for name, o in zip(out_names, outs):
            if not _is_array(o):
                raise GradcheckError(f"{what}: forward returned {name} as a {type(o).__name__}, not an array")
            if not bool(B.host.all(B.host.isfinite(B.to_numpy(o)))):
                raise GradcheckError(f"{what}: forward output {name} contains NaN or inf at this input")
            if B.dtype_name(o.dtype) != B.dtype_name(inputs[0].dtype):
                problems.append(
                    f"forward returns {name} as {B.dtype_name(o.dtype)} for {B.dtype_name(inputs[0].dtype)} "
                    f"input: compute in the input's dtype (a float32 step adds ~1e-7 relative noise, "
                    f"which a float64 check cannot tell from a wrong gradient)")
        for name, x, snap in zip(input_names, xs, x_snap):
            n = _changed(snap, x)
            if n:
                problems.append(f"forward modifies its input {name} in place ({n} of {snap.size} entries "
                                f"changed): the caller's array would be overwritten; compute into a new "
                                f"array (y = x * m, not x *= m)")
        # upstream gradient(s)
        if dy is None:
            dys = [_draw(streams["dy"], o.shape, o) for o in outs]
        else:
            dys = list(dy) if isinstance(dy, (tuple, list)) else [dy]
            if len(dys) != len(outs):
                raise GradcheckError(f"{what}: dy has {len(dys)} array(s) but forward returned {len(outs)}")
            for name, d, o in zip(out_names, dys, outs):
                if not _is_array(d) or tuple(d.shape) != tuple(o.shape):
                    raise GradcheckError(f"{what}: dy for {name} has shape {tuple(getattr(d, 'shape', ()))}, "
                                         f"expected {tuple(o.shape)}")
            for name, d in zip(out_names, dys):
                host = B.to_numpy(d)
                if host.size > 1 and bool(B.host.all(host == host.reshape(-1)[0])):
                    notes.append(f"dy for {name} is constant: a backward that ignores dy (or sums it "
                                 "where it should not) would pass; leave dy=None for a random one")
                for iname, x in zip(input_names, inputs):
                    if tuple(d.shape) == tuple(x.shape) and _changed(_host(x), d) == 0:
                        notes.append(f"dy for {name} equals {iname}: a backward that confuses the two "
                                     "would pass; leave dy=None to draw an independent one")
        dyc = [_copy(d) for d in dys]
        dy_snap = [_host(d) for d in dyc]
        prefilled = _prefill(entries, streams["prefill"])
        if multi_out and not _takes(layer.backward, len(dyc)):
            raise GradcheckError(f"{what}: forward returned {len(dyc)} outputs, so backward is called as "
                                 f"backward({', '.join(f'dy{i + 1}' for i in range(len(dyc)))}); yours "
                                 "takes a different number of arguments")
        dx = layer.backward(*dyc) if multi_out else layer.backward(dyc[0])
        for name, d, snap in zip(out_names, dyc, dy_snap):
            n = _changed(snap, d)
            if n:
                problems.append(f"backward modifies its dy (for {name}) in place ({n} of {snap.size} "
                                "entries changed): the caller's gradient would be overwritten")
        for name, x, snap in zip(input_names, xs, x_snap):
            n = _changed(snap, x)
            if n and not any(name in p for p in problems):
                problems.append(f"backward modifies the input {name} in place (through its cache; "
                                f"{n} of {snap.size} entries changed)")
        problems += _after_backward(layer, p_snap)
        # the input gradient(s)
        targets = []
        if check_input and dx is None and not _declares_no_input_grad(layer):
            problems.append("backward returned None instead of dx: return the input gradient (or "
                            "pass check_input=False for a layer whose input takes no gradient)")
        if check_input and dx is not None:
            if len(inputs) == 1:
                dxs = [dx]
            elif isinstance(dx, (tuple, list)) and len(dx) == len(inputs):
                dxs = list(dx)
            else:
                got = f"a tuple of {len(dx)}" if isinstance(dx, (tuple, list)) else type(dx).__name__
                problems.append(f"backward returned {got}; a layer with {len(inputs)} inputs returns a "
                                f"tuple of {len(inputs)} gradients (None for an input without one)")
                dxs = [None] * len(inputs)
            for gname, iname, g, x in zip(grad_names, input_names, dxs, xs):
                if g is None and len(inputs) > 1:   # "no gradient": then L must not depend on it
                    xpx = B.namespace(x)
                    targets.append(Target(gname, x, xpx.zeros_like(x), None, "", none_given=True))
                    continue
                problem = _contract(gname, g, x, iname)
                targets.append(Target(gname, x, None if problem else _copy(g), None, problem))
        targets += _parameter_targets(prefilled, what)
        _add_backward_rounding(layer, xs, fk, dys, multi_out, prefilled, targets, grad_names)
        xp = B.namespace(outs[0])
        magnitude = sum(B.to_scalar(xp.sum(xp.abs(o * d))) for o, d in zip(outs, dys))

        def f():
            y = layer.forward(*[_copy(x) for x in xs], **fk)
            _clear(layer)
            ys = list(y) if multi_out else [y]
            return sum(B.to_scalar(B.namespace(o).sum(o * d)) for o, d in zip(ys, dys))

        dtypes = [x.dtype for x in inputs] + [e.array.dtype for e in entries] + [o.dtype for o in outs]
        report = _run(what[len("check_layer("):-1], dtype, tol, targets, f, magnitude, dtypes, streams["directions"],
                      mode, directions, nondet_tol, problems, notes)
    finally:
        state.restore()
    return report


def check_function(f, *inputs, wrt=(0,), seed: int = 0, mode: str = "auto", directions: int = 3,
                   eps=None, rtol=None, atol=None, allow_float32: bool = False, title=None,
                   nondet_tol: float = 0.0) -> GradcheckReport:
    """Check a function returning ``(value, grad_a, grad_b, ...)`` against finite differences.

    ``f(*inputs)`` returns the scalar value first, then one gradient per input named in
    ``wrt`` (positions), in that order: ``mse(pred, target) -> (value, dpred)`` fits with
    ``wrt=(0,)``; ``gaussian_nll(x, mean, logvar) -> (value, dmean, dlogvar)`` with ``wrt=(1, 2)``.
    ``f`` only ever sees private copies of the inputs; modifying them fails the check.
    """
    name = title or getattr(f, "__name__", "function")
    what = f"check_function({name})"
    if not callable(f):
        raise GradcheckError(f"check_function: the first argument must be a function, got {type(f).__name__}")
    if isinstance(wrt, int):
        wrt = (wrt,)
    wrt = tuple(wrt)
    if not inputs:
        raise GradcheckError(f"{what}: give the input array(s): check_function(f, a, b, wrt=(0,))")
    if not wrt or any(not isinstance(i, int) or not 0 <= i < len(inputs) for i in wrt) or len(set(wrt)) != len(wrt):
        raise GradcheckError(f"{what}: wrt={wrt} must name distinct input positions in 0..{len(inputs) - 1}")
    for i in wrt:
        _check_input_array(what, f"input {i}", inputs[i])
    _validate_mode(mode, directions, what)
    _validate_seed(seed, what)
    tol, dtype = _tolerances([inputs[i].dtype for i in wrt], allow_float32, eps, rtol, atol, what)
    copies = [_copy(a) if _is_array(a) else a for a in inputs]
    snaps = {i: _host(a) for i, a in enumerate(copies) if _is_array(a)}
    out = f(*copies)
    if not isinstance(out, (tuple, list)) or len(out) != 1 + len(wrt):
        got = len(out) if isinstance(out, (tuple, list)) else f"a {type(out).__name__}"
        raise GradcheckError(f"{what}: f returned {got} values; expected the value and {len(wrt)} "
                             f"gradient(s) for wrt={wrt}")
    value = out[0]
    if _is_array(value) and tuple(value.shape) != ():
        raise GradcheckError(f"{what}: the value must be a scalar, got an array of shape {tuple(value.shape)}")
    problems = []
    for i, snap in snaps.items():
        n = _changed(snap, copies[i])
        if n:
            problems.append(f"f modifies its input {i} in place ({n} of {snap.size} entries changed)")
            copies[i] = B.resolve(inputs[i]).asarray(snap, B.dtype_name(inputs[i].dtype))
    targets = []
    for j, i in enumerate(wrt):
        gname = f"d(input {i})"
        problem = _contract(gname, out[1 + j], copies[i], f"input {i}")
        targets.append(Target(gname, copies[i], None if problem else _copy(out[1 + j]), None, problem))

    def scalar():
        return B.to_scalar(f(*[_copy(a) if _is_array(a) else a for a in copies])[0])

    return _run(name, dtype, tol, targets, scalar, abs(B.to_scalar(value)),
                [inputs[i].dtype for i in wrt], _streams(seed)["directions"], mode, directions,
                nondet_tol, problems, [])


def check_objective(model, forward, backward, *, params=None, seed: int = 0, mode: str = "auto",
                    directions: int = 3, eps=None, rtol=None, atol=None,
                    allow_float32: bool = False, title=None, nondet_tol: float = 0.0) -> GradcheckReport:
    """Check a model objective: ``out = forward()`` then ``backward(out)`` fills ``model``'s grads.

    ``forward()`` must be deterministic (pass the noise in: ``lambda: vae.loss(x, eps=e)``)
    and return a scalar or an object with ``.value``. ``params``: qualified-name prefixes to
    check (default: every parameter reachable from ``model``), e.g. ``["encoder"]`` to check
    the generator objective of an adversarial autoencoder *through* its discriminator.
    """
    title = title or f"{type(model).__name__} objective"
    what = f"check_objective({title})"
    if not isinstance(model, Module):
        raise GradcheckError(f"check_objective: model must be a scratchae Module, got {type(model).__name__}")
    _validate_mode(mode, directions, what)
    _validate_seed(seed, what)
    entries = _parameters(model, params, what)
    if not entries:
        raise GradcheckError(f"{what}: the model has no parameters to check")
    tol, dtype = _tolerances([e.array.dtype for e in entries], allow_float32, eps, rtol, atol, what)
    streams = _streams(seed)
    state = _State(model)
    problems = _sharing_problems(model)
    try:
        _clear(model)
        p_snap = [(e, _host(e.array)) for e in entries]
        prefilled = _prefill(entries, streams["prefill"])
        out = forward()
        value = B.to_scalar(getattr(out, "value", out))
        backward(out)
        problems += _after_backward(model, p_snap)
        targets = _parameter_targets(prefilled, what)

        def f():
            o = forward()
            _clear(model)
            return B.to_scalar(getattr(o, "value", o))

        report = _run(title, dtype, tol, targets, f, abs(value), [e.array.dtype for e in entries],
                      streams["directions"], mode, directions, nondet_tol, problems, [])
    finally:
        state.restore()
    return report


def numerical_gradient(f, x, eps: float = 1e-6):
    """Central-difference gradient of a scalar function ``f(x)``, entry by entry.

    ``f`` takes an array shaped like ``x`` and returns a scalar (Python float or 0-d
    array). ``x`` is not modified (a copy is perturbed). Returns an array on x's device.
    """
    xc = _copy(x)
    shape = tuple(x.shape)
    values = []
    for i in range(size(shape)):
        idx = unravel(i, shape)
        old = float(xc[idx])
        xc[idx] = old + eps
        fp = B.to_scalar(f(_copy(xc)))
        xc[idx] = old - eps
        fm = B.to_scalar(f(_copy(xc)))
        xc[idx] = old
        values.append((fp - fm) / (2 * eps))
    host = B.host.asarray(values, dtype="float64").reshape(shape)
    return B.resolve(x).asarray(host, B.dtype_name(x.dtype))

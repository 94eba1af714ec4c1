"""The module tree a check covers: every reachable parameter, its gradient slots, saved state."""
from __future__ import annotations

from .. import backend as B
from ..module import Module
from .contracts import GradcheckError, _changed, _contract, _copy, _draw, _host, _is_array
from .differences import Target


def _reachable_modules(root):
    """(qualified name, module) for every module reachable from ``root``, each once.

    Registered children first (``encoder.0``), then modules kept in plain attributes, lists,
    tuples or dicts (a TiedLinear's ``tied`` layer, ``self.blocks = [...]``).
    """
    out, seen = [], set()

    def visit(prefix, m):
        if id(m) in seen:
            return
        seen.add(id(m))
        out.append((prefix, m))
        join = (lambda n: f"{prefix}.{n}" if prefix else str(n))
        for name, child in m.children():
            visit(join(name), child)
        for name, value in vars(m).items():
            if name.startswith("_") or name in ("params", "grads", "buffers"):
                continue
            if isinstance(value, Module):
                visit(join(name), value)
            elif isinstance(value, (list, tuple)):
                for i, v in enumerate(value):
                    if isinstance(v, Module):
                        visit(join(f"{name}.{i}"), v)
            elif isinstance(value, dict):
                for k, v in value.items():
                    if isinstance(v, Module):
                        visit(join(f"{name}.{k}"), v)

    visit("", root)
    return out


class _Param:
    """One parameter array, reachable under one or more names, with its gradient slot(s)."""

    def __init__(self, name, array):
        self.name, self.array = name, array
        self.aliases = []
        self.slots = []          # (grads dict, key): distinct gradient arrays that add up

    def grad_arrays(self):
        seen, out = set(), []
        for d, k in self.slots:
            g = d[k]
            if id(g) not in seen:
                seen.add(id(g))
                out.append(g)
        return out


def _parameters(root, select, what):
    """Every parameter reachable from ``root`` (shared arrays once), filtered by ``select``."""
    found, by_id = [], {}
    for prefix, m in _reachable_modules(root):
        if not isinstance(m.params, dict):
            raise GradcheckError(f"{what}: {m!r}.params must be a dict of arrays")
        for k, p in m.params.items():
            name = f"{prefix}.{k}" if prefix else k
            if not _is_array(p):
                raise GradcheckError(f"{what}: parameter '{name}' is a {type(p).__name__}, not an array")
            if k not in m.grads:
                raise GradcheckError(
                    f"{what}: parameter '{name}' has no grads entry; register parameters with "
                    f"self.add_param('{k}', value), which creates grads['{k}'] beside it")
            if id(p) in by_id:
                entry = by_id[id(p)]
                entry.aliases.append(name)
            else:
                entry = by_id[id(p)] = _Param(name, p)
                found.append(entry)
            if all(d is not m.grads or kk != k for d, kk in entry.slots):
                entry.slots.append((m.grads, k))
    if select is not None:
        select = [select] if isinstance(select, str) else list(select)
        chosen = [e for e in found
                  if any(n == s or n.startswith(s + ".") for n in [e.name] + e.aliases for s in select)]
        if not chosen:
            raise GradcheckError(f"{what}: no parameter matches {select}; parameters: "
                                 f"{[e.name for e in found]}")
        found = chosen
    return found


class _State:
    """Buffers and gradients of every reachable module, saved so a check changes nothing."""

    def __init__(self, root):
        self.saved = []
        for _, m in _reachable_modules(root):
            self.saved.append((m, {k: _copy(v) for k, v in m.buffers.items() if _is_array(v)},
                               {k: (m.grads[k], _copy(m.grads[k])) for k in list(m.grads)
                                if _is_array(m.grads[k])}))

    def restore(self):
        for m, bufs, grads in self.saved:
            m.clear_cache()
            m.buffers.update(bufs)
            for k, (array, values) in grads.items():   # the original arrays, even if replaced
                array[...] = values
                m.grads[k] = array


def _prefill(entries, rng):
    """Random values in every gradient slot; returns (entry, [(slot, original array, fill)]).

    Slots holding the same array share one fill and count once. After backward the analytic
    gradient of a slot is ``grads[k] - fill``, even if backward replaced the array (``=``
    instead of ``+=``): then the fill is lost and the difference is wrong, as it should be.
    """
    out = []
    for e in entries:
        fills, by_id = [], {}
        for d, k in e.slots:
            g = d[k]
            if id(g) not in by_id:
                by_id[id(g)] = _draw(rng, g.shape, g)
                g[...] = by_id[id(g)]
                fills.append(((d, k), g, by_id[id(g)]))
        out.append((e, fills))
    return out


def _parameter_targets(prefilled, what):
    targets = []
    for e, fills in prefilled:
        problem = ""
        for (d, k), _, _ in fills:
            problem = _contract(e.name, d[k], e.array, f"parameter '{e.name}'")
            if problem:
                break
        if problem:
            targets.append(Target(e.name, e.array, None, None, problem))
            continue
        analytic, slack = None, 0.0
        u = float(B.host.finfo(B.dtype_name(e.array.dtype)).eps) / 2
        for (d, k), _, fill in fills:
            contribution = d[k] - fill
            analytic = contribution if analytic is None else analytic + contribution
            # grads = fill + g rounds to u * (|fill| + |grads|): what subtracting the fill can recover
            slack = slack + 4 * u * (B.host.abs(_host(fill)) + B.host.abs(_host(d[k]))).ravel()
        raw = _host(fills[0][0][0][fills[0][0][1]]).astype("float64").ravel() if len(fills) == 1 else None
        targets.append(Target(e.name, e.array, analytic, raw, slack=slack))
    return targets


def _clear(root):
    """Discard pending caches of every module reachable from root (lists and dicts too)."""
    for _, m in _reachable_modules(root):
        m.clear_cache()


def _declares_no_input_grad(layer) -> bool:
    """A Linear(..., input_grad=False), alone or the first layer with parameters in a
    Sequential, returns no dx on purpose."""
    while True:
        if getattr(layer, "input_grad", True) is False:
            return True
        inner = getattr(layer, "layers", None)
        if not isinstance(inner, (list, tuple)) or not inner:
            return False
        learning = [m for m in inner if next(iter(m.named_parameters()), None) is not None]
        layer = learning[0] if learning else inner[0]


def _after_backward(root, p_snap):
    """Problems left by forward + backward: parameters changed in place (restored here), and
    modules whose forward cache still waits (the chain rule stopped before them)."""
    problems = []
    for e, snap in p_snap:
        n = _changed(snap, e.array)
        if n:
            problems.append(f"forward or backward modifies parameter '{e.name}' in place "
                            f"({n} entries changed); only the optimizer may")
            e.array[...] = B.resolve(e.array).asarray(snap, B.dtype_name(e.array.dtype))
    stuck = [m.label for _, m in _reachable_modules(root) if m.has_cache]
    if stuck:
        problems.append(f"backward never reached {', '.join(stuck)} (its forward cache is still "
                        "waiting): the chain rule stops early")
    _clear(root)
    return problems


def _sharing_problems(root):
    """Ways of sharing a parameter that an optimizer gets wrong (each is a FAILED check).

    * A params dict shared by two modules with two grads dicts: ``Module.parameter_slots``
      lists the dict once, under the first module, so the gradient the second one writes is
      never read by an optimizer. Share the grads dict too, or write into the owner's.
    * Two parameters that are views of one buffer (``add_param("Wt", W.T)``): perturbing one
      moves the other, and an optimizer would update the memory twice.
    """
    problems, owners, arrays = [], {}, []
    for prefix, m in _reachable_modules(root):
        name = prefix or type(m).__name__
        seen = owners.get(id(m.params))
        if seen is None:
            owners[id(m.params)] = (name, id(m.grads))
        elif seen[1] != id(m.grads) and m.params:
            problems.append(f"'{name}' shares the params dict of '{seen[0]}' but writes its gradients into "
                            f"a grads dict of its own, which an optimizer never reads (it lists "
                            f"'{seen[0]}'s): share the grads dict too ({name}.grads = {seen[0]}.grads)")
        for k, p in m.params.items():
            arrays.append((f"{prefix}.{k}" if prefix else k, p))
    hosts = [(n, p) for n, p in arrays if type(p) is B.host.ndarray]
    distinct = list({id(p): (n, p) for n, p in hosts}.values())
    if len(distinct) <= 256:
        for i, (n1, p1) in enumerate(distinct):
            for n2, p2 in distinct[i + 1:]:
                if B.host.shares_memory(p1, p2):
                    problems.append(f"parameters '{n1}' and '{n2}' share memory (one is a view of the "
                                    "other): perturbing one moves both, and an optimizer would update "
                                    "it twice; register one array and use its transpose in forward")
    return problems

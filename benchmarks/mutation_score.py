"""How strong is the gradient checker? A mutation score over every built-in backward pass.

Mutation testing plants one small bug at a time (a *mutant*) in code whose tests we want
to judge, and counts how many of them the tests notice. Here the "test" is the public
gradient checker, ``scratchae.gradcheck.check_layer`` / ``check_function``, run the way a
user runs it, and the code is every hand-written backward pass of scratchae::

    mutation score = caught mutants / non-equivalent mutants

What is mutated
    The ``backward`` of every built-in layer (``scratchae/layers.py`` and
    ``stochastic.SoftClamp`` / ``GaussianSample``), and the gradient part of every function
    returning ``(value, grad, ...)``: ``mse``, ``bce_with_logits``, ``gaussian_nll``,
    ``softmax_cross_entropy``, ``gaussian_kl``, ``gaussian_kl_between``. The BCE case runs on
    ``array_api_strict`` arrays, where no fast path applies, so the reference
    ``bce_with_logits`` computes the gradient (its ``fast.replaceable`` decorator is left
    out of the mutant).

    Rule for functions: a mutation of the *value* changes the function, not its backward,
    so it is not a backward bug. Only these nodes are mutated: the return's gradient
    elements (all but element 0), and the right-hand sides of assignments whose names flow
    (transitively) into gradient elements and never into the value. A statement that
    feeds both (``diff = pred - target`` in ``mse``) is left alone. For layers every
    expression flowing into the returned ``dx`` or into ``grads[k] +=`` is fair game;
    shape checks (``check_dy``) are not.

Operators (each mutant is exactly one change)
    binop      ``+ <-> -``, ``* <-> /``, ``** -> *``
    sign       a gradient expression negated; a unary minus removed
    constant   a non-zero number times (1 + delta) and (1 - delta)
    swap       operands of ``-``, ``/``, ``@`` (and of ``grads.add_matmul``), ``where`` branches
    drop       ``a + b -> a | b``, ``a - b -> a | -b``, ``a * b -> a | b``, ``a / b -> a``
    transpose  a ``.T`` removed, or added to an operand of ``@`` / ``add_matmul`` / ``reshape``
    axis       ``axis=0 -> 1 | -1 | None`` and the like; ``keepdims`` flipped
    overwrite  ``x += v -> x = v`` (``grads[k] += v -> grads[k] = v``);
               other augmented operators swapped (``-= <-> +=``, ``*= <-> /=``)
    variable   a variable replaced by another array variable already in scope

Each mutant is compiled from the mutated AST into a copy of its module's globals (so every
name resolves as in the module) and installed on a subclass (methods) or called through
that namespace (functions; a caller named as ``entry`` is compiled into the same namespace
so that it calls the mutant).

Equivalence
    Original and mutant run on ``--trials`` cases (different shapes, square and non-square
    weights, random ``dy``, pre-filled ``grads``, constructor arguments). If every output
    (``dx`` and every ``grads`` entry, or every returned array) agrees to 1e-12 relative on
    every case, the mutant is *equivalent* (``y * y`` vs ``y ** 2``-style rewrites, or
    changes dead on these inputs) and is left out of the score. A mutant that raises on
    every case *crashes*: counted as caught, reported apart. One that raises on some cases
    only is checked like any other and listed apart.

Checking
    For each non-equivalent mutant the checker runs on up to ``--checks`` cases (case 0 is
    the plain one a user writes first), stopping at the first that flags it. The cases tried
    first are those where the mutant's gradients differ from the original's (a bug in a branch
    only some inputs take, such as BCE's float32-target branch, is checked on those inputs),
    then those where it ran, then those where it raised. Caught = the
    report is not ``passed``, or the check raised. Where reports carry a ``verdict``, the
    caught ones whose verdict is not a plain failure ("inconclusive") are listed apart.

    python benchmarks/mutation_score.py [--delta 0.01] [--seed 0] [--json out.json]
"""
from __future__ import annotations

import __future__
import argparse
import ast
import copy
import inspect
import json
import os
import sys
import textwrap
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
try:
    import scratchae  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(1, os.path.dirname(HERE))

import _mutation_cases as cases  # noqa: E402

EQUIV_RTOL = 1e-12
GRAD_METHODS = ("add", "add_matmul")
#: calls whose statements are bookkeeping, not gradient math: never mutated
SKIP_CALLS = ("check_dy", "pop_cache", "namespace", "fast_path", "_same_shape", "len")
#: calls that never return one of the arrays a gradient is made of
NON_ARRAY_CALLS = ("check_dy", "namespace", "fast_path", "_same_shape", "len")


# --- analysing a function: which nodes are gradient code ------------------------------------

def _loaded_names(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _target_names(target):
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_target_names(t) for t in target.elts))
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return set()


def _call_name(node):
    if isinstance(node, ast.Call):
        f = node.func
        return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
    return None


def _is_grads_update(node):
    """``<...>.grads[key] += value``: a parameter gradient accumulated."""
    return (isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Subscript)
            and isinstance(node.target.value, ast.Attribute) and node.target.value.attr == "grads")


def _is_grads_call(node):
    """``<...>.grads.add(key, value)`` or ``<...>.grads.add_matmul(key, a, b)``."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in GRAD_METHODS and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "grads")


@dataclass
class Assignment:
    stmt: ast.stmt
    defines: set
    uses: set
    top_level: bool


class GradientCode:
    """Which parts of a function compute gradients, and which names are arrays.

    value_first: the function returns ``(value, grad, ...)`` (losses) rather than only
    gradients (a layer's backward).
    """

    def __init__(self, fdef: ast.FunctionDef, value_first: bool):
        self.fdef = fdef
        self.assignments = []
        value_exprs, self.grad_roots, self.stmt_roots = [], [], []
        top = set(map(id, fdef.body))
        for node in ast.walk(fdef):
            if isinstance(node, ast.Return) and node.value is not None:
                elts = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                if value_first:
                    value_exprs.append(elts[0])
                    elts = elts[1:]
                self.grad_roots += [e for e in elts if not (isinstance(e, ast.Constant) and e.value is None)]
            elif isinstance(node, ast.Expr) and _is_grads_call(node.value):
                self.grad_roots += node.value.args[1:]
                self.stmt_roots.append(node)
            elif _is_grads_update(node):
                self.grad_roots.append(node.value)
                self.stmt_roots.append(node)
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                defines = set().union(*(_target_names(t) for t in targets))
                uses = _loaded_names(node.value) if node.value is not None else set()
                if isinstance(node, ast.AugAssign):
                    uses |= defines
                self.assignments.append(Assignment(node, defines, uses, id(node) in top))
        self.value_names = self._closure(value_exprs)
        self.grad_names = self._closure(self.grad_roots)
        for a in self.assignments:
            if self._gradient_only(a):
                self.stmt_roots.append(a.stmt)
        self.region = set()
        for root in self.grad_roots + self.stmt_roots:
            body = root.value if isinstance(root, (ast.Assign, ast.AnnAssign)) else root
            self.region |= {id(n) for n in ast.walk(body)}
        self.sign_roots = {id(r) for r in self.grad_roots}
        self.sign_roots |= {id(s.value) for s in self.stmt_roots if isinstance(s, ast.Assign)}
        self.protected = self._protected()
        self.pool = self._array_names()

    def _closure(self, exprs):
        names = set().union(*(_loaded_names(e) for e in exprs)) if exprs else set()
        grew = True
        while grew:
            grew = False
            for a in self.assignments:
                if a.defines & names and not a.uses <= names:
                    names |= a.uses
                    grew = True
        return names

    def _gradient_only(self, a):
        if not a.defines or not a.defines <= self.grad_names or a.defines & self.value_names:
            return False
        return _call_name(a.stmt.value) not in SKIP_CALLS

    def _protected(self):
        """Nodes no operator touches: subscripts, keyword values (axis=, dtype=), check calls."""
        out = set()
        for node in ast.walk(self.fdef):
            if isinstance(node, ast.Subscript):
                out |= {id(n) for n in ast.walk(node.slice)}
            elif isinstance(node, ast.keyword):
                out |= {id(n) for n in ast.walk(node.value)}
            elif _call_name(node) in SKIP_CALLS:
                out |= {id(n) for n in ast.walk(node)}
        return out

    def _array_names(self):
        """name -> line from which it is in scope: parameters and top-level locals holding arrays
        (not the namespace ``xp``, not sizes or shapes), that gradient code reads."""
        shapes = set()
        for node in ast.walk(self.fdef):
            if _call_name(node) in ("check_dy", "reshape") and len(node.args) >= 2:
                arg = node.args[1]
                for e in (arg.elts if isinstance(arg, ast.Tuple) else [arg]):
                    e = e.value if isinstance(e, (ast.Subscript, ast.Starred)) else e
                    if isinstance(e, ast.Name):
                        shapes.add(e.id)
        pool = {a.arg: 0 for a in self.fdef.args.args if a.arg != "self"}
        for a in self.assignments:
            if not a.top_level or a.defines & shapes:
                continue
            rhs = list(ast.walk(a.stmt.value))
            if any((isinstance(n, ast.Attribute) and n.attr == "shape")
                   or _call_name(n) in NON_ARRAY_CALLS for n in rhs):
                continue
            for name in a.defines & self.grad_names:
                pool.setdefault(name, a.stmt.lineno)
        return {k: v for k, v in pool.items() if k not in shapes}

    def mutable(self, node):
        return id(node) in self.region and id(node) not in self.protected


# --- operators: each yields (label, build), build(copied node) -> replacement node -----------

SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.MatMult: "@"}
BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult}
NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.MatMult)


def _sym(op):
    return SYMBOL.get(type(op), type(op).__name__)


def op_binop(node, code):
    if isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAPS:
        new = BINOP_SWAPS[type(node.op)]
        yield "binop", f"{_sym(node.op)} -> {_sym(new())}", lambda n: ast.BinOp(n.left, new(), n.right)


def op_sign(node, code):
    if id(node) in code.sign_roots:
        yield "sign", "negated", lambda n: ast.UnaryOp(ast.USub(), n)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        yield "sign", "unary - removed", lambda n: n.operand


def op_constant(node, code, delta):
    if (isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool) and node.value != 0):
        for factor in (1 + delta, 1 - delta):
            value = node.value * factor
            yield "constant", f"{node.value!r} -> {value:.6g}", lambda n, v=value: ast.Constant(v)


def op_swap(node, code):
    if isinstance(node, ast.BinOp) and isinstance(node.op, NON_COMMUTATIVE):
        yield "swap", f"a {_sym(node.op)} b -> b {_sym(node.op)} a", lambda n: ast.BinOp(n.right, n.op, n.left)
    if _is_grads_call(node) and node.func.attr == "add_matmul" and len(node.args) == 3:
        yield "swap", "add_matmul(k, a, b) -> (k, b, a)", lambda n: ast.Call(
            n.func, [n.args[0], n.args[2], n.args[1]], n.keywords)
    if _call_name(node) == "where" and len(node.args) == 3:
        yield "swap", "where branches swapped", lambda n: ast.Call(
            n.func, [n.args[0], n.args[2], n.args[1]], n.keywords)


def op_drop(node, code):
    if not isinstance(node, ast.BinOp):
        return
    s = _sym(node.op)
    if isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        yield "drop", f"a {s} b -> a", lambda n: n.left
    if isinstance(node.op, (ast.Add, ast.Mult)):
        yield "drop", f"a {s} b -> b", lambda n: n.right
    if isinstance(node.op, ast.Sub):
        yield "drop", "a - b -> -b", lambda n: ast.UnaryOp(ast.USub(), n.right)


def _transposed(n):
    return ast.Attribute(n, "T", ast.Load())


def _is_T(n):
    return isinstance(n, ast.Attribute) and n.attr == "T"


def op_transpose(node, code):
    if _is_T(node) and isinstance(node.ctx, ast.Load):
        yield "transpose", ".T removed", lambda n: n.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        if not _is_T(node.left):
            yield "transpose", ".T added to left of @", lambda n: ast.BinOp(_transposed(n.left), n.op, n.right)
        if not _is_T(node.right):
            yield "transpose", ".T added to right of @", lambda n: ast.BinOp(n.left, n.op, _transposed(n.right))
    positions = ()
    if _is_grads_call(node) and node.func.attr == "add_matmul":
        positions = (1, 2)
    elif _call_name(node) == "reshape" and node.args:
        positions = (0,)
    for i in positions:
        if i < len(node.args) and not _is_T(node.args[i]):
            def build(n, i=i):
                args = list(n.args)
                args[i] = _transposed(args[i])
                return ast.Call(n.func, args, n.keywords)
            yield "transpose", f".T added to argument {i} of {_call_name(node)}", build


AXIS_CHANGES = {0: (1, -1, None), 1: (0, None), -1: (0, None), None: (0,)}


def _constant_of(expr):
    if isinstance(expr, ast.Constant):
        return True, expr.value
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub) and isinstance(expr.operand, ast.Constant):
        return True, -expr.operand.value
    return False, None


def op_axis(node, code):
    if not isinstance(node, ast.Call):
        return
    for j, kw in enumerate(node.keywords):
        known, value = _constant_of(kw.value)
        if not known:
            continue
        if kw.arg == "axis" and value in AXIS_CHANGES:
            for new in AXIS_CHANGES[value]:
                yield "axis", f"axis={value} -> {new}", _keyword_setter(j, new)
        elif kw.arg == "keepdims" and isinstance(value, bool):
            yield "axis", f"keepdims={value} -> {not value}", _keyword_setter(j, not value)


def _keyword_setter(j, value):
    def build(n):
        kws = list(n.keywords)
        kws[j] = ast.keyword(kws[j].arg, ast.Constant(value))
        return ast.Call(n.func, n.args, kws)
    return build


AUG_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}


def op_overwrite(node, code):
    if isinstance(node, ast.AugAssign):
        s = _sym(node.op)
        yield "overwrite", f"{s}= -> =", lambda n: ast.Assign([_as_store(n.target)], n.value)
        if type(node.op) in AUG_SWAPS:
            new = AUG_SWAPS[type(node.op)]
            yield "overwrite", f"{s}= -> {_sym(new())}=", lambda n: ast.AugAssign(n.target, new(), n.value)
    if isinstance(node, ast.Expr) and _is_grads_call(node.value):
        def build(n):
            call = n.value
            slot = ast.Subscript(ast.Subscript(call.func.value, call.args[0], ast.Load()),
                                 ast.Constant(Ellipsis), ast.Store())
            value = call.args[1] if call.func.attr == "add" else ast.BinOp(call.args[1], ast.MatMult(), call.args[2])
            return ast.Assign([slot], value)
        yield "overwrite", f"grads.{node.value.func.attr}(k, ...) -> grads[k][...] = ...", build


def _as_store(target):
    t = copy.deepcopy(target)
    t.ctx = ast.Store()
    return t


def op_variable(node, code, line_of):
    if not (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in code.pool):
        return
    here = line_of.get(id(node), 0)
    for other, since in sorted(code.pool.items()):
        if other != node.id and since < here:
            yield "variable", f"{node.id} -> {other}", lambda n, o=other: ast.Name(o, ast.Load())


# --- building mutants ------------------------------------------------------------------------

@dataclass
class Mutant:
    target: str
    number: int
    operator: str
    change: str
    line: int
    original: str
    mutated: str
    tree: object = field(repr=False, default=None)


def _function_tree(func):
    lines, first = inspect.getsourcelines(func)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    ast.increment_lineno(tree, first - 1)
    tree.body[0].decorator_list = []     # a fast-path dispatcher (fast.replaceable) stays out
    return tree


def _statement_lines(tree):
    """id(node) -> line of the simple statement it belongs to."""
    out = {}
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.stmt) and not hasattr(stmt, "body"):
            for n in ast.walk(stmt):
                out[id(n)] = stmt.lineno
    return out


def _replace(root, old, new):
    """Put ``new`` where ``old`` is under ``root``; return the simple statement now holding it."""
    def visit(node, stmt):
        for name, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            for i, child in enumerate(children):
                if not isinstance(child, ast.AST):
                    continue
                if child is old:
                    if isinstance(value, list):
                        value[i] = new
                    else:
                        setattr(node, name, new)
                    return new if isinstance(new, ast.stmt) else stmt
                inner = child if isinstance(child, ast.stmt) else stmt
                found = visit(child, inner)
                if found is not None:
                    return found
        return None
    return visit(root, None)


def mutants_of(target, delta):
    """Every distinct one-change mutant of the target's gradient code, in source order."""
    func = target.source
    tree = _function_tree(func)
    fdef = tree.body[0]
    code = GradientCode(fdef, target.value_first)
    line_of = _statement_lines(tree)
    with open(inspect.getsourcefile(func)) as fh:
        source_lines = fh.read().splitlines()
    original_text = ast.unparse(fdef)
    seen, found = {original_text}, []
    for node in ast.walk(fdef):
        if not (code.mutable(node) or (isinstance(node, ast.stmt) and node in code.stmt_roots)):
            continue
        generators = [op_binop(node, code), op_sign(node, code), op_constant(node, code, delta),
                      op_swap(node, code), op_drop(node, code), op_transpose(node, code),
                      op_axis(node, code), op_overwrite(node, code), op_variable(node, code, line_of)]
        for gen in generators:
            for operator, change, build in gen:
                memo = {}
                new_tree = copy.deepcopy(tree, memo)
                old = memo[id(node)]
                new = ast.copy_location(build(old), old)
                stmt = _replace(new_tree, old, new)
                ast.fix_missing_locations(new_tree)
                text = ast.unparse(new_tree.body[0])
                if text in seen:
                    continue
                seen.add(text)
                line = getattr(stmt, "lineno", node.lineno if hasattr(node, "lineno") else fdef.lineno)
                end = getattr(stmt, "end_lineno", line) or line
                original = " ".join(s.strip() for s in source_lines[line - 1:end])
                found.append(Mutant(target.name, 0, operator, change, line, original,
                                    ast.unparse(stmt) if stmt is not None else text, new_tree))
    found.sort(key=lambda m: m.line)
    for i, m in enumerate(found):
        m.number = i + 1
    return found


def compile_mutant(target, tree):
    """The namespace holding the mutated function: a copy of the module's globals."""
    ns = dict(vars(target.module))
    flags = __future__.annotations.compiler_flag
    exec(compile(tree, target.module.__file__, "exec", flags=flags, dont_inherit=True), ns)
    for name in target.recompile:  # callers of the mutated function, re-bound to it
        exec(compile(_function_tree(getattr(target.module, name)), target.module.__file__, "exec",
                     flags=flags, dont_inherit=True), ns)
    return ns


# --- running ---------------------------------------------------------------------------------

def compare(reference, outputs):
    """(identical to EQUIV_RTOL, largest relative difference) of two output lists."""
    if [n for n, _ in reference] != [n for n, _ in outputs]:
        return False, float("inf")
    worst = 0.0
    for (_, a), (_, b) in zip(reference, outputs):
        if a is None or b is None:
            if a is not b:
                return False, float("inf")
            continue
        if a.shape != b.shape:
            return False, float("inf")
        with np.errstate(all="ignore"):
            diff = np.abs(a - b)
            scale = np.maximum(np.abs(a), np.abs(b))
            if not np.all(np.isfinite(b)) and not np.array_equal(a, b, equal_nan=True):
                return False, float("inf")
            rel = np.where(diff == 0, 0.0, diff / np.where(scale == 0, 1.0, scale))
        worst = max(worst, float(np.max(rel, initial=0.0)))
    return worst <= EQUIV_RTOL, worst


@dataclass
class Result:
    target: str
    number: int
    operator: str
    change: str
    line: int
    original: str
    mutated: str
    status: str = ""             # equivalent | crashes | caught | survived
    raised_on: list = field(default_factory=list)   # equivalence cases where the mutant raised
    max_rel_change: float = 0.0  # largest relative change of a gradient over the cases
    caught_by: str = ""          # "report", "report (<verdict>)" or "raised <Error>"
    caught_on_try: int = 0       # 1 = the first check flagged it
    verdict: str | None = None
    checker_worst_rel: float | None = None


def _worst_rel(report):
    values = [getattr(r, "max_rel_err", None) for r in getattr(report, "rows", [])]
    values = [v for v in values if isinstance(v, (int, float))]
    return max(values) if values else None


def judge(target, mutant, references, seed, checks):
    r = Result(mutant.target, mutant.number, mutant.operator, mutant.change, mutant.line,
               mutant.original, mutant.mutated)
    try:
        ns = compile_mutant(target, mutant.tree)
    except Exception as err:  # a mutant that does not even compile
        r.status, r.caught_by = "crashes", f"compile: {type(err).__name__}"
        return r
    differs_on, same_on = [], []
    for k, ref in enumerate(references):
        try:
            out = target.outputs(ns, k, seed)
        except Exception:
            r.raised_on.append(k)
            continue
        same, rel = compare(ref, out)
        (same_on if same else differs_on).append(k)
        r.max_rel_change = max(r.max_rel_change, rel)
    same_all = not differs_on
    if len(r.raised_on) == len(references):
        r.status, r.caught_by = "crashes", "raised on every case"
        return r
    if same_all and not r.raised_on:
        r.status = "equivalent"
        return r
    r.status = "survived"
    # the question is whether the checker flags a wrong gradient: cases where the mutant ran
    # and gave other gradients come first, then those where it ran, then those where it raised
    order = differs_on + same_on + r.raised_on
    for attempt, k in enumerate(order[:checks]):
        try:
            report = target.check(ns, k, seed)
        except Exception as err:
            r.status, r.caught_by, r.caught_on_try = "caught", f"raised {type(err).__name__}", attempt + 1
            return r
        r.verdict = getattr(report, "verdict", None)
        r.checker_worst_rel = _worst_rel(report)
        if not report.passed:
            r.status, r.caught_on_try = "caught", attempt + 1
            r.caught_by = "report" if r.verdict is None else f"report ({r.verdict})"
            return r
    return r


def baseline(target, seed, checks):
    """The shipped code must pass every check case, or caught counts mean nothing."""
    bad = []
    for k in range(checks):
        try:
            if not target.check(None, k, seed).passed:
                bad.append(f"case {k}: report not passed")
        except Exception as err:
            bad.append(f"case {k}: {type(err).__name__}: {err}")
    return bad


def run_target(target, args):
    references = [target.outputs(None, k, args.seed) for k in range(args.trials)]
    problems = baseline(target, args.seed, args.checks)
    results = [judge(target, m, references, args.seed, args.checks) for m in mutants_of(target, args.delta)]
    return results, problems


def is_inconclusive(r):
    return r.status == "caught" and r.verdict is not None and "fail" not in str(r.verdict).lower()


def summarise(name, results, problems):
    count = lambda s: sum(r.status == s for r in results)  # noqa: E731
    caught, crashes, survived, eq = count("caught"), count("crashes"), count("survived"), count("equivalent")
    return {
        "target": name, "mutants": len(results), "equivalent": eq, "crashing": crashes,
        "non_equivalent": caught + crashes + survived, "caught": caught + crashes,
        "caught_first_try": sum(r.caught_on_try == 1 for r in results),
        "sometimes_crashing": sum(bool(r.raised_on) and r.status != "crashes" for r in results),
        "inconclusive": sum(map(is_inconclusive, results)), "baseline_problems": problems,
    }


def _fmt(x):
    return "-" if x is None else f"{x:.1e}"


def print_report(summaries, results, elapsed, out=sys.stdout):
    w = max(len(s["target"]) for s in summaries)
    print("mutation score of the gradient checker (caught / non-equivalent)\n", file=out)
    for s in summaries:
        line = (f"{s['target']:<{w}}: {s['caught']}/{s['non_equivalent']} "
                f"(equivalent {s['equivalent']}, crashing {s['crashing']}")
        extra = [f"{s[k]} {k.replace('_', ' ')}" for k in ("sometimes_crashing", "inconclusive") if s[k]]
        line += "".join(", " + e for e in extra) + f"; first try {s['caught_first_try']})"
        if s["baseline_problems"]:
            line += f"  !! original fails its own checks: {'; '.join(s['baseline_problems'])}"
        print(line, file=out)
    caught = sum(s["caught"] for s in summaries)
    total = sum(s["non_equivalent"] for s in summaries)
    first = sum(s["caught_first_try"] for s in summaries)
    crashes = sum(s["crashing"] for s in summaries)
    score = 100.0 * caught / total if total else float("nan")
    print(f"\nscore: {caught}/{total} = {score:.1f}%  ({crashes} by crashing; {first} of the "
          f"{caught - crashes} others on the first check; "
          f"{sum(s['equivalent'] for s in summaries)} equivalent mutants excluded)  [{elapsed:.0f} s]", file=out)
    groups = [
        ("survivors", [r for r in results if r.status == "survived"]),
        ("sometimes crashing (raised on some cases only)", [r for r in results if r.raised_on and r.status != "crashes"]),
        ("caught with an inconclusive verdict", [r for r in results if is_inconclusive(r)]),
    ]
    for title, rows in groups:
        if not rows:
            continue
        print(f"\n{title} ({len(rows)}):", file=out)
        for r in rows:
            print(f"  {r.target} #{r.number} line {r.line} [{r.operator}: {r.change}]"
                  f" grad change {_fmt(r.max_rel_change)}, checker worst rel err {_fmt(r.checker_worst_rel)}"
                  f"{'' if r.status != 'caught' else ', caught: ' + r.caught_by}"
                  f"{'' if not r.raised_on else f', raised on cases {r.raised_on}'}", file=out)
            print(f"      was: {r.original}\n      now: {r.mutated}", file=out)
    return score


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delta", type=float, default=0.01, help="relative change of mutated constants (default 0.01)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=5, help="cases for deciding equivalence (default 5)")
    p.add_argument("--checks", type=int, default=3, help="checker runs per mutant at most (default 3, at least 2)")
    p.add_argument("--targets", default=None, help="comma-separated subset of targets")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    args = p.parse_args(argv)
    if args.checks < 2 or args.trials < max(2, args.checks):
        p.error("need --checks >= 2 and --trials >= --checks")
    return args


def main(argv=None):
    args = parse_args(argv)
    targets = cases.all_targets()
    if args.targets:
        wanted = set(args.targets.split(","))
        targets = [t for t in targets if t.name in wanted]
        if missing := wanted - {t.name for t in targets}:
            sys.exit(f"unknown targets: {sorted(missing)}")
    if not cases.HAVE_STRICT:
        print("note: array_api_strict is not installed: the BCE targets are skipped", file=sys.stderr)
    start = time.perf_counter()
    summaries, results = [], []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for target in targets:
            res, problems = run_target(target, args)
            summaries.append(summarise(target.name, res, problems))
            results += res
    elapsed = time.perf_counter() - start
    score = print_report(summaries, results, elapsed)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"settings": vars(args), "score_percent": score, "seconds": elapsed,
                       "targets": summaries, "mutants": [asdict(r) for r in results]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

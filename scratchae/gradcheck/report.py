"""What a gradient check says: one :class:`Row` per array, a :class:`GradcheckReport` with a verdict.

Verdicts (of a row and of the whole report):

``passed``        every checked entry agrees with the finite differences within the tolerance
``FAILED``        at least one entry disagrees beyond it, or a contract is broken (a gradient
                  of the wrong shape, dtype or device; an input or ``dy`` modified in place)
``inconclusive``  nothing was proved: no array was checked, every entry of a row sits at a
                  non-differentiable point, or every gradient is exactly zero

``report.passed`` is True only for ``passed``; ``bool(report)`` is ``report.passed``.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

PASSED, FAILED, INCONCLUSIVE = "passed", "FAILED", "inconclusive"


@dataclass
class Row:
    """The comparison for one array (``dx``, a parameter such as ``encoder.0.W``, an input)."""
    name: str
    shape: tuple
    mode: str = "-"                # "elementwise", "directional(k)", or "-" (not compared)
    status: str = PASSED           # PASSED, FAILED or INCONCLUSIVE
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0       # |a - n| / max(|a|, |n|) at the worst entry
    worst: object = None           # index of the worst entry (directional: localised entry)
    analytic: float = 0.0          # at the worst entry
    numerical: float = 0.0
    tolerance: float = 0.0         # the allowed |a - n| at the worst entry
    scored: int = 0                # entries (or directions) compared
    kinks: int = 0                 # entries skipped: non-differentiable or unstable points
    unstable: int = 0              # of which: the mismatch changed with the step (numerical noise)
    analytic_norm: float = 0.0
    numerical_norm: float = 0.0
    hint: str = ""                 # a guess at the mistake (FAILED) or the reason (INCONCLUSIVE)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def status_text(self) -> str:
        if self.status == PASSED:
            text = "ok"
        elif self.status == FAILED:
            text = "FAIL"
        else:
            text = "INCONCLUSIVE"
        nondiff = self.kinks - self.unstable
        if nondiff:
            text += f" ({nondiff} non-differentiable point{'s' if nondiff > 1 else ''} skipped)"
        if self.unstable:
            text += (f" ({self.unstable} unstable entr{'ies' if self.unstable > 1 else 'y'} skipped: "
                     "the difference changes with the step)")
        if self.hint:
            text += f"  <- {self.hint}"
        return text


@dataclass
class GradcheckReport:
    """Result of a check: ``.verdict``, ``.passed``, ``.rows``; prints as a table (HTML in Jupyter)."""
    title: str
    dtype: str
    eps: float
    rtol: float
    atol: float
    rows: list = field(default_factory=list)
    problems: list = field(default_factory=list)   # broken contracts: each makes the report FAILED
    notes: list = field(default_factory=list)
    noise: float = 0.0                             # estimated rounding noise of one evaluation of L

    # --- the verdict ---------------------------------------------------------------------
    @property
    def verdict(self) -> str:
        if self.problems or any(r.status == FAILED for r in self.rows):
            return FAILED
        if self.inconclusive_reason():
            return INCONCLUSIVE
        return PASSED

    def inconclusive_reason(self) -> str:
        """Why the check proved nothing ('' when it proved something)."""
        if not self.rows:
            return "no gradient was checked (no input gradient and no parameter)"
        stuck = [r.name for r in self.rows if r.status == INCONCLUSIVE]
        if stuck:
            return f"nothing could be checked in {', '.join(stuck)}"
        if all(r.analytic_norm == 0.0 for r in self.rows):
            return "every gradient is exactly zero, so a backward returning zeros would pass too: choose other inputs"
        return ""

    @property
    def passed(self) -> bool:
        return self.verdict == PASSED

    @property
    def failed(self) -> bool:
        return self.verdict == FAILED

    @property
    def inconclusive(self) -> bool:
        return self.verdict == INCONCLUSIVE

    def __bool__(self):
        return self.passed

    def row(self, name) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row {name!r} in this report; rows: {[r.name for r in self.rows]}")

    # --- rendering -----------------------------------------------------------------------
    def headline(self) -> str:
        verdict = self.verdict
        text = f"gradcheck {self.title}: {verdict}"
        if verdict == FAILED:
            bad = [r for r in self.rows if r.status == FAILED]
            if bad:
                text += f" ({len(bad)} of {len(self.rows)} arrays wrong)"
            elif self.problems:
                text += " (a contract is broken, see below)"
        elif verdict == INCONCLUSIVE:
            text += f" ({self.inconclusive_reason()})"
        return text

    def settings(self) -> str:
        return (f"[{self.dtype}, eps={self.eps:g}, rtol={self.rtol:g}, atol={self.atol:g}, "
                f"+ measured noise]")

    _COLUMNS = ["array", "shape", "mode", "max rel err", "worst at", "analytic", "numerical", "status"]

    def _cells(self, r: Row):
        compared = r.mode != "-" and r.scored
        return [r.name, str(r.shape), r.mode,
                f"{r.max_rel_err:.2e}" if compared else "-",
                str(r.worst) if r.worst is not None else "-",
                f"{r.analytic:+.6g}" if compared else "-",
                f"{r.numerical:+.6g}" if compared else "-",
                r.status_text()]

    def __str__(self):
        table = [self._COLUMNS] + [self._cells(r) for r in self.rows]
        widths = [max(len(t[i]) for t in table) for i in range(len(self._COLUMNS) - 1)]
        lines = [f"{self.headline()}   {self.settings()}"]
        for t in table:
            lines.append("  ".join(c.ljust(w) for c, w in zip(t, widths)) + "  " + t[-1])
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self):
        colour = {PASSED: "#1a7f37", FAILED: "#cf222e", INCONCLUSIVE: "#9a6700"}[self.verdict]
        esc = html.escape
        head = "".join(f"<th style='text-align:left'>{esc(c)}</th>" for c in self._COLUMNS)
        body = ""
        for r in self.rows:
            cells = self._cells(r)
            style = "" if r.status == PASSED else f" style='color:{colour}'"
            body += f"<tr{style}>" + "".join(f"<td><code>{esc(c)}</code></td>" for c in cells) + "</tr>"
        extra = "".join(f"<li><b>problem:</b> {esc(p)}</li>" for p in self.problems)
        extra += "".join(f"<li>{esc(n)}</li>" for n in self.notes)
        return (f"<div><p><b style='color:{colour}'>{esc(self.headline())}</b> "
                f"<small>{esc(self.settings())}</small></p>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                + (f"<ul>{extra}</ul>" if extra else "") + "</div>")


# --- hints -----------------------------------------------------------------------------------

def factor_text(c: float) -> str:
    """``c`` as a factor that never reads as a contradiction (1.0000004 is not '1 x')."""
    if abs(c - 1.0) < 1e-3:
        return f"(1 {'+' if c > 1 else '-'} {abs(c - 1.0):.2g})"
    return f"{c:.6g}"


def hint(an, n, shape, overwritten, hnp):
    """A guess at the classic mistake behind a mismatch (host arrays ``an``, ``n``)."""
    nn = float(hnp.dot(n, n))
    if float(hnp.max(hnp.abs(an), initial=0.0)) == 0.0:
        return "backward gives an all-zero gradient here (not routed to this array?)"
    if overwritten is not None and _close(overwritten, n, hnp):
        return "grads were overwritten, not added to: use += in backward"
    if shape is not None and len(shape) == 2 and shape[0] == shape[1] and shape[0] > 1:
        if _close(an, n.reshape(shape).T.ravel(), hnp):
            return "looks transposed"
    if nn > 0 and n.size >= 2:  # one entry always "fits" a scale: no hint from it
        c = float(hnp.dot(an, n) / nn)
        # a scale error explains the mismatch: what is left after the fit is small beside it
        resid = float(hnp.linalg.norm(an - c * n)) / max(float(hnp.linalg.norm(an - n)), 1e-300)
        if resid < 0.05 and abs(c - 1.0) > 1e-12:
            if abs(c + 1) < 1e-3:
                return "sign flipped"
            for k, why in ((0.5, "a missing 2 or an extra 0.5?"), (2.0, "a missing 0.5 or an extra 2?")):
                if abs(c - k) < 1e-3:
                    return f"off by a factor {c:.4g} ({why})"
            return f"analytic = {factor_text(c)} x numerical (a scale error)"
    wrong = int(hnp.sum(~hnp.isclose(an, n, rtol=1e-6, atol=1e-12 * max(1.0, math.sqrt(nn)))))
    if n.size > 1 and wrong == 1:
        return "one entry is wrong, the others agree (an indexing or edge-case bug?)"
    return "entries disagree in pattern, not just scale"


def _close(a, b, hnp):
    scale = max(float(hnp.max(hnp.abs(b), initial=0.0)), 1e-300)
    return bool(hnp.all(hnp.abs(a - b) <= 1e-4 * scale))

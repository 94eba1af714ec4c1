"""Finite differences with an error estimate, and the comparison of each entry against it.

The model (derived in ``docs/gradcheck.md``): for an entry a_i with step h = eps * max(|a_i|, rms(a)),
four evaluations of the scalar L give two central differences c(h) and c(h/2). Then

    numerical   n   = (4 c(h/2) - c(h)) / 3                 Richardson: truncation O(h^4)
    truncation  T   = |c(h) - c(h/2)| / 3                   the error estimate of c(h/2) (>= n's)
    rounding    R   = 12 * sigma / h                        sigma: noise of one evaluation of L
    tolerance   tol = atol + rtol * |n| + 2 T + R + slack   (slack: the analytic value's own rounding)

``sigma`` is measured, not assumed: the fourth difference of L along single entries at a step
far below h cancels every polynomial term up to the cubic, so what remains is rounding noise;
it is floored at 2 u |L| (u the unit roundoff). An entry whose estimate is trusted (converged,
no kink inside the stencil) and agrees passes at once; any other is resolved over smaller and
larger steps (``Differencer.resolve``): it FAILS only where a trusted estimate disagrees, and
is skipped as a non-differentiable point (a ReLU kink, a tie in a max) or as unstable where no
estimate can be trusted.

This module is host-side bookkeeping around device arrays: values of L are Python floats,
analytic gradients are copied to the host once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .. import backend as B
from .report import FAILED, INCONCLUSIVE, PASSED, Row, factor_text, hint

hnp = B.host  # NumPy, for the host-side comparison only (never for the math being checked)

#: rounding multiplier: |n - dL/da| from noise stays below ROUNDING_Z * sigma / h (about 6 sd)
ROUNDING_Z = 12.0
#: truncation multiplier on T (a kink at a third of the step needs > 1.5; smooth needs < 1)
TRUNCATION_Z = 2.0
#: a stencil's fourth difference above this many sigma marks a non-differentiable point
KINK_Z = 50.0
#: the floor of sigma, in units of u * |L|
ROUNDING_FLOOR = 2.0
#: where the numerical derivative is zero within its noise, an analytic value below this fraction of
#: the largest gradient in the check is taken as rounding (a zero computed through cancelling terms,
#: such as the gradient of a bias in front of a BatchNorm)
FLAT_FLOOR = 1e-9
#: a noise-limited entry is re-measured at REFINE_FACTOR times the step, up to REFINE_CAP * max(|a_i|, rms(a))
REFINE_FACTOR, REFINE_CAP = 8.0, 1e-1


@dataclass
class Target:
    """One array to check: ``array`` is perturbed in place, ``analytic`` is its gradient."""
    name: str
    array: object
    analytic: object = None
    overwritten: object = None     # host copy of the raw grads (for the "+=" hint), or None
    problem: str = ""              # a broken contract: the row fails without comparing
    slack: object = None           # host array: rounding of the analytic value itself, or None
    none_given: bool = False       # backward returned None for this input (analytic taken as 0)


def unravel(i, shape):
    idx = []
    for s in reversed(shape):
        idx.append(i % s)
        i //= s
    return tuple(reversed(idx))


def size(shape):
    return math.prod(shape)


class Differencer:
    """Evaluates the scalar ``f()`` around the current arrays and scores analytic gradients."""

    def __init__(self, f, f0, magnitude, unit_roundoff, tol, rng, nondet_tol=0.0):
        self.f, self.f0 = f, f0
        self.tol = tol
        self.rng = rng                                  # a host NumPy Generator (the checker's own)
        self.floor = ROUNDING_FLOOR * unit_roundoff * max(abs(f0), magnitude) + nondet_tol
        self.unit_roundoff, self.magnitude = unit_roundoff, max(abs(f0), magnitude)
        self.sigma = self.floor
        self.largest = 0.0                              # the largest |analytic| in the check
        self.noisy = False                              # the last resolved entry's L was noisy

    # --- the noise of L -------------------------------------------------------------------
    def _probe(self, a, v, tau, points=6):
        """Median fourth difference of L along v at step tau (pure rounding noise when smooth).

        A kink on the probe's line spoils at most 4 of its 9 windows: the median stays clean."""
        xp = B.namespace(a)
        orig = xp.asarray(a, copy=True)
        vals = {0: self.f0}
        for k in range(-points, points + 1):
            if k:
                a[...] = orig + (k * tau) * v
                vals[k] = self.f()
        a[...] = orig
        d4 = [abs(vals[k - 2] - 4 * vals[k - 1] + 6 * vals[k] - 4 * vals[k + 1] + vals[k + 2])
              for k in range(-points + 2, points - 1)]
        return float(hnp.median(d4)) / (0.6745 * math.sqrt(70.0))

    def measure_noise(self, targets, per_target=2, max_targets=3):
        """sigma: fourth differences of L at a step of h/256 along single entries.

        Several entries of several arrays are probed and the median taken, so one probe that
        happens to sit on a kink does not inflate the tolerance of the whole check.
        """
        targets = [t for t in targets if not t.problem and size(tuple(t.array.shape))]
        estimates = []
        for t in targets[:max_targets]:
            a = t.array
            m = size(tuple(a.shape))
            for i in self.rng.choice(m, size=min(per_target, m), replace=False):
                v = self._direction(a, support=[int(i)])
                old = float(a[unravel(int(i), tuple(a.shape))]) if a.shape else float(a)
                estimates.append(self._probe(a, v, self.tol["eps"] * max(abs(old), self.scale(a)) / 256.0))
        if estimates:
            est = float(hnp.median(estimates)) if len(estimates) >= 3 else min(estimates)
            self.sigma = max(self.floor, est)
        return self.sigma

    def _direction(self, a, rademacher=False, support=None):
        shape = tuple(a.shape)
        if rademacher:
            v = self.rng.integers(0, 2, size=shape).astype("float64") * 2.0 - 1.0
        else:
            v = self.rng.standard_normal(shape)
        if support is not None:
            mask = hnp.zeros(size(shape), dtype=bool)
            mask[support] = True
            v = v * mask.reshape(shape)
        v = v / max(float(hnp.linalg.norm(v)), 1e-300)
        return B.resolve(a).asarray(v, B.dtype_name(a.dtype))

    # --- stencils ----------------------------------------------------------------------------
    @staticmethod
    def scale(a) -> float:
        """The array's typical magnitude (rms; 1 for an all-zero array): the unit of its steps."""
        r = _rms(a)
        return r if r > 0 else 1.0

    def entry_stencil(self, a, idx, h):
        """L at a_i + s for s in (-h, -h/2, h/2, h), with the steps actually taken."""
        old = float(a[idx])
        vals, steps = [], []
        for s in (-h, -h / 2, h / 2, h):
            a[idx] = old + s
            steps.append(float(a[idx]) - old)
            vals.append(self.f())
        a[idx] = old
        return vals, steps

    def direction_stencil(self, a, v, t):
        xp = B.namespace(a)
        orig = xp.asarray(a, copy=True)
        vals = []
        for s in (-t, -t / 2, t / 2, t):
            a[...] = orig + s * v
            vals.append(self.f())
        a[...] = orig
        return vals, [-t, -t / 2, t / 2, t]

    def estimate(self, vals, steps):
        """(n, T, d4) from a four-point stencil: Richardson value, truncation, fourth difference."""
        fm1, fm2, fp2, fp1 = vals
        sm1, sm2, sp2, sp1 = steps
        c1 = (fp1 - fm1) / (sp1 - sm1)
        c2 = (fp2 - fm2) / (sp2 - sm2)
        n = (4.0 * c2 - c1) / 3.0
        d4 = fm1 - 4.0 * fm2 + 6.0 * self.f0 - 4.0 * fp2 + fp1
        d4 -= c2 * (sm1 - 4.0 * sm2 - 4.0 * sp2 + sp1)   # the steps actually taken are not exact
        return n, abs(c1 - c2) / 3.0, abs(d4)

    def tolerance(self, n, trunc, h, extra=0.0):
        return (self.tol["atol"] + self.tol["rtol"] * abs(n) + TRUNCATION_Z * trunc
                + ROUNDING_Z * self.sigma / h + extra)

    def converged(self, n, trunc, h):
        """The differences are in their asymptotic regime: truncation below 1e-3 of the value,
        or below the rounding floor (a value near zero). The floor, not the measured noise:
        a function steep on a scale below the probe's step inflates the measurement."""
        return trunc <= 1e-3 * abs(n) or trunc <= ROUNDING_Z * self.floor / h

    def is_kink(self, d4):
        return d4 > KINK_Z * self.sigma

    def refined(self, a, idx, h, slack):
        """(n, T, d4, h) at step h, or at 8h, 64h, ... (at most 10% of the entry) while rounding
        dominates the tolerance: a gradient entry far smaller than L (or an L linear in the
        entry) is then measured with a larger step, less rounding noise, no kink crossed."""
        vals, steps = self.entry_stencil(a, idx, h)
        shrink = 0
        while not all(math.isfinite(v) for v in vals) and shrink < 8:
            h, shrink = h / 16.0, shrink + 1          # the step left the domain (log, sqrt near 0)
            vals, steps = self.entry_stencil(a, idx, h)
        best = self.estimate(vals, steps) + (h,)
        if not math.isfinite(best[0]):
            return best
        cap = REFINE_CAP * max(abs(float(a[idx])), self.scale(a))
        while not self.is_kink(best[2]) and best[3] * REFINE_FACTOR <= cap:
            n, trunc, _, step = best
            rounding = ROUNDING_Z * self.sigma / step
            if rounding <= 4.0 * (TRUNCATION_Z * trunc + self.tol["rtol"] * abs(n) + slack):
                break
            step *= REFINE_FACTOR
            vals, steps = self.entry_stencil(a, idx, step)
            candidate = self.estimate(vals, steps) + (step,)
            if self.is_kink(candidate[2]) or (self.tolerance(*candidate[:2], step, slack)
                                              >= self.tolerance(n, trunc, best[3], slack)):
                break
            best = candidate
        return best

    def _resolve_flat(self, analytic, stencil, h, extra):
        """L did not move at all at step h, yet the analytic gradient is not zero. Either the
        backward is wrong (a mask inverted: a gradient where the forward is flat), the forward
        quantises (log(1 - sigmoid(x)) at large x takes few distinct values), or the step was
        too small to move L past its rounding (an array of entries near 1e-8): larger steps,
        up to an absolute eps, tell them apart. A trusted estimate that moves and agrees
        clears it; otherwise it fails."""
        quantised = False
        # up to 64h; and where the array itself is tiny (h, relative to it, far below eps),
        # on up to an absolute step of eps: a right gradient of 5e-9 at inputs of 1e-8 moves L
        # by less than its rounding at every relative step, and only there by enough to see
        steps = [4.0 * h, 16.0 * h, 64.0 * h]
        while steps[-1] * 16.0 <= self.tol["eps"]:
            steps.append(steps[-1] * 16.0)
        for s in steps:
            vals, st = stencil(s)
            n, trunc, d4 = self.estimate(vals, st)
            if not math.isfinite(n) or (n == 0.0 and trunc == 0.0):
                continue
            tol = self.tolerance(n, trunc, s, extra)
            if self.is_kink(d4):      # a staircase: moves in jumps, on average with the slope?
                quantised |= abs(analytic - n) <= 0.1 * abs(analytic)
                continue
            if self.converged(n, trunc, s):
                return ("ok" if abs(analytic - n) <= tol else "fail"), n, tol
        self.noisy = quantised
        # a gradient so small that even the largest step would move L by less than one
        # rounding unit of max(|L|, 1) cannot be told from rounding (1 - exp(a) * exp(-a) is
        # 5.6e-17, not 0): not judged, rather than failed
        if abs(analytic) * steps[-1] <= self.unit_roundoff * max(self.magnitude, 1.0):
            quantised = True
        return ("unstable" if quantised else "fail"), 0.0, self.tolerance(0.0, 0.0, h, extra)

    def resolve(self, analytic, stencil, probe, h, first, extra=0.0):
        """Judge an entry whose first estimate is not a clean pass: ("ok" | "fail" | "kink" |
        "unstable", n, tol).

        ``first`` is (n, T, d4) at step h. An estimate is *trusted* when it is converged
        (truncation T below 1e-3 of the value, or below the rounding floor) and clean (its
        fourth difference not far above the noise: no kink inside the stencil). First the
        noise is probed at this very entry (a cancellation such as 1 - sigmoid(x) is local),
        then the steps 4h, h/4, h/16, ... down to h/4096 are tried:

        * "ok"   a trusted estimate agrees (at most twice as loose as a trusted one that did not);
        * "fail" two trusted estimates disagree, or one does and no step showed a kink: a wrong
                 gradient is wrong at every step;
        * "kink" a kink inside the stencil at every step small enough to judge;
        * "unstable" nothing could be trusted: rounding inside the layer that the probe could
                 not see (a saturated tanh amplified by a BatchNorm), or a function that changes
                 on a scale below every step (stacked BatchNorms over a constant batch).
        """
        if first[0] == 0.0 and first[1] == 0.0 and analytic != 0.0:
            return self._resolve_flat(analytic, stencil, h, extra)
        saved = self.sigma
        # quantisation inside forward shows only at steps that move its intermediates by many
        # ulps: probe at two scales and keep the larger
        self.sigma = max(self.sigma, probe(h / 256.0), probe(h / 16.0))
        self.noisy = self.sigma > 1e3 * self.floor     # rounding inside forward, far above float64's
        try:
            fails, kinks, best_fail_tol = 0, 0, math.inf
            last = failed_at = None
            moved = quantised = False
            steps = [h, 4.0 * h] + [h / 4.0 ** k for k in range(1, 7)]
            for j, s in enumerate(steps):
                if j == 0:
                    n, trunc, d4 = first
                else:
                    vals, st = stencil(s)
                    n, trunc, d4 = self.estimate(vals, st)
                if not math.isfinite(n):
                    continue
                tol = self.tolerance(n, trunc, s, extra)
                if n == 0.0 and trunc == 0.0 and analytic != 0.0 and moved:
                    quantised = True   # flat at a small step, moving at a larger: forward quantises
                    continue
                moved |= n != 0.0
                last = (n, tol)
                if self.is_kink(d4):
                    kinks += j != 1            # a kink seen only at 4h lies outside the stencil
                    continue
                if not self.converged(n, trunc, s):
                    continue
                if abs(analytic - n) <= tol:
                    if tol <= 2.0 * best_fail_tol or best_fail_tol == math.inf:
                        return "ok", n, tol
                    continue
                fails += 1
                best_fail_tol = min(best_fail_tol, tol)
                failed_at = (n, tol)
                if fails >= 2:
                    return "fail", n, tol
            # one trusted failure stands unless a kink showed at some step: at small steps the
            # fourth difference of a small kink sinks below the noise while its bias stays
            if fails and not kinks and not quantised:
                return "fail", *failed_at
            if last is None:
                return "unstable", 0.0, 0.0
            self.noisy |= quantised
            return ("kink" if kinks and not quantised else "unstable"), *last
        finally:
            self.sigma = saved

    # --- rows ----------------------------------------------------------------------------
    def elementwise(self, t: Target) -> Row:
        a, shape = t.array, tuple(t.array.shape)
        an = B.to_numpy(t.analytic).astype("float64").ravel()
        m = size(shape)
        scale = self.scale(a)
        num = hnp.zeros(m)
        err = hnp.zeros(m)
        tol = hnp.zeros(m)
        kink = hnp.zeros(m, dtype=bool)
        unstable = hnp.zeros(m, dtype=bool)
        outside = hnp.zeros(m, dtype=bool)
        noisy_fail = False
        for i in range(m):
            idx = unravel(i, shape)
            h = self.tol["eps"] * max(abs(float(a[idx])), scale)
            slack = 0.0 if t.slack is None else float(hnp.broadcast_to(t.slack, (m,))[i])
            n, trunc, d4, h = self.refined(a, idx, h, slack)
            num[i], err[i] = n, abs(an[i] - n)
            tol[i] = self.tolerance(n, trunc, h, slack)
            if not math.isfinite(n):            # no finite difference at any step: not scored
                num[i], err[i], kink[i], outside[i] = 0.0, 0.0, True, True
                continue
            if abs(n) <= self.tolerance(0.0, trunc, h):   # numerically zero: a zero computed
                tol[i] += FLAT_FLOOR * self.largest        # through cancelling terms is rounding
            trusted = self.converged(n, trunc, h) and not self.is_kink(d4)
            if err[i] > tol[i] or not trusted:
                verdict, n2, tol2 = self.resolve(
                    an[i], lambda s: self.entry_stencil(a, idx, s),
                    lambda tau: self._probe(a, self._direction(a, support=[i]), tau), h, (n, trunc, d4), slack)
                noisy_fail |= verdict == "fail" and self.noisy
                if verdict in ("ok", "fail"):            # the trusted estimate that decided
                    num[i], err[i], tol[i] = n2, abs(an[i] - n2), tol2
                else:
                    kink[i], unstable[i] = True, verdict == "unstable"
        row = Row(t.name, shape, "elementwise")
        self._fill(row, an, num, err, tol, kink, lambda w: unravel(w, shape) if shape else ())
        row.unstable = int(hnp.sum(unstable | outside))
        if row.status == FAILED and t.none_given:
            row.hint = ("backward returned None for this input, but L depends on it (pass an input "
                        "that takes no gradient through forward_kwargs)")
        elif row.status == FAILED:
            row.hint = hint(an, num, shape, t.overwritten, hnp)
            if noisy_fail and row.max_rel_err < 1e-2:
                row.hint += ("; but L is far noisier than float64 rounding near the failing entries "
                             "(a forward that loses precision, such as log(1 - sigmoid(x)) at large x): "
                             "an error this small may be the forward's, so compute it stably and check again")
        elif row.status == INCONCLUSIVE and row.unstable == row.kinks:
            row.hint = ("no entry could be judged: the finite differences change with the step or leave "
                        "the function's domain (inputs much smaller than their spread, a near-constant "
                        "batch, log/sqrt near 0): check at other inputs")
        return row

    def directional(self, t: Target, k: int) -> Row:
        a, shape = t.array, tuple(t.array.shape)
        xp = B.namespace(a)
        g = t.analytic
        step = self.tol["eps"] * self.scale(a) * math.sqrt(size(shape))   # eps of ||a||
        # rounding of a + s v, entry by entry, moves L by up to u * sum|g a| (per unit step)
        u = hnp.finfo(B.dtype_name(a.dtype)).eps / 2
        representation = 4.0 * u * B.to_scalar(xp.sum(xp.abs(g * a))) / step
        if t.slack is not None:   # |sum(slack * v)| <= ||slack|| for a unit v
            representation += float(hnp.linalg.norm(hnp.broadcast_to(t.slack, (size(shape),))))
        sigma = self.sigma
        self.sigma = max(sigma, self._probe(a, self._direction(a), step / 256.0))
        an, num, err, tol, kink = [], [], [], [], []
        for _ in range(k):
            v = self._direction(a)
            vals, steps = self.direction_stencil(a, v, step)
            n, trunc, d4 = self.estimate(vals, steps)
            ana = B.to_scalar(xp.sum(g * v))
            if not math.isfinite(n):                       # the step left the domain: not scored
                an.append(ana), num.append(0.0), err.append(0.0), tol.append(0.0), kink.append(True)
                continue
            an.append(ana), num.append(n), err.append(abs(ana - n))
            tol.append(self.tolerance(n, trunc, step, representation))
            skip = False
            if err[-1] > tol[-1] or not (self.converged(n, trunc, step) and not self.is_kink(d4)):
                verdict, n2, tol2 = self.resolve(
                    ana, lambda s, v=v: self.direction_stencil(a, v, s),
                    lambda tau, v=v: self._probe(a, v, tau), step, (n, trunc, d4), representation)
                if verdict in ("ok", "fail"):
                    num[-1], err[-1], tol[-1] = n2, abs(ana - n2), tol2   # the deciding estimate
                skip = verdict in ("kink", "unstable")
            kink.append(skip)
        an, num, err, tol, kink = map(hnp.asarray, (an, num, err, tol, kink))
        row = Row(t.name, shape, f"directional({k})")
        self._fill(row, an, num, err, tol, kink, lambda w: f"dir {w}")
        row.analytic_norm = B.to_scalar(xp.sqrt(xp.sum(g * g)))
        if row.status == FAILED:
            self._explain_directional(row, t, an, num)
        self.sigma = sigma
        return row

    def _fill(self, row, an, num, err, tol, kink, where):
        scored = ~kink
        row.scored, row.kinks = int(hnp.sum(scored)), int(hnp.sum(kink))
        row.analytic_norm = float(hnp.linalg.norm(an))
        row.numerical_norm = float(hnp.linalg.norm(num[scored])) if row.scored else 0.0
        if not row.scored:
            row.status = INCONCLUSIVE
            row.hint = ("every entry sits at a non-differentiable point (its one-sided differences "
                        "disagree): move the input away from kinks")
            return
        excess = hnp.where(scored, err / hnp.maximum(tol, 1e-300), -hnp.inf)
        w = int(hnp.argmax(excess))
        row.worst = where(w)
        row.analytic, row.numerical, row.tolerance = float(an[w]), float(num[w]), float(tol[w])
        row.max_abs_err = float(hnp.max(hnp.where(scored, err, 0.0)))
        row.max_rel_err = float(err[w] / max(abs(an[w]), abs(num[w]), 1e-300)) if err[w] > 0 else 0.0
        row.status = FAILED if bool(hnp.any(scored & (err > tol))) else PASSED

    # --- localising a directional failure ------------------------------------------------------
    def _explain_directional(self, row, t, an, num):
        if row.analytic_norm == 0.0:
            row.hint = "backward gives an all-zero gradient here (not routed to this array?)"
            return
        scale = None
        if len(an) >= 2 and float(hnp.dot(num, num)) > 0:
            c = float(hnp.dot(an, num) / hnp.dot(num, num))
            # a scale error explains the mismatch: what is left after the fit is small beside it
            resid = float(hnp.linalg.norm(an - c * num)) / max(float(hnp.linalg.norm(an - num)), 1e-300)
            if resid < 0.05:
                scale = c
        idx, a_i, n_i = self.localise(t)
        row.worst, row.analytic, row.numerical = idx, a_i, n_i
        row.max_rel_err = abs(a_i - n_i) / max(abs(a_i), abs(n_i), 1e-300) if a_i != n_i else 0.0
        if scale is not None and abs(scale + 1) < 1e-3:
            row.hint = f"sign flipped (e.g. at {idx}, found by bisection)"
        elif scale is not None:
            row.hint = (f"analytic = {factor_text(scale)} x numerical in every direction (a scale "
                        f"error; e.g. at {idx}, found by bisection)")
        else:
            row.hint = f"wrong at {idx} (found by bisection; other entries may be wrong too)"

    def localise(self, t: Target):
        """The worst entry of a failing directional row, by bisection (~log2(m) levels).

        Each level compares the two halves of the candidate set along random +-1 directions
        restricted to each half (4 evaluations of L per half) and keeps the half whose
        analytic-minus-numerical gap, over its tolerance, is larger. The last entry is then
        differenced on its own.
        """
        a, shape = t.array, tuple(t.array.shape)
        xp = B.namespace(a)
        g = t.analytic
        cand = hnp.arange(size(shape))
        step = self.tol["eps"] * self.scale(a) * math.sqrt(size(shape))   # eps of ||a||
        while cand.size > 1:
            halves = (cand[: cand.size // 2], cand[cand.size // 2:])
            scores = []
            for half in halves:
                v = self._direction(a, rademacher=True, support=half)
                vals, steps = self.direction_stencil(a, v, step)
                n, trunc, _ = self.estimate(vals, steps)
                gap = abs(B.to_scalar(xp.sum(g * v)) - n)
                scores.append(gap / self.tolerance(n, trunc, step))
            cand = halves[int(scores[1] > scores[0])]
        i = int(cand[0])
        idx = unravel(i, shape) if shape else ()
        h = self.tol["eps"] * max(abs(float(a[idx])), self.scale(a))
        vals, steps = self.entry_stencil(a, idx, h)
        n, _, _ = self.estimate(vals, steps)
        a_i = float(B.to_numpy(g).reshape(-1)[i]) if shape else float(B.to_numpy(g))
        return idx, a_i, n


def _rms(a) -> float:
    xp = B.namespace(a)
    m = size(tuple(a.shape))
    if not m:
        return 0.0
    return math.sqrt(B.to_scalar(xp.sum(a * a)) / m)

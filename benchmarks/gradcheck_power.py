"""How small a gradient error the checker catches, and how often directional mode finds it.

    python benchmarks/gradcheck_power.py            # about a minute on 2 cores
    python benchmarks/gradcheck_power.py --trials 5 --quick

1. Smallest relative error caught at gradient magnitudes 1, 1e-4 and 1e-8, two ways:
   * "scaled":  the whole function scaled, f(x) = s * sum(tanh(x) * c), so every gradient
     entry is ~s and so is L (the checker must be scale-free);
   * "mixed":   a Linear layer whose input column j is scaled by s, so that row j of dW is
     ~s while L and every other gradient stay ~1 (the hard case: the rounding noise of L
     does not shrink with the entry).
   The error multiplies the checked gradient entries by (1 + delta); delta runs over
   1e-1, 3e-2, 1e-2, ..., 1e-12, and the smallest delta caught in every one of --trials
   random draws is reported.
2. Directional mode: a Linear(400, 250) (100,000 weights, so dW is checked along random
   directions) with exactly one wrong entry, at a random place, off by a factor 1 + delta;
   how often the check fails, and how often the reported worst entry is the wrong one.

Results and the command line that produced them go in docs/gradcheck.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratchae import backend as B  # noqa: E402
from scratchae import layers as L  # noqa: E402
from scratchae.gradcheck import check_function, check_layer  # noqa: E402

DELTAS = [10.0 ** (-k / 2) for k in range(2, 25)]     # 1e-1, 3.2e-2, ..., 1e-12


def scaled_case(scale, delta, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, 4))
    c = rng.normal(size=(3, 4))

    def f(a):
        xp = B.namespace(a)
        t = xp.tanh(a)
        return scale * xp.sum(t * c), scale * (1 - t * t) * c * (1 + delta)

    return check_function(f, x).failed


class RowScaledError(L.Linear):
    """A correct Linear, except that row ``row`` of dW is multiplied by (1 + delta)."""
    row, delta = 0, 0.0

    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        g = x.T @ dy
        g[self.row, ...] = g[self.row, ...] * (1 + self.delta)
        self.grads["W"] += g
        self.grads["b"] += xp.sum(dy, axis=0)
        return dy @ self.params["W"].T


def mixed_case(scale, delta, seed):
    rng = np.random.default_rng(seed)
    layer = RowScaledError(4, 3, B.Generator(seed), dtype="float64")
    layer.row, layer.delta = 2, delta
    x = rng.normal(size=(5, 4))
    x[:, 2] *= scale                         # dW[2, :] = x[:, 2] @ dy ~ scale
    return check_layer(layer, x, params=["W"], check_input=False).failed


def smallest_caught(case, scale, trials):
    best = None
    for delta in DELTAS:
        if all(case(scale, delta, seed) for seed in range(trials)):
            best = delta
        else:
            break
    return best


class OneEntryWrong(L.Linear):
    where, delta = (0, 0), 0.0

    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        g = x.T @ dy
        g[self.where] = g[self.where] * (1 + self.delta)
        self.grads["W"] += g
        self.grads["b"] += xp.sum(dy, axis=0)
        return dy @ self.params["W"].T


def localisation(delta, trials, d_in=400, d_out=250):
    rng = np.random.default_rng(123)
    caught = found = 0
    for t in range(trials):
        layer = OneEntryWrong(d_in, d_out, B.Generator(t), dtype="float64")
        layer.where = (int(rng.integers(d_in)), int(rng.integers(d_out)))
        layer.delta = delta
        x = rng.normal(size=(4, d_in))
        report = check_layer(layer, x, params=["W"], check_input=False)
        row = report.row("W")
        caught += row.failed
        found += row.failed and row.worst == layer.where
    return caught, found


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10, help="random draws per setting (default 10)")
    p.add_argument("--quick", action="store_true", help="fewer localisation trials")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    print("1. smallest relative error caught in every one of", args.trials, "draws")
    print(f"   {'gradient magnitude':>20}  {'scaled function':>16}  {'one row ~s, L ~1':>17}")
    for scale in (1.0, 1e-4, 1e-8):
        a = smallest_caught(scaled_case, scale, args.trials)
        b = smallest_caught(mixed_case, scale, args.trials)
        fmt = (lambda d: f"{d:.1e}" if d is not None else "> 1e-1")
        print(f"   {scale:>20g}  {fmt(a):>16}  {fmt(b):>17}")
    n = 10 if args.quick else 40
    print(f"\n2. directional mode, Linear(400, 250) dW (100,000 entries), one wrong entry, {n} trials")
    for delta in (1.0, 0.1, 0.01, 1e-3):
        caught, found = localisation(delta, n)
        print(f"   entry off by {delta:g} of itself: failed {caught}/{n}, worst entry = the wrong one "
              f"{found}/{n}")
    print(f"\n[{time.perf_counter() - t0:.0f} s]")


if __name__ == "__main__":
    main()

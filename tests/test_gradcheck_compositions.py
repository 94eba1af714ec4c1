"""Random compositions of every built-in layer: no false alarm, and an injected bug is caught.

Four times the profile's example count (``HYPOTHESIS_PROFILE=thorough`` for 800 a device).
"""
from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings, strategies as st

from scratchae import backend as B
from scratchae import layers as L
from scratchae.gradcheck import check_layer
from scratchae.stochastic import SoftClamp
from scratchae.testing import arrays_on

EXAMPLES = 4 * settings().max_examples


class FrozenDropout(L.Dropout):
    """Dropout whose mask is fixed per input shape (seeded), so a check can difference it."""

    def __init__(self, p, seed):
        super().__init__(p)
        self.seed, self.masks = seed, {}

    def forward(self, x, mask=None):
        shape = tuple(x.shape)
        if shape not in self.masks:
            keep = np.random.default_rng(self.seed).uniform(size=shape) >= self.p
            self.masks[shape] = B.resolve(x).asarray(keep.astype("float64"), "float64")
        return super().forward(x, mask=self.masks[shape])


KINDS = ["Linear", "Linear-nobias", "TiedLinear", "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh",
         "Softplus", "Identity", "Dropout", "BatchNorm1d", "Flatten", "Reshape", "SoftClamp"]


def _layer(kind, d, out, gen, seed):
    """(layer, width after it)."""
    f64 = "float64"
    if kind == "Linear":
        return L.Linear(d, out, gen, dtype=f64), out
    if kind == "Linear-nobias":
        return L.Linear(d, out, gen, bias=False, init="he", dtype=f64), out
    if kind == "TiedLinear":
        return L.TiedLinear(L.Linear(out, d, gen, dtype=f64), dtype=f64), out
    if kind == "BatchNorm1d":
        bn = L.BatchNorm1d(d, gen, dtype=f64)
        bn.params["gamma"][...] = gen.uniform((d,), 0.5, 2.0, f64)
        bn.params["beta"][...] = gen.normal((d,), f64)
        return bn, d
    if kind == "Dropout":
        return FrozenDropout(0.3, seed), d
    if kind == "Reshape":
        return L.Sequential(L.Reshape(d, 1), L.Flatten()), d
    simple = {"ReLU": L.ReLU, "LeakyReLU": lambda: L.LeakyReLU(0.2), "ELU": lambda: L.ELU(0.8),
              "Sigmoid": L.Sigmoid, "Tanh": L.Tanh, "Softplus": L.Softplus, "Identity": L.Identity,
              "Flatten": L.Flatten, "SoftClamp": lambda: SoftClamp(2.0)}
    return simple[kind](), d


@st.composite
def compositions(draw, device):
    n = draw(st.integers(2, 4))
    d = d_in = draw(st.integers(1, 4))
    gen = B.Generator(draw(st.integers(0, 2 ** 16)), device=device)
    layers = []
    for kind in draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=5)):
        layer, d = _layer(kind, d, draw(st.integers(1, 4)), gen, draw(st.integers(0, 2 ** 16)))
        layers.append(layer)
    scale = draw(st.sampled_from([1.0, 0.1, 3.0]))
    x = draw(arrays_on(device, (n, d_in), low=-3.0 * scale, high=3.0 * scale,
                       away_from=(0.0,), margin=0.01 * scale))   # input kinks: see ReLU tests
    # rows that differ: a batch of identical rows through two or more BatchNorms is a function
    # whose derivative is ~1e7 and changes on a scale of 1e-9 (see docs/gradcheck.md)
    host = B.to_numpy(x)
    assume(bool(np.all(host.max(axis=0) - host.min(axis=0) > 0.05 * scale)))
    return L.Sequential(*layers), x


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_no_false_alarm_on_random_compositions(device, data):
    model, x = data.draw(compositions(device))
    report = check_layer(model, x)
    assert not report.failed, str(report)


def _scaled(backward, factor):
    def wrong(dy):
        return backward(dy) * factor
    return wrong


@settings(max_examples=EXAMPLES)
@given(data=st.data(), where=st.integers(0, 10))
def test_a_1_percent_bug_anywhere_in_a_composition_is_caught(device, data, where):
    """One layer's dx scaled by 1.01: every array upstream of it is wrong, so the check does
    not pass unless those gradients are all (numerically) zero."""
    model, x = data.draw(compositions(device))
    good = check_layer(model, x)
    i = where % len(model.layers)
    upstream = ["dx"] + [r.name for r in good.rows if r.name.split(".")[0].isdigit()
                         and int(r.name.split(".")[0]) < i]
    names = [r.name for r in good.rows]
    assume(any(good.row(name).numerical_norm > 1e-6 for name in upstream if name in names))
    layer = model.layers[i]
    layer.backward = _scaled(layer.backward, 1.01)
    report = check_layer(model, x)
    # FAILED, or inconclusive where the differences cannot judge (a degenerate BatchNorm batch)
    assert not report.passed, f"bug in layer {i} missed\n{report}\n(correct: {good})"

"""The checker against backward passes written the way students write them.

One class of past false "passed" per section (see ``docs/gradcheck.md``). Every wrong layer
here must be flagged; its correct twin, on the same inputs, must pass.
"""
from __future__ import annotations

import numpy as np
import pytest

from scratchae import backend as B
from scratchae import layers as L
from scratchae import losses
from scratchae.gradcheck import GradcheckError, check_function, check_layer
from scratchae.module import Module


def _rng(device, seed=0):
    return B.Generator(seed, device=device)


def _on(device, host):
    return device.asarray(np.asarray(host, dtype="float64"), "float64")


# --- 1. the checker's dy never equals an x drawn with the same seed ----------------------------

class Square(Module):
    """y = x**2.  Backward: dx = 2 * x * dy."""
    bug = False

    def forward(self, x):
        self.save_cache(x)
        return x * x

    def backward(self, dy):
        (x,) = self.pop_cache()
        return 2 * dy * dy if self.bug else 2 * x * dy      # BUG: dy where x belongs


class SquareWrong(Square):
    bug = True


class LinearTransposedDW(L.Linear):
    def backward(self, dy):
        (x,) = self.pop_cache()
        self.grads["W"] += dy.T @ x                          # BUG: x.T @ dy
        self.grads["b"] += B.namespace(dy).sum(dy, axis=0)
        return dy @ self.params["W"].T


def test_seed_zero_x_does_not_hide_a_dy_for_x_bug(device):
    x = B.Generator(0, device=device).normal((4, 5), "float64")     # the README's draw
    assert check_layer(Square(), x).passed
    report = check_layer(SquareWrong(), x)
    assert report.failed and report.row("dx").failed, str(report)


def test_seed_zero_x_does_not_hide_a_transposed_square_dw(device):
    r = B.Generator(0, device=device)
    x = r.normal((5, 5), "float64")
    assert check_layer(L.Linear(5, 5, B.Generator(0, device=device), dtype="float64"), x).passed
    report = check_layer(LinearTransposedDW(5, 5, B.Generator(0, device=device), dtype="float64"), x)
    assert report.row("W").failed and "transposed" in report.row("W").hint, str(report)


def test_checker_draws_are_independent_of_the_users_seed():
    from scratchae.gradcheck import _streams
    for seed in (0, 1, 7):
        mine = np.random.default_rng(seed).standard_normal(20)
        theirs = _streams(seed)["dy"].standard_normal(20)
        assert not np.allclose(mine, theirs)


# --- 2. the whole module tree is checked ----------------------------------------------------

class BiasMean(L.Linear):
    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        self.grads["W"] += x.T @ dy
        self.grads["b"] += xp.mean(dy, axis=0)               # BUG: sum
        return dy @ self.params["W"].T


class GatedResidual(Module):
    """y = x + sigmoid(x @ Wg + bg) * (x @ W + b): children kept as plain attributes."""

    def __init__(self, d, rng, value_cls=L.Linear):
        super().__init__()
        self.value = value_cls(d, d, rng, dtype="float64")
        self.gate = L.Linear(d, d, rng, dtype="float64")

    def forward(self, x):
        v = self.value(x)
        g = L.sigmoid(self.gate(x))
        self.save_cache(v, g)
        return x + g * v

    def backward(self, dy):
        v, g = self.pop_cache()
        dx_value = self.value.backward(dy * g)
        dx_gate = self.gate.backward(dy * v * g * (1 - g))
        return dy + dx_value + dx_gate


def test_children_of_a_sequential_are_checked_by_qualified_name(device):
    r = _rng(device, 1)
    x = _rng(device, 2).normal((4, 3), "float64")
    good = L.Sequential(L.Linear(3, 4, r, dtype="float64"), L.Tanh(), L.Linear(4, 2, r, dtype="float64"))
    report = check_layer(good, x)
    assert report.passed and [row.name for row in report.rows] == ["dx", "0.W", "0.b", "2.W", "2.b"]
    bad = L.Sequential(BiasMean(3, 4, r, dtype="float64"), L.Tanh(), L.Linear(4, 2, r, dtype="float64"))
    report = check_layer(bad, x)
    assert {row.name for row in report.rows if row.failed} == {"0.b"}, str(report)


def test_a_composite_block_with_attribute_children_is_checked(device):
    x = _rng(device, 2).normal((4, 3), "float64")
    assert check_layer(GatedResidual(3, _rng(device, 3)), x).passed
    report = check_layer(GatedResidual(3, _rng(device, 3), value_cls=BiasMean), x)
    assert {row.name for row in report.rows if row.failed} == {"value.b"}, str(report)


class TiedWrongSign(L.TiedLinear):
    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        self.tied.grads["W"] += -(dy.T @ x)                # BUG: dy.T @ x
        self.grads["c"] += xp.sum(dy, axis=0)
        return dy @ self.tied.params["W"]


def test_a_tied_decoder_checks_the_weight_it_borrows(device):
    r = _rng(device, 4)
    x = _rng(device, 5).normal((4, 2), "float64")
    enc = L.Linear(3, 2, r, dtype="float64")
    report = check_layer(L.TiedLinear(enc, dtype="float64"), x)
    assert report.passed and "tied.W" in [row.name for row in report.rows], str(report)
    report = check_layer(TiedWrongSign(enc, dtype="float64"), x)
    assert report.row("tied.W").failed and "sign" in report.row("tied.W").hint, str(report)


def test_a_shared_weight_is_checked_once_with_both_contributions(device):
    r = _rng(device, 6)
    first = L.Linear(3, 3, r, dtype="float64")
    second = L.Linear(3, 3, r, dtype="float64")
    second.params["W"] = first.params["W"]            # one array, two grads slots
    model = L.Sequential(first, L.Tanh(), second)
    report = check_layer(model, _rng(device, 7).normal((4, 3), "float64"))
    assert report.passed, str(report)
    assert [row.name for row in report.rows].count("0.W") == 1 and "2.W" not in [row.name for row in report.rows]


def test_no_input_gradient_and_no_own_parameters_still_checks_the_children(device):
    r = _rng(device, 8)
    block = L.Sequential(L.Linear(3, 2, r, input_grad=False, dtype="float64"), L.Tanh())
    report = check_layer(block, _rng(device, 9).normal((4, 3), "float64"))
    assert report.passed and [row.name for row in report.rows] == ["0.W", "0.b"], str(report)


def test_a_check_that_scored_nothing_is_not_a_pass(device):
    report = check_layer(L.Identity(), _rng(device).normal((2, 3), "float64"), check_input=False)
    assert report.inconclusive and not report.passed and not bool(report)
    assert "no gradient was checked" in str(report)


# --- 3. private copies; in-place changes are caught ---------------------------------------

class MaskInPlace(Module):
    """y = x * m for a fixed 0/1 mask m."""
    in_place = False

    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, x):
        self.save_cache(None)
        if self.in_place:
            x *= self.mask                              # BUG: overwrites the caller's x
            return x
        return x * self.mask

    def backward(self, dy):
        self.pop_cache()
        return dy * self.mask


class MaskInPlaceWrong(MaskInPlace):
    in_place = True


class TanhDyInPlace(L.Tanh):
    def backward(self, dy):
        (y,) = self.pop_cache()
        dy *= 1 - y * y                                 # BUG: overwrites the caller's dy
        return dy


def test_forward_that_overwrites_its_input_fails_and_the_callers_x_is_untouched(device):
    x = _rng(device, 1).normal((4, 3), "float64")
    before = B.to_numpy(x).copy()
    mask = _on(device, np.random.default_rng(2).uniform(size=(4, 3)) > 0.4)
    assert check_layer(MaskInPlace(mask), x).passed
    report = check_layer(MaskInPlaceWrong(mask), x)
    assert report.failed and any("modifies its input x in place" in p for p in report.problems), str(report)
    assert "hold its noise fixed" not in str(report)
    np.testing.assert_array_equal(B.to_numpy(x), before)


def test_backward_that_overwrites_dy_fails(device):
    x = _rng(device, 1).normal((4, 3), "float64")
    dy = _rng(device, 3).normal((4, 3), "float64")
    before = B.to_numpy(dy).copy()
    assert check_layer(L.Tanh(), x, dy=dy).passed
    report = check_layer(TanhDyInPlace(), x, dy=dy)
    assert report.failed and any("modifies its dy" in p for p in report.problems), str(report)
    np.testing.assert_array_equal(B.to_numpy(dy), before)


# --- 4. all kinks: inconclusive, not passed ------------------------------------------------------

class ReLUWrongSlope(L.ReLU):
    def backward(self, dy):
        return 3.0 * super().backward(dy)               # BUG: 3x


def test_a_row_of_kinks_only_is_inconclusive(device):
    x = device.zeros((3, 4), "float64")
    for layer in (L.ReLU(), ReLUWrongSlope()):
        report = check_layer(layer, x)
        assert report.inconclusive and not report.passed, str(report)
        assert report.row("dx").kinks == 12 and "non-differentiable" in report.row("dx").hint


def test_a_wrong_relu_fails_away_from_its_kinks_even_with_one_at_zero(device):
    host = np.random.default_rng(3).normal(size=(3, 4))
    host[np.abs(host) < 0.1] = 0.5
    host[0, 0] = 0.0
    report = check_layer(ReLUWrongSlope(), _on(device, host))
    assert report.failed, str(report)
    report = check_layer(L.ReLU(), _on(device, host))
    assert report.passed and report.row("dx").kinks == 1, str(report)


# --- 5. dtype and device contracts ---------------------------------------------------------

class TanhFloat32Grad(L.Tanh):
    def backward(self, dy):
        xp = B.namespace(dy)
        return xp.astype(super().backward(dy), xp.float32)   # BUG: float32 dx for float64 x


class LinearFloat32Grad(L.Linear):
    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        self.grads["W"] = xp.astype(self.grads["W"] + x.T @ dy, xp.float32)   # BUG: float32
        self.grads["b"] += xp.sum(dy, axis=0)
        return dy @ self.params["W"].T


def test_a_float32_gradient_for_float64_input_fails_naming_the_dtype(device):
    x = _rng(device).normal((3, 4), "float64")
    report = check_layer(TanhFloat32Grad(), x)
    assert report.row("dx").failed and "dtype float32, expected float64" in report.row("dx").hint
    report = check_layer(LinearFloat32Grad(4, 2, _rng(device), dtype="float64"), x)
    assert report.row("W").failed and "float32" in report.row("W").hint, str(report)


def test_a_gradient_on_the_wrong_device_fails_naming_it():
    strict = B.resolve("array_api_strict:device1")

    class HostGrad(L.Tanh):
        def backward(self, dy):
            return B.to_numpy(super().backward(dy))      # BUG: back on the host

    report = check_layer(HostGrad(), strict.asarray(np.ones((2, 3)) * 0.3, "float64"))
    assert report.row("dx").failed and "lives on cpu" in report.row("dx").hint, str(report)


class Float32Forward(Module):
    """Correct math, but forward rounds through float32."""

    def forward(self, x):
        xp = B.namespace(x)
        self.save_cache(x)
        return xp.astype(xp.tanh(x), xp.float32)

    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(x)
        return xp.astype(dy, x.dtype) * (1 - xp.tanh(x) ** 2)


def test_a_float32_forward_is_named_as_such(device):
    report = check_layer(Float32Forward(), _rng(device).normal((3, 4), "float64"))
    assert report.failed and any("float32" in p for p in report.problems), str(report)
    assert "disagree in pattern" not in str(report)


# --- 6. a tolerance that follows the numbers ------------------------------------------------

class Exp(Module):
    def forward(self, x):
        y = B.namespace(x).exp(x)
        self.save_cache(y)
        return y

    def backward(self, dy):
        (y,) = self.pop_cache()
        return dy * y


def _penalty(factor):
    def weight_penalty(w):
        xp = B.namespace(w)
        lam = 1e-6
        return lam * xp.sum(w * w), factor * lam * w     # right: factor 2
    return weight_penalty


def test_a_tiny_wrong_gradient_is_caught(device):
    w = _rng(device, 1).normal((4, 3), "float64") * 0.05   # gradients ~1e-7
    assert check_function(_penalty(2.0), w).passed
    report = check_function(_penalty(1.0), w)
    assert report.failed and "0.5" in report.rows[0].hint, str(report)


@pytest.mark.parametrize("scale", [1.0, 1e-4, 1e-8])
def test_a_1e_4_relative_error_is_caught_at_every_magnitude(device, scale):
    x = _rng(device, 2).normal((3, 4), "float64")

    def f(error):
        def scaled_cubic(a):
            xp = B.namespace(a)
            return scale * xp.sum(a ** 3) / 3, scale * a * a * (1 + error)
        return scaled_cubic

    assert check_function(f(0.0), x).passed
    assert check_function(f(1e-4), x).failed


def test_large_magnitudes_are_no_false_alarm(device):
    rng = np.random.default_rng(4)
    assert check_layer(Exp(), _on(device, rng.uniform(-4, 12, (4, 5)))).passed
    pred, target = rng.uniform(0, 255, (4, 6)), rng.uniform(0, 255, (4, 6))
    assert check_function(losses.mse, _on(device, pred), _on(device, target)).passed
    big = _on(device, rng.normal(size=(4, 5)) * 30)
    labels = _on(device, rng.uniform(size=(4, 5)) > 0.5)
    assert check_function(losses.bce_with_logits, big, labels).passed


def test_degenerate_batchnorm_is_no_false_alarm(device):
    rows = np.tile(np.random.default_rng(5).normal(size=(1, 3)), (5, 1))
    for x in (rows, rows + 1e-9 * np.random.default_rng(6).normal(size=rows.shape)):
        report = check_layer(L.BatchNorm1d(3, _rng(device), dtype="float64"), _on(device, x))
        assert not report.failed, str(report)


class RowMax(Module):
    """y = max over features; the gradient goes to the first maximum (the tie rule)."""
    wrong = False

    def forward(self, x):
        xp = B.namespace(x)
        self.save_cache(x)
        return xp.max(x, axis=1, keepdims=True)

    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(x)
        is_max = x == xp.max(x, axis=1, keepdims=True)
        first = is_max & (xp.cumulative_sum(xp.astype(is_max, x.dtype), axis=1) == 1)
        return (2.0 if self.wrong else 1.0) * dy * xp.astype(first, x.dtype)


class RowMaxWrong(RowMax):
    wrong = True


def test_ties_in_a_max_are_non_differentiable_points_not_failures(device):
    x = _on(device, [[1.0, 3.0, 3.0, 0.5], [2.0, 2.0, 1.0, 0.0]])
    report = check_layer(RowMax(), x)
    assert not report.failed and report.row("dx").kinks == 4, str(report)
    assert "non-differentiable" in str(report)
    report = check_layer(RowMaxWrong(), _on(device, [[1.0, 3.0, 2.0, 0.5], [2.5, 2.0, 1.0, 0.0]]))
    assert report.failed


# --- 7. directional failures are localised --------------------------------------------------

class OneWrongEntry(L.Linear):
    where = (0, 0)

    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        g = x.T @ dy
        fix = xp.zeros(g.shape, dtype=g.dtype)
        fix[self.where] = 0.5 * g[self.where] + 0.1     # BUG: one entry off
        self.grads["W"] += g + fix
        self.grads["b"] += xp.sum(dy, axis=0)
        return dy @ self.params["W"].T


def test_a_single_wrong_entry_among_many_is_found():
    cpu = B.resolve("cpu")
    layer = OneWrongEntry(200, 60, _rng(cpu, 1), dtype="float64")
    layer.where = (137, 41)
    x = _rng(cpu, 2).normal((3, 200), "float64")
    report = check_layer(layer, x, check_input=False, params=["W"])
    row = report.row("W")
    assert row.mode.startswith("directional") and row.failed, str(report)
    assert row.worst == (137, 41), str(report)
    assert "scale" not in row.hint and "(137, 41)" in row.hint


def test_hints_never_say_one_times():
    cpu = B.resolve("cpu")

    class Tiny(L.Linear):
        def backward(self, dy):
            return super().backward(dy) * (1 + 4e-7)

    report = check_layer(Tiny(3, 2, _rng(cpu), dtype="float64"), _rng(cpu, 1).normal((4, 3), "float64"))
    hint = report.row("dx").hint
    assert report.row("dx").failed and "= 1 x" not in hint and "(1 + 4e-07)" in hint, str(report)


# --- 8. several inputs, clear errors, a table in Jupyter --------------------------------------

class Bilinear(Module):
    """y = (x1 @ W) * x2.  Backward: dx1 = (dy * x2) @ W.T, dx2 = dy * (x1 @ W), dW = x1.T @ (dy * x2)."""
    wrong = False

    def __init__(self, d, rng):
        super().__init__()
        self.add_param("W", rng.normal((d, d), "float64"))

    def forward(self, x1, x2):
        h = x1 @ self.params["W"]
        self.save_cache(x1, x2, h)
        return h * x2

    def backward(self, dy):
        x1, x2, h = self.pop_cache()
        self.grads["W"] += x1.T @ (dy * x2)
        dx2 = dy * h if not self.wrong else dy * x1      # BUG: x1 where h belongs
        return (dy * x2) @ self.params["W"].T, dx2


class BilinearWrong(Bilinear):
    wrong = True


def test_a_two_input_layer(device):
    r = _rng(device, 1)
    x1, x2 = r.normal((4, 3), "float64"), r.normal((4, 3), "float64")
    report = check_layer(Bilinear(3, _rng(device, 2)), x1, x2)
    assert report.passed and [row.name for row in report.rows] == ["dx[0]", "dx[1]", "W"], str(report)
    report = check_layer(BilinearWrong(3, _rng(device, 2)), x1, x2)
    assert {row.name for row in report.rows if row.failed} == {"dx[1]"}, str(report)


def test_misuse_is_one_line_naming_layer_and_parameter(device):
    class NoGrad(Module):
        def __init__(self):
            super().__init__()
            self.params["W"] = device.zeros((2, 2), "float64")

        def forward(self, x):
            return x @ self.params["W"]

    x = _rng(device).normal((3, 2), "float64")
    cases = [
        (lambda: check_layer(NoGrad(), x), "parameter 'W' has no grads entry"),
        (lambda: check_layer(lambda a: a, x), "must be a scratchae Module"),
        (lambda: check_layer(L.Tanh()), "give the input"),
        (lambda: check_layer(L.Tanh(), [[1.0, 2.0]]), "x must be an array"),
        (lambda: check_layer(L.Tanh().eval(), x), "eval mode"),
        (lambda: check_layer(L.Linear(2, 2, _rng(device), dtype="float64"), x, params=["V"]), "no parameter matches"),
        (lambda: check_layer(L.Tanh(), x, mode="fast"), "mode must be"),
        (lambda: check_layer(L.Tanh(), x, rtol=-1), "rtol must be"),
        (lambda: check_function(losses.mse, x, x, wrt=(2,)), "wrt=(2,)"),
    ]
    for call, text in cases:
        with pytest.raises(GradcheckError) as err:
            call()
        assert text in str(err.value) and "\n" not in str(err.value)


def test_a_report_renders_as_html():
    cpu = B.resolve("cpu")
    report = check_layer(BiasMean(3, 2, _rng(cpu), dtype="float64"), _rng(cpu, 1).normal((4, 3), "float64"))
    html = report._repr_html_()
    assert html.startswith("<div>") and "<table>" in html and "FAIL" in html and "<td><code>b</code></td>" in html


# --- 9. found in review: the domain edge, a forgotten return, children in a list ------------

class Sqrt(Module):
    half = 0.5

    def forward(self, x):
        self.save_cache(x)
        return B.namespace(x).sqrt(x)

    def backward(self, dy):
        (x,) = self.pop_cache()
        return dy * self.half / B.namespace(x).sqrt(x)


class SqrtMissingHalf(Sqrt):
    half = 1.0                                          # BUG: d sqrt(x) = 0.5 / sqrt(x)


def test_a_step_that_leaves_the_domain_is_not_an_ok(device):
    x = _on(device, np.random.default_rng(4).uniform(1e-6, 5e-5, (3, 4)))
    assert check_layer(Sqrt(), x).passed
    report = check_layer(SqrtMissingHalf(), x)
    assert report.failed and "0.5" in report.row("dx").hint, str(report)


class LinearNoReturn(L.Linear):
    def backward(self, dy):
        (x,) = self.pop_cache()
        self.grads["W"] += x.T @ dy
        self.grads["b"] += B.namespace(dy).sum(dy, axis=0)
        dx = dy @ self.params["W"].T  # noqa: F841  BUG: computed, never returned


def test_a_forgotten_return_fails(device):
    report = check_layer(LinearNoReturn(3, 3, _rng(device), dtype="float64"), _rng(device, 1).normal((4, 3), "float64"))
    assert report.failed and any("returned None" in p for p in report.problems), str(report)
    # a Linear that declares no input gradient returns None on purpose
    ok = check_layer(L.Linear(3, 3, _rng(device), input_grad=False, dtype="float64"),
                     _rng(device, 1).normal((4, 3), "float64"))
    assert ok.passed, str(ok)


class ListBlock(Module):
    def __init__(self, layers):
        super().__init__()
        self.blocks = list(layers)                       # children in a plain list

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x

    def backward(self, dy):
        for b in reversed(self.blocks):
            dy = b.backward(dy)
        return dy


def test_children_in_a_list_are_checked(device):
    x = _rng(device, 2).normal((4, 3), "float64")
    good = check_layer(ListBlock([L.Linear(3, 4, _rng(device, 1), dtype="float64"), L.Tanh()]), x)
    assert good.passed and [r.name for r in good.rows] == ["dx", "blocks.0.W", "blocks.0.b"], str(good)
    bad = check_layer(ListBlock([BiasMean(3, 4, _rng(device, 1), dtype="float64"), L.Tanh()]), x)
    assert {r.name for r in bad.rows if r.failed} == {"blocks.0.b"}, str(bad)


def test_a_layer_without_super_init_is_one_line():
    class NoInit(Module):
        def __init__(self):
            self.k = 2

    with pytest.raises(GradcheckError, match="super\\(\\).__init__"):
        check_layer(NoInit(), np.ones((2, 2)))


def test_a_constant_dy_is_noted():
    x = np.random.default_rng(1).normal(size=(3, 4))
    report = check_layer(L.Tanh(), x, dy=np.ones((3, 4)))
    assert any("constant" in n for n in report.notes)


class LayerNorm(Module):
    """Per row: y = (x - mean) / sqrt(var + eps).  Backward as BatchNorm's, along axis 1."""
    mean_term = True

    def forward(self, x):
        xp = B.namespace(x)
        mu = xp.mean(x, axis=1, keepdims=True)
        c = x - mu
        inv = 1.0 / xp.sqrt(xp.mean(c * c, axis=1, keepdims=True) + 1e-12)
        self.save_cache(c * inv, inv)
        return c * inv

    def backward(self, dy):
        xhat, inv = self.pop_cache()
        xp = B.namespace(dy)
        d = dy.shape[1]
        mean_term = xp.sum(dy, axis=1, keepdims=True) if self.mean_term else 0.0
        return inv / d * (d * dy - mean_term - xhat * xp.sum(dy * xhat, axis=1, keepdims=True))


class LayerNormNoMean(LayerNorm):
    mean_term = False                                   # BUG: forgets that the mean depends on x


def test_inputs_far_smaller_than_one_are_stepped_to_their_own_scale(device):
    x = 1e-5 * _rng(device).normal((4, 5), "float64")
    assert check_layer(LayerNorm(), x).passed
    assert check_layer(LayerNormNoMean(), x).failed


# --- 10. found in the second review: offsets, None for a used input, sharing that breaks ---------

class SinScaled(Module):
    factor = 1.0

    def forward(self, x):
        self.save_cache(x)
        return B.namespace(x).sin(x)

    def backward(self, dy):
        (x,) = self.pop_cache()
        return dy * B.namespace(dy).cos(x) * self.factor


class SinWrong(SinScaled):
    factor = 1.05                                       # BUG: 5% too big


def test_inputs_with_a_large_offset_are_judged_at_a_step_that_resolves_them(device):
    x = _on(device, 1e4 + np.random.default_rng(5).normal(size=(3, 4)))
    assert check_layer(SinScaled(), x).passed
    assert check_layer(SinWrong(), x).failed


def _ce_forgets_onehot(logits, labels):
    value, _ = losses.softmax_cross_entropy(logits, labels)
    xp = B.namespace(logits)
    e = xp.exp(logits - xp.max(logits, axis=1, keepdims=True))
    return value, e / xp.sum(e, axis=1, keepdims=True) / logits.shape[0]   # BUG: - onehot


def test_logits_around_1000(device):
    logits = _on(device, 1000 + 2 * np.random.default_rng(6).normal(size=(5, 4)))
    labels = device.asarray(np.array([0, 3, 1, 2, 0]), "int64")
    assert check_function(losses.softmax_cross_entropy, logits, labels).passed
    assert check_function(_ce_forgets_onehot, logits, labels).failed


class Product(Module):
    """y = a * b.  Backward: (dy * b, dy * a)."""
    drop_b = False

    def forward(self, a, b):
        self.save_cache(a, b)
        return a * b

    def backward(self, dy):
        a, b = self.pop_cache()
        return dy * b, (None if self.drop_b else dy * a)


class ProductDropsB(Product):
    drop_b = True                                       # BUG: b does get a gradient


def test_none_for_an_input_that_matters_fails(device):
    r = _rng(device, 3)
    a, b = r.normal((3, 2), "float64"), r.normal((3, 2), "float64")
    assert check_layer(Product(), a, b).passed
    report = check_layer(ProductDropsB(), a, b)
    assert report.row("dx[1]").failed and "returned None" in report.row("dx[1]").hint, str(report)


def test_sharing_that_an_optimizer_gets_wrong_fails(device):
    r = _rng(device, 4)
    first, second = L.Linear(3, 3, r, dtype="float64"), L.Linear(3, 3, r, dtype="float64")
    second.params = first.params                        # params shared, grads not: b's gradient lost
    report = check_layer(L.Sequential(first, L.Tanh(), second), r.normal((4, 3), "float64"))
    assert report.failed and any("shares the params dict" in p for p in report.problems), str(report)
    second.grads = first.grads                          # shared properly: passes
    assert check_layer(L.Sequential(first, L.Tanh(), second), r.normal((4, 3), "float64")).passed


def test_a_parameter_that_is_a_view_of_another_fails():
    class TiedByView(Module):
        def __init__(self):
            super().__init__()
            w = np.random.default_rng(0).normal(size=(3, 2))
            self.add_param("W", w)
            self.add_param("Wt", w.T)

        def forward(self, x):
            self.save_cache(x)
            return x @ self.params["W"] @ self.params["Wt"]

        def backward(self, dy):
            (x,) = self.pop_cache()
            self.grads["W"] += x.T @ dy @ self.params["Wt"].T
            self.grads["Wt"] += (x @ self.params["W"]).T @ dy
            return dy @ self.params["Wt"].T @ self.params["W"].T

    report = check_layer(TiedByView(), np.random.default_rng(1).normal(size=(4, 3)))
    assert report.failed and any("share memory" in p for p in report.problems), str(report)


def test_seed_and_signature_misuse_is_one_line():
    x = np.random.default_rng(1).normal(size=(3, 4))
    with pytest.raises(GradcheckError, match="seed must be a non-negative integer"):
        check_layer(L.Tanh(), x, seed=-1)
    assert check_layer(L.Tanh(), x, seed=np.int64(3)).passed

    class TwoOut(Module):
        def forward(self, x):
            self.save_cache(None)
            return x * 2, x * 3

        def backward(self, dys):                        # takes one tuple: not the protocol
            self.pop_cache()
            return 2 * dys[0] + 3 * dys[1]

    with pytest.raises(GradcheckError, match="backward\\(dy1, dy2\\)"):
        check_layer(TwoOut(), x)

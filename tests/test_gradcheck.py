"""The gradient checker, tested the hard way: a zoo of deliberately wrong backward passes.

A checker that passes correct layers proves little; one that also *fails* each classic
mistake, on the right array and with the right hint, is one a student can trust.
Every zoo entry is a small subclass of a real layer (or a small function / module) whose
backward is wrong in exactly one way; the test asserts which rows of the report fail.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from hypothesis import given, strategies as st

from scratchae import backend as B
from scratchae import layers as L
from scratchae import losses
from scratchae.gradcheck import (
    MAX_ELEMENTWISE, TOLERANCES, GradcheckError, check_function, check_layer, check_objective,
    numerical_gradient,
)
from scratchae.module import Module
from scratchae.testing import arrays_on, batch_shapes


def _rng(device, seed=0):
    return B.Generator(seed, device=device)


# =============================================================================================
# The zoo: one wrong backward per entry
# =============================================================================================

# --- layers with one bug each ------------------------------------------------------------------

class BiasFirstRowOnly(L.Linear):
    """db takes the first example's dy instead of the sum over the batch."""

    def backward(self, dy):
        (x,) = self.pop_cache()
        self.grads["W"] += x.T @ dy
        self.grads["b"] += dy[0, ...]                   # BUG: sum(dy, axis=0)
        return dy @ self.params["W"].T


class BiasMean(L.Linear):
    """db averages over the batch: 1/N of the right value."""

    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        self.grads["W"] += x.T @ dy
        self.grads["b"] += xp.mean(dy, axis=0)          # BUG: sum, not mean
        return dy @ self.params["W"].T


class TransposedWeightGrad(L.Linear):
    """dW = dy.T @ x: the transpose of the right gradient (same shape only when W is square)."""

    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        self.grads["W"] += dy.T @ x                     # BUG: x.T @ dy
        self.grads["b"] += xp.sum(dy, axis=0)
        return dy @ self.params["W"].T


class UntransposedWInDx(L.Linear):
    """dx = dy @ W: forgot the transpose (runs silently when W is square)."""

    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        self.grads["W"] += x.T @ dy
        self.grads["b"] += xp.sum(dy, axis=0)
        return dy @ self.params["W"]                    # BUG: W.T


class SignFlippedDx(L.Linear):
    def backward(self, dy):
        return -super().backward(dy)                    # BUG: sign


class ScaledDx(L.Linear):
    """dx off by 1%: the bug a float32 check cannot see."""

    def backward(self, dy):
        return super().backward(dy) * 1.01              # BUG: 1% too big


class OverwrittenGrad(L.Linear):
    """grads["W"] = ...: discards whatever was accumulated (tied weights, two passes)."""

    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        self.grads["W"] = x.T @ dy                      # BUG: += (and in place)
        self.grads["b"] += xp.sum(dy, axis=0)
        return dy @ self.params["W"].T


class TanhWithoutDerivative(L.Tanh):
    def backward(self, dy):
        self.pop_cache()
        return dy                                       # BUG: dy * (1 - y**2)


class DropoutWithoutMask(L.Dropout):
    def backward(self, dy):
        (scaled_mask,) = self.pop_cache()
        return dy                                       # BUG: dy * scaled_mask


class BatchNormWithoutMeanTerm(L.BatchNorm1d):
    """Forgets that mu depends on x: drops the -sum(dxhat) term."""

    def backward(self, dy):
        xhat, inv_std = self.pop_cache()
        xp = B.namespace(dy)
        n = dy.shape[0]
        self.grads["gamma"] += xp.sum(dy * xhat, axis=0)
        self.grads["beta"] += xp.sum(dy, axis=0)
        dxhat = dy * self.params["gamma"]
        return inv_std / n * (n * dxhat - xhat * xp.sum(dxhat * xhat, axis=0))   # BUG


# --- functions with one bug each (value, grads...) -----------------------------------------

def nll_dlogvar_without_half(x, mean, logvar):
    """gaussian_nll with dlogvar = (1 - (x-mean)**2/var)/N: the 0.5 of 0.5*log(var) is lost."""
    xp = B.namespace(x, mean, logvar)
    n = x.shape[0]
    diff = x - mean
    r = diff * xp.exp(-logvar)
    value = 0.5 * xp.sum(losses.LOG_2PI + logvar + diff * r) / n
    return value, -r / n, (1.0 - diff * r) / n                     # BUG: 0.5 * (...)


def nll_sigma_is_variance(x, mean, logvar):
    """Forward uses sigma = exp(0.5*logvar); backward uses exp(logvar) as sigma."""
    xp = B.namespace(x, mean, logvar)
    n = x.shape[0]
    diff = x - mean
    sigma = xp.exp(0.5 * logvar)
    value = xp.sum(0.5 * losses.LOG_2PI + xp.log(sigma) + 0.5 * (diff / sigma) ** 2) / n
    s = xp.exp(logvar)                                              # BUG: that is sigma**2
    return value, -diff / (s * s) / n, 0.5 * (1.0 - diff * diff / (s * s)) / n


def make_sampler(eps, dz, bug):
    """L = sum(z * dz) with z = mu + exp(0.5*logvar) * eps; returns (L, dmu, dlogvar)."""

    def sample(mu, logvar):
        xp = B.namespace(mu, logvar)
        z = mu + xp.exp(0.5 * logvar) * eps
        if bug == "missing_half":
            dlogvar = dz * eps * xp.exp(0.5 * logvar)               # BUG: * 0.5
        elif bug == "sigma_squared":
            dlogvar = dz * eps * 0.5 * xp.exp(logvar)               # BUG: exp(0.5 * logvar)
        else:
            dlogvar = dz * eps * 0.5 * xp.exp(0.5 * logvar)
        return xp.sum(z * dz), dz, dlogvar

    sample.__name__ = f"sample_{bug}"
    return sample


def mse_sign_flipped(pred, target):
    value, dpred = losses.mse(pred, target)
    return value, -dpred                                            # BUG: target - pred


# --- a generator objective whose gradient never reaches the encoder ---------------------------

class TinyAAE(Module):
    """encoder (3 -> 2), discriminator (2 -> 4 -> 1); generator loss mean(softplus(-D(E(x))))."""

    def __init__(self, rng):
        super().__init__()
        self.encoder = L.Linear(3, 2, rng, dtype="float64")
        self.disc = L.Sequential(L.Linear(2, 4, rng, dtype="float64"), L.Tanh(),
                                 L.Linear(4, 1, rng, dtype="float64"))

    def generator_loss(self, x):
        xp = B.namespace(x)
        logit = self.disc(self.encoder(x))
        self._logit = logit
        return xp.sum(L.softplus(-logit)) / x.shape[0]

    def backward_generator_correct(self, _):
        dlogit = -L.sigmoid(-self._logit) / self._logit.shape[0]
        self.encoder.backward(self.disc.backward(dlogit))

    def backward_generator_detached(self, _):
        dlogit = -L.sigmoid(-self._logit) / self._logit.shape[0]
        self.disc.backward(dlogit)      # BUG: dL/dz is dropped; the encoder never learns
        self.encoder.clear_cache()


# --- the zoo table ----------------------------------------------------------------------------

@dataclass
class Case:
    run: Callable            # run(device) -> GradcheckReport
    failing: set             # exactly the rows that must fail
    hint: str | None = None  # substring of the hint on every failing row
    # (None: the checker has no specific hint for this mistake; it must still fail)


def _x(device, shape=(4, 3), seed=1):
    return _rng(device, seed).normal(shape, "float64")


def _linear(cls, d_in=3, d_out=3):
    return lambda device: check_layer(cls(d_in, d_out, _rng(device), dtype="float64"), _x(device))


def _nll(fn):
    def run(device):
        r = _rng(device, 2)
        x, mean = r.normal((4, 3), "float64"), r.normal((4, 3), "float64")
        logvar = r.normal((4, 3), "float64", std=0.5)
        return check_function(fn, x, mean, logvar, wrt=(1, 2))
    return run


def _sampler(bug):
    def run(device):
        r = _rng(device, 3)
        mu, logvar = r.normal((4, 3), "float64"), r.normal((4, 3), "float64", std=0.5)
        eps, dz = r.normal((4, 3), "float64"), r.normal((4, 3), "float64")
        return check_function(make_sampler(eps, dz, bug), mu, logvar, wrt=(0, 1))
    return run


def _dropout(device):
    mask = device.asarray([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], "float64")
    return check_layer(DropoutWithoutMask(0.4), _x(device), forward_kwargs={"mask": mask})


def _batchnorm(device):
    r = _rng(device, 4)
    return check_layer(BatchNormWithoutMeanTerm(3, r, dtype="float64"), _x(device))


def _mse(device):
    r = _rng(device, 5)
    return check_function(mse_sign_flipped, r.normal((4, 3), "float64"), r.normal((4, 3), "float64"))


def _generator(device):
    model = TinyAAE(_rng(device, 6))
    x = _x(device)
    return check_objective(model, lambda: model.generator_loss(x), model.backward_generator_detached,
                           params=["encoder"])


ZOO = {
    "nll dlogvar missing 0.5": Case(_nll(nll_dlogvar_without_half), {"d(input 2)"}, "missing 0.5"),
    "sampler dlogvar missing 0.5": Case(_sampler("missing_half"), {"d(input 1)"}, "missing 0.5"),
    "nll sigma vs sigma^2": Case(_nll(nll_sigma_is_variance), {"d(input 1)", "d(input 2)"}),
    "sampler sigma vs sigma^2": Case(_sampler("sigma_squared"), {"d(input 1)"}),
    "bias: dy[0] not summed": Case(_linear(BiasFirstRowOnly, 3, 2), {"b"}),
    "bias: mean not sum": Case(_linear(BiasMean, 3, 2), {"b"}, "0.25 x numerical"),
    "dW transposed (square W)": Case(_linear(TransposedWeightGrad), {"W"}, "looks transposed"),
    "W not transposed in dx (square W)": Case(_linear(UntransposedWInDx), {"dx"}),
    "dx sign flipped": Case(_linear(SignFlippedDx, 3, 2), {"dx"}, "sign flipped"),
    "mse sign flipped": Case(_mse, {"d(input 0)"}, "sign flipped"),
    "tanh derivative forgotten": Case(lambda d: check_layer(TanhWithoutDerivative(), _x(d)), {"dx"}),
    "grads overwritten": Case(_linear(OverwrittenGrad, 3, 2), {"W"}, "+="),
    "dropout mask dropped": Case(_dropout, {"dx"}),
    "dx 1% too big": Case(_linear(ScaledDx, 3, 2), {"dx"}, "1.01 x numerical"),
    "batchnorm without mean term": Case(_batchnorm, {"dx"}),
    "generator gradient never reaches the encoder":
        Case(_generator, {"encoder.W", "encoder.b"}, "all-zero"),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_bug_is_caught(device, name):
    case = ZOO[name]
    report = case.run(device)
    text = str(report)
    assert not report.passed, f"{name}: the checker missed it\n{text}"
    failing = {r.name for r in report.rows if not r.passed}
    assert failing == case.failing, f"{name}: wrong rows blamed\n{text}"
    assert "FAIL" in text
    for row_name in case.failing:
        assert row_name in text
        if case.hint is not None:
            assert case.hint in report.row(row_name).hint, text


def test_zoo_has_at_least_ten_entries():
    assert len(ZOO) >= 10


# --- the same layers without the bug pass (so the zoo tests the bug, not the setup) -----------

CORRECT = {
    "Linear": lambda d: check_layer(L.Linear(3, 3, _rng(d), dtype="float64"), _x(d)),
    "Tanh": lambda d: check_layer(L.Tanh(), _x(d)),
    "Dropout": lambda d: check_layer(
        L.Dropout(0.4), _x(d),
        forward_kwargs={"mask": d.asarray([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], "float64")}),
    "BatchNorm1d": lambda d: check_layer(L.BatchNorm1d(3, _rng(d, 4), dtype="float64"), _x(d)),
    "gaussian_nll": _nll(losses.gaussian_nll),
    "sampler": _sampler("none"),
    "mse": lambda d: check_function(losses.mse, _x(d, seed=5), _x(d, seed=6)),
}


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_twins_pass(device, name):
    report = CORRECT[name](device)
    assert report.passed, str(report)
    assert "FAIL" not in str(report)


def test_correct_generator_objective_passes(device):
    model = TinyAAE(_rng(device, 6))
    x = _x(device)
    report = check_objective(model, lambda: model.generator_loss(x),
                             model.backward_generator_correct, params=["encoder"])
    assert report.passed, str(report)
    assert [r.name for r in report.rows] == ["encoder.W", "encoder.b"]
    assert report.row("encoder.W").analytic_norm > 0


def test_backward_that_stops_early_leaves_a_cache_the_checker_trips_on():
    """Without the clear_cache() of the detached version, the encoder's cache is still pending
    after backward: the check fails and says the chain rule never reached it, naming the layer."""
    model = TinyAAE(_rng("cpu", 6))
    x = _x(B.resolve("cpu"))

    def backward(_):
        model.disc.backward(-L.sigmoid(-model._logit) / 4)

    report = check_objective(model, lambda: model.generator_loss(x), backward)
    assert report.failed
    assert any("backward never reached" in p and "at 'encoder'" in p for p in report.problems), str(report)
    assert "problem: backward never reached" in str(report)


# =============================================================================================
# The checker itself
# =============================================================================================

@given(data=st.data(), shape=batch_shapes(min_batch=2, max_batch=4, max_features=4))
def test_checker_passes_correct_layers(device, data, shape):
    r = _rng(device, 7)
    x = data.draw(arrays_on(device, shape))
    model = L.Sequential(L.Linear(shape[1], 3, r, dtype="float64"), L.BatchNorm1d(3, r, dtype="float64"),
                         L.Softplus(), L.Linear(3, 2, r, dtype="float64"), L.Sigmoid())
    report = check_layer(model, x)
    assert report.passed, str(report)


def test_float32_is_refused_with_the_reason(device):
    layer = L.Linear(3, 2, _rng(device), dtype="float32")
    x = _rng(device).normal((4, 3), "float32")
    with pytest.raises(GradcheckError, match="float64") as err:
        check_layer(layer, x)
    msg = str(err.value)
    assert "float32" in msg and "allow_float32=True" in msg and "1%" in msg
    # a float64 x into a float32 layer is refused too (the parameters are checked)
    with pytest.raises(GradcheckError, match="float64"):
        check_layer(layer, _rng(device).normal((4, 3), "float64"))
    with pytest.raises(GradcheckError, match="float64"):
        check_function(losses.mse, x, x)


def test_integer_arrays_are_refused():
    x = np.arange(12).reshape(4, 3)
    with pytest.raises(GradcheckError, match="float64"):
        check_function(lambda a: (a.sum(), a), x)


def test_allow_float32_uses_the_float32_tolerances(device):
    x = _rng(device).normal((4, 3), "float32")
    report = check_layer(L.Tanh(), x, allow_float32=True)
    tol = TOLERANCES["float32"]
    assert report.passed, str(report)
    assert report.dtype == "float32"
    assert (report.eps, report.rtol, report.atol) == (tol["eps"], tol["rtol"], tol["atol"])
    assert "float32" in str(report)


class ScaledDxBy(L.Linear):
    factor = 1.001                                      # BUG: 0.1% too big

    def backward(self, dy):
        return super().backward(dy) * self.factor


def test_why_float32_is_refused_a_small_bug_hides_in_its_noise():
    """A 0.1% error in dx fails in float64 and passes a float32 check, on the same layer and x."""
    cpu = B.resolve("cpu")
    x = _rng(cpu, 1).normal((4, 3), "float32")
    layer = ScaledDxBy(3, 2, _rng(cpu), dtype="float32")
    assert check_layer(layer, x, allow_float32=True).passed
    layer64 = ScaledDxBy(3, 2, _rng(cpu), dtype="float64")
    assert check_layer(layer64, B.resolve("cpu").asarray(B.to_numpy(x), "float64")).failed
    assert TOLERANCES["float32"]["rtol"] > 0.0005 > TOLERANCES["float64"]["rtol"]


def test_explicit_tolerances_override_the_table():
    cpu = B.resolve("cpu")
    layer = ScaledDx(3, 2, _rng(cpu), dtype="float64")
    report = check_layer(layer, _x(cpu), rtol=0.02)
    assert report.passed and report.rtol == 0.02


def test_kink_is_reported_not_failed(device):
    host = B.to_numpy(_x(device)).copy()
    host[0, 0] = 0.0                                    # ReLU's kink, exactly
    host[1:] = np.where(np.abs(host[1:]) < 0.1, 0.5, host[1:])   # no other near-kinks
    report = check_layer(L.ReLU(), device.asarray(host, "float64"))
    row = report.row("dx")
    assert report.passed, str(report)
    assert row.kinks >= 1
    assert any("kink" in n for n in report.notes)
    assert "kink" in str(report)


def test_nondeterministic_forward_is_an_error(device):
    layer = L.Dropout(0.5, _rng(device, 8))
    with pytest.raises(GradcheckError, match="different values"):
        check_layer(layer, _x(device, (8, 8)))


class ScaledWeightGrad(L.Linear):
    def backward(self, dy):
        (x,) = self.pop_cache()
        self.grads["W"] += 1.01 * (x.T @ dy)            # BUG: 1% too big
        self.grads["b"] += B.namespace(dy).sum(dy, axis=0)
        return dy @ self.params["W"].T


def test_directional_mode_for_big_arrays_still_catches_a_1_percent_bug():
    cpu = B.resolve("cpu")
    r = _rng(cpu, 9)
    x = r.normal((2, 784), "float64")
    layer = ScaledWeightGrad(784, 400, r, dtype="float64")
    assert 784 * 400 > MAX_ELEMENTWISE
    report = check_layer(layer, x, check_input=False, params=["W"])
    row = report.row("W")
    assert row.mode.startswith("directional")
    assert not row.passed, str(report)
    assert "1.01" in row.hint
    # the correct Linear passes in the same mode
    good = L.Linear(784, 400, r, dtype="float64")
    report = check_layer(good, x, check_input=False, params=["W"])
    assert report.passed and report.row("W").mode == "directional(3)"


def test_mode_can_be_forced(device):
    layer = SignFlippedDx(3, 2, _rng(device), dtype="float64")
    rep = check_layer(layer, _x(device), mode="directional", directions=4)
    assert all(r.mode == "directional(4)" for r in rep.rows)
    assert not rep.row("dx").passed and rep.row("W").passed
    assert "sign flipped" in rep.row("dx").hint
    rep = check_layer(L.Linear(3, 2, _rng(device), dtype="float64"), _x(device), mode="elementwise")
    assert rep.passed and all(r.mode == "elementwise" for r in rep.rows)


def test_numerical_gradient_of_sum_of_cubes(device):
    x = _x(device, (3, 4))
    before = B.to_numpy(x).copy()
    xp = device.xp
    g = numerical_gradient(lambda a: xp.sum(a ** 3), x)
    assert B.device_of(g) == B.device_of(x)
    h = B.to_numpy(x)
    np.testing.assert_allclose(B.to_numpy(g), 3 * h ** 2, rtol=1e-7, atol=1e-8)
    np.testing.assert_array_equal(B.to_numpy(x), before)     # x untouched


def test_check_function_with_wrt_one_and_two(device):
    report = _nll(losses.gaussian_nll)(device)
    assert report.passed, str(report)
    assert [r.name for r in report.rows] == ["d(input 1)", "d(input 2)"]
    with pytest.raises(GradcheckError, match="wrt"):
        r = _rng(device)
        a = r.normal((2, 2), "float64")
        check_function(losses.gaussian_nll, a, a, a, wrt=(0, 1, 2))


def test_shape_wrong_gradient_is_a_failing_row(device):
    class BatchSummedDx(L.Linear):
        def backward(self, dy):
            xp = B.namespace(dy)
            return xp.sum(super().backward(dy), axis=0, keepdims=True)   # BUG: (1, d) not (N, d)

    report = check_layer(BatchSummedDx(3, 2, _rng(device), dtype="float64"), _x(device))
    row = report.row("dx")
    assert not row.passed and report.row("W").passed
    assert "(1, 3)" in row.hint and "(4, 3)" in row.hint
    assert "FAIL" in str(report)

    xp = device.xp
    rep = check_function(lambda a: (xp.sum(a * a), 2 * a[0, ...]), _x(device))
    assert not rep.passed and "expected (4, 3)" in rep.rows[0].hint


def test_all_zero_gradients_prove_nothing(device):
    x = -device.xp.abs(_x(device)) - 0.5                         # ReLU off everywhere
    report = check_layer(L.ReLU(), x)
    assert report.inconclusive and not report.passed and not report.failed
    assert "every gradient is exactly zero" in str(report)
    # ... while a check with a nonzero gradient passes
    report = check_layer(L.ReLU(), -x)
    assert report.passed and report.verdict == "passed"


def test_check_layer_restores_buffers_and_leaves_no_cache(device):
    bn = L.BatchNorm1d(3, _rng(device), dtype="float64")
    before = {k: B.to_numpy(v).copy() for k, v in bn.buffers.items()}
    assert check_layer(bn, _x(device)).passed
    for k, v in bn.buffers.items():
        np.testing.assert_array_equal(B.to_numpy(v), before[k])
    assert not bn.has_cache


def test_report_prints_as_a_table():
    cpu = B.resolve("cpu")
    report = check_layer(BiasFirstRowOnly(3, 2, _rng(cpu), dtype="float64"), _x(cpu))
    text = str(report)
    lines = text.splitlines()
    assert lines[0].startswith("gradcheck BiasFirstRowOnly(3 -> 2): FAILED (1 of 3 arrays wrong)")
    assert lines[1].split()[:3] == ["array", "shape", "mode"]
    b_line = next(l for l in lines if l.startswith("b "))
    assert "FAIL" in b_line and "<-" in b_line
    assert repr(report) == text
    assert not bool(report)
    with pytest.raises(KeyError):
        report.row("nope")
    assert math.isfinite(report.row("b").max_rel_err)


# --- regressions: checker bugs found in review, now fixed -------------------------------------

class FiveSquare(L.Tanh):
    """y = 5 x**2 with a 20% error in backward: smooth, but curved (y'' = 10)."""

    def forward(self, x):
        self.save_cache(x)
        return 5.0 * x * x

    def backward(self, dy):
        (x,) = self.pop_cache()
        return dy * 10.0 * x * 1.2                      # BUG: 20% too big


def test_curved_bug_fails_in_float64():
    cpu = B.resolve("cpu")
    report = check_layer(FiveSquare(), _x(cpu))
    assert not report.passed and report.row("dx").kinks == 0
    assert "1.2 x numerical" in report.row("dx").hint


def test_float32_mode_does_not_mistake_curvature_for_kinks():
    cpu = B.resolve("cpu")
    x = _rng(cpu, 1).normal((4, 3), "float32")
    report = check_layer(FiveSquare(), x, allow_float32=True)
    assert not report.passed, str(report)


def test_shape_wrong_row_does_not_claim_all_zero():
    cpu = B.resolve("cpu")
    rep = check_function(lambda a: ((a * a).sum(), 2 * a[0]), _x(cpu))
    assert not any("proves nothing" in n for n in rep.notes), str(rep)

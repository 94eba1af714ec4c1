"""The stochastic pieces: the reparameterised sampler, KL terms, corruptions, priors.

Two kinds of test:

* **gradients** against central differences (``check_function`` / ``check_layer``) on
  every device, over hypothesis-drawn shapes and values, with the noise held fixed;
* **statistics** with fixed seeds: sample moments, Monte Carlo KL and the
  reparameterisation gradient estimate against closed forms. Each tolerance is a stated
  number of standard errors (SE) of the estimate, computed from the closed-form or the
  sample variance. With k = 5 a correct implementation fails with probability ~6e-7 per
  comparison *if the seed were random*; the seeds are fixed, so the tests are
  deterministic, and each test also asserts that the classic bug it targets would sit
  far outside the tolerance (so the test has the power to catch it).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from scratchae import backend as B
from scratchae.gradcheck import check_function, check_layer
from scratchae.module import InputError
from scratchae.stochastic import (
    CORRUPTIONS, GaussianMixturePrior, GaussianSample, SoftClamp, StandardGaussianPrior,
    SwissRollPrior, UniformPrior, corrupt, gaussian_kl, gaussian_kl_between, make_prior,
)
from scratchae.testing import arrays_on, batch_shapes

#: standard errors allowed between a Monte Carlo estimate and its exact value (see module doc)
K_SE = 5.0


def _rng(device, seed=0):
    return B.Generator(seed, device=device)


def _np(a):
    return B.to_numpy(a).astype("float64")


# =============================================================================================
# Gradients against finite differences, every device, hypothesis-drawn shapes and values
# =============================================================================================

def _sampler_objective(eps, dz):
    """``f(mu, logvar) -> (sum(z * dz), dmu, dlogvar)`` with eps and dz held fixed."""
    def f(mu, logvar):
        xp = B.namespace(mu, logvar)
        s = GaussianSample()
        z = s(mu, logvar, eps=eps)
        dmu, dlogvar = s.backward(dz)
        return xp.sum(z * dz), dmu, dlogvar
    f.__name__ = "GaussianSample"
    return f


@given(data=st.data(), shape=batch_shapes(max_batch=4, max_features=4))
def test_gaussian_sample_gradients(device, data, shape):
    mu = data.draw(arrays_on(device, shape))
    logvar = data.draw(arrays_on(device, shape, low=-3.0, high=3.0))
    r = _rng(device, 7)
    eps, dz = r.normal(shape, "float64"), r.normal(shape, "float64")
    rep = check_function(_sampler_objective(eps, dz), mu, logvar, wrt=(0, 1))
    assert rep.passed, str(rep)


def test_gaussian_sample_forward_is_mu_plus_sigma_eps(device):
    r = _rng(device, 1)
    mu, logvar, eps = (r.normal((3, 4), "float64") for _ in range(3))
    z = GaussianSample()(mu, logvar, eps=eps)
    expect = _np(mu) + np.exp(0.5 * _np(logvar)) * _np(eps)
    np.testing.assert_allclose(_np(z), expect, rtol=1e-13, atol=1e-13)
    assert B.device_of(z) == B.device_of(mu)


def test_gaussian_sample_refuses_mismatched_shapes_and_needs_noise(device):
    r = _rng(device, 2)
    mu = r.normal((3, 4), "float64")
    with pytest.raises(InputError, match=r"\(3, 4\).*\(3, 2\)"):
        GaussianSample()(mu, r.normal((3, 2), "float64"))
    with pytest.raises(InputError, match="eps"):
        GaussianSample()(mu, mu, eps=r.normal((4, 3), "float64"))
    with pytest.raises(ValueError, match="rng"):
        GaussianSample()(mu, mu)
    s = GaussianSample()
    s(mu, mu, eps=r.normal((3, 4), "float64"))
    with pytest.raises(InputError, match="dz"):
        s.backward(r.normal((3, 1), "float64"))      # no broadcasting of dz


@given(data=st.data(), shape=batch_shapes())
def test_gaussian_kl_gradients(device, data, shape):
    mu = data.draw(arrays_on(device, shape))
    logvar = data.draw(arrays_on(device, shape))
    rep = check_function(gaussian_kl, mu, logvar, wrt=(0, 1))
    assert not rep.failed, str(rep)
    m, lv = _np(mu), _np(logvar)
    direct = 0.5 * (np.exp(lv) + m ** 2 - 1 - lv).sum() / shape[0]
    assert abs(B.to_scalar(gaussian_kl(mu, logvar)[0]) - direct) < 1e-12 * (1 + abs(direct))


@given(data=st.data(), shape=batch_shapes())
def test_gaussian_kl_between_gradients_all_four(device, data, shape):
    mu_q, lv_q, mu_p, lv_p = (data.draw(arrays_on(device, shape, low=-2.5, high=2.5))
                              for _ in range(4))
    rep = check_function(gaussian_kl_between, mu_q, lv_q, mu_p, lv_p, wrt=(0, 1, 2, 3))
    assert not rep.failed, str(rep)
    # (q == p gives zero gradients everywhere: inconclusive, not failed)
    assert len(rep.rows) == 4


@given(data=st.data(), shape=batch_shapes())
def test_gaussian_kl_between_standard_normal_is_gaussian_kl(device, data, shape):
    mu = data.draw(arrays_on(device, shape))
    logvar = data.draw(arrays_on(device, shape))
    zeros = device.xp.zeros_like(mu)
    v1, dmu1, dlv1 = gaussian_kl(mu, logvar)
    v2, dmu2, dlv2, _, _ = gaussian_kl_between(mu, logvar, zeros, zeros)
    assert abs(B.to_scalar(v1) - B.to_scalar(v2)) <= 1e-12 * (1 + abs(B.to_scalar(v1)))
    np.testing.assert_allclose(_np(dmu2), _np(dmu1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_np(dlv2), _np(dlv1), rtol=1e-12, atol=1e-15)


def test_gaussian_kl_is_zero_only_at_the_prior_and_refuses_shapes(device):
    z = device.zeros((2, 3), "float64")
    assert B.to_scalar(gaussian_kl(z, z)[0]) == 0.0
    assert B.to_scalar(gaussian_kl_between(z + 1.0, z, z + 1.0, z)[0]) == 0.0
    with pytest.raises(InputError):
        gaussian_kl(z, device.zeros((2, 2), "float64"))
    with pytest.raises(InputError):
        gaussian_kl_between(z, z, z, device.zeros((3, 3), "float64"))


@given(data=st.data(), shape=batch_shapes(), bound=st.floats(0.5, 6.0))
def test_soft_clamp_gradients(device, data, shape, bound):
    x = data.draw(arrays_on(device, shape, low=-8.0, high=8.0))
    rep = check_layer(SoftClamp(bound), x)
    assert rep.passed, str(rep)
    y = _np(SoftClamp(bound).eval()(x))
    assert np.all(np.abs(y) < bound)


def test_soft_clamp_is_near_identity_near_zero():
    x = B.resolve("cpu").asarray([[-0.01, 0.0, 0.02]], "float64")
    np.testing.assert_allclose(_np(SoftClamp(10.0).eval()(x)), _np(x), rtol=1e-5)


# =============================================================================================
# Statistics of the sampler: moments, Monte Carlo KL, the reparameterisation gradient
# =============================================================================================

# logvar far from 0 on both sides: the sigma-vs-sigma**2 mix-up (std = exp(logvar), or
# var = exp(logvar)**2) gives variances e**3 = 20.1 and e**-2.4 = 0.09 instead of
# e**1.5 = 4.48 and e**-1.2 = 0.30.
MU = [0.7, -2.0]
LOGVAR = [1.5, -1.2]


def test_sampler_mean_and_variance(device):
    m = 200_000
    mu = device.asarray(np.tile(MU, (m, 1)), "float64")
    logvar = device.asarray(np.tile(LOGVAR, (m, 1)), "float64")
    z = _np(GaussianSample(_rng(device, 11))(mu, logvar))
    var = np.exp(LOGVAR)
    # sample mean: SE = sigma / sqrt(m); sample variance of a Gaussian:
    # SE = sigma**2 * sqrt(2 / (m - 1))
    se_mean = np.sqrt(var / m)
    se_var = var * np.sqrt(2.0 / (m - 1))
    assert np.all(np.abs(z.mean(0) - MU) < K_SE * se_mean), (z.mean(0), MU)
    s2 = z.var(0, ddof=1)
    assert np.all(np.abs(s2 - var) < K_SE * se_var), (s2, var)
    # power: the bug's variances are hundreds of SE away
    assert np.all(np.abs(s2 - var ** 2) > 50 * se_var)


def test_sampler_draws_from_its_generator_reproducibly(device):
    mu = device.zeros((3, 2), "float64")
    a = GaussianSample(_rng(device, 5))(mu, mu)
    b = GaussianSample(_rng(device, 5))(mu, mu)
    c = GaussianSample(_rng(device, 6))(mu, mu)
    assert np.array_equal(_np(a), _np(b))
    assert not np.array_equal(_np(a), _np(c))


def test_monte_carlo_kl_matches_gaussian_kl():
    m = 400_000
    mu_row = np.array([0.7, -2.0, 0.3])
    lv_row = np.array([1.5, -1.2, 0.4])
    be = B.resolve("cpu")
    mu = be.asarray(np.tile(mu_row, (m, 1)), "float64")
    logvar = be.asarray(np.tile(lv_row, (m, 1)), "float64")
    z = _np(GaussianSample(_rng("cpu", 3))(mu, logvar))
    # log q(z) - log p(z) per example (the log 2 pi terms cancel)
    log_q = -0.5 * ((z - mu_row) ** 2 / np.exp(lv_row) + lv_row).sum(1)
    log_p = -0.5 * (z ** 2).sum(1)
    ratio = log_q - log_p
    mc = ratio.mean()
    se = ratio.std(ddof=1) / math.sqrt(m)          # SE of a mean of iid draws
    analytic = B.to_scalar(gaussian_kl(mu, logvar)[0])    # mean over identical rows = one row's KL
    assert abs(mc - analytic) < K_SE * se, (mc, analytic, se)
    # power: KL written with sigma in place of sigma**2 would be far off
    wrong = 0.5 * (np.exp(0.5 * lv_row) + mu_row ** 2 - 1 - lv_row).sum()
    assert abs(mc - wrong) > 20 * se


def test_reparameterisation_gradient_of_a_quadratic_matches_closed_form(device):
    """E[f(z)], f(z) = sum(a z**2 + b z), z ~ N(mu, exp(logvar)):
    E f = sum(a (mu**2 + exp(logvar)) + b mu), so
    d/dmu = 2 a mu + b  and  d/dlogvar = a exp(logvar).
    Estimate: average over samples of GaussianSample.backward(dz), dz = f'(z) = 2 a z + b.
    """
    m = 200_000
    a = np.array([0.8, -0.5, 1.3])
    b = np.array([0.3, 1.0, -0.7])
    mu_row = np.array([0.5, -1.0, 0.2])
    lv_row = np.array([1.5, -1.2, 0.4])
    mu = device.asarray(np.tile(mu_row, (m, 1)), "float64")
    logvar = device.asarray(np.tile(lv_row, (m, 1)), "float64")
    s = GaussianSample(_rng(device, 21))
    z = s(mu, logvar)
    dz = device.asarray(2 * a, "float64") * z + device.asarray(b, "float64")
    dmu, dlogvar = (_np(g) for g in s.backward(dz))
    want_mu = 2 * a * mu_row + b
    want_lv = a * np.exp(lv_row)
    # per-sample estimates are iid: SE = sample std / sqrt(m)
    se_mu = dmu.std(0, ddof=1) / math.sqrt(m)
    se_lv = dlogvar.std(0, ddof=1) / math.sqrt(m)
    assert np.all(np.abs(dmu.mean(0) - want_mu) < K_SE * se_mu), (dmu.mean(0), want_mu)
    assert np.all(np.abs(dlogvar.mean(0) - want_lv) < K_SE * se_lv), (dlogvar.mean(0), want_lv)
    # power: a backward using sigma for the variance (dlogvar = dz * eps * exp(logvar)) has
    # expectation 2 a exp(1.5 logvar), many SE away from a exp(logvar) where logvar = 1.5
    # (the test fails when any coordinate does; near logvar = -1.2 the two happen to be close)
    wrong_lv = 2 * a * np.exp(1.5 * lv_row)
    assert np.any(np.abs(wrong_lv - want_lv) > 100 * se_lv)


# =============================================================================================
# Corruptions
# =============================================================================================

N_PIX = 100_000


def _frac_tol(p, n):
    """K_SE standard errors of an observed fraction with success probability p."""
    return K_SE * math.sqrt(p * (1 - p) / n)


def test_masking_drops_the_level_fraction(device):
    x = device.asarray(np.ones((100, N_PIX // 100)), "float64")
    y = _np(corrupt(x, "masking", 0.3, rng=_rng(device, 1)))
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert abs((y == 0).mean() - 0.3) < _frac_tol(0.3, N_PIX)


def test_salt_and_pepper_fractions(device):
    level = 0.2
    x = device.asarray(np.full((100, N_PIX // 100), 0.5), "float64")
    y = _np(corrupt(x, "salt_pepper", level, rng=_rng(device, 2)))
    assert set(np.unique(y)) <= {0.0, 0.5, 1.0}
    for value, p in ((0.0, level / 2), (1.0, level / 2), (0.5, 1 - level)):
        assert abs((y == value).mean() - p) < _frac_tol(p, N_PIX), value


def test_gaussian_noise_std(device):
    level = 0.3
    x = device.asarray(np.full((100, N_PIX // 100), 0.5), "float64")
    noise = _np(corrupt(x, "gaussian", level, rng=_rng(device, 3))) - 0.5
    # mean: SE = level / sqrt(n); sample std of a Gaussian: SE ~ level / sqrt(2 n)
    assert abs(noise.mean()) < K_SE * level / math.sqrt(N_PIX)
    assert abs(noise.std(ddof=1) - level) < K_SE * level / math.sqrt(2 * N_PIX)


def test_corruption_keeps_dtype_shape_device(device):
    for kind in CORRUPTIONS:
        for dt in ("float32", "float64"):
            x = _rng(device, 4).uniform((3, 5), dtype=dt)
            y = corrupt(x, kind, 0.4, rng=_rng(device, 5))
            assert tuple(y.shape) == (3, 5) and B.dtype_name(y.dtype) == dt, kind
            assert B.device_of(y) == B.device_of(x)


def test_injected_noise_gives_deterministic_outputs(device):
    r = _rng(device, 6)
    x = r.uniform((4, 5), dtype="float64")
    xh = _np(x)
    mask = r.bernoulli((4, 5), 0.6, "float64")
    normal = r.normal((4, 5), "float64")
    u = r.uniform((4, 5), dtype="float64")
    uh = _np(u)
    expected = {
        "masking": (mask, xh * _np(mask)),
        "gaussian": (normal, xh + 0.25 * _np(normal)),
        "salt_pepper": (u, np.where(uh < 0.125, 0.0, np.where(uh > 1 - 0.125, 1.0, xh))),
    }
    for kind, (noise, want) in expected.items():
        y1 = corrupt(x, kind, 0.25, noise=noise)        # no rng needed
        y2 = corrupt(x, kind, 0.25, rng=_rng(device, 99), noise=noise)   # rng is ignored
        assert np.array_equal(_np(y1), _np(y2)), kind
        np.testing.assert_allclose(_np(y1), want, rtol=0, atol=1e-15, err_msg=kind)


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_wrong_shape_noise_raises(device, kind):
    x = device.zeros((4, 5), "float64")
    with pytest.raises(InputError, match=r"\(5, 4\).*\(4, 5\)"):
        corrupt(x, kind, 0.3, noise=device.zeros((5, 4), "float64"))
    with pytest.raises(InputError):
        corrupt(x, kind, 0.3, noise=device.zeros((1, 5), "float64"))   # no broadcasting


def test_corrupt_needs_noise_or_rng_and_a_known_kind(device):
    x = device.zeros((2, 3), "float64")
    with pytest.raises(ValueError, match="rng"):
        corrupt(x, "masking", 0.3)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(x, "blur", 0.3, rng=_rng(device))


# =============================================================================================
# Priors
# =============================================================================================

def test_prior_shapes_dtypes_devices(device):
    r = _rng(device, 8)
    for prior, dim in ((StandardGaussianPrior(5), 5), (UniformPrior(3), 3),
                       (GaussianMixturePrior(), 2), (SwissRollPrior(), 2)):
        for dt in ("float32", "float64"):
            z = prior.sample(7, r, dtype=dt)
            assert tuple(z.shape) == (7, dim), prior
            assert B.dtype_name(z.dtype) == dt, prior
            assert B.device_of(z) == device.device, prior
            assert np.all(np.isfinite(_np(z)))
        assert prior.dim == dim


def test_uniform_and_swiss_roll_ranges():
    r = _rng("cpu", 9)
    u = _np(UniformPrior(4).sample(20_000, r, dtype="float64"))
    assert u.min() >= -1.0 and u.max() <= 1.0
    assert u.min() < -0.99 and u.max() > 0.99          # the whole cube is covered
    s = _np(SwissRollPrior().sample(20_000, r, dtype="float64"))
    radius = np.hypot(s[:, 0], s[:, 1])
    assert radius.max() <= 3.0 + 1e-12 and radius.max() > 2.95
    # labelled: t in the label's tenth of [0, 1], so radius 3 sqrt(t) in [3 sqrt(c/k), 3 sqrt((c+1)/k)]
    for c in (0, 4, 9):
        labels = np.full(2000, c)
        s = _np(SwissRollPrior().sample(2000, r, labels=labels, dtype="float64"))
        rad = np.hypot(s[:, 0], s[:, 1])
        assert rad.min() >= 3 * math.sqrt(c / 10) - 1e-12
        assert rad.max() <= 3 * math.sqrt((c + 1) / 10) + 1e-12


def test_standard_gaussian_prior_moments():
    z = _np(StandardGaussianPrior(3).sample(100_000, _rng("cpu", 10), dtype="float64"))
    n = z.shape[0]
    assert np.all(np.abs(z.mean(0)) < K_SE / math.sqrt(n))
    assert np.all(np.abs(z.var(0, ddof=1) - 1) < K_SE * math.sqrt(2 / (n - 1)))


@pytest.mark.parametrize("k", [10, 4])
def test_mixture_components_sit_on_the_circle(k):
    prior = GaussianMixturePrior(k=k, shift=1.4, x_std=0.5, y_std=0.1)
    r = _rng("cpu", 12)
    n = 4000
    for c in range(k):
        z = _np(prior.sample(n, r, labels=np.full(n, c), dtype="float64"))
        theta = 2 * math.pi * c / k
        want = 1.4 * np.array([math.cos(theta), math.sin(theta)])
        # each coordinate's std is at most x_std = 0.5: SE <= 0.5 / sqrt(n)
        assert np.all(np.abs(z.mean(0) - want) < K_SE * 0.5 / math.sqrt(n)), (c, z.mean(0), want)
    # labels are taken modulo k
    a = _np(prior.sample(50, _rng("cpu", 13), labels=np.full(50, 1 + k), dtype="float64"))
    b = _np(prior.sample(50, _rng("cpu", 13), labels=np.full(50, 1), dtype="float64"))
    assert np.array_equal(a, b)


def test_mixture_without_labels_uses_every_component_equally():
    k, n = 10, 50_000
    z = _np(GaussianMixturePrior(k=k).sample(n, _rng("cpu", 14), dtype="float64"))
    angle = np.arctan2(z[:, 1], z[:, 0]) % (2 * math.pi)
    comp = np.round(angle / (2 * math.pi / k)).astype(int) % k     # nearest component's angle
    frac = np.bincount(comp, minlength=k) / n
    # y_std = 0.1 at radius 1.4 keeps ~all samples within half a sector (18 degrees) of their centre
    assert np.all(np.abs(frac - 1 / k) < K_SE * math.sqrt(0.1 * 0.9 / n) + 0.005), frac


def test_mixture_accepts_device_labels(device):
    labels = device.asarray(np.array([0, 3, 7]), "int64")
    z = GaussianMixturePrior().sample(3, _rng(device, 15), labels=labels, dtype="float64")
    host = GaussianMixturePrior().sample(3, _rng("cpu", 15), labels=np.array([0, 3, 7]), dtype="float64")
    assert np.array_equal(_np(z), _np(host))
    assert B.device_of(z) == device.device


def test_make_prior():
    assert isinstance(make_prior("gaussian", 7), StandardGaussianPrior) and make_prior("gaussian", 7).dim == 7
    assert isinstance(make_prior("uniform", 3), UniformPrior)
    assert isinstance(make_prior("mixture"), GaussianMixturePrior)
    assert isinstance(make_prior("swiss_roll", 2), SwissRollPrior)
    for name in ("mixture", "swiss_roll"):
        with pytest.raises(ValueError, match="2-D"):
            make_prior(name, 3)
    with pytest.raises(ValueError, match="unknown prior"):
        make_prior("laplace", 2)

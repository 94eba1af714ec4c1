"""Every loss: value against a direct formula, gradient against finite differences."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from scratchae import backend as B
from scratchae import losses
from scratchae.gradcheck import check_function
from scratchae.module import InputError
from scratchae.testing import arrays_on, batch_shapes


@given(data=st.data(), shape=batch_shapes())
def test_mse(device, data, shape):
    pred = data.draw(arrays_on(device, shape))
    target = data.draw(arrays_on(device, shape))
    value, _ = losses.mse(pred, target)
    p, t = B.to_numpy(pred), B.to_numpy(target)
    assert abs(B.to_scalar(value) - ((p - t) ** 2).sum() / shape[0]) < 1e-10
    rep = check_function(losses.mse, pred, target)
    assert not rep.failed, str(rep)
    assume(rep.passed)              # pred == target: every gradient zero, inconclusive


@given(data=st.data(), shape=batch_shapes())
def test_bce_with_logits(device, data, shape):
    logits = data.draw(arrays_on(device, shape, low=-6, high=6))
    target = data.draw(arrays_on(device, shape, low=0, high=1))
    value, _ = losses.bce_with_logits(logits, target)
    l, t = B.to_numpy(logits), B.to_numpy(target)
    p = 1 / (1 + np.exp(-l))
    direct = -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum() / shape[0]
    assert abs(B.to_scalar(value) - direct) < 1e-9 * (1 + abs(direct))
    rep = check_function(losses.bce_with_logits, logits, target)
    assert rep.passed, str(rep)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_exact_at_huge_logits(device, dtype):
    logits = device.asarray([[1e4, -1e4, 1e4, -1e4]], dtype)
    target = device.asarray([[1.0, 0.0, 0.0, 1.0]], dtype)
    value, dl = losses.bce_with_logits(logits, target)
    assert B.to_scalar(value) == 2e4                       # two confidently wrong pixels
    assert list(B.to_numpy(dl)[0]) == [0.0, 0.0, 1.0, -1.0]


@given(data=st.data(), shape=batch_shapes())
def test_gaussian_nll(device, data, shape):
    x = data.draw(arrays_on(device, shape))
    mean = data.draw(arrays_on(device, shape))
    logvar = data.draw(arrays_on(device, shape, low=-2, high=2))
    value, _, _ = losses.gaussian_nll(x, mean, logvar)
    xh, mh, lh = B.to_numpy(x), B.to_numpy(mean), B.to_numpy(logvar)
    sd = np.exp(0.5 * lh)
    direct = -(-0.5 * np.log(2 * np.pi) - np.log(sd) - 0.5 * ((xh - mh) / sd) ** 2).sum() / shape[0]
    assert abs(B.to_scalar(value) - direct) < 1e-9 * (1 + abs(direct))
    assert check_function(losses.gaussian_nll, x, mean, logvar, wrt=(1, 2)).passed


@given(data=st.data(), shape=batch_shapes(min_features=2))
def test_softmax_cross_entropy(device, data, shape):
    logits = data.draw(arrays_on(device, shape))
    labels_host = np.asarray(data.draw(st.lists(st.integers(0, shape[1] - 1), min_size=shape[0], max_size=shape[0])))
    labels = device.asarray(labels_host, "int64")
    value, _ = losses.softmax_cross_entropy(logits, labels)
    l = B.to_numpy(logits)
    lp = l - np.log(np.exp(l).sum(1, keepdims=True))
    assert abs(B.to_scalar(value) + lp[np.arange(shape[0]), labels_host].sum() / shape[0]) < 1e-10
    assert check_function(losses.softmax_cross_entropy, logits, labels).passed
    probs = device.asarray(np.eye(shape[1])[labels_host], "float64")
    v2, _ = losses.softmax_cross_entropy(logits, probs)
    assert abs(B.to_scalar(v2) - B.to_scalar(value)) < 1e-12


def test_logsumexp_is_stable(device):
    a = device.asarray([[1000.0, 1000.0], [-1000.0, -1000.0], [-math.inf, -math.inf]], "float64")
    lse = B.to_numpy(losses.logsumexp(a, axis=1))
    assert abs(lse[0] - (1000 + math.log(2))) < 1e-12
    assert abs(lse[1] - (-1000 + math.log(2))) < 1e-12
    assert lse[2] == -math.inf


def test_losses_refuse_broadcasting(device):
    a = device.zeros((4, 3))
    b = device.zeros((1, 3))
    for fn in (losses.mse, losses.bce_with_logits):
        with pytest.raises(InputError, match=r"\(4, 3\).*\(1, 3\)"):
            fn(a, b)
    with pytest.raises(InputError, match="shapes differ"):
        losses.gaussian_nll(a, a, b)


def test_every_loss_is_the_batch_mean_of_its_per_example_terms(device):
    """One implementation per formula: the losses, log p(x|z) and the ELBO share these terms."""
    from scratchae.models.base import log_likelihood
    rng = np.random.default_rng(5)
    l, t, m, lv = (device.asarray(rng.standard_normal((6, 7)) * s, "float64") for s in (3, 1, 1, 0.5))
    t01 = device.asarray(rng.random((6, 7)), "float64")
    lh, th = B.to_numpy(l), B.to_numpy(t01)
    bce = B.to_numpy(losses.bce_per_example(l, t01))
    expect = np.sum(np.logaddexp(0, lh) - th * lh, axis=1)
    np.testing.assert_allclose(bce, expect, rtol=1e-12)
    assert abs(B.to_scalar(losses.bce_with_logits(l, t01)[0]) - expect.mean()) < 1e-9
    np.testing.assert_allclose(B.to_numpy(log_likelihood(l, t01, "bernoulli")), -expect, rtol=1e-12)
    nll = B.to_numpy(losses.gaussian_nll_per_example(t, m, lv))
    mh, lvh, tvh = B.to_numpy(m), B.to_numpy(lv), B.to_numpy(t)
    expect = 0.5 * np.sum(math.log(2 * math.pi) + lvh + (tvh - mh) ** 2 / np.exp(lvh), axis=1)
    np.testing.assert_allclose(nll, expect, rtol=1e-12)
    assert abs(B.to_scalar(losses.gaussian_nll(t, m, lv)[0]) - expect.mean()) < 1e-9
    out = device.asarray(np.concatenate([mh, lvh], axis=1), "float64")
    np.testing.assert_allclose(B.to_numpy(log_likelihood(out, t, "gaussian")), -expect, rtol=1e-12)
    se = B.to_numpy(losses.squared_error_per_example(l, t))
    np.testing.assert_allclose(se, np.sum((lh - tvh) ** 2, axis=1), rtol=1e-12)
    assert abs(B.to_scalar(losses.mse(l, t)[0]) - se.mean()) < 1e-9
    with pytest.raises(ValueError, match="not mse"):
        log_likelihood(l, t, "mse")

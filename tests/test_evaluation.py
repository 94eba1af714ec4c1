"""evaluation.mmd2: the unbiased kernel two-sample statistic, against its definition written as loops."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from scratchae import evaluation


def mmd2_by_loops(a, b, h):
    """The definition, one kernel value at a time (float64 NumPy on the host)."""
    def k(u, v):
        return math.exp(-float(np.sum((u - v) ** 2)) / (2.0 * h * h))
    n, m = len(a), len(b)
    k_aa = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    k_bb = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    k_ab = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
    return k_aa + k_bb - 2.0 * k_ab


def median_bandwidth(a, b):
    z = np.concatenate([a, b])
    d2 = np.sum((z[:, None] - z[None]) ** 2, axis=-1)
    return math.sqrt(np.median(d2[~np.eye(len(z), dtype=bool)]))


@given(n=st.integers(2, 7), m=st.integers(2, 7), d=st.integers(1, 3), seed=st.integers(0, 2**16),
       bandwidth=st.one_of(st.none(), st.floats(0.1, 5.0)))
def test_mmd2_is_its_definition(device, n, m, d, seed, bandwidth):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, d)), 0.5 + rng.normal(size=(m, d))
    h = median_bandwidth(a, b) if bandwidth is None else bandwidth
    got = evaluation.mmd2(device.asarray(a, "float64"), device.asarray(b, "float64"), bandwidth=bandwidth)
    assert isinstance(got, float)
    assert got == pytest.approx(mmd2_by_loops(a, b, h), rel=1e-9, abs=1e-12)


def test_mmd2_tells_a_shift_from_the_same_distribution(device):
    rng = np.random.default_rng(0)
    a, b, shifted = rng.normal(size=(200, 2)), rng.normal(size=(200, 2)), 1.0 + rng.normal(size=(200, 2))
    for h in (None, 0.3, 3.0):
        same = evaluation.mmd2(device.asarray(a, "float64"), device.asarray(b, "float64"), bandwidth=h)
        apart = evaluation.mmd2(device.asarray(a, "float64"), device.asarray(shifted, "float64"), bandwidth=h)
        assert abs(same) < 0.01 and apart > 10 * max(abs(same), 1e-3), (h, same, apart)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1", np.ones(1), True])
def test_mmd2_refuses_a_bad_bandwidth(bad):
    a = np.zeros((3, 2))
    with pytest.raises(ValueError, match="mmd2: bandwidth"):
        evaluation.mmd2(a, a, bandwidth=bad)


@pytest.mark.parametrize("a_shape, b_shape", [((1, 2), (5, 2)), ((5, 2), (1, 2)), ((5, 2), (5, 3)), ((10,), (10,))])
def test_mmd2_refuses_samples_it_cannot_use(a_shape, b_shape):
    with pytest.raises(ValueError, match=r"mmd2: expected two samples \(n, d\) and \(m, d\)"):
        evaluation.mmd2(np.zeros(a_shape), np.ones(b_shape))


def test_mmd2_takes_a_numpy_scalar_bandwidth():
    a, b = np.random.default_rng(1).normal(size=(2, 6, 2))
    assert evaluation.mmd2(a, b, bandwidth=np.float32(0.5)) == pytest.approx(mmd2_by_loops(a, b, 0.5), rel=1e-6)

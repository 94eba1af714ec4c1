"""Hypothesis strategies for property-testing layers, ours or yours (needs ``hypothesis``).

Check your own layer against finite differences over many random shapes and values::

    from hypothesis import assume, given, settings, strategies as st
    from scratchae.testing import batch_shapes, arrays_on
    from scratchae.gradcheck import check_layer

    @settings(max_examples=25, deadline=None)
    @given(data=st.data(), shape=batch_shapes(max_features=6))
    def test_my_layer(data, shape):
        x = data.draw(arrays_on("cpu", shape, away_from=(0.0,)))   # kinks avoided
        report = check_layer(MyLayer().to(dtype="float64"), x)
        assert not report.failed, str(report)
        assume(report.passed)          # an input that proves nothing (inconclusive) is skipped

Arrays are drawn on the host and moved to the backend named by ``device``
(``"cpu"``, ``"cuda"``, ``"array_api_strict:device1"``, or a Backend).
"""
from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from . import backend as B

__all__ = ["batch_shapes", "floats_away_from", "arrays_on", "DEVICES"]

#: Devices every test suite can run on without a GPU (the strict ones stand in for CUDA).
DEVICES = ("cpu", "array_api_strict", "array_api_strict:device1")


def batch_shapes(min_batch=1, max_batch=4, min_features=1, max_features=5, extra_dims=0):
    """Shapes ``(N, d)`` (or ``(N, d1, ..., d_k)`` with ``extra_dims=k-1``), small by default."""
    dims = [st.integers(min_batch, max_batch)] + [st.integers(min_features, max_features)] * (1 + extra_dims)
    return st.tuples(*dims)


def floats_away_from(kinks=(), margin=0.05, low=-3.0, high=3.0):
    """Floats in [low, high] at least ``margin`` from every point in ``kinks``.

    A value that lands too close is pushed out (not filtered), so hypothesis never
    gives up for lack of valid examples.
    """
    def push(v):
        for k in kinks:
            if abs(v - k) < margin:
                v = k + margin if v >= k else k - margin
        return v
    return st.floats(low, high, allow_nan=False, allow_infinity=False).map(push)


@st.composite
def arrays_on(draw, device, shape, dtype="float64", away_from=(), margin=0.05, low=-3.0, high=3.0):
    """An array of ``shape`` on ``device`` with values in [low, high] away from ``away_from``."""
    host = draw(hnp.arrays("float64", shape, elements=floats_away_from(away_from, margin, low, high)))
    return B.resolve(device).asarray(host, dtype)

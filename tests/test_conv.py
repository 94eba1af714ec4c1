"""Conv2d, ConvTranspose2d, MaxPool2d, AvgPool2d, Upsample (scratchae/conv.py).

- gradients against finite differences over hypothesis-drawn configurations, on every device;
- forward and gradients against an independent implementation written here with plain NumPy
  loops over the definitions (and against torch.nn.functional when torch is installed);
- the adjoint identities, determinism, the MaxPool tie rule, rows the stride skips;
- every error message; and wrong backwards, which the checker must fail.
"""
import inspect
import pathlib
import re
import textwrap
from dataclasses import dataclass
from itertools import product

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from scratchae import backend as B
from scratchae import conv as C
from scratchae import fast
from scratchae.gradcheck import check_layer
from scratchae.module import InputError, Sequential
from scratchae.testing import arrays_on


@pytest.fixture(autouse=True, scope="module")
def _reference_only():
    """This file tests the reference, the code in conv.py; fast paths registered for it in
    fast.py are tested against it in test_fast.py."""
    before = fast.reference_enabled()
    fast.use_reference(True)
    yield
    fast.use_reference(before)


def _rng(device, seed=0):
    return B.Generator(seed, device=device)


def _mode(device):
    """Entry by entry on NumPy; along random directions elsewhere: array_api_strict runs the
    same NumPy arithmetic ten times slower (equal to NumPy's bit for bit: tested below)."""
    return "elementwise" if device.name == "cpu" else "directional"


def _host(a):
    return B.to_numpy(a).astype("float64")


# --- configurations -------------------------------------------------------------------------------

def _ints_or_pairs(lo, hi):
    return st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))


def _as_pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


@dataclass
class Config:
    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    output_padding: tuple
    x_shape: tuple
    out_channels: int
    bias: bool


@st.composite
def conv_configs(draw, transposed=False, max_entries=240):
    """A valid (Conv2d or ConvTranspose2d) configuration with a small input."""
    k, s, p, d = (draw(_ints_or_pairs(lo, hi)) for lo, hi in ((1, 4), (1, 3), (0, 2), (1, 2)))
    kk, ss, pp, dd = map(_as_pair, (k, s, p, d))
    n, c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    op = (0, 0)
    if transposed:
        op = tuple(draw(st.integers(0, max(ss[a], dd[a]) - 1)) for a in range(2))   # < stride or < dilation
        hw = tuple(draw(st.integers(1, 4)) for _ in range(2))
        out = C.conv_transpose2d_output_hw(hw, kk, ss, pp, op, dd)
        assume(min(out) >= 1)                            # too much padding for this input
    else:
        smallest = [max(1, dd[a] * (kk[a] - 1) + 1 - 2 * pp[a]) for a in range(2)]
        hw = tuple(smallest[a] + draw(st.integers(0, 3)) for a in range(2))
    assume(n * c_in * hw[0] * hw[1] <= max_entries)
    return Config(k, s, p, d, op, (n, c_in) + hw, c_out, draw(st.booleans()))


def _conv_layer(cfg, device, transposed=False, seed=1):
    r = _rng(device, seed)
    if transposed:
        return C.ConvTranspose2d(cfg.x_shape[1], cfg.out_channels, cfg.kernel_size, cfg.stride,
                                 cfg.padding, cfg.output_padding, dilation=cfg.dilation, bias=cfg.bias,
                                 rng=r, dtype="float64")
    return C.Conv2d(cfg.x_shape[1], cfg.out_channels, cfg.kernel_size, cfg.stride, cfg.padding,
                    cfg.dilation, bias=cfg.bias, rng=r, dtype="float64")


@st.composite
def pool_configs(draw, max_entries=200):
    """(kernel_size, stride, padding, dilation, x_shape) valid for MaxPool2d (padding <= k/2)."""
    k = draw(_ints_or_pairs(1, 4))
    kk = _as_pair(k)
    p = tuple(draw(st.integers(0, kk[a] // 2)) for a in range(2))
    s = draw(st.one_of(st.none(), _ints_or_pairs(1, 3)))
    d = draw(_ints_or_pairs(1, 2))
    dd = _as_pair(d)
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    smallest = [max(1, dd[a] * (kk[a] - 1) + 1 - 2 * p[a]) for a in range(2)]
    hw = tuple(smallest[a] + draw(st.integers(0, 3)) for a in range(2))
    assume(n * c * hw[0] * hw[1] <= max_entries)
    return k, s, p, d, (n, c) + hw


def _distinct(data, device, shape, spacing=0.1):
    """Entries all different and ``spacing`` apart (no ties: max pool's kinks stay away)."""
    size = int(np.prod(shape))
    perm = data.draw(st.permutations(range(size)))
    return device.asarray((np.array(perm, dtype="float64").reshape(shape) - size / 2) * spacing, "float64")


# --- gradients against finite differences ------------------------------------------------------------

@given(data=st.data())
def test_conv2d_gradients_match_finite_differences(device, data):
    cfg = data.draw(conv_configs())
    layer = _conv_layer(cfg, device)
    x = data.draw(arrays_on(device, cfg.x_shape))
    report = check_layer(layer, x, mode=_mode(device))
    assert not report.failed, str(report)
    assume(report.passed)


@given(data=st.data())
def test_conv_transpose2d_gradients_match_finite_differences(device, data):
    cfg = data.draw(conv_configs(transposed=True))
    layer = _conv_layer(cfg, device, transposed=True)
    x = data.draw(arrays_on(device, cfg.x_shape))
    report = check_layer(layer, x, mode=_mode(device))
    assert not report.failed, str(report)
    assume(report.passed)


@given(data=st.data())
def test_max_pool2d_gradients_match_finite_differences(device, data):
    k, s, p, d, shape = data.draw(pool_configs())
    layer = C.MaxPool2d(k, s, p, d)
    x = _distinct(data, device, shape)
    y = _host(layer(x))
    layer.clear_cache()
    assume(np.isfinite(y).all())              # a window of padding only (possible with dilation): -inf
    report = check_layer(layer, x, mode=_mode(device))
    assert not report.failed, str(report)
    assume(report.passed)


@given(data=st.data())
def test_avg_pool2d_gradients_match_finite_differences(device, data):
    k, s, p, _, shape = data.draw(pool_configs())
    layer = C.AvgPool2d(k, s, p)
    x = data.draw(arrays_on(device, shape))
    report = check_layer(layer, x, mode=_mode(device))
    assert not report.failed, str(report)
    assume(report.passed)


@given(data=st.data(), scale=_ints_or_pairs(1, 3),
       shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)))
def test_upsample_gradients_match_finite_differences(device, data, scale, shape):
    x = data.draw(arrays_on(device, shape))
    report = check_layer(C.Upsample(scale), x, mode=_mode(device))
    assert not report.failed, str(report)
    assume(report.passed)


# --- an independent implementation: the definitions as plain NumPy loops -------------------------------

def _conv_terms(x_shape, w_shape, out_hw, s, p, d):
    """Every (n, o, h, w, c, i, j, r, q) with y[n, o, h, w] reading W[o, c, i, j] * x[n, c, r, q]:
    r = h*sh + i*dh - ph inside the input (outside it is padding: a zero)."""
    N, Cin, H, W = x_shape
    O, _, kh, kw = w_shape
    for n, o, h, w, c, i, j in product(range(N), range(O), range(out_hw[0]), range(out_hw[1]),
                                       range(Cin), range(kh), range(kw)):
        r, q = h * s[0] + i * d[0] - p[0], w * s[1] + j * d[1] - p[1]
        if 0 <= r < H and 0 <= q < W:
            yield n, o, h, w, c, i, j, r, q


def naive_conv2d(x, W, b, dy, s, p, d):
    """y, dx, dW, db of y = conv2d(x, W) + b by the definition, one term at a time."""
    N, _, H, Wd = x.shape
    O, _, kh, kw = W.shape
    out_hw = ((H + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1, (Wd + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1)
    y = np.zeros((N, O) + out_hw) + b[None, :, None, None]
    dx, dW = np.zeros_like(x), np.zeros_like(W)
    for n, o, h, w, c, i, j, r, q in _conv_terms(x.shape, W.shape, out_hw, s, p, d):
        y[n, o, h, w] += W[o, c, i, j] * x[n, c, r, q]
        dx[n, c, r, q] += W[o, c, i, j] * dy[n, o, h, w]
        dW[o, c, i, j] += x[n, c, r, q] * dy[n, o, h, w]
    return y, dx, dW, dy.sum(axis=(0, 2, 3))


def naive_conv_transpose2d(x, W, b, dy, s, p, op, d):
    """y, dx, dW, db of PyTorch's definition: input pixel (h, w) adds W[c, :, i, j] * x to
    output (h*sh + i*dh - ph, w*sw + j*dw - pw); H_out includes output_padding."""
    N, Cin, H, Wd = x.shape
    _, O, kh, kw = W.shape
    out_hw = tuple((n - 1) * s[a] - 2 * p[a] + d[a] * (k - 1) + op[a] + 1
                   for a, (n, k) in enumerate(((H, kh), (Wd, kw))))
    y = np.zeros((N, O) + out_hw) + b[None, :, None, None]
    dx, dW = np.zeros_like(x), np.zeros_like(W)
    for n, c, h, w, o, i, j in product(range(N), range(Cin), range(H), range(Wd), range(O),
                                       range(kh), range(kw)):
        r, q = h * s[0] + i * d[0] - p[0], w * s[1] + j * d[1] - p[1]
        if 0 <= r < out_hw[0] and 0 <= q < out_hw[1]:
            y[n, o, r, q] += W[c, o, i, j] * x[n, c, h, w]
            dx[n, c, h, w] += W[c, o, i, j] * dy[n, o, r, q]
            dW[c, o, i, j] += x[n, c, h, w] * dy[n, o, r, q]
    return y, dx, dW, dy.sum(axis=(0, 2, 3))


def _windows(x_shape, k, s, p, d):
    """For each (n, c, h, w) output: the valid input positions of its window, row-major."""
    N, Cc, H, W = x_shape
    out_hw = ((H + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1, (W + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1)
    for n, c, h, w in product(range(N), range(Cc), range(out_hw[0]), range(out_hw[1])):
        cells = [(h * s[0] + i * d[0] - p[0], w * s[1] + j * d[1] - p[1]) for i, j in product(range(k[0]), range(k[1]))]
        yield (n, c, h, w), out_hw, [(r, q) for r, q in cells if 0 <= r < H and 0 <= q < W]


def naive_max_pool2d(x, dy, k, s, p, d):
    """y, dx: the first maximum of each window in row-major order gets the window's dy."""
    y, dx = None, np.zeros_like(x)
    for (n, c, h, w), out_hw, cells in _windows(x.shape, k, s, p, d):
        y = np.full(x.shape[:2] + out_hw, -np.inf) if y is None else y
        if not cells:                      # a window of padding only: -inf, no gradient
            continue
        values = [x[n, c, r, q] for r, q in cells]
        first = values.index(max(values))
        y[n, c, h, w] = values[first]
        r, q = cells[first]
        dx[n, c, r, q] += dy[n, c, h, w]
    return y, dx


def naive_avg_pool2d(x, dy, k, s, p):
    """y, dx: the sum over the window's real entries divided by kh*kw (padding counts)."""
    y, dx = None, np.zeros_like(x)
    for (n, c, h, w), out_hw, cells in _windows(x.shape, k, s, p, (1, 1)):
        y = np.zeros(x.shape[:2] + out_hw) if y is None else y
        for r, q in cells:
            y[n, c, h, w] += x[n, c, r, q] / (k[0] * k[1])
            dx[n, c, r, q] += dy[n, c, h, w] / (k[0] * k[1])
    return y, dx


def naive_upsample(x, dy, sc):
    N, Cc, H, W = x.shape
    y, dx = np.zeros((N, Cc, H * sc[0], W * sc[1])), np.zeros_like(x)
    for n, c, h, w in product(range(N), range(Cc), range(H * sc[0]), range(W * sc[1])):
        y[n, c, h, w] = x[n, c, h // sc[0], w // sc[1]]
        dx[n, c, h // sc[0], w // sc[1]] += dy[n, c, h, w]
    return y, dx


def _forward_backward(layer, x, seed=7):
    """y, dx and the parameter gradients (from zero) for a random dy; all on the host."""
    y = layer(x)
    dy = _rng(B.resolve(x), seed).normal(tuple(y.shape), "float64")
    layer.zero_grad()
    dx = layer.backward(dy)
    return _host(y), _host(dy), _host(dx), {k: _host(g) for k, g in layer.grads.items()}


def _close(got, want, rtol=1e-12):
    """Equal to ``rtol`` of the largest finite entry (infinities must match exactly)."""
    finite = np.abs(want[np.isfinite(want)])
    scale = max(1.0, float(finite.max(initial=0.0)))
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale)


@given(data=st.data())
def test_conv2d_matches_the_definition(data):
    cfg = data.draw(conv_configs(max_entries=120))
    layer = _conv_layer(cfg, B.resolve("cpu"))
    x = _rng("cpu", 3).normal(cfg.x_shape, "float64")
    y, dy, dx, grads = _forward_backward(layer, x)
    b = _host(layer.params["b"]) if cfg.bias else np.zeros(cfg.out_channels)
    naive = naive_conv2d(x, _host(layer.params["W"]), b, dy,
                         *map(_as_pair, (cfg.stride, cfg.padding, cfg.dilation)))
    _close_layer(cfg, (y, dx, grads), naive)


def _close_layer(cfg, ours, naive):
    """y, dx, dW (and db) of a layer against the definition's."""
    (y, dx, grads), (ny, ndx, ndW, ndb) = ours, naive
    _close(y, ny)
    _close(dx, ndx)
    _close(grads["W"], ndW)
    if cfg.bias:
        _close(grads["b"], ndb)


@given(data=st.data())
def test_conv_transpose2d_matches_the_definition(data):
    cfg = data.draw(conv_configs(transposed=True, max_entries=60))
    layer = _conv_layer(cfg, B.resolve("cpu"), transposed=True)
    x = _rng("cpu", 3).normal(cfg.x_shape, "float64")
    y, dy, dx, grads = _forward_backward(layer, x)
    b = _host(layer.params["b"]) if cfg.bias else np.zeros(cfg.out_channels)
    naive = naive_conv_transpose2d(
        x, _host(layer.params["W"]), b, dy,
        *map(_as_pair, (cfg.stride, cfg.padding, cfg.output_padding, cfg.dilation)))
    _close_layer(cfg, (y, dx, grads), naive)


@given(data=st.data())
def test_pools_match_the_definition(data):
    k, s, p, d, shape = data.draw(pool_configs(max_entries=150))
    x = _rng("cpu", 3).normal(shape, "float64")
    kk, pp, dd = map(_as_pair, (k, p, d))
    ss = kk if s is None else _as_pair(s)
    y, dy, dx, _ = _forward_backward(C.MaxPool2d(k, s, p, d), x)
    ny, ndx = naive_max_pool2d(x, dy, kk, ss, pp, dd)
    np.testing.assert_array_equal(y, ny)                  # a max is exact
    _close(dx, ndx)
    y, dy, dx, _ = _forward_backward(C.AvgPool2d(k, s, p), x)
    ny, ndx = naive_avg_pool2d(x, dy, kk, ss, pp)
    _close(y, ny)
    _close(dx, ndx)


@given(scale=_ints_or_pairs(1, 3),
       shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)))
def test_upsample_matches_the_definition(scale, shape):
    x = _rng("cpu", 3).normal(shape, "float64")
    y, dy, dx, _ = _forward_backward(C.Upsample(scale), x)
    ny, ndx = naive_upsample(x, dy, _as_pair(scale))
    np.testing.assert_array_equal(y, ny)
    _close(dx, ndx)


# --- adjoints: each one's forward is the other's backward ----------------------------------------------

def _inner(a, b):
    xp = B.namespace(a)
    return B.to_scalar(xp.sum(a * b)), B.to_scalar(xp.sum(xp.abs(a * b)))


@pytest.mark.parametrize("k, s, p, d, hw", [((3, 3), (1, 1), (1, 1), (1, 1), (6, 5)),
                                            ((2, 3), (3, 2), (0, 2), (2, 1), (9, 7)),
                                            ((4, 1), (2, 3), (2, 0), (1, 2), (8, 8))])
def test_adjoint_identities(device, k, s, p, d, hw):
    """<conv2d(x, W), y> = <x, conv2d_input_grad(y, W)> = <W, conv2d_weight_grad(x, y)>, and
    ConvTranspose2d's forward and backward are the same pair the other way round."""
    r = _rng(device, 11)
    x = r.normal((2, 3) + hw, "float64")
    W = r.normal((4, 3) + k, "float64")
    y = C.conv2d(x, W, s, p, d)
    v = r.normal(tuple(y.shape), "float64")
    lhs, scale = _inner(y, v)
    for rhs, _ in (_inner(x, C.conv2d_input_grad(v, W, hw, s, p, d)),
                   _inner(W, C.conv2d_weight_grad(x, v, k, s, p, d))):
        assert abs(lhs - rhs) <= 1e-12 * scale, (lhs, rhs)
    # the transposed convolution (C_in = 4, C_out = 3), output_padding up to its limit
    op = tuple(max(s[a], d[a]) - 1 for a in range(2))
    t = C.ConvTranspose2d(4, 3, k, s, p, op, dilation=d, bias=False, rng=r, dtype="float64")
    t.params["W"] = W
    u = r.normal((2, 4) + tuple(y.shape[2:]), "float64")
    z = t(u)
    w = r.normal(tuple(z.shape), "float64")
    lhs, scale = _inner(z, w)
    rhs, _ = _inner(u, t.backward(w))
    assert abs(lhs - rhs) <= 1e-12 * scale, (lhs, rhs)


# --- determinism and device parity --------------------------------------------------------------------

def _all_layers(r):
    return [
        (C.Conv2d(3, 4, (3, 2), (2, 1), (1, 2), (1, 2), rng=r, dtype="float64"), (2, 3, 7, 6)),
        (C.ConvTranspose2d(3, 2, 3, 2, 1, 1, rng=r, dtype="float64"), (2, 3, 4, 3)),
        (C.ConvTranspose2d(2, 2, 2, 1, 0, 1, dilation=2, rng=r, dtype="float64"), (1, 2, 3, 4)),
        (C.MaxPool2d(3, 1, 1), (2, 3, 5, 6)),
        (C.MaxPool2d((2, 3), (2, 1), (1, 0), (1, 2)), (1, 2, 6, 7)),
        (C.AvgPool2d(3, 2, 1), (2, 3, 7, 5)),
        (C.Upsample((2, 3)), (2, 3, 3, 2)),
    ]


def _runs(device):
    out = []
    for layer, shape in _all_layers(_rng(device, 5)):
        x = _rng(device, 6).normal(shape, "float64")
        out.append([_forward_backward(layer, x) for _ in range(2)])
    return out


def _flat(run):
    y, dy, dx, grads = run
    return [y, dy, dx] + [grads[k] for k in sorted(grads)]


def test_backward_is_deterministic_and_the_same_on_every_device(device):
    """Two runs agree bit for bit; array_api_strict (NumPy underneath) agrees with NumPy bit
    for bit, CuPy (other kernels, other rounding) to 1e-12."""
    here, on_numpy = _runs(device), _runs(B.resolve("cpu"))
    tol = 1e-12 if device.name.startswith("cuda") else 0.0
    for (first, second), (reference, _) in zip(here, on_numpy):
        for a, b, c in zip(_flat(first), _flat(second), _flat(reference)):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, c, rtol=0, atol=tol * max(1.0, np.abs(c).max()))


def test_only_array_api_2023_12_is_used():
    """The whole reference runs with array_api_strict limited to the 2023.12 standard."""
    import array_api_strict as xps
    with xps.ArrayAPIStrictFlags(api_version="2023.12"):
        strict = _runs(B.resolve("array_api_strict:device1"))
    for (run, _), (reference, _) in zip(strict, _runs(B.resolve("cpu"))):
        for a, c in zip(_flat(run), _flat(reference)):
            np.testing.assert_allclose(a, c, rtol=0, atol=1e-15 * max(1.0, np.abs(c).max()))


# --- the tie rule, and rows no window reads -----------------------------------------------------------

def test_max_pool_tie_rule_first_maximum_in_row_major_order_gets_all(device):
    pool = C.MaxPool2d(2)
    x = device.asarray(np.ones((1, 1, 2, 2)), "float64")          # four equal values
    pool(x)
    dx = _host(pool.backward(device.asarray([[[[3.0]]]], "float64")))
    np.testing.assert_array_equal(dx, [[[[3.0, 0.0], [0.0, 0.0]]]])
    x = device.asarray([[[[0.0, 5.0], [5.0, 1.0]]]], "float64")    # tie at (0, 1) and (1, 0)
    pool(x)
    dx = _host(pool.backward(device.asarray([[[[1.0]]]], "float64")))
    np.testing.assert_array_equal(dx, [[[[0.0, 1.0], [0.0, 0.0]]]])
    # overlapping windows of equal values: each gives its dy to its own first (top-left) cell
    pool = C.MaxPool2d(2, 1)
    pool(device.asarray(np.ones((1, 1, 3, 3)), "float64"))
    dx = _host(pool.backward(device.asarray(np.ones((1, 1, 2, 2)), "float64")))
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
    # padding is -inf: it never wins against a real entry, even one of equal zeros
    pool = C.MaxPool2d(3, 1, 1)
    pool(device.asarray(np.zeros((1, 1, 3, 3)), "float64"))
    dx = _host(pool.backward(device.asarray(np.ones((1, 1, 3, 3)), "float64")))
    np.testing.assert_array_equal(dx[0, 0], [[4, 2, 0], [2, 1, 0], [0, 0, 0]])


def test_rows_no_window_reads_get_exactly_zero_gradient(device):
    """k=2, s=3 skips rows 2 and 5 between windows; with H=9 the floor drops row 8 too."""
    conv = C.Conv2d(2, 3, 2, 3, rng=_rng(device), dtype="float64")
    x = _rng(device, 1).normal((2, 2, 9, 8), "float64")
    _, _, dx, _ = _forward_backward(conv, x)
    assert (dx[:, :, [2, 5, 8], :] == 0).all() and (dx[:, :, :, [2, 5]] == 0).all()
    assert (dx[:, :, [0, 1, 3, 4, 6, 7], :][:, :, :, [0, 1, 3, 4, 6, 7]] != 0).all()
    pool = C.MaxPool2d(2, 3)
    _, _, dx, _ = _forward_backward(pool, x)
    assert (dx[:, :, [2, 5, 8], :] == 0).all() and (dx[:, :, :, [2, 5]] == 0).all()


def test_output_padding_rows_hold_only_the_bias(device):
    """The last max(0, output_padding - padding) rows of a ConvTranspose2d output are reached
    by no input (and their dy by no dx)."""
    x = _rng(device, 1).normal((1, 2, 4, 4), "float64")
    for padding, unreached in ((0, 1), (1, 0)):
        t = C.ConvTranspose2d(2, 3, 3, 2, padding, 1, bias=False, rng=_rng(device), dtype="float64")
        y = _host(t(x))
        t.clear_cache()
        assert (y[:, :, -1, :] == 0).all() == bool(unreached) and (y[:, :, :, -1] == 0).all() == bool(unreached)
        assert (y[:, :, -2, :] != 0).any()


def test_output_sizes_follow_pytorchs_formulas():
    assert C.conv2d_output_hw((28, 27), 3, 2, 1, 1) == (14, 14)        # floor((28 + 2 - 2 - 1)/2) + 1
    assert C.conv2d_output_hw((5, 5), (3, 2), (1, 3), (0, 1), (2, 1)) == (1, 2)        # floor(5/3) + 1
    assert C.conv2d_output_hw((2, 2), 3) == (0, 0)
    assert C.conv_transpose2d_output_hw((7, 7), 3, 2, 1, 1) == (14, 14)
    assert C.conv_transpose2d_output_hw((3, 3), 3, 1, 0, 1, 2) == (8, 8)
    for h in range(1, 9):               # a ConvTranspose2d output convolves back to the input size
        for s, op in ((1, 0), (2, 0), (2, 1), (3, 2)):
            out = C.conv_transpose2d_output_hw((h, h), 3, s, 1, op)
            if min(out) >= 1:
                assert C.conv2d_output_hw(out, 3, s, 1) == (h, h)


def test_initialisation_is_pytorchs(device):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = W.shape[1] * kh * kw: in_channels
    for Conv2d, out_channels for ConvTranspose2d (PyTorch's _calculate_fan_in_and_fan_out)."""
    r = _rng(device, 2)
    for layer, fan_in in ((C.Conv2d(8, 40, 3, rng=r), 72), (C.ConvTranspose2d(40, 8, 3, rng=r), 72)):
        bound = 1 / np.sqrt(fan_in)
        W = _host(layer.params["W"])
        assert layer.params["W"].dtype == device.xp.float32
        assert 0.99 * bound < np.abs(W).max() <= bound * (1 + 1e-6)    # 2,880 draws, in float32
        assert np.abs(_host(layer.params["b"])).max() <= bound * (1 + 1e-6)
    assert tuple(C.Conv2d(2, 5, (3, 1), rng=r).params["W"].shape) == (5, 2, 3, 1)
    assert tuple(C.ConvTranspose2d(2, 5, (3, 1), rng=r).params["W"].shape) == (2, 5, 3, 1)
    assert "b" not in C.Conv2d(2, 5, 3, bias=False, rng=r).params


# --- errors -------------------------------------------------------------------------------------------

def _r():
    return _rng("cpu")


INPUT_ERRORS = {
    "flat rows": (lambda: C.Conv2d(1, 4, 3, rng=_r()), (2, 784), "expected 4 dimensions"),
    "channels": (lambda: C.Conv2d(3, 4, 3, rng=_r()), (2, 4, 8, 8), "takes 3"),
    "too small": (lambda: C.Conv2d(3, 4, 3, padding=0, dilation=2, rng=_r()), (1, 3, 4, 6),
                  "smaller than the dilated kernel (5, 5)"),
    "transposed too padded": (lambda: C.ConvTranspose2d(2, 2, 1, padding=2, rng=_r()), (1, 2, 2, 2),
                              "below 1"),
    "transposed channels": (lambda: C.ConvTranspose2d(2, 3, 3, rng=_r()), (1, 3, 4, 4), "takes 2"),
    "pool too small": (lambda: C.MaxPool2d(3), (1, 1, 2, 5), "smaller than the dilated kernel (3, 3)"),
    "avg pool 3-d": (lambda: C.AvgPool2d(2), (1, 4, 4), "expected 4 dimensions"),
    "upsample 5-d": (lambda: C.Upsample(2), (1, 1, 1, 4, 4), "expected 4 dimensions"),
}


@pytest.mark.parametrize("case", sorted(INPUT_ERRORS))
def test_bad_input_gets_one_line_naming_layer_and_shapes(case):
    factory, shape, words = INPUT_ERRORS[case]
    layer = factory()
    model = Sequential(layer)
    x = B.resolve("cpu").zeros(shape, "float32")
    with pytest.raises(InputError) as err:
        model(x)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{layer!r} at '0':"), msg
    assert str(tuple(shape)) in msg and words in msg, msg


def test_bad_dy_and_dtype_are_refused():
    conv = C.Conv2d(2, 3, 3, padding=1, rng=_r(), dtype="float64")
    x = _rng("cpu", 1).normal((2, 2, 5, 5), "float64")
    conv(x)
    with pytest.raises(InputError, match=r"dy has shape \(2, 3, 5\), but the forward output had shape \(2, 3, 5, 5\)"):
        conv.backward(np.zeros((2, 3, 5)))
    with pytest.raises(InputError, match="dtype float32 but the parameters are float64"):
        C.Conv2d(2, 3, 3, rng=_r(), dtype="float64")(x.astype("float32"))
    pool = C.MaxPool2d(2)
    pool(x)
    with pytest.raises(InputError, match="MaxPool2d"):
        pool.backward(x)


CONSTRUCTOR_ERRORS = [
    (lambda: C.Conv2d(1, 2, 0, rng=_r()), "kernel_size must be positive"),
    (lambda: C.Conv2d(1, 2, 3, stride=0, rng=_r()), "stride must be positive"),
    (lambda: C.Conv2d(1, 2, 3, padding=-1, rng=_r()), "padding must be non-negative"),
    (lambda: C.Conv2d(1, 2, 3, dilation=(1, 0), rng=_r()), "dilation must be positive"),
    (lambda: C.Conv2d(1, 2, 2.5, rng=_r()), "kernel_size must be an int or a pair of ints"),
    (lambda: C.Conv2d(1, 2, (1, 2, 3), rng=_r()), "kernel_size must be an int or a pair"),
    (lambda: C.Conv2d(1, 2, True, rng=_r()), "kernel_size must be an int"),
    (lambda: C.Conv2d(0, 2, 3, rng=_r()), "in_channels must be a positive int"),
    (lambda: C.ConvTranspose2d(1, 2.0, 3, rng=_r()), "out_channels must be a positive int"),
    (lambda: C.ConvTranspose2d(1, 2, 3, output_padding=1, rng=_r()), "output_padding must be smaller"),
    (lambda: C.ConvTranspose2d(1, 2, 3, stride=2, output_padding=(1, 2), rng=_r()), "output_padding must be smaller"),
    (lambda: C.MaxPool2d(3, padding=2), "padding must be at most half the kernel size"),
    (lambda: C.AvgPool2d((2, 4), padding=(1, 3)), "padding must be at most half the kernel size"),
    (lambda: C.MaxPool2d(2, stride=0), "stride must be positive"),
    (lambda: C.Upsample(1.5), "scale_factor must be a positive integer"),
    (lambda: C.Upsample(0), "scale_factor must be a positive integer"),
    (lambda: C.Upsample(2, mode="bilinear"), "mode must be 'nearest'"),
]


@pytest.mark.parametrize("i", range(len(CONSTRUCTOR_ERRORS)))
def test_bad_constructor_values_name_the_argument(i):
    make, words = CONSTRUCTOR_ERRORS[i]
    with pytest.raises(ValueError) as err:
        make()
    assert words in str(err.value) and "\n" not in str(err.value)


def test_rng_is_keyword_only_and_accepted_arguments():
    with pytest.raises(TypeError):
        C.Conv2d(1, 2, 3, 1, 0, 1, True, _r())          # PyTorch's 7th argument is groups: refused
    layer = C.Conv2d(1, 2, (3, 1), 2, (1, 0), 1, bias=False, rng=_r())
    assert (layer.kernel_size, layer.stride, layer.padding, layer.dilation) == ((3, 1), (2, 2), (1, 0), (1, 1))
    assert C.MaxPool2d(3).stride == (3, 3) and C.AvgPool2d((2, 3), None).stride == (2, 3)
    assert C.Upsample(scale_factor=2.0).scale_factor == (2, 2)


# --- the checker fails wrong backwards ------------------------------------------------------------------

class TransposedKernelGrad(C.Conv2d):
    """dW with the kernel's two axes swapped (a square kernel, so the shape is right)."""
    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        dW = C.conv2d_weight_grad(x, dy, self.kernel_size, self.stride, self.padding, self.dilation)
        self.grads["W"] += xp.permute_dims(dW, (0, 1, 3, 2))
        self.grads["b"] += xp.sum(dy, axis=(0, 2, 3))
        return C.conv2d_input_grad(dy, self.params["W"], x.shape[2:], self.stride, self.padding, self.dilation)


class InputGradIgnoresStride(C.Conv2d):
    """dx scattered with stride 1: the classic transposed-convolution slip."""
    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        self.grads["W"] += C.conv2d_weight_grad(x, dy, self.kernel_size, self.stride, self.padding, self.dilation)
        self.grads["b"] += xp.sum(dy, axis=(0, 2, 3))
        return C.conv2d_input_grad(dy, self.params["W"], x.shape[2:], 1, self.padding, self.dilation)


class InputGradFlipsKernel(C.Conv2d):
    """dx with the kernel flipped (confusing correlation with convolution)."""
    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        self.grads["W"] += C.conv2d_weight_grad(x, dy, self.kernel_size, self.stride, self.padding, self.dilation)
        self.grads["b"] += xp.sum(dy, axis=(0, 2, 3))
        W = xp.flip(self.params["W"], axis=(2, 3))
        return C.conv2d_input_grad(dy, W, x.shape[2:], self.stride, self.padding, self.dilation)


class BiasGradFirstExampleOnly(C.Conv2d):
    """db summed over one example instead of the batch."""
    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        self.grads["W"] += C.conv2d_weight_grad(x, dy, self.kernel_size, self.stride, self.padding, self.dilation)
        self.grads["b"] += xp.sum(dy[0], axis=(1, 2))
        return C.conv2d_input_grad(dy, self.params["W"], x.shape[2:], self.stride, self.padding, self.dilation)


class WeightGradOverwritten(C.Conv2d):
    """dW assigned instead of added."""
    def backward(self, dy):
        (x,) = self.pop_cache()
        xp = B.namespace(dy)
        self.grads["W"] = C.conv2d_weight_grad(x, dy, self.kernel_size, self.stride, self.padding, self.dilation)
        self.grads["b"] += xp.sum(dy, axis=(0, 2, 3))
        return C.conv2d_input_grad(dy, self.params["W"], x.shape[2:], self.stride, self.padding, self.dilation)


class MaxPoolLastMaximum(C.MaxPool2d):
    """Forward keeps the first maximum, backward sends the gradient to the window's last cell."""
    def backward(self, dy):
        argmax, x_hw = self.pop_cache()
        xp = B.namespace(dy)
        last = xp.full_like(argmax, self.kernel_size[0] * self.kernel_size[1] - 1)
        return C.max_pool2d_input_grad(dy, last, x_hw, self.kernel_size, self.stride, self.padding, self.dilation)


@pytest.mark.parametrize("mutant", [TransposedKernelGrad, InputGradIgnoresStride, InputGradFlipsKernel,
                                    BiasGradFirstExampleOnly, WeightGradOverwritten])
def test_the_checker_fails_a_wrong_conv_backward(mutant):
    layer = mutant(2, 3, 3, stride=2, padding=1, rng=_r(), dtype="float64")
    x = _rng("cpu", 4).normal((2, 2, 7, 6), "float64")
    report = check_layer(layer, x)
    assert report.failed, str(report)
    assert check_layer(C.Conv2d(2, 3, 3, stride=2, padding=1, rng=_r(), dtype="float64"), x).passed


def _distinct_host(shape):
    return np.random.default_rng(0).permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 3.0


def test_the_checker_fails_a_max_pool_backward_that_breaks_the_tie_rule():
    x = _distinct_host((2, 2, 6, 6))
    assert check_layer(MaxPoolLastMaximum(2), x).failed
    assert check_layer(C.MaxPool2d(2), x).passed



# --- the fast-path seam ---------------------------------------------------------------------------------

NAMES = ["conv2d", "conv2d_input_grad", "conv2d_weight_grad", "max_pool2d", "max_pool2d_input_grad",
         "avg_pool2d", "avg_pool2d_input_grad", "upsample_nearest2d", "upsample_nearest2d_input_grad"]


def test_every_reference_is_replaceable_and_a_registered_fast_path_is_used():
    for name in NAMES:
        assert fast.REFERENCES[name] is getattr(C, name).reference
    calls = []
    reference, registered = fast.REFERENCES["conv2d"], fast.FAST_PATHS.get("conv2d")
    fast.FAST_PATHS["conv2d"] = {"numpy": lambda *a: calls.append(1) or reference(*a)}
    try:
        layer = C.Conv2d(1, 2, 3, rng=_r(), dtype="float64")
        x = _rng("cpu").normal((1, 1, 5, 5), "float64")
        with fast.reference_mode(False):
            layer(x)
        layer.clear_cache()
        assert calls == [1]
        layer(x)                                       # this file runs in reference mode
        assert calls == [1]
    finally:
        if registered is None:
            del fast.FAST_PATHS["conv2d"]
        else:
            fast.FAST_PATHS["conv2d"] = registered


# --- against PyTorch, when it is installed ----------------------------------------------------------------

def _torch_cases():
    rng = np.random.default_rng(2024)
    cases = []
    while len(cases) < 12:
        k = tuple(int(v) for v in rng.integers(1, 5, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        p = tuple(int(v) for v in rng.integers(0, 3, 2))
        d = tuple(int(v) for v in rng.integers(1, 3, 2))
        hw = tuple(int(v) for v in rng.integers(1, 10, 2))
        op = tuple(int(rng.integers(0, max(s[a], d[a]))) for a in range(2))
        if min(C.conv2d_output_hw(hw, k, s, p, d)) >= 1 and min(C.conv_transpose2d_output_hw(hw, k, s, p, op, d)) >= 1:
            cases.append((k, s, p, d, op, hw))
    return cases


@pytest.mark.parametrize("k, s, p, d, op, hw", _torch_cases())
def test_against_torch_functional(k, s, p, d, op, hw):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    r = _r()

    def grads(ours, x, torch_fn, torch_params):
        y, dy, dx, g = _forward_backward(ours, x)
        xt = torch.tensor(x, requires_grad=True)
        yt = torch_fn(xt, *torch_params)
        yt.backward(torch.tensor(dy))
        _close(y, yt.detach().numpy())
        _close(dx, xt.grad.numpy())
        for name, pt in zip(("W", "b"), torch_params):
            _close(g[name], pt.grad.numpy())

    for transposed in (False, True):
        cls = C.ConvTranspose2d if transposed else C.Conv2d
        extra = dict(dilation=d) if transposed else {}
        args = (s, p, op) if transposed else (s, p, d)
        layer = cls(3, 2, k, *args, **extra, rng=r, dtype="float64")
        Wt = torch.tensor(_host(layer.params["W"]), requires_grad=True)
        bt = torch.tensor(_host(layer.params["b"]), requires_grad=True)
        x = r.normal((2, 3) + hw, "float64")
        if transposed:
            grads(layer, x, lambda xt, W, b: F.conv_transpose2d(xt, W, b, s, p, op, 1, d), (Wt, bt))
        else:
            grads(layer, x, lambda xt, W, b: F.conv2d(xt, W, b, s, p, d), (Wt, bt))
    x = r.normal((2, 3) + hw, "float64")
    pp = tuple(min(p[a], k[a] // 2) for a in range(2))
    if min(C.conv2d_output_hw(hw, k, s, pp, d)) >= 1 and np.isfinite(_host(C.max_pool2d(x, k, s, pp, d)[0])).all():
        # (a window of padding only is -inf in both, but PyTorch then sends its gradient to
        # an arbitrary cell: such configurations are left out)
        grads(C.MaxPool2d(k, s, pp, d), x, lambda xt: F.max_pool2d(xt, k, s, pp, d), ())
    if min(C.conv2d_output_hw(hw, k, s, pp)) >= 1:
        grads(C.AvgPool2d(k, s, pp), x, lambda xt: F.avg_pool2d(xt, k, s, pp), ())
    grads(C.Upsample(s), x, lambda xt: F.interpolate(xt, scale_factor=s, mode="nearest"), ())


def test_weights_port_both_ways_with_torch_modules():
    torch = pytest.importorskip("torch")
    x = _rng("cpu", 9).normal((2, 3, 9, 8), "float64")
    pairs = [
        (torch.nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
         lambda r: C.Conv2d(3, 4, (3, 2), (2, 1), (1, 0), (1, 2), rng=r, dtype="float64")),
        (torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1, dilation=1),
         lambda r: C.ConvTranspose2d(3, 4, 3, 2, 1, 1, rng=r, dtype="float64")),
    ]
    for theirs, make in pairs:
        theirs = theirs.double()
        ours = make(_r())
        ours.load_state_dict({"W": theirs.weight.detach().numpy(), "b": theirs.bias.detach().numpy()})
        _close(_host(ours(x)), theirs(torch.tensor(x)).detach().numpy())
        ours.clear_cache()
        back = make(_rng("cpu", 1))                 # other weights, copied into torch
        theirs.load_state_dict({"weight": torch.tensor(_host(back.params["W"])),
                                "bias": torch.tensor(_host(back.params["b"]))})
        _close(_host(back(x)), theirs(torch.tensor(x)).detach().numpy())
        back.clear_cache()


# --- docstrings, code and docs/conv.md agree ------------------------------------------------------------

LAYERS = [C.Conv2d, C.ConvTranspose2d, C.MaxPool2d, C.AvgPool2d, C.Upsample]
FUNCTIONS = [getattr(C, name) for name in NAMES]
DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "conv.md"


def _literal_blocks(doc, after=""):
    """The ``::`` blocks of a docstring (those whose introducing line contains ``after``)."""
    lines, blocks = inspect.cleandoc(doc).splitlines(), []
    for k, line in enumerate(lines):
        if line.rstrip().endswith("::") and after in line:
            body = []
            for nxt in lines[k + 2:]:
                if nxt.strip() and not nxt.startswith(" "):
                    break
                body.append(nxt)
            blocks.append(textwrap.dedent("\n".join(body)).strip("\n"))
    return blocks


def _fenced_blocks(text):
    return {textwrap.dedent(b).strip("\n") for b in re.findall(r"```\n(.*?)```", text, re.S)}


def test_each_backward_block_is_the_code_of_backward():
    """dW += ... is self.grads["W"] += ..., dx = ... is what backward returns."""
    for cls in LAYERS:
        (block,) = _literal_blocks(cls.__doc__, "Backward")
        source = " ".join(inspect.getsource(cls.backward).split())
        for line in block.splitlines():
            code = re.sub(r"\s{3,}\(.*$", "", line.strip())            # the shape comment
            code = re.sub(r"^d(W|b) \+=", r'self.grads["\1"] +=', code)
            code = re.sub(r"^dx\s+=", "return", code).replace("+= sum(", "+= xp.sum(")
            assert " ".join(code.split()) in source, (cls.__name__, code)


def test_docs_quote_every_block_unchanged():
    quoted = _fenced_blocks(DOCS.read_text())
    for obj in LAYERS:
        (block,) = _literal_blocks(obj.__doc__, "Backward")
        assert block in quoted, obj.__name__
    for fn in FUNCTIONS:
        for block in _literal_blocks(fn.__doc__):
            assert block in quoted, (fn.__name__, block)

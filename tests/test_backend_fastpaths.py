"""The speed work: NumPy fast steps against their portable twins, the thread pool, scratch
buffers, ``Linear(input_grad=False)``, and float32 staying float32 through a training step.

``tests/test_backend.py`` checks the element-wise ``FAST_PATHS`` (``bce_terms``); this file
checks ``FAST_STEPS`` (optimizer steps over all of a model's arrays at once), which must
give the *same bits* as the per-parameter reference ``_update`` in ``optim.py``.
"""
from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from scratchae import backend as B
from scratchae import losses
from scratchae.gradcheck import check_layer
from scratchae.layers import Linear, ReLU
from scratchae.models import VAE, AdversarialAutoencoder, Autoencoder, DenoisingAutoencoder
from scratchae.models.base import mlp
from scratchae.module import Module
from scratchae.optim import Adam, AdamW


@pytest.fixture(autouse=True)
def _restore_threads():
    n = B.num_threads()
    yield
    B.set_num_threads(n)


# --- a model with parameters of every kind the kernel cuts differently -----------------------

class Bag(Module):
    """Parameters: big (split across threads), small (whole), 0-d-ish, non-contiguous."""

    def __init__(self, dtype, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        for name, shape in (("big", (300, 257)), ("row", (B._PIECE + 3,)), ("small", (7, 5)),
                            ("one", (1,))):
            self.add_param(name, rng.standard_normal(shape).astype(dtype))
        wide = rng.standard_normal((40, 60)).astype(dtype)
        self.add_param("strided", wide[:, ::2])            # not contiguous: never split
        self.grads["strided"] = np.zeros((30, 40), dtype).T  # nor its gradient


def _fill_grads(model, t):
    for name, m, k in model.parameter_slots():
        g = m.grads[k]
        rng = np.random.default_rng([t, len(name)])
        g[...] = (rng.standard_normal(g.shape) * np.linspace(0.01, 10, g.size).reshape(g.shape)
                  ).astype(g.dtype)


def _train(opt_factory, dtype, fast, steps=5, threads=2):
    B.set_num_threads(threads)
    model = Bag(dtype)
    opt = opt_factory(model)
    if not fast:
        opt._fast_step = lambda slots, t: False       # the reference: _update per parameter
    out = []
    for t in range(1, steps + 1):
        _fill_grads(model, t)
        opt.step()
        out.append({n: np.array(p, copy=True) for n, p in model.named_parameters()})
    return out, opt


OPTS = {
    "adam": lambda m: Adam(m, lr=1e-2),
    "adam-l2": lambda m: Adam(m, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    "adamw": lambda m: AdamW(m, lr=1e-2, weight_decay=0.05),
}


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(OPTS))
def test_adam_fast_step_gives_the_reference_bits(name, dtype, threads):
    fast, opt_fast = _train(OPTS[name], dtype, fast=True, threads=threads)
    slow, opt_slow = _train(OPTS[name], dtype, fast=False, threads=threads)
    for t, (a, b) in enumerate(zip(fast, slow)):
        for n in a:
            assert a[n].dtype == np.dtype(dtype)
            np.testing.assert_array_equal(a[n], b[n], err_msg=f"step {t + 1}, '{n}'")
    for n in opt_fast.state:                             # the moments too
        for buf in ("m", "v"):
            np.testing.assert_array_equal(opt_fast.state[n][buf], opt_slow.state[n][buf])


def test_adam_fast_step_is_registered_and_used_on_numpy_only():
    assert B.fast_path("adam_step", np.zeros(2)) is B.FAST_STEPS["adam_step"]["numpy"]
    assert B.fast_path("adam_step", B.resolve("array_api_strict").zeros((2,))) is None
    calls = []
    kernel = B.FAST_STEPS["adam_step"]["numpy"]
    B.FAST_STEPS["adam_step"]["numpy"] = lambda *a, **k: calls.append(1) or kernel(*a, **k)
    try:
        model = Bag("float32")
        _fill_grads(model, 1)
        Adam(model).step()
    finally:
        B.FAST_STEPS["adam_step"]["numpy"] = kernel
    assert calls == [1]                                   # one call for all parameters


def test_adam_fast_step_declines_mixed_dtypes_and_the_reference_runs():
    model = Bag("float32")
    model.add_param("f64", np.ones((3,), "float64"))
    opt = Adam(model, lr=0.1)
    _fill_grads(model, 1)
    before = {n: np.array(p, copy=True) for n, p in model.named_parameters()}
    kernel = B.FAST_STEPS["adam_step"]["numpy"]
    params = [m.params[k] for _, m, k in model.parameter_slots()]
    grads = [m.grads[k] for _, m, k in model.parameter_slots()]
    state = [opt.state[n] for n, _, _ in model.parameter_slots()]
    assert kernel(params, grads, [s["m"] for s in state], [s["v"] for s in state], lr=0.1,
                  beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False, t=1) is False
    for n, p in model.named_parameters():                 # declined: nothing was touched
        np.testing.assert_array_equal(p, before[n])
    opt.step()                                            # the portable loop did the step
    assert all(not np.array_equal(p, before[n]) for n, p in model.named_parameters())
    assert model.params["f64"].dtype == np.float64


def test_adam_fast_step_leaves_grads_alone_and_updates_in_place():
    model = Bag("float32")
    _fill_grads(model, 1)
    grads = {n: np.array(g, copy=True) for n, g in model.named_grads()}
    arrays = dict(model.named_parameters())
    Adam(model).step()
    for n, g in model.named_grads():
        np.testing.assert_array_equal(g, grads[n])
    for n, p in model.named_parameters():
        assert p is arrays[n]


def test_adam_plan_is_reused_while_the_arrays_stay_and_rebuilt_when_they_change():
    model = Bag("float32")
    opt = Adam(model, lr=1e-2)
    _fill_grads(model, 1)
    opt.step()
    plan = opt._fast_plan
    shares = plan["shares"]
    _fill_grads(model, 2)
    opt.step()
    assert opt._fast_plan["shares"] is shares                  # same arrays: same plan
    model.to(dtype="float64")                                  # new arrays everywhere
    _fill_grads(model, 3)
    before = {n: np.array(p, copy=True) for n, p in model.named_parameters()}
    opt.step()
    assert opt._fast_plan["shares"] is not shares
    assert all(piece[0].dtype == np.float64 for share in opt._fast_plan["shares"] for piece in share)
    for n, p in model.named_parameters():                      # and the new arrays moved
        assert not np.array_equal(p, before[n]), n


# --- threads ------------------------------------------------------------------------------

def test_set_num_threads():
    B.set_num_threads(3)
    assert B.num_threads() == 3
    with pytest.raises(ValueError, match="n >= 1"):
        B.set_num_threads(0)


def test_num_threads_from_the_environment(monkeypatch):
    monkeypatch.setenv("SCRATCHAE_NUM_THREADS", "5")
    monkeypatch.setitem(B._THREADS, "n", None)
    assert B.num_threads() == 5


def test_run_parallel_runs_every_task_once_on_distinct_threads():
    B.set_num_threads(3)
    seen, lock = [], threading.Lock()

    def task(i):
        with lock:
            seen.append((i, threading.get_ident()))

    B._run_parallel([lambda i=i: task(i) for i in range(3)])
    assert sorted(i for i, _ in seen) == [0, 1, 2]
    assert dict(seen)[0] == threading.get_ident()       # the first on the calling thread


def test_run_parallel_raises_a_worker_error():
    B.set_num_threads(2)

    def bad():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        B._run_parallel([lambda: None, bad])


def test_shares_cover_every_entry_once():
    a = np.arange(B._PIECE * 2 + 5, dtype="float32")
    b = np.arange(10, dtype="float32")
    c = np.zeros((6, 4), "float32")[:, ::2]              # not contiguous
    shares = B._shares([(a, a), (b, b), (c, c)], 3)
    assert len(shares) == 3
    covered = np.zeros(a.size, int)
    whole = []
    for share in shares:
        for piece in share:
            if np.shares_memory(piece[0], a):
                lo = (piece[0].__array_interface__["data"][0] - a.__array_interface__["data"][0]) // 4
                covered[lo:lo + piece[0].size] += 1
            else:
                whole.append(piece[0])
    assert np.all(covered == 1)
    assert any(w is b for w in whole) and any(w is c for w in whole)


# --- scratch buffers and the BCE fast path -------------------------------------------------

def test_scratch_is_per_thread_and_grows():
    a = B._scratch("test", "float32", 10)
    assert B._scratch("test", "float32", 5).base is a.base   # reused
    assert B._scratch("test", "float32", 50).size == 50       # grown
    other = []
    t = threading.Thread(target=lambda: other.append(B._scratch("test", "float32", 10)))
    t.start()
    t.join()
    assert not np.shares_memory(other[0], B._scratch("test", "float32", 10))


def test_bce_fast_path_concurrent_calls_do_not_share_scratch():
    rng = np.random.default_rng(0)
    inputs = [(rng.standard_normal((64, 50)).astype("float32") * 4,
               rng.random((64, 50)).astype("float32")) for _ in range(4)]
    expect = [losses.bce_terms(l, t) for l, t in inputs]
    fast = B.FAST_PATHS["bce_terms"]["numpy"]
    errors = []

    def work(i):
        for _ in range(50):
            v, s = fast(*inputs[i])
            if abs(float(v) - float(expect[i][0])) > 1e-3 * abs(float(expect[i][0])) or \
                    not np.allclose(s, expect[i][1], rtol=1e-6, atol=1e-7):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_fast_path_non_contiguous_input(dtype):
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((30, 20)) * 6).astype(dtype).T      # a transposed view
    target = rng.random((20, 30)).astype(dtype)
    fv, fs = B.FAST_PATHS["bce_terms"]["numpy"](logits, target)
    pv, ps = losses.bce_terms(logits, target)
    assert fs.shape == (20, 30) and fs.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(fs, ps)                   # the same sigmoid bits
    assert abs(float(fv) - float(pv)) <= 1e-6 * float(np.sum(np.abs(logits)) + logits.size)


def test_bce_with_logits_gradient_is_fresh_and_exact():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((8, 5)).astype("float32")
    target = rng.random((8, 5)).astype("float32")
    keep = logits.copy(), target.copy()
    value, dl = losses.bce_with_logits(logits, target)
    _, sig = losses.bce_terms(logits, target)
    np.testing.assert_array_equal(dl, (sig - target) * np.float32(1 / 8))
    assert not np.shares_memory(dl, logits) and not np.shares_memory(dl, target)
    np.testing.assert_array_equal(logits, keep[0])
    np.testing.assert_array_equal(target, keep[1])
    _, dl2 = losses.bce_with_logits(logits, target)
    assert not np.shares_memory(dl, dl2)                    # never a reused buffer
    # a float64 target with float32 logits: promoted, as before
    _, dl64 = losses.bce_with_logits(logits, target.astype("float64"))
    assert dl64.dtype == np.float64


# --- Linear(input_grad=False) ----------------------------------------------------------------

def test_linear_without_input_grad_returns_none_and_the_same_grads(device):
    x = B.Generator(1, device=device).normal((6, 4), "float64")
    dy = B.Generator(2, device=device).normal((6, 3), "float64")
    a = Linear(4, 3, B.Generator(0, device=device), dtype="float64")
    b = Linear(4, 3, B.Generator(0, device=device), dtype="float64", input_grad=False)
    np.testing.assert_array_equal(B.to_numpy(a(x)), B.to_numpy(b(x)))
    assert a.backward(dy) is not None
    assert b.backward(dy) is None
    for k in ("W", "b"):
        np.testing.assert_array_equal(B.to_numpy(a.grads[k]), B.to_numpy(b.grads[k]))


def test_check_layer_treats_a_none_dx_as_check_input_false(device):
    layer = Linear(4, 3, B.Generator(0, device=device), dtype="float64", input_grad=False)
    report = check_layer(layer, B.Generator(1, device=device).normal((5, 4), "float64"))
    assert report.passed, str(report)
    assert [r.name for r in report.rows] == ["W", "b"]


def test_mlp_input_grad_switches_the_first_layer_only():
    net = mlp([5, 4, 3, 2], rng=B.Generator(0), input_grad=False)
    linears = [l for l in net if isinstance(l, Linear)]
    assert [l.input_grad for l in linears] == [False, True, True]
    assert all(l.input_grad for l in mlp([5, 4, 2], rng=B.Generator(0)) if isinstance(l, Linear))


@pytest.mark.parametrize("cls", [VAE, Autoencoder, DenoisingAutoencoder, AdversarialAutoencoder])
def test_encoders_skip_dx_of_their_data_input(cls):
    model = cls(rng=B.Generator(0))
    assert model.encoder[0].input_grad is False
    assert all(l.input_grad for l in model.decoder if isinstance(l, Linear))
    if cls is AdversarialAutoencoder:                       # its codes need dL/dz
        assert model.discriminator[0].input_grad


# --- float32 end to end ------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [VAE, Autoencoder, DenoisingAutoencoder, AdversarialAutoencoder])
def test_a_float32_training_step_never_promotes_to_float64(cls):
    """Every layer output, gradient, loss term, parameter and optimizer buffer stays float32."""
    model = cls(rng=B.Generator(0)).configure_optimizers("adam", lr=1e-3)
    seen = []
    for m in model.modules():
        if type(m).forward is not Module.forward and m is not model:
            f, b = m.forward, m.backward

            def fwd(*a, _f=f, **k):
                out = _f(*a, **k)
                seen.extend(a)
                seen.append(out)
                return out

            def bwd(dy, _b=b):
                out = _b(dy)
                seen.extend([dy, *(out if isinstance(out, tuple) else (out,))])
                return out

            m.forward, m.backward = fwd, bwd
    x = np.random.default_rng(0).random((16, 784)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            terms = model.train_step(x)
    arrays = [a for a in seen if isinstance(a, (np.ndarray, np.generic))]
    arrays += list(terms.values()) + [p for _, p in model.named_parameters()]
    arrays += [g for _, g in model.named_grads()]
    for opt in model.optimizers.values():
        arrays += [a for bufs in opt.state.values() for a in bufs.values()]
    assert arrays
    bad = {str(a.dtype) for a in arrays if a.dtype not in (np.float32, np.bool_)}
    assert not bad, bad


def test_relu_backward_is_dy_times_the_mask():
    r = ReLU()
    x = np.asarray([[-1.0, 0.0, 2.0, -0.5]], "float32")
    r(x)
    dx = r.backward(np.asarray([[3.0, 4.0, 5.0, 6.0]], "float32"))
    assert dx.dtype == np.float32
    assert dx.tolist() == [[0.0, 0.0, 5.0, 0.0]]


def test_dtype_name_is_cached_without_cross_library_comparisons():
    import array_api_strict as xps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        names = [B.dtype_name(d) for d in (np.dtype("float32"), xps.float32, np.float64,
                                           xps.int64, "float32", np.dtype("float32"), xps.float32)]
    assert names == ["float32", "float32", "float64", "int64", "float32", "float32", "float32"]


def test_one_thread_by_default(monkeypatch):
    monkeypatch.delenv("SCRATCHAE_NUM_THREADS", raising=False)
    monkeypatch.setitem(B._THREADS, "n", None)
    assert B.num_threads() == 1

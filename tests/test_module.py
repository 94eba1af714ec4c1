"""The layer protocol: caches, gradients, names, modes, devices, state, input checks."""
from __future__ import annotations

import numpy as np
import pytest

from scratchae import backend as B
from scratchae import layers as L
from scratchae.module import CacheError, InputError, Module, Sequential


def _rng(device, seed=0):
    return B.Generator(seed, device=device)


def _mlp(device, dtype="float64", seed=0):
    r = _rng(device, seed)
    return Sequential(L.Linear(3, 4, r, dtype=dtype), L.Tanh(), L.Linear(4, 2, r, dtype=dtype))


def _host(a):
    return np.array(B.to_numpy(a), copy=True)


# --- the cache -------------------------------------------------------------------------------

def test_backward_without_forward_names_the_layer(device):
    layer = L.Linear(3, 2, _rng(device), dtype="float64")
    with pytest.raises(CacheError, match=r"Linear\(3 -> 2\): backward called with no pending forward"):
        layer.backward(device.zeros((4, 2)))


def test_backward_twice_after_one_forward(device):
    layer = L.Tanh()
    x = _rng(device).normal((4, 3), "float64")
    y = layer(x)
    layer.backward(y)
    with pytest.raises(CacheError, match="no pending forward"):
        layer.backward(y)


def test_second_training_forward_before_backward_names_layer_and_path(device):
    model = _mlp(device)
    r = _rng(device, 1)
    real, fake = r.normal((4, 3), "float64"), r.normal((4, 3), "float64")
    model(real)
    with pytest.raises(CacheError, match=r"Linear\(3 -> 4\) at '0': forward called again"):
        model(fake)
    # a layer deeper in: its own path
    h = r.normal((4, 4), "float64")
    with pytest.raises(CacheError, match=r"Tanh\(\) at '1'.*concatenation"):
        model[1](h)


def test_paths_of_nested_sequentials(device):
    r = _rng(device)
    inner = Sequential(L.Linear(4, 2, r, dtype="float64"), L.Tanh())
    outer = Sequential(L.Linear(3, 4, r, dtype="float64"), inner)
    assert outer[1][0].label == "Linear(4 -> 2) at '1.0'"
    outer(r.normal((2, 3), "float64"))
    with pytest.raises(CacheError, match=r"at '1\.0'"):
        inner[0](r.normal((2, 4), "float64"))


def test_eval_forward_keeps_no_cache_and_backward_says_eval_mode(device):
    model = _mlp(device).eval()
    x = _rng(device, 1).normal((4, 3), "float64")
    y = model(x)
    y2 = model(x)                       # no CacheError: eval keeps nothing
    assert not any(m.has_cache for m in model.modules())
    np.testing.assert_array_equal(_host(y), _host(y2))
    with pytest.raises(CacheError, match="eval mode"):
        model.backward(y)


def test_clear_cache_is_recursive(device):
    model = _mlp(device)
    x = _rng(device, 1).normal((4, 3), "float64")
    model(x)
    assert all(m.has_cache for m in model.layers)
    model.clear_cache()
    assert not any(m.has_cache for m in model.modules())
    model(x)                            # a fresh forward is allowed again
    model.backward(device.zeros((4, 2)))


# --- gradients -------------------------------------------------------------------------------

def test_zero_grad(device):
    model = _mlp(device)
    r = _rng(device, 1)
    model(r.normal((4, 3), "float64"))
    model.backward(r.normal((4, 2), "float64"))
    assert any(np.any(_host(g) != 0) for _, g in model.named_grads())
    model.zero_grad()
    for name, g in model.named_grads():
        assert not np.any(_host(g)), name


def _one_pass(model, device):
    """One forward and backward on a fixed batch: (x, dy, the gradients on the host)."""
    r = _rng(device, 1)
    x, dy = r.normal((4, 3), "float64"), r.normal((4, 2), "float64")
    model(x)
    model.backward(dy)
    return x, dy, {n: _host(g) for n, g in model.named_grads()}


def test_grads_accumulate_across_passes(device):
    model = _mlp(device)
    x, dy, once = _one_pass(model, device)
    model(x)
    model.backward(dy)
    for n, g in model.named_grads():
        np.testing.assert_allclose(_host(g), 2 * once[n], rtol=1e-14, atol=1e-15)


def test_grads_are_a_plain_dict_and_zero_grad_writes_zeros_in_place(device):
    model = _mlp(device)
    r = _rng(device, 1)
    model(r.normal((4, 3), "float64"))
    model.backward(r.normal((4, 2), "float64"))
    g = model[0].grads
    assert type(g) is dict
    ident = dict(g)
    assert np.any(_host(g["W"]))
    model.zero_grad()
    for m in model.modules():
        for v in m.grads.values():
            assert not np.any(_host(v))
    assert g["W"] is ident["W"] and g["b"] is ident["b"]      # same arrays, zeroed in place


def _tied(device, dtype="float64", seed=0):
    enc = L.Linear(3, 2, _rng(device, seed), dtype=dtype)
    return Sequential(enc, L.Tanh(), L.TiedLinear(enc, dtype=dtype), L.Linear(3, 2, _rng(device, 5), dtype=dtype))


@pytest.mark.parametrize("build", [_mlp, _tied], ids=["mlp", "tied"])
def test_backward_after_zero_grad_overwrites_junk_and_matches_a_fresh_model(device, build):
    """In the tied net both layers write the one W: the first writes, the second adds."""
    r = _rng(device, 1)
    x, dy = r.normal((4, 3), "float64"), r.normal((4, 2), "float64")
    fresh, used = build(device), build(device)
    fresh(x)
    fresh.backward(dy)
    used(x)
    used.backward(dy * 3.0)
    used.zero_grad()
    used(x)
    used.backward(dy)
    for (n, a), (_, b) in zip(fresh.named_grads(), used.named_grads()):
        np.testing.assert_array_equal(_host(a), _host(b), err_msg=n)


def test_a_gradient_written_between_zero_grad_and_backward_is_kept(device):
    """Backward adds: a term written by hand after zero_grad (an L2 penalty) stays."""
    model = _mlp(device)
    x, dy, once = _one_pass(model, device)
    model.zero_grad()
    model[0].grads["W"] += 1.0
    model(x)
    model.backward(dy)
    np.testing.assert_allclose(_host(model[0].grads["W"]), once["0.W"] + 1.0, rtol=1e-14)
    np.testing.assert_array_equal(_host(model[2].grads["W"]), once["2.W"])


def test_parameter_slots_carry_qualified_names_and_read_live_arrays():
    r = _rng(B.resolve("cpu"))
    model = Sequential(L.Linear(3, 4, r), Sequential(L.Linear(4, 2, r), L.Tanh()))
    slots = model.parameter_slots()
    assert [s.name for s in slots] == ["0.W", "0.b", "1.0.W", "1.0.b"]
    assert [s.name for s in model[1].parameter_slots("dec")] == ["dec.0.W", "dec.0.b"]
    assert slots[2].param is model[1][0].params["W"] and slots[2].grad is model[1][0].grads["W"]
    model.to(dtype="float64")                   # new arrays: a slot finds them
    assert slots[2].param is model[1][0].params["W"] and slots[2].param.dtype == np.float64


def test_named_parameters_are_qualified(device):
    r = _rng(device)
    model = Sequential(L.Linear(3, 4, r), Sequential(L.Linear(4, 2, r), L.Tanh()),
                       L.BatchNorm1d(2, r))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.W", "0.b", "1.0.W", "1.0.b", "2.gamma", "2.beta"]
    assert [n for n, _ in model.named_grads()] == names
    assert model.num_parameters() == 3 * 4 + 4 + 4 * 2 + 2 + 2 + 2
    assert dict(model.named_modules())["1.0"] is model[1][0]


def test_tied_weights_are_listed_once(device):
    r = _rng(device)
    enc = L.Linear(3, 2, r)
    model = Sequential(enc, L.TiedLinear(enc))
    assert [n for n, _ in model.named_parameters()] == ["0.W", "0.b", "1.c"]


def test_train_and_eval_are_recursive(device):
    r = _rng(device)
    model = Sequential(L.Linear(3, 4, r), Sequential(L.Dropout(0.5, r), L.BatchNorm1d(4, r)))
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    model.train(False)
    assert not any(m.training for m in model.modules())


# --- devices, dtypes, state ------------------------------------------------------------------

def _bn_model(device, dtype="float32"):
    r = _rng(device, 3)
    return Sequential(L.Linear(3, 4, r, dtype=dtype), L.BatchNorm1d(4, r, dtype=dtype))


def test_to_dtype_casts_params_grads_and_buffers(device):
    model = _bn_model(device, "float32")
    before = {n: _host(p) for n, p in model.named_parameters()}
    assert model.to(dtype="float64") is model
    for d in (dict(model.named_parameters()), dict(model.named_grads()), model[1].buffers):
        for name, a in d.items():
            assert B.dtype_name(a.dtype) == "float64", name
            assert B.device_of(a) == device.device
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(_host(p), before[n].astype("float64"))
    # and it runs in float64 now
    y = model(_rng(device, 1).normal((5, 3), "float64"))
    assert B.dtype_name(y.dtype) == "float64"


def test_to_device_and_back():
    cpu, dev1 = B.resolve("cpu"), B.resolve("array_api_strict:device1")
    model = _bn_model(cpu, "float64")
    x = _rng(cpu, 1).normal((5, 3), "float64")
    model(x)
    model.backward(np.ones((5, 4)))     # nonzero grads and moved running stats
    state = {n: _host(a) for n, a in model.state_dict().items()}
    grads = {n: _host(g) for n, g in model.named_grads()}

    model.to(device="array_api_strict:device1")
    for d in model._arrays_dicts():
        for k, a in d.items():
            assert B.device_of(a) == dev1.device, k
    for n, a in model.state_dict().items():
        np.testing.assert_array_equal(_host(a), state[n])
    for n, g in model.named_grads():
        np.testing.assert_array_equal(_host(g), grads[n])
    model.eval()                        # (a training forward would move the running stats)
    y1 = model(dev1.asarray(x, "float64"))

    model.to(device="cpu")
    for n, a in model.state_dict().items():
        assert B.is_numpy(a), n
        np.testing.assert_array_equal(a, state[n])
    np.testing.assert_allclose(_host(model(x)), _host(y1), rtol=1e-12, atol=1e-12)


def test_state_dict_round_trip_including_buffers(device):
    src = _bn_model(device, "float64")
    src(_rng(device, 1).normal((6, 3), "float64"))    # moves running_mean / running_var
    src.clear_cache()
    state = {k: _host(v) for k, v in src.state_dict().items()}   # a NumPy checkpoint
    assert set(state) == {"0.W", "0.b", "1.gamma", "1.beta", "1.running_mean", "1.running_var"}
    assert np.any(state["1.running_mean"] != 0)

    dst = _bn_model(device, "float64")
    dst[0].params["W"][...] = 0
    dst.load_state_dict(state)
    for k, v in dst.state_dict().items():
        np.testing.assert_array_equal(_host(v), state[k])
        assert B.device_of(v) == device.device, k          # landed on the model's device
        assert B.dtype_name(v.dtype) == "float64"
    x = _rng(device, 2).normal((6, 3), "float64")
    src.eval(), dst.eval()
    np.testing.assert_array_equal(_host(src(x)), _host(dst(x)))


def test_load_state_dict_refuses_missing_unexpected_and_misshapen(device):
    model = _bn_model(device, "float64")
    state = {k: _host(v) for k, v in model.state_dict().items()}
    partial = dict(state)
    del partial["1.running_var"]
    with pytest.raises(KeyError, match=r"missing \['1.running_var'\]"):
        model.load_state_dict(partial)
    extra = dict(state, **{"2.W": np.zeros(3)})
    with pytest.raises(KeyError, match=r"unexpected \['2.W'\]"):
        model.load_state_dict(extra)
    bad = dict(state, **{"0.W": np.zeros((4, 3))})
    with pytest.raises(InputError, match=r"'0.W' has shape \(4, 3\), expected \(3, 4\)"):
        model.load_state_dict(bad)


# --- input validation ------------------------------------------------------------------------

def test_wrong_feature_size(device):
    layer = L.Linear(3, 2, _rng(device), dtype="float64")
    with pytest.raises(InputError) as err:
        layer(device.zeros((4, 5)))
    msg = str(err.value)
    assert "Linear(3 -> 2)" in msg and "(4, 5)" in msg and "(N, 3)" in msg


def test_wrong_rank(device):
    layer = L.Linear(3, 2, _rng(device), dtype="float64")
    with pytest.raises(InputError, match="expected 2 dimensions"):
        layer(device.zeros((3,)))


def test_integer_input_is_refused(device):
    layer = L.Linear(3, 2, _rng(device), dtype="float32")
    x = device.asarray(np.arange(12).reshape(4, 3), "int64")
    with pytest.raises(InputError, match=r"Linear\(3 -> 2\): x has dtype int64.*float32"):
        layer(x)


def test_float32_input_into_float64_layer(device):
    layer = L.Linear(3, 2, _rng(device), dtype="float64")
    with pytest.raises(InputError, match="float32 but the parameters are float64"):
        layer(device.zeros((4, 3), "float32"))


def test_mixing_strict_devices_is_refused():
    layer = L.Linear(3, 2, _rng("array_api_strict:device1"), dtype="float64")
    x = B.resolve("array_api_strict").zeros((4, 3), "float64")      # on CPU_DEVICE
    with pytest.raises(InputError, match=r"Linear\(3 -> 2\): x is on device .*CPU_DEVICE.*device1"):
        layer(x)


def test_not_an_array(device):
    layer = L.Linear(3, 2, _rng(device), dtype="float64")
    with pytest.raises(InputError, match="must be an array"):
        layer([[0.0, 0.0, 0.0]])


def test_check_dy_refuses_broadcastable_shapes(device):
    layer = L.Tanh()
    x = _rng(device).normal((4, 3), "float64")
    layer(x)
    with pytest.raises(InputError, match=r"Tanh\(\): dy has shape \(1, 3\), but the forward output had shape \(4, 3\)"):
        layer.backward(device.zeros((1, 3)))
    lin = L.Linear(3, 2, _rng(device), dtype="float64")
    lin(x)
    with pytest.raises(InputError, match=r"dy has shape \(2,\)"):
        lin.backward(device.zeros((2,)))


def test_custom_module_without_init_is_a_clear_error():
    class Bad(Module):
        def __init__(self):
            self.inner = L.Tanh()

    with pytest.raises(AttributeError, match="Module.__init__"):
        Bad()

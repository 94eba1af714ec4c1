"""What the teaching path promises beyond gradients: ``Linear(input_grad=False)`` only first,
float32 staying float32 through a whole training step, dtype names."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from scratchae import backend as B
from scratchae.gradcheck import check_layer
from scratchae.layers import Linear, ReLU, Tanh
from scratchae.models import VAE, AdversarialAutoencoder, Autoencoder, DenoisingAutoencoder
from scratchae.models.base import mlp
from scratchae.module import InputError, Module, Sequential


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


def test_relu_backward_keeps_dy_where_x_is_positive():
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


def test_input_grad_false_anywhere_but_first_is_refused_when_built():
    rng = B.Generator(0)
    with pytest.raises(ValueError, match=r"layer 2, Linear\(4 -> 3\), has input_grad=False.*only the first"):
        Sequential(Linear(5, 4, rng), Tanh(), Linear(4, 3, rng, input_grad=False))
    Sequential(Linear(5, 4, rng, input_grad=False), Tanh())          # first: fine


def test_input_grad_false_after_parameter_free_layers_ends_backward_there():
    """A Reshape of the pixels before the first layer with parameters: allowed, backward
    returns None, and the Reshape's cache is dropped, so the next forward starts clean."""
    from scratchae.layers import Flatten, Reshape
    rng = B.Generator(0)
    net = Sequential(Reshape(2, 3), Flatten(), Linear(6, 4, rng, input_grad=False, dtype="float64"))
    x = rng.normal((5, 6), "float64")
    for _ in range(2):                       # twice: no stale cache in the Reshape
        y = net(x)
        assert net.backward(rng.normal(tuple(y.shape), "float64")) is None
    from scratchae.module import _EMPTY
    assert all(m._cache is _EMPTY for m in net.modules())    # nothing left pending
    with pytest.raises(ValueError, match="only the first layer with parameters"):
        Sequential(Reshape(2, 3), Flatten(), Linear(6, 4, rng), Linear(4, 3, rng, input_grad=False))


def test_a_none_dy_names_the_layer_and_the_likely_cause():
    rng = B.Generator(0)
    first = Sequential(Linear(5, 4, rng, input_grad=False))
    second = Sequential(Tanh(), Linear(3, 5, rng))
    x = rng.normal((2, 3))
    first(second(x))
    with pytest.raises(InputError, match=r"Linear\(3 -> 5\).*dy is None.*input_grad=False"):
        second.backward(first.backward(rng.normal((2, 4))))

"""The targets of ``mutation_score.py``: what is mutated, on which inputs it runs, how it is checked.

Every target answers two questions for an implementation ``ns`` (the namespace a mutant
was compiled into, or ``None`` for the code as shipped), on case number ``k``:

``outputs(ns, k, seed)``
    The gradients it produces, as ``[(name, float64 host array), ...]``: ``dx`` and every
    ``grads`` entry for a layer (after a forward with a fixed input, a fixed random ``dy``
    and pre-filled gradients), every returned array for a function.
``check(ns, k, seed)``
    The public checker's report, run as a user would: ``check_layer(layer, x)`` or
    ``check_function(f, *inputs, wrt=...)``.

A case is fully determined by ``(seed, k)``: the original and a mutant see identical
parameters and inputs. Case 0 is the plain one a user writes first (default constructor
arguments, as ``scratchae.cli.builtin_layers`` builds them); later cases vary shapes
(square and non-square weights) and constructor arguments.
"""
from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np

from scratchae import backend as B
from scratchae import conv as C
from scratchae import fast
from scratchae import layers as L
from scratchae import losses, stochastic

#: input values are kept at least this far from 0, the kink of ReLU / LeakyReLU / ELU
#: (the same margin as ``scratchae.testing.floats_away_from``'s default)
KINK_MARGIN = 0.05

HAVE_STRICT = importlib.util.find_spec("array_api_strict") is not None


def _checker():
    """The public checker, imported late: it is allowed to change between runs."""
    from scratchae.gradcheck import check_function, check_layer
    return check_layer, check_function


def case_rng(seed, k, salt=0):
    return np.random.default_rng([int(seed), int(k), int(salt)])


def away_from_zero(a, margin=KINK_MARGIN):
    """Push entries closer than ``margin`` to 0 out to +-margin (pushed, not redrawn)."""
    return np.where(np.abs(a) < margin, np.where(a >= 0, margin, -margin), a)


def inputs_away(rng, shape, low=-2.0, high=2.0):
    return away_from_zero(rng.uniform(low, high, size=shape))


def _host(x):
    return B.to_numpy(x).astype("float64", copy=True)


def _seed_of(rng):
    return int(rng.integers(2 ** 31))


# --- layers ---------------------------------------------------------------------------------

class LayerTarget:
    """A layer's ``backward``, mutated on a subclass; checked with ``check_layer``."""

    value_first = False          # backward returns gradients only
    recompile = ()

    def __init__(self, name, cls, build, method="backward"):
        self.name, self.cls, self.build, self.method = name, cls, build, method
        self.source = getattr(cls, method)
        self.module = sys.modules[cls.__module__]

    def impl(self, ns):
        if ns is None:
            return self.cls
        return type(self.cls.__name__, (self.cls,), {
            self.method: ns[self.source.__name__],
            "__module__": self.cls.__module__, "__qualname__": self.cls.__qualname__})

    def make(self, ns, k, seed):
        """(layer, x, forward_kwargs) for case k: the same numbers for every implementation."""
        layer, x, fk = self.build(self.impl(ns), k, case_rng(seed, k))
        layer.train()
        return layer, B.from_numpy(x, "cpu", "float64"), fk

    def outputs(self, ns, k, seed):
        layer, x, fk = self.make(ns, k, seed)
        rng = case_rng(seed, k, salt=1)
        y = layer.forward(x, **fk)
        dy = B.from_numpy(rng.standard_normal(tuple(y.shape)), "cpu", "float64")
        owners = [("", layer)] + ([("tied.", layer.tied)] if hasattr(layer, "tied") else [])
        for _, m in owners:                      # pre-filled: an overwrite must show
            for key in list(m.grads):
                m.grads[key][...] = rng.standard_normal(tuple(m.grads[key].shape))
        dx = layer.backward(dy)
        out = [("dx", None if dx is None else _host(dx))]
        for prefix, m in owners:
            out += [(prefix + key, _host(m.grads[key])) for key in sorted(m.grads)]
        return out

    def check(self, ns, k, seed):
        check_layer, _ = _checker()
        layer, x, fk = self.make(ns, k, seed)
        return check_layer(layer, x, forward_kwargs=fk, seed=k)


def _pick(options, k):
    return options[k % len(options)]


def build_linear(cls, k, rng):
    d_in, d_out, n = _pick([(4, 4, 3), (3, 5, 2), (4, 4, 4), (5, 2, 3), (2, 3, 4)], k)
    return cls(d_in, d_out, B.Generator(_seed_of(rng)), dtype="float64"), inputs_away(rng, (n, d_in)), {}


def build_tied(cls, k, rng):
    d_in, d_out, n = _pick([(4, 4, 3), (3, 5, 2), (4, 4, 4), (5, 2, 3), (2, 3, 4)], k)
    tied = L.Linear(d_in, d_out, B.Generator(_seed_of(rng)), dtype="float64")
    layer = cls(tied, dtype="float64")
    layer.params["c"][...] = rng.standard_normal(d_in)
    return layer, inputs_away(rng, (n, d_out)), {}


SHAPES_2D = [(3, 4), (2, 5), (4, 4), (3, 3), (1, 6)]


def build_elementwise(*arg_options):
    """A layer built as ``cls(*args)``, args cycling through ``arg_options`` (case 0: the first)."""
    def build(cls, k, rng):
        args = _pick(arg_options, k) if arg_options else ()
        return cls(*args), inputs_away(rng, _pick(SHAPES_2D, k)), {}
    return build


def build_dropout(cls, k, rng):
    p = _pick([0.3, 0.5, 0.2], k)
    shape = _pick(SHAPES_2D, k)
    x = inputs_away(rng, shape)
    mask = B.from_numpy((rng.random(shape) >= p).astype("float64"), "cpu", "float64")
    return cls(p), x, {"mask": mask}


def build_batchnorm(cls, k, rng):
    n, d = _pick([(4, 3), (3, 4), (5, 2), (4, 4), (6, 3)], k)
    layer = cls(d, B.Generator(_seed_of(rng)), dtype="float64")
    if k > 0:  # case 0 is the fresh layer (gamma = 1, beta = 0); later ones train-like values
        layer.params["gamma"][...] = rng.uniform(0.5, 2.0, d) * rng.choice([-1.0, 1.0], d)
        layer.params["beta"][...] = rng.standard_normal(d)
    return layer, rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d) + rng.standard_normal(d), {}


def build_reshape(cls, k, rng):
    shape, x_shape = _pick([((2, 3), (3, 6)), ((6,), (2, 2, 3)), ((3, 2), (2, 2, 3)),
                            ((4,), (3, 2, 2)), ((2, 2), (2, 4))], k)
    return cls(*shape), inputs_away(rng, x_shape), {}


def build_flatten(cls, k, rng):
    return cls(), inputs_away(rng, _pick([(3, 2, 3), (2, 3, 2), (2, 2, 2, 2), (3, 4), (1, 2, 3)], k)), {}


class ConvTarget(LayerTarget):
    """A convolution layer's backward, or one of the ``scratchae.conv`` reference functions it
    calls (``function``), mutated; checked with ``check_layer`` on the layer, fast paths off
    (the mutant is the reference: the fast path must not stand in for it)."""

    def __init__(self, name, cls, build, function=None):
        super().__init__(name, cls, build)
        self.function = function
        if function is not None:      # mutate the function; re-bind the layer's backward to it
            self.source, self.module = getattr(C, function).reference, C

    def impl(self, ns):
        if ns is None or self.function is None:
            return super().impl(ns)
        backward = self.cls.backward
        rebound = types.FunctionType(backward.__code__, ns, backward.__name__, backward.__defaults__,
                                     backward.__closure__)
        return type(self.cls.__name__, (self.cls,), {
            "backward": rebound, "__module__": self.cls.__module__, "__qualname__": self.cls.__qualname__})

    def outputs(self, ns, k, seed):
        with fast.reference_mode():
            return super().outputs(ns, k, seed)

    def check(self, ns, k, seed):
        with fast.reference_mode():
            return super().check(ns, k, seed)


#: (in_channels, out_channels, kernel, stride, padding, dilation, batch, H, W): small, with
#: strides and paddings that skip rows, dilation, non-square kernels and images
CONV_CASES = [(2, 3, 3, 1, 1, 1, 2, 5, 5), (1, 2, (2, 3), 2, 0, 1, 2, 6, 5),
              (2, 2, 3, 2, 1, 2, 1, 7, 6), (3, 1, 2, 3, 1, 1, 2, 6, 7), (1, 3, 4, 2, 1, 1, 1, 6, 6)]


def build_conv2d(cls, k, rng):
    c_in, c_out, kern, s, p, d, n, h, w = _pick(CONV_CASES, k)
    layer = cls(c_in, c_out, kern, s, p, d, rng=B.Generator(_seed_of(rng)), dtype="float64")
    return layer, inputs_away(rng, (n, c_in, h, w)), {}


def build_conv_transpose2d(cls, k, rng):
    c_in, c_out, kern, s, p, d, n, h, w = _pick(CONV_CASES, k)
    op = 1 if s > 1 else 0
    layer = cls(c_in, c_out, kern, s, min(p, 1), op, dilation=d, rng=B.Generator(_seed_of(rng)),
                dtype="float64")
    return layer, inputs_away(rng, (n, c_in, max(2, h // 2), max(2, w // 2))), {}


def build_pool(cls, k, rng):
    kern, s, p, n, c, h, w = _pick([(2, 2, 0, 2, 2, 4, 4), (3, 2, 1, 1, 2, 5, 6), (2, 1, 1, 2, 1, 3, 4),
                                    ((2, 3), (1, 2), (1, 1), 1, 2, 5, 5), (3, 3, 0, 2, 1, 7, 6)], k)
    return cls(kern, s, p), inputs_away(rng, (n, c, h, w)), {}


def build_upsample(cls, k, rng):
    scale, shape = _pick([(2, (2, 2, 3, 3)), ((2, 3), (1, 2, 2, 3)), (3, (2, 1, 2, 2))], k)
    return cls(scale), inputs_away(rng, shape), {}


# --- functions ------------------------------------------------------------------------------

class FunctionTarget:
    """A function ``f(*inputs) -> (value, grad, ...)``; checked with ``check_function``.

    ``mutate`` names the function whose source is mutated, ``entry`` the one a user calls
    (the same, or a caller compiled again into the mutant's namespace so it calls the mutant).
    """

    value_first = True           # element 0 of the return is the value: never mutated

    def __init__(self, name, module, make_inputs, mutate=None, entry=None, device="cpu"):
        self.name, self.module, self.make_inputs = name, module, make_inputs
        self.mutate = mutate or name
        self.entry = entry or self.mutate
        self.source = getattr(module, self.mutate)
        self.recompile = () if self.entry == self.mutate else (self.entry,)
        self.device = device

    def impl(self, ns):
        return getattr(self.module, self.entry) if ns is None else ns[self.entry]

    def make(self, k, seed):
        host, wrt = self.make_inputs(k, case_rng(seed, k))
        inputs = tuple(B.from_numpy(a, self.device, None if a.dtype.kind in "iu" else a.dtype.name)
                       for a in host)
        return inputs, wrt

    def outputs(self, ns, k, seed):
        inputs, _ = self.make(k, seed)
        out = self.impl(ns)(*inputs)
        return [(f"out[{i}]", _host(a)) for i, a in enumerate(out)]

    def check(self, ns, k, seed):
        _, check_function = _checker()
        inputs, wrt = self.make(k, seed)
        return check_function(self.impl(ns), *inputs, wrt=wrt, seed=k, title=self.name)


class SamplerTarget(LayerTarget):
    """``GaussianSample.backward`` (two inputs, so not ``check_layer``'s shape): checked as the
    function ``(mu, logvar) -> (sum(z * dz), dmu, dlogvar)`` with eps and dz held fixed."""

    def __init__(self):
        super().__init__("GaussianSample", stochastic.GaussianSample, None)

    def _function(self, ns, k, seed):
        rng = case_rng(seed, k)
        shape = _pick(SHAPES_2D, k)
        mu, logvar = rng.standard_normal(shape), rng.uniform(-1.5, 1.5, shape)
        eps, dz = (B.from_numpy(rng.standard_normal(shape), "cpu", "float64") for _ in range(2))
        cls = self.impl(ns)
        xp = B.namespace(dz)

        def sample_and_backward(mu, logvar):
            layer = cls()
            z = layer.forward(mu, logvar, eps=eps)
            dmu, dlogvar = layer.backward(dz)
            return xp.sum(z * dz), dmu, dlogvar

        return sample_and_backward, (B.from_numpy(mu, "cpu", "float64"), B.from_numpy(logvar, "cpu", "float64"))

    def outputs(self, ns, k, seed):
        f, inputs = self._function(ns, k, seed)
        return [(f"out[{i}]", _host(a)) for i, a in enumerate(f(*inputs))]

    def check(self, ns, k, seed):
        _, check_function = _checker()
        f, inputs = self._function(ns, k, seed)
        return check_function(f, *inputs, wrt=(0, 1), seed=k, title=self.name)


def mse_inputs(k, rng):
    shape = _pick(SHAPES_2D, k)
    return (rng.standard_normal(shape), rng.standard_normal(shape)), (0,)


def bce_inputs(k, rng):
    """Logits and targets in [0, 1]; case 3 has float32 targets (the dtype-mismatch branch),
    case 4 hard 0/1 targets."""
    shape = _pick(SHAPES_2D, k)
    target = rng.random(shape)
    if k % 5 == 4:
        target = np.round(target)
    if k % 5 == 3:
        target = target.astype("float32")
    return (2.0 * rng.standard_normal(shape), target), (0,)


def gaussian_nll_inputs(k, rng):
    shape = _pick(SHAPES_2D, k)
    return (rng.standard_normal(shape), rng.standard_normal(shape), rng.uniform(-1.5, 1.5, shape)), (1, 2)


def softmax_ce_inputs(k, rng):
    """Integer labels on even cases, probability rows on odd ones."""
    n, c = _pick([(3, 4), (2, 5), (4, 4), (3, 3), (4, 2)], k)
    logits = 2.0 * rng.standard_normal((n, c))
    if k % 2 == 0:
        return (logits, rng.integers(0, c, n).astype("int64")), (0,)
    p = rng.random((n, c))
    return (logits, p / p.sum(axis=1, keepdims=True)), (0,)


def gaussian_kl_inputs(k, rng):
    shape = _pick(SHAPES_2D, k)
    return (rng.standard_normal(shape), rng.uniform(-1.5, 1.5, shape)), (0, 1)


def gaussian_kl_between_inputs(k, rng):
    shape = _pick(SHAPES_2D, k)
    arrays = (rng.standard_normal(shape), rng.uniform(-1.5, 1.5, shape),
              rng.standard_normal(shape), rng.uniform(-1.5, 1.5, shape))
    return arrays, (0, 1, 2, 3)


#: the BCE runs on array_api_strict arrays, where no fast path applies, so the reference
#: ``bce_with_logits`` (the code that is mutated) computes the gradient, not the NumPy kernel
STRICT = "array_api_strict"


def all_targets():
    """Every target, in report order. The BCE target needs ``array_api_strict``."""
    targets = [
        LayerTarget("Linear", L.Linear, build_linear),
        LayerTarget("TiedLinear", L.TiedLinear, build_tied),
        LayerTarget("ReLU", L.ReLU, build_elementwise()),
        LayerTarget("LeakyReLU", L.LeakyReLU, build_elementwise((0.1,), (0.2,), (0.05,))),
        LayerTarget("ELU", L.ELU, build_elementwise((1.0,), (0.7,), (1.5,))),
        LayerTarget("Sigmoid", L.Sigmoid, build_elementwise()),
        LayerTarget("Tanh", L.Tanh, build_elementwise()),
        LayerTarget("Softplus", L.Softplus, build_elementwise()),
        LayerTarget("Identity", L.Identity, build_elementwise()),
        LayerTarget("Dropout", L.Dropout, build_dropout),
        LayerTarget("BatchNorm1d", L.BatchNorm1d, build_batchnorm),
        LayerTarget("Reshape", L.Reshape, build_reshape),
        LayerTarget("Flatten", L.Flatten, build_flatten),
        LayerTarget("SoftClamp", stochastic.SoftClamp, build_elementwise((3.0,), (1.5,), (2.0,))),
        ConvTarget("Conv2d", C.Conv2d, build_conv2d),
        ConvTarget("conv2d_input_grad", C.Conv2d, build_conv2d, function="conv2d_input_grad"),
        ConvTarget("conv2d_weight_grad", C.Conv2d, build_conv2d, function="conv2d_weight_grad"),
        ConvTarget("ConvTranspose2d", C.ConvTranspose2d, build_conv_transpose2d),
        ConvTarget("MaxPool2d", C.MaxPool2d, build_pool),
        ConvTarget("max_pool2d_input_grad", C.MaxPool2d, build_pool, function="max_pool2d_input_grad"),
        ConvTarget("AvgPool2d", C.AvgPool2d, build_pool),
        ConvTarget("avg_pool2d_input_grad", C.AvgPool2d, build_pool, function="avg_pool2d_input_grad"),
        ConvTarget("Upsample", C.Upsample, build_upsample),
        ConvTarget("upsample_nearest2d_input_grad", C.Upsample, build_upsample,
                   function="upsample_nearest2d_input_grad"),
        SamplerTarget(),
        FunctionTarget("mse", losses, mse_inputs),
    ]
    if HAVE_STRICT:
        targets += [
            FunctionTarget("bce_with_logits", losses, bce_inputs, device=STRICT),
        ]
    targets += [
        FunctionTarget("gaussian_nll", losses, gaussian_nll_inputs),
        FunctionTarget("softmax_cross_entropy", losses, softmax_ce_inputs),
        FunctionTarget("gaussian_kl", stochastic, gaussian_kl_inputs),
        FunctionTarget("gaussian_kl_between", stochastic, gaussian_kl_between_inputs),
    ]
    return targets

"""The layer protocol: ``Module`` and ``Sequential``.

A module owns three dicts of arrays and one cache:

``params``   name -> array, what the optimizer updates (in place)
``grads``    name -> array, same keys and shapes as ``params``; ``backward`` *adds* here
             (``self.grads["W"] += x.T @ dy``), ``zero_grad()`` writes zeros
``buffers``  name -> array, state that is not trained (BatchNorm running statistics)

``forward(x)`` computes the output and, in training mode, stores what ``backward``
needs with ``save_cache``; ``backward(dy)`` takes it back with ``pop_cache``,
adds the parameter gradients into ``grads`` and returns ``dx``.  A backward with no
pending forward, or a second training forward while a cache still waits for its
backward, raises :class:`CacheError` naming the layer: the classic silent bug of
scoring a discriminator on real data, then on fake data, then backpropagating twice
is impossible here.  Score two batches with one forward on their concatenation.

In ``eval()`` mode a forward keeps no cache at all (and overwrites nothing): it is
for inference, and ``backward`` after it says so.
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple

from . import backend as B

__all__ = ["Module", "Sequential", "Slot", "CacheError", "InputError"]


class CacheError(RuntimeError):
    """forward/backward called out of order on a layer."""


class InputError(ValueError):
    """An array given to a layer has the wrong shape, dtype, device or values."""


_EMPTY = object()


class Slot(NamedTuple):
    """One trainable array, found by name: ``module.params[key]`` and ``module.grads[key]``.

    What optimizers are built over. A slot reads its arrays when asked, so it stays valid
    when ``model.to(...)`` replaces them.
    """
    name: str
    module: "Module"
    key: str

    @property
    def param(self):
        return self.module.params[self.key]

    @property
    def grad(self):
        return self.module.grads[self.key]


class Module:
    """Base class of every layer and model. Subclass it and write forward and backward."""

    def __init__(self):
        object.__setattr__(self, "_modules", {})
        self.params: dict = {}
        self.grads: dict = {}
        self.buffers: dict = {}
        self.training = True
        self._cache = _EMPTY
        self._path = ""

    # --- registration --------------------------------------------------------
    def __setattr__(self, name, value):
        if isinstance(value, Module):
            if "_modules" not in self.__dict__:
                raise AttributeError(f"call Module.__init__() in {type(self).__name__}.__init__ first")
            self._modules[name] = value
            value._set_path(f"{self._path}.{name}" if self._path else name)
        object.__setattr__(self, name, value)

    def _set_path(self, path: str) -> None:
        self._path = path
        for name, child in self._modules.items():
            child._set_path(f"{path}.{name}")

    def add_param(self, name: str, value) -> None:
        """Register a trainable array and a zero gradient of the same shape beside it."""
        xp = B.namespace(value)
        self.params[name] = value
        with B.resolve(value).context():       # cuda:N: the gradient lands on GPU N too
            self.grads[name] = xp.zeros_like(value)

    def children(self) -> Iterator[tuple[str, "Module"]]:
        return iter(self._modules.items())

    def modules(self) -> Iterator["Module"]:
        yield self
        for _, child in self._modules.items():
            yield from child.modules()

    @property
    def label(self) -> str:
        """How errors name this layer: ``Linear(784 -> 400) at 'encoder.0'``."""
        where = f" at '{self._path}'" if self._path else ""
        return f"{self!r}{where}"

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return ""

    # --- calling -------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define forward(x)")

    def backward(self, dy):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define backward(dy)")

    # --- the cache -----------------------------------------------------------
    def save_cache(self, *values) -> None:
        """Keep what backward needs (training mode only). Refuses to overwrite."""
        if not self.training:
            return
        if self._cache is not _EMPTY:
            raise CacheError(
                f"{self.label}: forward called again while the previous forward's cache still "
                "waits for its backward. Call backward first (or clear_cache() to discard it); "
                "to score two batches, run one forward on their concatenation."
            )
        self._cache = values

    def pop_cache(self):
        """Take back what forward kept, always as a tuple in the order saved.

        ``self.save_cache(x)`` comes back as ``(x,) = self.pop_cache()``, ``save_cache(x, s)``
        as ``x, s = self.pop_cache()``. A backward without a pending forward is an error.
        """
        if self._cache is _EMPTY:
            why = (" The module is in eval mode, where forward keeps no cache: call .train() "
                   "before a forward you want to backpropagate." if not self.training else
                   " Each backward needs exactly one training forward before it.")
            raise CacheError(f"{self.label}: backward called with no pending forward.{why}")
        values, self._cache = self._cache, _EMPTY
        return values

    @property
    def has_cache(self) -> bool:
        return self._cache is not _EMPTY

    def clear_cache(self) -> None:
        """Discard pending caches, recursively (after a forward you will not backpropagate)."""
        for m in self.modules():
            m._cache = _EMPTY

    # --- modes and gradients -------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        """Write zeros into every gradient (backward then adds into them)."""
        for m in self.modules():
            for g in m.grads.values():
                g[...] = 0

    # --- parameters by qualified name -----------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def parameter_slots(self, prefix: str = "") -> list[Slot]:
        """A :class:`Slot` (qualified name, owning module, key) for every parameter, each
        array once; names start with ``prefix`` (``encoder.parameter_slots("encoder")``
        names them as the whole model does).

        A module whose params dict is already listed (shared by two modules) is skipped.
        ``TiedLinear`` owns no copy of W at all: it writes into the tied Linear's grads,
        so W is listed once, under the Linear's name.
        """
        seen, slots = set(), []
        for path, m in self.named_modules(prefix):
            if id(m.params) in seen:
                continue
            seen.add(id(m.params))
            for k in m.params:
                slots.append(Slot(f"{path}.{k}" if path else k, m, k))
        return slots

    def named_parameters(self) -> Iterator[tuple[str, object]]:
        for name, m, k in self.parameter_slots():
            yield name, m.params[k]

    def named_grads(self) -> Iterator[tuple[str, object]]:
        for name, m, k in self.parameter_slots():
            yield name, m.grads[k]

    def num_parameters(self) -> int:
        return sum(math.prod(p.shape) for _, p in self.named_parameters())

    # --- device, dtype, state --------------------------------------------------
    def _arrays_dicts(self):
        seen = set()
        for m in self.modules():
            for d in (m.params, m.grads, m.buffers):
                if id(d) not in seen:
                    seen.add(id(d))
                    yield d

    def to(self, device=None, dtype=None) -> "Module":
        """Move every parameter, gradient and buffer to ``device`` and/or cast floats to ``dtype``."""
        target = None if device is None else B.resolve(device)
        for d in self._arrays_dicts():
            for k, a in d.items():
                d[k] = _convert(a, target, dtype)
        self.clear_cache()
        return self

    def state_dict(self) -> dict:
        """Qualified name -> array, for parameters and buffers (arrays stay on their device)."""
        out = dict(self.named_parameters())
        for prefix, m in self.named_modules():
            for k, b in m.buffers.items():
                out[f"{prefix}.{k}" if prefix else k] = b
        return out

    def load_state_dict(self, state: dict) -> None:
        """Copy arrays (any backend, e.g. NumPy from a checkpoint) into this module's place."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"{self.label}: state dict does not match; missing {missing}, unexpected {unexpected}")
        slots = {}
        for name, m, k in self.parameter_slots():
            slots[name] = (m.params, k)
        for prefix, m in self.named_modules():
            for k in m.buffers:
                slots[f"{prefix}.{k}" if prefix else k] = (m.buffers, k)
        for name, value in state.items():
            d, k = slots[name]
            cur = d[k]
            if tuple(value.shape) != tuple(cur.shape):
                raise InputError(f"{self.label}: '{name}' has shape {tuple(value.shape)}, expected {tuple(cur.shape)}")
            host = B.host.array(B.to_numpy(value), copy=True)  # never alias the caller's arrays
            d[k] = B.resolve(cur).asarray(host, B.dtype_name(cur.dtype))

    # --- input validation (cheap: metadata only) --------------------------------
    def check_dy(self, dy, shape, name="dy"):
        """Refuse an upstream gradient whose shape is not the output's (no broadcasting)."""
        if dy is None:
            raise InputError(f"{self.label}: {name} is None: the layer after this one returned no "
                             "input gradient (a Linear with input_grad=False may only come first)")
        got = tuple(getattr(dy, "shape", ()))
        if got != tuple(shape):
            raise InputError(f"{self.label}: {name} has shape {got}, but the forward output had "
                             f"shape {tuple(shape)}; backward takes dL/dy of exactly y's shape")

    def check_input(self, x, features=None, ndim=None, name="x"):
        """Refuse a wrong shape, a non-float dtype, a dtype or device unlike the parameters.

        ``features``: required size of the last axis; ``ndim``: required rank.
        Never broadcasts: a mismatch is an :class:`InputError` naming layer and shapes.
        """
        shape = tuple(getattr(x, "shape", ()))
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise InputError(f"{self.label}: {name} must be an array, got {type(x).__name__}")
        if ndim is not None and len(shape) != ndim:
            raise InputError(f"{self.label}: {name} has shape {shape}, expected {ndim} dimensions")
        if features is not None and (len(shape) < 1 or shape[-1] != features):
            raise InputError(
                f"{self.label}: {name} has shape {shape}, expected last dimension {features} "
                f"(shape (N, {features}))")
        dt = B.dtype_name(x.dtype)
        if not dt.startswith("float"):
            raise InputError(f"{self.label}: {name} has dtype {dt}; layers take float32 or float64 "
                             "(convert integer pixels with x.astype('float32') / 255)")
        ref = next(iter(self.params.values()), None)
        if ref is not None:
            if B.dtype_name(ref.dtype) != dt:
                raise InputError(f"{self.label}: {name} has dtype {dt} but the parameters are "
                                 f"{B.dtype_name(ref.dtype)}; convert one of them (module.to(dtype=...))")
            if B.device_of(x) != B.device_of(ref):
                raise InputError(f"{self.label}: {name} is on device {B.device_of(x)} but the parameters are "
                                 f"on {B.device_of(ref)}; move one of them (module.to(device=...))")


def _convert(a, target, dtype):
    name = B.dtype_name(a.dtype)
    floating = name.startswith("float")
    new_dtype = dtype if (dtype is not None and floating) else name
    new_dtype = B.dtype_name(new_dtype)
    if target is not None and B.resolve(a) != target:
        return target.asarray(B.to_numpy(a), new_dtype)
    if new_dtype != name:
        xp = B.namespace(a)
        with B.resolve(a).context():       # cuda:N: cast on GPU N
            return xp.astype(a, getattr(xp, new_dtype))
    return a


class Sequential(Module):
    """Layers applied in order; children are named ``"0"``, ``"1"``, ...

    Forward: ``y = f_{n-1}(... f_1(f_0(x)))``. Backward: the chain rule in reverse,
    ``dx = b_0(b_1(... b_{n-1}(dy)))`` where ``b_i`` is layer i's backward.

    A layer built with ``input_grad=False`` returns no dL/dx (its input is data): it must be
    the first layer with parameters, and the parameter-free layers before it (a Reshape of
    the pixels) then have nothing to do in backward: their caches are dropped and backward
    returns ``None``.
    """

    def __init__(self, *layers: Module):
        super().__init__()
        self.layers = list(layers)
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)
        for i, layer in enumerate(self.layers[1:], start=1):
            before = self.layers[:i]
            if getattr(layer, "input_grad", True) is False and any(
                    next(iter(m.named_parameters()), None) is not None for m in before):
                raise ValueError(
                    f"Sequential: layer {i}, {layer!r}, has input_grad=False, so its backward "
                    f"returns no dL/dx, but layer {i - 1}, {self.layers[i - 1]!r}, comes before it "
                    "and has parameters; only the first layer with parameters may skip its input gradient")

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        inner = ", ".join(repr(l) for l in self.layers)
        return f"Sequential({inner})"

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, dy):
        for i in reversed(range(len(self.layers))):
            dy = self.layers[i].backward(dy)
            if dy is None:          # layer i skipped dL/dx: the layers before it do not learn
                for earlier in self.layers[:i]:
                    earlier.clear_cache()
                return None
        return dy

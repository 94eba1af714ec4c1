r"""Optimizers: SGD (with momentum / Nesterov), Adam, AdamW, RMSProp; gradient clipping.
Derivations: ``docs/optim.md``.

Every optimizer transcribes PyTorch's update (``torch.optim``, default settings,
``foreach=False``) in its textbook form; each class's *Notes* block is the body of its
``update``. The notation throughout:

``p``   a parameter (``module.params[key]``), updated **in place**
``g``   its gradient (``module.grads[key]``), read only
``t``   the step number, 1 on the first ``step()``
``lr``  the learning rate, an attribute you may change between steps (schedules)

An optimizer is built over **parameter slots** (:class:`~scratchae.module.Slot`: qualified
name, owning module, key), or over a module, which means all of its slots. A slot looks its
arrays up on every ``step()``, so ``model.to(...)`` between steps is safe (the optimizer's
buffers follow the parameters to their new device and dtype on the next step).
Per-parameter buffers (``"m"``, ``"v"``, ``"buf"``) are keyed by the qualified name, which
is what lets :meth:`Optimizer.state_dict` / :meth:`Optimizer.load_state_dict` resume a run
exactly (bitwise on NumPy).

A step never reads a value back to the host: the only Python numbers in the arithmetic
are hyperparameters and the step count, so on CUDA it just queues kernels. On NumPy and
CuPy, ``scratchae.fast`` may run the same update faster (``SCRATCHAE_REFERENCE=1`` turns
that off).

Typical loop::

    opt = Adam(model, lr=1e-3)
    for x in batches:
        opt.zero_grad()
        value, dy = loss(model(x), x)
        model.backward(dy)
        clip_grad_norm(model, 5.0)      # optional
        opt.step()
"""
from __future__ import annotations

import math
import operator

from . import backend as B
from . import fast
from .module import Module, Slot

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "clip_grad_norm", "make_optimizer",
    "OPTIMIZERS",
]


def _slots(params, who) -> list:
    """A module's parameter slots, or a list of slots as given (each name once)."""
    slots = params.parameter_slots() if isinstance(params, Module) else list(params)
    for s in slots:
        if not isinstance(s, Slot):
            raise TypeError(f"{who}: expected a Module or parameter slots "
                            f"(module.parameter_slots()), got a {type(s).__name__}")
    names = [s.name for s in slots]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{who}: parameter slots named more than once: {twice}")
    return slots


class Optimizer:
    """Base class: owns per-parameter buffers, the step count and the hyperparameters.

    Subclasses set ``_hyper`` (names of float/bool attributes that make up
    ``state_dict()["hyper"]``), return the names of their per-parameter buffers from
    ``_buffer_names()`` and write ``update(p, g, state, t)`` for one parameter.

    Parameters
    ----------
    params : Module or list of Slot
        What to train: a module (all its parameters) or parameter slots, e.g.
        ``encoder.parameter_slots("encoder") + decoder.parameter_slots("decoder")``.
        Buffers are created (zeros, on each parameter's device and dtype) now.
    lr : float
        Learning rate, ``>= 0``. Stored as the attribute ``lr``; change it between
        steps to follow a schedule.

    Attributes
    ----------
    slots : list of Slot
    step_count : int
        Number of ``step()`` calls so far (``t`` of the last step).
    state : dict
        Qualified parameter name -> {buffer name -> array}.
    """

    _hyper: tuple = ("lr",)

    def __init__(self, params, lr):
        self.slots = _slots(params, type(self).__name__)
        self._module = params if isinstance(params, Module) else None   # to notice new parameters
        self.lr = _check_float("lr", lr, low=0.0)
        self.step_count = 0
        self.state = {}
        names = self._buffer_names()
        for slot in self.slots:
            p = slot.param
            xp = B.namespace(p)
            with B.resolve(p).context():       # cuda:N: the buffers land on GPU N too
                self.state[slot.name] = {b: xp.zeros_like(p) for b in names}
        if not self.state:
            raise ValueError(f"{type(self).__name__}: there are no parameters to optimize")

    # --- what subclasses provide ------------------------------------------------
    def _buffer_names(self) -> tuple:
        return ()

    def update(self, p, g, state, t):  # pragma: no cover - abstract
        """Step ``t`` for one parameter ``p`` (in place) with gradient ``g`` and buffers ``state``."""
        raise NotImplementedError

    # --- the public loop ----------------------------------------------------------
    def zero_grad(self) -> None:
        """Write zeros into the gradient of every parameter this optimizer trains."""
        for slot in self.slots:
            slot.grad[...] = 0

    def step(self) -> None:
        """Apply one update to every parameter, in place, from the gradients now in ``grads``."""
        if self._module is not None and len(self._module.parameter_slots()) != len(self.slots):
            self._refuse_new_parameters()
        self.step_count += 1
        t = self.step_count
        work = [(slot.param, slot.grad, self._state_for(slot)) for slot in self.slots]
        if not fast.optimizer_step(self, work, t):      # scratchae/fast.py, off in reference mode
            for p, g, state in work:
                self.update(p, g, state, t)

    def _refuse_new_parameters(self):
        new = sorted({s.name for s in self._module.parameter_slots()} - set(self.state))
        raise ValueError(f"{type(self).__name__}: parameter(s) {new} were not in the model when the "
                         "optimizer was built; build a new optimizer after changing the model")

    def _state_for(self, slot) -> dict:
        state, p = self.state[slot.name], slot.param
        for b, a in state.items():
            # cheap metadata checks; a mismatch means model.to() moved or cast the params
            if type(a) is not type(p) or a.dtype != p.dtype or (
                    not B.is_numpy(p) and B.device_of(a) != B.device_of(p)):
                state[b] = _like(a, p)
        return state

    # --- hyperparameters and checkpoints --------------------------------------------
    @property
    def hyper(self) -> dict:
        """The hyperparameters as a plain dict (floats, and bools for switches)."""
        return {h: getattr(self, h) for h in self._hyper}

    def __repr__(self):
        inner = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items())
        return f"{type(self).__name__}({inner})"

    def state_dict(self) -> dict:
        """A snapshot to checkpoint: ``{"type", "hyper", "step", "state"}``.

        ``state`` maps each qualified parameter name to its buffers. The arrays are
        *copies* on the parameters' device (later steps do not change a snapshot);
        convert them with ``backend.to_numpy`` to save them.
        """
        state = {}
        for name, bufs in self.state.items():
            state[name] = {b: _copy(a) for b, a in bufs.items()}
        return {"type": type(self).__name__, "hyper": dict(self.hyper),
                "step": int(self.step_count), "state": state}

    def load_state_dict(self, d: dict) -> None:
        """Resume from :meth:`state_dict` output (arrays from any backend, e.g. NumPy).

        The hyperparameters (including ``lr``) and the step count are taken from ``d``,
        as in PyTorch. Each buffer is copied onto its parameter's device and dtype.
        Everything is checked before anything is changed: a different optimizer type,
        a different set of parameter names or buffer names, or a buffer whose shape is
        not its parameter's raises ``ValueError``.
        """
        who = type(self).__name__
        if not isinstance(d, dict) or not {"type", "hyper", "step", "state"} <= set(d):
            raise ValueError(f"{who}.load_state_dict: expected a dict with keys 'type', 'hyper', "
                             f"'step', 'state' (from state_dict()), got {_describe(d)}")
        if d["type"] != who:
            raise ValueError(f"{who}.load_state_dict: the checkpoint is for a {d['type']!r} "
                             f"optimizer, not {who!r}")
        hyper = d["hyper"]
        if not isinstance(hyper, dict) or set(hyper) != set(self._hyper):
            got = sorted(hyper) if isinstance(hyper, dict) else hyper
            raise ValueError(f"{who}.load_state_dict: hyperparameters {got} do not match "
                             f"{sorted(self._hyper)}")
        try:
            step = operator.index(d["step"])
        except TypeError:
            step = -1
        if isinstance(d["step"], bool) or step < 0:
            raise ValueError(f"{who}.load_state_dict: 'step' must be a non-negative int, "
                             f"got {d['step']!r}")
        values = {}
        for h in self._hyper:
            try:
                values[h] = float(hyper[h])
            except (TypeError, ValueError):
                raise ValueError(f"{who}.load_state_dict: hyperparameter {h!r} must be a number, "
                                 f"got {hyper[h]!r}") from None
        state = d["state"]
        if not isinstance(state, dict):
            raise ValueError(f"{who}.load_state_dict: 'state' must be a dict, got {_describe(state)}")
        params = {slot.name: slot.param for slot in self.slots}
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(f"{who}.load_state_dict: parameter names do not match the model; "
                             f"missing {missing}, unexpected {unexpected}")
        want = set(self._buffer_names())
        for name, bufs in state.items():
            p = params[name]
            if not isinstance(bufs, dict) or set(bufs) != want:
                got = sorted(bufs) if isinstance(bufs, dict) else _describe(bufs)
                raise ValueError(f"{who}.load_state_dict: '{name}' has buffers {got}, expected "
                                 f"{sorted(want)} (was the checkpoint made with other settings, "
                                 "e.g. momentum=0?)")
            for b, a in bufs.items():
                shape = tuple(getattr(a, "shape", ()))
                if shape != tuple(p.shape):
                    raise ValueError(f"{who}.load_state_dict: buffer '{b}' of '{name}' has shape "
                                     f"{shape}, but the parameter has shape {tuple(p.shape)}")
        # all checked: now change things
        for h, v in values.items():
            setattr(self, h, bool(v) if isinstance(getattr(self, h), bool) else v)
        self.step_count = step
        self.state = {name: {b: _like(a, params[name]) for b, a in bufs.items()}
                      for name, bufs in state.items()}


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum, Nesterov momentum, L2 decay.

    Parameters
    ----------
    params : Module or list of Slot
    lr : float
    momentum : float
        ``mu >= 0``; 0 is plain SGD (and keeps no buffer).
    nesterov : bool
        Nesterov's accelerated gradient in PyTorch's form (Sutskever et al. 2013);
        needs ``momentum > 0``.
    weight_decay : float
        ``lambda``: L2 penalty ``lambda/2 |p|^2`` added to the loss, i.e. ``lambda p``
        added to the gradient.

    Notes
    -----
    PyTorch's ``torch.optim.SGD`` with ``dampening=0``; the update for step ``t``::

        d = g + lambda * p                 if lambda != 0
        if mu != 0:
            buf = copy of d                if t == 1
            buf = mu * buf + d             otherwise
            d = d + mu * buf               if nesterov, else buf
        p -= lr * d

    With momentum this is the "velocity" form: ``lr`` multiplies the whole buffer,
    so changing ``lr`` mid-run rescales past gradients too (unlike Sutskever et
    al.'s ``v = mu v - lr g``, which is the same method at constant ``lr``).

    References
    ----------
    I. Sutskever, J. Martens, G. Dahl, G. Hinton. On the importance of initialization
    and momentum in deep learning. ICML 2013.
    """

    _hyper = ("lr", "momentum", "nesterov", "weight_decay")

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.momentum = _check_float("momentum", momentum, low=0.0)
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_float("weight_decay", weight_decay, low=0.0)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        super().__init__(params, lr)

    def _buffer_names(self):
        return ("buf",) if self.momentum != 0.0 else ()

    def update(self, p, g, state, t):
        d = g
        if self.weight_decay != 0.0:
            d = g + self.weight_decay * p
        if self.momentum != 0.0:
            if t == 1:
                state["buf"] = _copy(d)        # a copy: d may be the gradient array itself
            else:
                state["buf"] = self.momentum * state["buf"] + d
            d = d + self.momentum * state["buf"] if self.nesterov else state["buf"]
        p -= self.lr * d


class Adam(Optimizer):
    r"""Adam: per-coordinate steps from bias-corrected moment estimates (Kingma & Ba 2015).

    Parameters
    ----------
    params : Module or list of Slot
    lr : float
        ``lr``, the step size (roughly the largest change of a coordinate per step).
    betas : (float, float)
        ``(beta1, beta2)``, decay rates of the first and second moment estimates, in [0, 1).
    eps : float
        Added to the denominator, after the square root (PyTorch's placement).
    weight_decay : float
        ``lambda``: *L2* decay, ``lambda p`` added to the gradient before the moments
        (so it is rescaled by the adaptive denominator: see :class:`AdamW` for the
        decoupled kind).

    Notes
    -----
    PyTorch's ``torch.optim.Adam`` (``amsgrad=False``); with ``m``, ``v`` zero before
    step 1, the update for step ``t``::

        g = g + lambda * p                           if lambda != 0
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        p -= lr * m_hat / (sqrt(v_hat) + eps)

    Dividing by ``1 - beta**t`` removes the bias towards zero of moments that started at
    zero (``docs/optim.md``): with a constant gradient and the default betas, a step
    without it would be ``(1 - beta1**t) / sqrt(1 - beta2**t)`` times its intended size,
    3.16 at ``t = 1``.

    References
    ----------
    D. P. Kingma, J. Ba. Adam: A Method for Stochastic Optimization. ICLR 2015.
    """

    _hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")
    #: False: weight decay through the gradient (L2); True: applied to p directly (AdamW)
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"{type(self).__name__}: betas must be a pair (beta1, beta2), "
                             f"got {betas!r}") from None
        self.beta1 = _check_float("beta1", beta1, low=0.0, high=1.0)
        self.beta2 = _check_float("beta2", beta2, low=0.0, high=1.0)
        self.eps = _check_float("eps", eps, low=0.0)
        self.weight_decay = _check_float("weight_decay", weight_decay, low=0.0)
        super().__init__(params, lr)

    def _buffer_names(self):
        return ("m", "v")

    def update(self, p, g, state, t):
        xp = B.namespace(p)
        b1, b2 = self.beta1, self.beta2
        if self.weight_decay != 0.0:
            if self.decoupled:                                    # AdamW
                p *= 1 - self.lr * self.weight_decay
            else:                                                 # Adam: L2 through g
                g = g + self.weight_decay * p
        state["m"] = b1 * state["m"] + (1 - b1) * g
        state["v"] = b2 * state["v"] + (1 - b2) * g * g
        m_hat = state["m"] / (1 - b1 ** t)
        v_hat = state["v"] / (1 - b2 ** t)
        p -= self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter 2019).

    Same parameters as :class:`Adam`, but ``weight_decay`` (default 0.01) shrinks the
    parameters directly, by ``lr * lambda`` per step, instead of entering the gradient:
    the decay is then not divided by the adaptive ``sqrt(v)``, so every weight decays
    at the same rate, which is what L2 regularisation does for plain SGD.

    Notes
    -----
    PyTorch's ``torch.optim.AdamW``; the update for step ``t``::

        p *= 1 - lr * lambda
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        p -= lr * m_hat / (sqrt(v_hat) + eps)

    The body is :class:`Adam`'s ``update``, taking its ``decoupled`` branch. The decay
    multiplies by ``lr`` (PyTorch's convention) where the paper uses a schedule multiplier
    ``eta_t``: with ``eta_t = 1``, ``alpha = lr`` and ``lambda_paper = lr * lambda`` they agree.

    References
    ----------
    I. Loshchilov, F. Hutter. Decoupled Weight Decay Regularization. ICLR 2019.
    D. P. Kingma, J. Ba. Adam: A Method for Stochastic Optimization. ICLR 2015.
    """

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class RMSProp(Optimizer):
    r"""RMSProp: divide the gradient by a running RMS of its recent values (Tieleman & Hinton 2012).

    Parameters
    ----------
    params : Module or list of Slot
    lr : float
    alpha : float
        Decay rate of the running mean of squared gradients, in [0, 1).
    eps : float
        Added to the root mean square, after the square root (PyTorch's placement).
    momentum : float
        ``mu >= 0``; 0 keeps no momentum buffer.
    weight_decay : float
        ``lambda``: L2 decay, ``lambda p`` added to the gradient (default 0).

    Notes
    -----
    PyTorch's ``torch.optim.RMSprop`` with ``centered=False``; with ``v`` and ``buf``
    zero before step 1, the update for step ``t``::

        g = g + lambda * p                 if lambda != 0
        v = alpha * v + (1 - alpha) * g * g
        avg = sqrt(v) + eps
        if mu > 0:
            buf = mu * buf + g / avg
            p -= lr * buf
        else:
            p -= lr * g / avg

    There is no bias correction: the first steps are large (``v`` starts at zero, so
    step 1 moves each coordinate by about ``lr / sqrt(1 - alpha)``, 10 ``lr`` for
    ``alpha = 0.99``).

    References
    ----------
    T. Tieleman, G. Hinton. Lecture 6.5 - rmsprop: Divide the gradient by a running
    average of its recent magnitude. COURSERA: Neural Networks for Machine Learning, 2012.
    """

    _hyper = ("lr", "alpha", "eps", "momentum", "weight_decay")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        self.alpha = _check_float("alpha", alpha, low=0.0, high=1.0)
        self.eps = _check_float("eps", eps, low=0.0)
        self.momentum = _check_float("momentum", momentum, low=0.0)
        self.weight_decay = _check_float("weight_decay", weight_decay, low=0.0)
        super().__init__(params, lr)

    def _buffer_names(self):
        return ("v", "buf") if self.momentum > 0.0 else ("v",)

    def update(self, p, g, state, t):
        xp = B.namespace(p)
        if self.weight_decay != 0.0:
            g = g + self.weight_decay * p
        state["v"] = self.alpha * state["v"] + (1 - self.alpha) * g * g
        avg = xp.sqrt(state["v"]) + self.eps
        if self.momentum > 0.0:
            state["buf"] = self.momentum * state["buf"] + g / avg
            p -= self.lr * state["buf"]
        else:
            p -= self.lr * g / avg


def clip_grad_norm(params, max_norm: float):
    r"""Rescale all gradients together so that their global L2 norm is at most ``max_norm``.

    Notes
    -----
    PyTorch's ``torch.nn.utils.clip_grad_norm_`` (``norm_type=2``)::

        total = sqrt(sum over parameters of |g|^2)        the norm of all gradients as one vector
        scale = min(1, max_norm / (total + 1e-6))
        g = g * scale                                     for every gradient, in place

    ``scale`` stays an array, so nothing is read back to the host (no GPU sync); when
    ``total <= max_norm`` (up to the 1e-6) the gradients are multiplied by exactly 1.
    A non-finite ``total`` makes every gradient NaN, as in PyTorch.

    Returns
    -------
    total : 0-d array
        The norm *before* clipping, on the gradients' device (log it with
        ``backend.to_scalar`` outside the hot loop).
    """
    max_norm = _check_float("max_norm", max_norm, low=0.0)
    if max_norm == 0.0:
        raise ValueError("clip_grad_norm: max_norm must be > 0")
    grads = [slot.grad for slot in _slots(params, "clip_grad_norm")]
    if not grads:
        raise ValueError("clip_grad_norm: there are no parameters")
    xp = B.namespace(grads[0])
    total_sq = None
    for g in grads:
        n = xp.linalg.vector_norm(g)
        total_sq = n * n if total_sq is None else total_sq + n * n
    total = xp.asarray(xp.sqrt(total_sq))    # asarray: NumPy reductions give scalars, not 0-d arrays
    scale = xp.minimum(1.0, max_norm / (total + 1e-6))
    for g in grads:
        g *= scale if scale.dtype == g.dtype else xp.astype(scale, g.dtype)
    return total


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp}


def make_optimizer(name: str, params, **kw) -> Optimizer:
    """Build an optimizer by name: ``'sgd'``, ``'adam'``, ``'adamw'`` or ``'rmsprop'``.

    ``kw`` go to the class (``lr`` is required for ``'sgd'``). Case-insensitive.
    """
    key = str(name).strip().lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    try:
        return OPTIMIZERS[key](params, **kw)
    except TypeError as err:
        raise TypeError(f"make_optimizer({name!r}): {err}") from err


# --- helpers ----------------------------------------------------------------------
def _check_float(name, value, low=None, high=None) -> float:
    """A finite float with ``low <= value`` (and ``value < high``), else ValueError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or (low is not None and v < low) or (high is not None and v >= high):
        rng = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a finite number {rng}, got {value!r}")
    return v


def _copy(a):
    """A copy of ``a`` on its own device (``cuda:N``: made with GPU N current)."""
    with B.resolve(a).context():
        return B.namespace(a).asarray(a, copy=True)


def _like(a, p):
    """A fresh copy of ``a`` (any backend) on ``p``'s device, in ``p``'s dtype.

    Always a copy: ``asarray`` may return (a view of) its input, and a buffer that
    aliased a checkpoint's array would change the checkpoint at every step.
    """
    return _copy(B.resolve(p).asarray(B.to_numpy(a), B.dtype_name(p.dtype)))


def _describe(x) -> str:
    return f"{type(x).__name__}" + (f" with keys {sorted(x)}" if isinstance(x, dict) else "")

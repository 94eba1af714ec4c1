r"""Optimizers: SGD (with momentum / Nesterov), Adam, AdamW, RMSProp; gradient clipping.

Every optimizer transcribes PyTorch's update (``torch.optim``, default settings,
``foreach=False``) line for line; each class's *Notes* block is the body of its
``_update``. One addition: every ``FLUSH_EVERY`` steps, buffer entries below ~1e-30 are
set to zero (:func:`flush_tiny`), because decaying buffers otherwise end up as subnormal
floats that make the step three times slower. The notation throughout:

``p``   a parameter (``module.params[key]``), updated **in place**
``g``   its gradient (``module.grads[key]``), read only
``t``   the step number, 1 on the first ``step()``
``lr``  the learning rate, an attribute you may change between steps (schedules)

Parameters are looked up by qualified name on every ``step()`` through
``model.parameter_slots()``; no optimizer keeps a reference to a parameter array,
so ``model.to(...)`` between steps is safe (the optimizer's buffers follow the
parameters to their new device and dtype on the next step). Per-parameter buffers
(``"m"``, ``"v"``, ``"buf"``) are keyed by that qualified name too, which is what
lets :meth:`Optimizer.state_dict` / :meth:`Optimizer.load_state_dict` resume a run
exactly (bitwise on NumPy).

A step never reads a value back to the host: the only Python numbers in the
arithmetic are hyperparameters and the step count, so on CUDA it just queues kernels.

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

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "RMSProp", "clip_grad_norm", "make_optimizer",
    "OPTIMIZERS", "flush_tiny", "FLUSH_EVERY",
]


#: every this many steps, ``step()`` sets the buffer entries that are about to become
#: subnormal to zero (:func:`flush_tiny`)
FLUSH_EVERY = 32


def flush_tiny(a) -> None:
    """Set the entries of ``a`` with ``|a| < 1e8 * tiny`` to zero, in place (tiny: the
    smallest normal number of a's dtype, 1.2e-38 for float32; so below ~1e-30).

    Why an optimizer needs it: a coordinate whose gradient has stopped (a dead ReLU, a
    pixel that is always black) keeps being multiplied by ``beta1 = 0.9`` in Adam's ``m``
    (by ``momentum`` in SGD's buffer, by ``beta2`` or ``alpha`` in ``v``), and after ~800
    steps it is a *subnormal* float, and stays one: ``k * 2**-149`` times 0.9 rounds back
    to itself for ``k < 5``, so the decay stalls above zero. x86 CPUs multiply and divide
    subnormals through microcode, 17-28x slower than normal numbers: two epochs into the
    MNIST VAE, 11% of ``m`` was subnormal and the Adam step took 6.0 ms, not 2.0 ms. Hardware
    flush-to-zero would fix it, but NumPy cannot switch it on. A value decaying by 0.9 a
    step needs 175 steps to cross the 8 decades above ``tiny``, so zeroing them every
    ``FLUSH_EVERY = 32`` steps keeps a buffer free of subnormals for any decay rate above
    0.56 (all the defaults; a flush costs about 1.5 ms for the VAE's 1.3M entries).
    What is dropped is below 1e-30: its share of any update (``m / sqrt(v)`` times
    ``lr``) is far below float32's resolution of the parameter. PyTorch's optimizers keep
    the subnormals.
    """
    xp = B.namespace(a)
    threshold = float(xp.finfo(a.dtype).smallest_normal) * 1e8
    a *= xp.astype(xp.abs(a) >= threshold, a.dtype)


class Optimizer:
    """Base class: owns per-parameter buffers, the step count and the hyperparameters.

    Subclasses set ``_hyper`` (names of float/bool attributes that make up
    ``state_dict()["hyper"]``), return the names of their per-parameter buffers from
    ``_buffer_names()`` and write ``_update(params, key, g, state, t)``.

    Parameters
    ----------
    model : scratchae.module.Module
        The model whose parameters to train. Buffers are created (zeros, on each
        parameter's device and dtype) for every parameter the model has now; a
        parameter added to the model later is refused by ``step()``.
    lr : float
        Learning rate, ``>= 0``. Stored as the attribute ``lr``; change it between
        steps to follow a schedule.

    Attributes
    ----------
    step_count : int
        Number of ``step()`` calls so far (``t`` of the last step).
    state : dict
        Qualified parameter name -> {buffer name -> array}.
    """

    _hyper: tuple = ("lr",)

    def __init__(self, model, lr):
        self.model = model
        self.lr = _check_float("lr", lr, low=0.0)
        self.step_count = 0
        self.state = {}
        names = self._buffer_names()
        for name, p in model.named_parameters():
            xp = B.namespace(p)
            self.state[name] = {b: xp.zeros_like(p) for b in names}
        if not self.state:
            raise ValueError(f"{type(self).__name__}: the model has no parameters to optimize")

    # --- what subclasses provide ------------------------------------------------
    def _buffer_names(self) -> tuple:
        return ()

    def _update(self, params, key, g, state, t):  # pragma: no cover - abstract
        raise NotImplementedError

    # --- the public loop ----------------------------------------------------------
    def zero_grad(self) -> None:
        """Set every gradient of the model to zero (``model.zero_grad()``)."""
        self.model.zero_grad()

    def step(self) -> None:
        """Apply one update to every parameter, in place, from the gradients now in ``grads``."""
        self.step_count += 1
        t = self.step_count
        slots = [(m.params, k, m.grads[k], self._state_for(name, m.params[k]))
                 for name, m, k in self.model.parameter_slots()]
        if not self._fast_step(slots, t):
            for params, key, g, state in slots:
                self._update(params, key, g, state, t)
        if t % FLUSH_EVERY == 0:
            for *_, state in slots:
                for buf in state.values():
                    flush_tiny(buf)

    def _fast_step(self, slots, t) -> bool:
        """Update every parameter at once with a backend fast step; False if there is none
        (then ``step`` runs ``_update`` per parameter, the reference)."""
        return False

    def _state_for(self, name, p) -> dict:
        try:
            state = self.state[name]
        except KeyError:
            raise ValueError(
                f"{type(self).__name__}: parameter '{name}' was not in the model when the "
                "optimizer was built; build a new optimizer after changing the model"
            ) from None
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
        params = dict(self.model.named_parameters())
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
    model : Module
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

        d = g + lambda * p                 if lambda != 0 else g
        if mu != 0:
            buf = d                        if t == 1
            buf = mu * buf + d             otherwise
            d = d + mu * buf               if nesterov else buf
        p = p - lr * d

    With momentum this is the "velocity" form: ``lr`` multiplies the whole buffer,
    so changing ``lr`` mid-run rescales past gradients too (unlike Sutskever et
    al.'s ``v = mu v - lr g``, which is the same method at constant ``lr``).

    References
    ----------
    I. Sutskever, J. Martens, G. Dahl, G. Hinton. On the importance of initialization
    and momentum in deep learning. ICML 2013.
    """

    _hyper = ("lr", "momentum", "nesterov", "weight_decay")

    def __init__(self, model, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.momentum = _check_float("momentum", momentum, low=0.0)
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_float("weight_decay", weight_decay, low=0.0)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        super().__init__(model, lr)

    def _buffer_names(self):
        return ("buf",) if self.momentum != 0.0 else ()

    def _update(self, params, key, g, state, t):
        p = params[key]
        d = g if self.weight_decay == 0.0 else g + self.weight_decay * p
        if self.momentum != 0.0:
            buf = state["buf"]
            if t == 1:
                buf[...] = d
            else:
                buf *= self.momentum
                buf += d
            d = d + self.momentum * buf if self.nesterov else buf
        p -= self.lr * d


class Adam(Optimizer):
    r"""Adam: per-coordinate steps from bias-corrected moment estimates (Kingma & Ba 2015).

    Parameters
    ----------
    model : Module
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

        g = g + lambda * p                           if lambda != 0 (AdamW: see there)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        step_size = lr * sqrt(1 - beta2**t) / (1 - beta1**t)      (backend.adam_scalars)
        eps_hat = eps * sqrt(1 - beta2**t)
        p = p - step_size * (m / (sqrt(v) + eps_hat))

    The last three lines are PyTorch's ``p = p - lr / (1 - beta1**t) * m / (sqrt(v) /
    sqrt(1 - beta2**t) + eps)`` with numerator and denominator multiplied by
    ``sqrt(1 - beta2**t)``: the same number up to rounding, one pass over p fewer.
    Dividing by ``1 - beta**t`` removes the bias towards zero of moments that
    started at zero: with a constant gradient and the default betas, an uncorrected
    step would be ``(1 - beta1**t) / sqrt(1 - beta2**t)`` times its intended size,
    0.32 at ``t = 1`` and then, as the slower ``v`` lags ``m``, up to 6.5 near ``t = 12``.

    References
    ----------
    D. P. Kingma, J. Ba. Adam: A Method for Stochastic Optimization. ICLR 2015.
    """

    _hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")
    _decoupled = False

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"{type(self).__name__}: betas must be a pair (beta1, beta2), "
                             f"got {betas!r}") from None
        self.beta1 = _check_float("beta1", beta1, low=0.0, high=1.0)
        self.beta2 = _check_float("beta2", beta2, low=0.0, high=1.0)
        self.eps = _check_float("eps", eps, low=0.0)
        self.weight_decay = _check_float("weight_decay", weight_decay, low=0.0)
        super().__init__(model, lr)

    def _buffer_names(self):
        return ("m", "v")

    def _fast_step(self, slots, t):
        # NumPy: backend.FAST_STEPS["adam_step"], the body of _update below, op for op (so
        # bit for bit), without temporaries and spread over a few threads
        kernel = B.fast_path("adam_step", slots[0][0][slots[0][1]])
        if kernel is None:
            return False
        return kernel([params[key] for params, key, _, _ in slots], [g for _, _, g, _ in slots],
                      [state["m"] for *_, state in slots], [state["v"] for *_, state in slots],
                      lr=self.lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                      weight_decay=self.weight_decay, decoupled=self._decoupled, t=t,
                      plan=self.__dict__.setdefault("_fast_plan", {}))

    def _update(self, params, key, g, state, t):
        p = params[key]
        xp = B.namespace(p)
        b1, b2 = self.beta1, self.beta2
        if self.weight_decay != 0.0:
            if self._decoupled:                       # AdamW
                p *= 1.0 - self.lr * self.weight_decay
            else:                                     # Adam: L2 through the gradient
                g = g + self.weight_decay * p
        m, v = state["m"], state["v"]
        m *= b1
        m += (1.0 - b1) * g
        g2 = g * g
        g2 *= 1.0 - b2
        v *= b2
        v += g2
        step_size, eps_hat = B.adam_scalars(self.lr, b1, b2, self.eps, t)
        denom = xp.sqrt(v)
        denom += eps_hat
        upd = m / denom
        upd *= step_size
        p -= upd


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter 2019).

    Same parameters as :class:`Adam`, but ``weight_decay`` (default 0.01) shrinks the
    parameters directly, by ``lr * lambda`` per step, instead of entering the gradient:
    the decay is then not divided by the adaptive ``sqrt(v)``, so every weight decays
    at the same rate, which is what L2 regularisation does for plain SGD.

    Notes
    -----
    PyTorch's ``torch.optim.AdamW``; the update for step ``t``::

        p = p * (1 - lr * lambda)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        step_size = lr * sqrt(1 - beta2**t) / (1 - beta1**t)      (as in Adam)
        eps_hat = eps * sqrt(1 - beta2**t)
        p = p - step_size * (m / (sqrt(v) + eps_hat))

    The body is :class:`Adam`'s ``_update``, taking its ``_decoupled`` branch. The
    decay multiplies by ``lr`` (PyTorch's convention) where the paper uses a
    schedule multiplier ``eta_t``: with ``eta_t = 1``, ``alpha = lr`` and
    ``lambda_paper = lr * lambda`` they agree.

    References
    ----------
    I. Loshchilov, F. Hutter. Decoupled Weight Decay Regularization. ICLR 2019.
    D. P. Kingma, J. Ba. Adam: A Method for Stochastic Optimization. ICLR 2015.
    """

    _decoupled = True

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class RMSProp(Optimizer):
    r"""RMSProp: divide the gradient by a running RMS of its recent values (Tieleman & Hinton 2012).

    Parameters
    ----------
    model : Module
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
            p = p - lr * buf
        else:
            p = p - lr * (g / avg)

    There is no bias correction: the first steps are large (``v`` starts at zero, so
    step 1 moves each coordinate by about ``lr / sqrt(1 - alpha)``, 10 ``lr`` for
    ``alpha = 0.99``).

    References
    ----------
    T. Tieleman, G. Hinton. Lecture 6.5 - rmsprop: Divide the gradient by a running
    average of its recent magnitude. COURSERA: Neural Networks for Machine Learning, 2012.
    """

    _hyper = ("lr", "alpha", "eps", "momentum", "weight_decay")

    def __init__(self, model, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        self.alpha = _check_float("alpha", alpha, low=0.0, high=1.0)
        self.eps = _check_float("eps", eps, low=0.0)
        self.momentum = _check_float("momentum", momentum, low=0.0)
        self.weight_decay = _check_float("weight_decay", weight_decay, low=0.0)
        super().__init__(model, lr)

    def _buffer_names(self):
        return ("v", "buf") if self.momentum > 0.0 else ("v",)

    def _update(self, params, key, g, state, t):
        p = params[key]
        xp = B.namespace(p)
        if self.weight_decay != 0.0:
            g = g + self.weight_decay * p
        v = state["v"]
        g2 = g * g
        g2 *= 1.0 - self.alpha
        v *= self.alpha
        v += g2
        avg = xp.sqrt(v)
        avg += self.eps
        if self.momentum > 0.0:
            buf = state["buf"]
            buf *= self.momentum
            buf += g / avg
            p -= self.lr * buf
        else:
            upd = g / avg
            upd *= self.lr
            p -= upd


def clip_grad_norm(model, max_norm: float):
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
    grads = [g for _, g in model.named_grads()]
    if not grads:
        raise ValueError("clip_grad_norm: the model has no parameters")
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


def make_optimizer(name: str, model, **kw) -> Optimizer:
    """Build an optimizer by name: ``'sgd'``, ``'adam'``, ``'adamw'`` or ``'rmsprop'``.

    ``kw`` go to the class (``lr`` is required for ``'sgd'``). Case-insensitive.
    """
    key = str(name).strip().lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    try:
        return OPTIMIZERS[key](model, **kw)
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
    """A copy of ``a`` on its own device."""
    return B.namespace(a).asarray(a, copy=True)


def _like(a, p):
    """A fresh copy of ``a`` (any backend) on ``p``'s device, in ``p``'s dtype.

    Always a copy: ``asarray`` may return (a view of) its input, and a buffer that
    aliased a checkpoint's array would change the checkpoint at every step.
    """
    return _copy(B.resolve(p).asarray(B.to_numpy(a), B.dtype_name(p.dtype)))


def _describe(x) -> str:
    return f"{type(x).__name__}" + (f" with keys {sorted(x)}" if isinstance(x, dict) else "")

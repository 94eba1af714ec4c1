"""The training loop: seeded shuffling, running metrics, progress bar, NaN guard, history."""
from __future__ import annotations

import math
import sys
import time

from . import backend as B
from .evaluation import evaluate

__all__ = ["fit", "evaluate", "TrainingDiverged"]


class TrainingDiverged(FloatingPointError):
    """A loss term became NaN or Inf; the message names it."""


def fit(model, x_train, y_train=None, *, epochs=10, batch_size=128, seed=0, x_test=None,
        y_test=None, dynamic_binarize=False, progress=None, check_every=None, history=None,
        on_epoch_end=None, start_epoch=0, shuffle_rng=None):
    """Train ``model`` (optimizers configured) on host arrays; returns the history.

    Parameters
    ----------
    x_train : host float array (N, D), values in [0, 1] for Bernoulli likelihoods.
    seed : seeds the shuffling (and dynamic binarisation) generator when ``shuffle_rng``
        is not given. Same seed, same data, same model: a bitwise-identical history on
        NumPy (the ``seconds`` entries aside).
    progress : one tqdm bar over the whole run (every step of every epoch, with the ETA);
        default on only when stderr is a terminal.
    check_every : steps between NaN/Inf checks of the running loss terms (each check
        reads the device; default 1 on NumPy, 50 elsewhere). A non-finite term raises
        :class:`TrainingDiverged` naming it.
    history : a list to append to (for resuming); ``start_epoch``: first epoch number.
    on_epoch_end : ``callback(epoch, record)``, e.g. to write a checkpoint.

    Returns
    -------
    list of dict: per epoch ``epoch``, ``train_<term>`` (mean over the epoch's batches,
    nats per example), ``test_<term>`` (if x_test), ``seconds``.
    """
    p0 = next(iter(model.named_parameters()))[1]
    backend = B.resolve(p0)
    dt = B.dtype_name(p0.dtype)
    rng = shuffle_rng or B.Generator(seed, device=backend)
    history = [] if history is None else history
    if check_every is None:
        check_every = 1 if B.is_numpy(p0) else 50
    if progress is None:
        progress = sys.stderr.isatty()
    # the whole training set goes to the device once; its values are checked once
    host = B.host
    for name, data in (("x_train", x_train), ("x_test", x_test)):
        if data is not None and not host.all(host.isfinite(data)):
            raise ValueError(f"fit: {name} of shape {data.shape} contains NaN or Inf")
    with backend.context():   # cuda:N: every array and kernel on GPU N
        X = backend.asarray(x_train, dt)
        Y = None if y_train is None else backend.asarray(y_train, "int64")
        xp = backend.xp
        checked_before, model.check_values = model.check_values, False
        n = X.shape[0]
        steps = n // batch_size + (1 if n % batch_size else 0)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps * epochs, desc="training", unit="step", leave=False,
                       file=sys.stderr, dynamic_ncols=True)
        last = start_epoch + epochs
        try:
            for epoch in range(start_epoch, last):
                model.train()
                t0 = time.perf_counter()
                order = rng.permutation(n)
                sums, seen = {}, 0
                if bar is not None:
                    bar.set_description(f"epoch {epoch + 1}/{last}")
                for step in range(steps):
                    idx_host = order[step * batch_size:(step + 1) * batch_size]
                    idx = backend.asarray(idx_host, "int64")
                    xb = xp.take(X, idx, axis=0)
                    yb = None if Y is None else xp.take(Y, idx, axis=0)
                    if dynamic_binarize:
                        xb = xp.astype(rng.uniform(tuple(xb.shape), dtype=dt) < xb, xb.dtype)
                    terms = model.train_step(xb, yb)
                    m = xb.shape[0]
                    for k, v in terms.items():
                        sums[k] = sums[k] + v * m if k in sums else v * m
                    seen += m
                    if (step + 1) % check_every == 0 or step == steps - 1:
                        _guard(sums, epoch, step)
                        if bar is not None:
                            bar.set_postfix(loss=f"{B.to_scalar(sums['loss']) / seen:.3f}")
                    if bar is not None:
                        bar.update(1)
                B.synchronize(backend)
                record = {"epoch": epoch + 1}
                record.update({f"train_{k}": B.to_scalar(v) / seen for k, v in sums.items()})
                if x_test is not None:
                    test = evaluate(model, x_test, y_test)
                    record.update({f"test_{k}": v for k, v in test.items()})
                _guard({k: v for k, v in record.items() if k != "epoch"}, epoch, steps - 1,
                       "at the end of")
                record["seconds"] = time.perf_counter() - t0
                history.append(record)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
        finally:
            model.check_values = checked_before
            if bar is not None:
                bar.close()
        return history


def _guard(sums, epoch, step, where=None):
    for k, v in sums.items():
        value = B.to_scalar(v)
        if not math.isfinite(value):
            when = (f"{where} epoch {epoch + 1}" if where else
                    f"at epoch {epoch + 1}, step {step + 1}")
            raise TrainingDiverged(
                f"training diverged {when}: loss term '{k}' is {value}. Lower the learning "
                "rate, or check the data (pixels scaled to [0, 1]?)")

"""A training run as one checkpoint: model arrays, optimizer states, generator states,
config and history. Built on :mod:`scratchae.checkpoint` (plain arrays + JSON, no pickle,
written atomically)."""
from __future__ import annotations

import os
import time

from . import backend as B
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .models import build_model

__all__ = ["save_run", "load_run", "CHECKPOINT", "METRICS", "holds_run", "new_run_folder",
           "checkpoint_path"]

#: the file names of a run folder: the checkpoint and the per-epoch metrics
CHECKPOINT, METRICS = "checkpoint.npz", "metrics.json"


def holds_run(folder) -> bool:
    """True when ``folder`` already holds a run (its checkpoint or its metrics)."""
    return any(os.path.exists(os.path.join(folder, name)) for name in (CHECKPOINT, METRICS))


def new_run_folder(model: str, root="runs", now=None) -> str:
    """A folder name no run uses yet: ``runs/<model>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ...
    appended when that name is taken). Nothing is created."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = os.path.join(root, f"{model}-{stamp}")
    path, k = base, 1
    while os.path.exists(path):
        k += 1
        path = f"{base}-{k}"
    return path


def checkpoint_path(path) -> str:
    """A run's checkpoint from a path to it or to its folder; CheckpointError when neither."""
    path = os.fspath(path)
    if os.path.isdir(path):
        inside = os.path.join(path, CHECKPOINT)
        if os.path.isfile(inside):
            return inside
        raise CheckpointError(f"{path} is a folder with no {CHECKPOINT}: give a run's checkpoint "
                              f"(e.g. runs/vae-.../{CHECKPOINT}) or its folder")
    if not os.path.exists(path):
        raise CheckpointError(f"no such checkpoint: {path}")
    return path


def save_run(path, model, *, rngs: dict, history: list, settings: dict) -> str:
    """Write model + optimizers + rng states + history + settings to ``path`` (atomic)."""
    arrays = {f"model/{k}": B.to_numpy(v) for k, v in model.state_dict().items()}
    optim_meta = {}
    for name, opt in model.optimizers.items():
        sd = opt.state_dict()
        optim_meta[name] = {"type": sd["type"], "hyper": sd["hyper"], "step": sd["step"],
                            "params": {}}
        for pname, bufs in sd["state"].items():
            optim_meta[name]["params"][pname] = sorted(bufs)
            for b, a in bufs.items():
                arrays[f"optim/{name}/{pname}/{b}"] = B.to_numpy(a)
    meta = {"model": model.config, "optimizers": optim_meta,
            "rngs": {k: r.state() for k, r in rngs.items()}, "history": history,
            "settings": settings}
    save_checkpoint(path, arrays, meta)
    return str(path)


def load_run(path, device="cpu", dtype=None):
    """Rebuild ``(model, rngs, history, settings)`` from a run checkpoint.

    The optimizers are re-created with their saved type and hyperparameters and their
    state restored, so training resumes exactly where it stopped. Any checkpoint loads on
    any device (arrays are stored on the host, generator states as JSON).
    """
    path = checkpoint_path(path)
    with B.resolve(device).context():      # cuda:N: every array made on GPU N
        return _load_run(path, device, dtype)


def _load_run(path, device, dtype):
    arrays, meta = load_checkpoint(path)
    try:
        cfg = dict(meta["model"])
        settings = meta.get("settings", {})
        seed = int(settings.get("seed", 0))
        rngs = {name: B.Generator(seed, device=device) for name in meta["rngs"]}
        if dtype is not None:
            cfg["dtype"] = dtype
        model = build_model(cfg, rngs.get("model", B.Generator(seed, device=device)))
        # restore the streams only now: building the model drew its initial weights
        for name, state in meta["rngs"].items():
            rngs[name].set_state(state)
        model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        optim = meta.get("optimizers", {})
        if optim:
            first = next(iter(optim.values()))
            model.configure_optimizers(_opt_name(first["type"]), **_hyper_kwargs(first["hyper"]))
            for name, om in optim.items():
                state = {p: {b: arrays[f"optim/{name}/{p}/{b}"] for b in bufs}
                         for p, bufs in om["params"].items()}
                model.optimizers[name].load_state_dict(
                    {"type": om["type"], "hyper": om["hyper"], "step": om["step"], "state": state})
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: not a scratchae run checkpoint ({type(err).__name__}: {err})") from None
    return model, rngs, list(meta.get("history", [])), settings


def _opt_name(type_name: str) -> str:
    return {"SGD": "sgd", "Adam": "adam", "AdamW": "adamw", "RMSProp": "rmsprop"}[type_name]


def _hyper_kwargs(hyper: dict) -> dict:
    kw = dict(hyper)
    if "beta1" in kw and "beta2" in kw:
        kw["betas"] = (kw.pop("beta1"), kw.pop("beta2"))
    return kw

"""The ``scratchae`` command: train, evaluate, sample, gradcheck, doctor.

    scratchae train vae                      # bundled MNIST subset, CPU, into runs/vae-<time>/
    scratchae train aae --data mnist.npz --device cuda --out runs/aae
    scratchae train vae --resume runs/aae/checkpoint.npz --epochs 20   # on to 20 epochs in all
    scratchae evaluate runs/vae-20261202-101500
    scratchae sample runs/vae-20261202-101500 --n 100
    scratchae gradcheck                      # every built-in layer
    scratchae gradcheck mylayers.py:Swish    # your own layer (or module:Class, Class(args))
    scratchae doctor                         # Python, NumPy/BLAS, CuPy, CUDA, the GPU

Every mistake is one line on stderr and a non-zero exit status (:data:`EXIT_CODES`); no
Python traceback and no Python warning reaches the user.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import signal
import sys
import time
import warnings

from . import __version__
from . import backend as B
from .cli_args import Parser, count_or_all, integer, number, plural, widths

#: The classic recipe of each model (sizes are encoder widths, input first, code last).
RECIPES = {
    "ae": {"sizes": [784, 400, 32], "lr": 1e-3, "batch_size": 128},
    "dae": {"sizes": [784, 400, 32], "lr": 1e-3, "batch_size": 128, "corruption": "masking", "level": 0.5},
    "vae": {"sizes": [784, 400, 20], "lr": 1e-3, "batch_size": 128},
    "aae": {"sizes": [784, 1000, 1000, 2], "lr": 2e-4, "batch_size": 100, "prior": "mixture",
            "disc_sizes": [1000, 1000]},
}
DEFAULT_EPOCHS = 10
#: the conv recipe's code size (the AAE keeps its 2-D code, which the mixture prior needs)
CONV_CODE = 20

#: What each exit status means.
EXIT_CODES = {
    0: "done",
    1: "gradcheck: some layer failed its check; doctor: CuPy or the GPU needs fixing",
    2: "a usage or user error (a bad option, file, path or checkpoint), one line on stderr",
    3: "training diverged (a loss became NaN or Inf); the last finite epoch is kept",
    70: "an internal error: a bug in scratchae (SCRATCHAE_DEBUG=1 shows the traceback)",
    130: "interrupted (Ctrl-C); the last completed epoch is kept",
}

#: Options that define a run: fixed by its checkpoint, so --resume refuses a different value.
RUN_DEFINING = ("latent_dim", "hidden", "arch", "channels", "lr", "optimizer", "seed", "dtype",
                "dataset", "binarize", "likelihood", "beta", "corruption", "level", "prior",
                "supervised", "tied", "sparsity", "limit")


class CLIError(Exception):
    """Reported as one line on stderr, exit status 2."""


class Diverged(Exception):
    """Training diverged; exit status 3."""


def _epilog():
    return "exit status:\n" + "\n".join(f"  {code:>3}  {what}" for code, what in EXIT_CODES.items())


def build_parser():
    p = Parser(prog="scratchae", description="Autoencoders (AE, DAE, VAE, AAE) with hand-written "
               "backprop, on NumPy or CuPy.", epilog=_epilog())
    p.add_argument("--version", action="version",
                   version=f"scratchae {__version__} (Python {sys.version.split()[0]})")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands (scratchae COMMAND --help for each)")

    t = sub.add_parser("train", help="train a model; writes checkpoint.npz, metrics.json and figures",
                       description="Train a model. A new run goes into a fresh folder "
                       "(default runs/<model>-<YYYYmmdd-HHMMSS>); a folder that holds another "
                       "run is refused unless --resume or --force.", epilog=_epilog())
    t.add_argument("model", choices=sorted(RECIPES), help="ae, dae, vae or aae")
    t.add_argument("--epochs", type=integer(1, 100_000), default=None,
                   help=f"the total number of epochs to reach (default {DEFAULT_EPOCHS}; with "
                        "--resume, the run's own total): --resume --epochs 20 trains the epochs "
                        "from the last saved one up to 20")
    t.add_argument("--batch-size", type=integer(1, 100_000), default=None,
                   help="examples per step (default: the recipe's, 128; 100 for the aae)")
    t.add_argument("--latent-dim", type=integer(1, 4096), default=None,
                   help="code size (default: 32 ae/dae, 20 vae, 2 aae)")
    t.add_argument("--hidden", type=widths(65_536), default=None,
                   help="--arch mlp: hidden widths, e.g. 400 or 1000,1000 (default: 400; 1000,1000 "
                        "for the aae)")
    t.add_argument("--arch", default=None, choices=["mlp", "conv"],
                   help="mlp (default): Linear layers; conv: two k4 s2 p1 convolutions down and "
                        "two transposed convolutions up (docs/conv.md)")
    t.add_argument("--channels", type=widths(1024), default=None,
                   help="--arch conv: the convolutions' channels (default 32,64)")
    t.add_argument("--lr", type=number(0.0, low_open=True), default=None,
                   help="learning rate (default: 1e-3; 2e-4 for the aae)")
    t.add_argument("--optimizer", default=None, choices=["adam", "adamw", "sgd", "rmsprop"],
                   help="default adam")
    t.add_argument("--seed", type=integer(0, 2**32 - 1), default=None,
                   help="seeds the weights, the shuffling and the noise (default 0)")
    t.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default cpu; with --resume, the run's)")
    t.add_argument("--dtype", default=None, choices=["float32", "float64"], help="default float32")
    t.add_argument("--data", default=None,
                   help="an .npz (x_train, y_train, x_test, y_test), a folder with the four IDX "
                        ".gz files, or 'bundled' (default: $SCRATCHAE_DATA, the download cache, a "
                        "download, then the bundled 5000-image subset; with --resume, the run's)")
    t.add_argument("--dataset", default=None, choices=["mnist", "fashion_mnist"],
                   help="default mnist")
    t.add_argument("--binarize", default=None, choices=["none", "fixed", "dynamic"],
                   help="none (default): pixels/255 as Bernoulli means; fixed: one 0/1 draw; "
                        "dynamic: a fresh draw every step")
    t.add_argument("--likelihood", default=None, choices=["bernoulli", "gaussian", "mse"],
                   help="the decoder's p(x|z) (default bernoulli); a Gaussian density's loss can "
                        "be negative")
    t.add_argument("--beta", type=number(0.0), default=None,
                   help="vae: weight of the KL term, >= 0 (default 1: the ELBO)")
    t.add_argument("--corruption", default=None, choices=["masking", "gaussian", "salt_pepper"],
                   help="dae: the noise (default masking)")
    t.add_argument("--level", type=number(0.0), default=None,
                   help="dae: masking/salt_pepper: the fraction of pixels hit, 0 to 1 (default "
                        "0.5); gaussian: the noise's standard deviation")
    t.add_argument("--prior", default=None, choices=["mixture", "gaussian", "swiss_roll", "uniform"],
                   help="aae: p(z) (default mixture, 2-D codes only; gaussian otherwise)")
    t.add_argument("--supervised", action="store_true", default=None,
                   help="aae: label-conditioned prior")
    t.add_argument("--tied", action="store_true", default=None, help="ae/dae: tied weights")
    t.add_argument("--sparsity", type=number(0.0), default=None,
                   help="ae/dae: L1 weight on the code, >= 0 (default 0)")
    t.add_argument("--limit", type=integer(1), default=None,
                   help="train on the first N training images only (default: all)")
    t.add_argument("--out", default=None,
                   help="the run's folder (default: runs/<model>-<YYYYmmdd-HHMMSS>; with --resume, "
                        "the checkpoint's folder)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue the run of this checkpoint (or run folder) in its folder, with "
                        "its data, settings and seed (default: a new run)")
    t.add_argument("--force", action="store_true",
                   help="replace the run in --out, or resume on data whose checksum differs from "
                        "the run's")
    t.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    t.add_argument("--quiet", action="store_true", help="print only the checkpoint's path")

    e = sub.add_parser("evaluate", help="test loss terms, the IWAE bound (vae), the linear probe, "
                       "the aae's discriminator accuracy and MMD to the prior",
                       description="Evaluate a run on its test set. Losses are in nats per "
                       "example (lower is better), accuracies are fractions.")
    e.add_argument("checkpoint", help="a run's checkpoint.npz, or its folder")
    e.add_argument("--data", default=None, help="default: the run's data")
    e.add_argument("--device", default="cpu", help="default cpu")
    e.add_argument("--iwae-k", type=integer(0, 100_000), default=5000,
                   help="vae: importance samples of the IWAE bound (default 5000; 0 skips it)")
    e.add_argument("--iwae-examples", type=count_or_all(1), default=500,
                   help="vae: test images the IWAE bound is computed on, N or all (default 500: "
                        "IWAE_5000 costs 5000 decoder passes per image)")
    e.add_argument("--probe-epochs", type=integer(0, 10_000), default=20,
                   help="epochs of the linear probe on the codes (default 20; 0 skips it)")
    e.add_argument("--seed", type=integer(0, 2**32 - 1), default=0, help="default 0")
    e.add_argument("--json", default=None, metavar="FILE.json", help="also write the results here (default: stdout only)")
    e.add_argument("--quiet", action="store_true", help="no progress on stderr")

    s = sub.add_parser("sample", help="decode prior samples (vae, aae) to a PNG grid")
    s.add_argument("checkpoint", help="a run's checkpoint.npz, or its folder")
    s.add_argument("--n", type=integer(1, 10_000), default=100, help="images, 1 to 10000 (default 100)")
    s.add_argument("--out", default=None, metavar="FILE.png",
                   help="default: prior_samples_seed<SEED>.png in the run's folder")
    s.add_argument("--device", default="cpu", help="default cpu")
    s.add_argument("--seed", type=integer(0, 2**32 - 1), default=0, help="default 0")

    sub.add_parser("doctor", help="what this machine has for scratchae: Python, NumPy and its BLAS, "
                   "CuPy, CUDA, the GPU (runs a small kernel), and the command that fixes CuPy")

    g = sub.add_parser("gradcheck", help="check layers' backward against finite differences")
    g.add_argument("target", nargs="?", default=None,
                   help="your layer: module:Class, path/to/file.py:Class, or with constructor "
                        "arguments 'module:Class(5, 3)' (Python literals); default: every built-in "
                        "layer")
    g.add_argument("--shape", default="4,5", help="input shape N,d (default 4,5)")
    g.add_argument("--seed", type=integer(0, 2**32 - 1), default=0, help="default 0")
    return p


# --- data ----------------------------------------------------------------------------------

def _load_data(data, dataset):
    from .data import load_dataset
    return load_dataset(dataset, data=data, quiet=True)


def _describe(ds) -> str:
    from .data import ENV_VAR
    if ds.is_subset:
        return (f"the bundled MNIST subset ({len(ds.x_train)} train / {len(ds.x_test)} test "
                f"images; for full MNIST pass --data mnist.npz or set ${ENV_VAR})")
    return f"{ds.source} ({len(ds.x_train)} train / {len(ds.x_test)} test images)"


def _prepare(ds, binarize, seed):
    from .data import preprocess
    gen = B.host.random.default_rng(seed + 7)
    fixed = "fixed" if binarize == "fixed" else "none"
    return preprocess(ds.x_train, fixed, rng=gen), preprocess(ds.x_test, fixed, rng=gen)


# --- train: what the run is ----------------------------------------------------------------

def _new_settings(args) -> dict:
    """The values a new run uses: the options given, the recipe's for the rest."""
    r = RECIPES[args.model]
    arch = args.arch or "mlp"
    if arch == "conv" and args.hidden:
        raise CLIError("--hidden sets the widths of --arch mlp; with --arch conv use --channels")
    if arch == "mlp" and args.channels:
        raise CLIError("--channels is for --arch conv; with --arch mlp use --hidden")
    given = {k: v for k, v in vars(args).items() if v is not None}
    for option, models in (("beta", "vae"), ("corruption", "dae"), ("level", "dae"),
                           ("prior", "aae"), ("supervised", "aae"), ("tied", "ae dae"),
                           ("sparsity", "ae dae")):
        if option in given and args.model not in models.split():
            raise CLIError(f"--{option} is for {' or '.join(models.split())}, not {args.model}")
    code = args.latent_dim or (CONV_CODE if arch == "conv" and args.model in ("ae", "dae")
                               else r["sizes"][-1])
    hidden = None if arch == "conv" else (args.hidden or r["sizes"][1:-1])
    s = {"model": args.model, "arch": arch, "latent_dim": code, "hidden": hidden,
         "channels": None, "lr": args.lr or r["lr"], "optimizer": args.optimizer or "adam",
         "batch_size": args.batch_size or r["batch_size"], "epochs": args.epochs or DEFAULT_EPOCHS,
         "seed": 0 if args.seed is None else args.seed, "device": args.device or "cpu",
         "dtype": args.dtype or "float32", "dataset": args.dataset or "mnist",
         "binarize": args.binarize or "none", "likelihood": args.likelihood or "bernoulli",
         "limit": args.limit}
    if arch == "conv":
        from .models.base import CONV_CHANNELS
        s["channels"] = list(args.channels or CONV_CHANNELS)
    if args.model in ("ae", "dae"):
        s.update(tied=bool(args.tied), sparsity=args.sparsity or 0.0)
        if s["tied"] and arch == "conv":
            raise CLIError("--tied needs --arch mlp (tied weights are the transposed Linear's)")
    if args.model == "dae":
        s.update(corruption=args.corruption or r["corruption"],
                 level=r["level"] if args.level is None else args.level)
        if s["corruption"] != "gaussian" and s["level"] >= 1.0:
            raise CLIError(f"--level {s['level']:g}: {s['corruption']} hits a fraction of the "
                           "pixels, from 0 to below 1")
    if args.model == "vae":
        s["beta"] = 1.0 if args.beta is None else args.beta
    if args.model == "aae":
        prior = args.prior or r["prior"]
        if code != 2 and prior in ("mixture", "swiss_roll"):
            if args.prior:
                raise CLIError(f"--prior {prior} is 2-D; with --latent-dim {code} use gaussian or "
                               "uniform")
            prior = "gaussian"
        s.update(prior=prior, supervised=bool(args.supervised), disc_sizes=r["disc_sizes"])
    return s


def _build(s: dict):
    """The model and its generator for the settings ``s``."""
    from .models import MODELS
    sizes = [784, *(s["hidden"] or []), s["latent_dim"]]
    rng = B.Generator(s["seed"], device=s["device"])
    common = dict(sizes=sizes, likelihood=s["likelihood"], rng=rng, dtype=s["dtype"])
    if s["arch"] == "conv":
        common.update(arch="conv", channels=tuple(s["channels"]))
    kind = s["model"]
    if kind in ("ae", "dae"):
        common.update(tied=s["tied"], sparsity=s["sparsity"])
    if kind == "dae":
        common.update(corruption=s["corruption"], level=s["level"])
    if kind == "vae":
        common.update(beta=s["beta"])
    if kind == "aae":
        common.update(prior=s["prior"], supervised=s["supervised"], disc_sizes=s["disc_sizes"])
    try:
        model = MODELS[kind](**common)
    except ValueError as err:            # an architecture the options cannot build
        raise CLIError(f"train {kind}: {err}") from None
    model.configure_optimizers(s["optimizer"], lr=s["lr"])
    return model, rng


def _check_out(out: str, force: bool, resume_hint: bool = True) -> None:
    from .runs import CHECKPOINT, holds_run
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out {out} is a file, not a folder: choose another --out")
    if os.path.isdir(out) and holds_run(out) and not force:
        hint = f"continue it with --resume {os.path.join(out, CHECKPOINT)}, " if resume_hint else ""
        raise CLIError(f"--out {out} holds another run: {hint}choose another --out, or pass "
                       "--force to replace it")


def _plan_new(args):
    from .data import checksum
    from .runs import new_run_folder
    s = _new_settings(args)
    B.resolve(s["device"])           # fail fast, in one line, when CUDA is asked for and missing
    out = args.out or new_run_folder(args.model)
    _check_out(out, args.force)
    ds = _load_data(args.data, s["dataset"])
    s["data"] = ds.source if ds.is_subset else os.path.abspath(ds.source)
    s["data_sha256"] = checksum(ds)
    model, rng = _build(s)
    shuffle = B.Generator(s["seed"] + 1, device=s["device"])
    return out, s, ds, model, {"model": rng, "shuffle": shuffle}, []


def _plan_resume(args):
    from .data import checksum
    from .runs import checkpoint_path, load_run
    ckpt = checkpoint_path(args.resume)
    old_device = args.device or "cpu"
    model, rngs, history, old = load_run(ckpt, device=old_device)
    if old.get("model") != args.model:
        raise CLIError(f"--resume {ckpt} holds a {old.get('model')} run, not {args.model}: "
                       f"scratchae train {old.get('model')} --resume {ckpt}")
    for key in RUN_DEFINING:
        value = getattr(args, key, None)
        if value is not None and value != old.get(key):
            option = "--" + key.replace("_", "-")
            raise CLIError(f"{option} cannot change on --resume: the run's is {old.get(key)!r}; "
                           "start a new run to change it")
    s = dict(old)
    for key in ("epochs", "batch_size", "device"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    s.setdefault("epochs", len(history))
    s.setdefault("batch_size", RECIPES[args.model]["batch_size"])
    try:
        B.resolve(s.get("device", "cpu"))
    except B.DeviceError as err:
        raise CLIError(f"{err} (the run was trained on {s.get('device')}; pass --device cpu to "
                       "continue it on the CPU)") from None
    if s.get("device", "cpu") != old_device:           # the run's recorded device
        model, rngs, history, old = load_run(ckpt, device=s["device"])
    out = args.out or os.path.dirname(os.path.abspath(ckpt))
    same_folder = os.path.abspath(out) == os.path.dirname(os.path.abspath(ckpt))
    if not same_folder:
        _check_out(out, args.force, resume_hint=False)
    data = args.data or old.get("data")
    if data is not None and data != "bundled subset" and not os.path.exists(data):
        raise CLIError(f"the run's data {data} is not there any more: pass --data with it")
    ds = _load_data(data, s.get("dataset", "mnist"))
    digest = checksum(ds)
    if old.get("data_sha256") and digest != old["data_sha256"] and not args.force:
        raise CLIError(f"--data {args.data or data} is not the data this run was trained on "
                       f"(sha256 {digest[:12]}..., the run's {old['data_sha256'][:12]}...): pass "
                       f"the run's data ({old.get('data')}), or --force to continue on this data")
    s["data"] = ds.source if ds.is_subset else os.path.abspath(ds.source)
    s["data_sha256"] = digest
    s["resumed_from"] = os.path.abspath(ckpt)
    return out, s, ds, model, rngs, history


@contextlib.contextmanager
def _no_interrupt():
    """Hold Ctrl-C while a checkpoint and its metrics are written, then deliver it."""
    caught = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    except ValueError:                 # not the main thread: nothing to hold
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def cmd_train(args):
    from tqdm.auto import tqdm

    from .runs import CHECKPOINT, METRICS, load_run, save_run
    from .train import TrainingDiverged, fit
    started = time.perf_counter()
    out, s, ds, model, rngs, history = (_plan_resume if args.resume else _plan_new)(args)
    done, target = len(history), s["epochs"]
    ckpt = os.path.join(out, CHECKPOINT)
    say = (lambda line: None) if args.quiet else (lambda line: tqdm.write(line, file=sys.stderr))
    if target <= done:
        say(f"scratchae: {s.get('resumed_from')} already has {plural(done, 'epoch')} and "
            f"--epochs {target} is the total to reach: nothing to train (pass a larger --epochs)")
        return 0
    x_train, x_test = _prepare(ds, s["binarize"], s["seed"])
    y_train, y_test = ds.y_train, ds.y_test
    if s.get("limit"):
        x_train, y_train = x_train[:s["limit"]], y_train[:s["limit"]]
    s.update(train_examples=len(x_train), test_examples=len(x_test), sizes=model.config["sizes"],
             out=os.path.abspath(out), scratchae_version=__version__)
    created = [d for d in (out, os.path.dirname(os.path.abspath(out))) if not os.path.isdir(d)]
    if args.force and not args.resume:
        for name in (CHECKPOINT, METRICS):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out, name))
    os.makedirs(out, exist_ok=True)
    span = f"epoch {target}" if target - done == 1 else f"epochs {done + 1}-{target}"
    say(f"scratchae: training {args.model} {model.config['sizes']} into {out}, {span} of {target}, "
        f"batch {s['batch_size']}, device {B.resolve(s['device'])}, on {_describe(ds)}")
    times = []

    def on_epoch_end(epoch, record):
        with _no_interrupt():          # a checkpoint and its metrics, or neither
            save_run(ckpt, model, rngs=rngs, history=history, settings=s)
            _write_json(os.path.join(out, METRICS), {"model": args.model, "settings": s,
                                                     "units": "nats per example",
                                                     "epochs": history})
        times.append(record["seconds"])
        left = (target - record["epoch"]) * sum(times) / len(times)
        parts = " ".join(f"{k}={v:.3f}" for k, v in record.items() if k not in ("epoch", "seconds"))
        eta = f", about {_duration(left)} left" if record["epoch"] < target else ""
        say(f"epoch {record['epoch']}/{target}: {parts} ({record['seconds']:.1f} s{eta})")

    try:
        fit(model, x_train, y_train, epochs=target - done, batch_size=s["batch_size"],
            x_test=x_test, y_test=y_test, dynamic_binarize=(s["binarize"] == "dynamic"),
            history=history, start_epoch=done, shuffle_rng=rngs["shuffle"],
            on_epoch_end=on_epoch_end, progress=False if args.quiet else None)
    except KeyboardInterrupt:
        saved = len(history)
        if saved == 0 or not os.path.exists(ckpt):
            _remove_empty(created)
            print(f"scratchae: interrupted in epoch {saved + 1}: nothing was saved (no epoch had "
                  "completed)", file=sys.stderr)
            return 130
        if not args.no_figures:
            with contextlib.suppress(Exception, KeyboardInterrupt):
                m, _, h, _ = load_run(ckpt, device=s["device"])
                _figures(m, args.model, x_test, y_test, h, out, s["seed"], lambda line: None)
        print(f"scratchae: interrupted in epoch {saved + 1}; epoch {saved} is saved in {ckpt}. "
              f"Resume with: scratchae train {args.model} --resume {ckpt}", file=sys.stderr)
        return 130
    except TrainingDiverged as err:
        if history and os.path.exists(ckpt):
            raise Diverged(f"{err}; epoch {len(history)} is saved in {ckpt}") from None
        _remove_empty(created)
        raise Diverged(f"{err}; nothing was saved") from None
    if not args.no_figures:
        try:
            _figures(model, args.model, x_test, y_test, history, out, s["seed"], say)
        except KeyboardInterrupt:
            print(f"scratchae: interrupted while writing the figures; all {plural(target, 'epoch')} "
                  f"are saved in {ckpt}", file=sys.stderr)
            return 130
    for line in _notes(s, history[-1]):
        say(f"note: {line}")
    say(f"scratchae: {plural(target - done, 'epoch')} in {_duration(time.perf_counter() - started)}; "
        f"next: scratchae evaluate {ckpt}")
    print(ckpt)
    return 0


def _notes(s: dict, record: dict) -> list[str]:
    """What a surprising number in ``record`` means, in words."""
    notes = []
    if s.get("likelihood") == "gaussian":
        notes.append("with --likelihood gaussian the reconstruction term is a density's negative "
                     "log-likelihood, which can be below 0 (a density can exceed 1)")
    clean, noisy = record.get("test_recon"), record.get("test_recon_corrupted")
    if s.get("model") == "dae" and clean is not None and noisy is not None:
        what = f"{s.get('corruption')} at level {s.get('level')}"
        if clean > noisy:
            notes.append(f"test_recon ({clean:.2f}) is on clean inputs, test_recon_corrupted "
                         f"({noisy:.2f}) on inputs corrupted as in training ({what}): the DAE only "
                         "ever saw corrupted inputs, so a clean digit, with more ink than any it "
                         "saw, is the less familiar input (demos/dae.py measures this)")
        else:
            notes.append(f"test_recon is on clean inputs, test_recon_corrupted on inputs corrupted "
                         f"as in training ({what}): the denoising error")
    return notes


def _remove_empty(folders):
    """Remove the folders this run made, if they are still empty (nothing else is touched)."""
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _figures(model, kind, x_test, y_test, history, out, seed, say):
    try:
        from .plots import make_figures
        figs = make_figures(model, kind, x_test, y_test, history, out, seed)
    except ImportError as err:
        say(f"scratchae: figures skipped: {err}")
        return
    say("figures: " + ", ".join(figs))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    m, s = divmod(seconds, 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


# --- evaluate / sample ------------------------------------------------------------------------

def _output_file(path: str, option: str, suffix: str, protected=()) -> str:
    if not path.lower().endswith(suffix):
        raise CLIError(f"{option} {path}: give a file name ending in {suffix}")
    if os.path.isdir(path):
        raise CLIError(f"{option} {path} is a folder: give a file name ending in {suffix}")
    if os.path.exists(path) and any(os.path.exists(p) and os.path.samefile(path, p) for p in protected):
        raise CLIError(f"{option} {path} would overwrite the run's own file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CLIError(f"{option} {path}: the folder {parent} does not exist")
    return path


def cmd_evaluate(args):
    from tqdm.auto import tqdm

    from . import evaluation
    from .runs import checkpoint_path, load_run
    ckpt = checkpoint_path(args.checkpoint)
    if args.json:
        _output_file(args.json, "--json", ".json", protected=[ckpt])
    say = (lambda line: None) if args.quiet else (lambda line: tqdm.write(line, file=sys.stderr))
    model, rngs, history, settings = load_run(ckpt, device=args.device)
    kind = model.config["kind"]
    ds = _load_data(args.data or settings.get("data"), settings.get("dataset", "mnist"))
    x_train, x_test = _prepare(ds, settings.get("binarize", "none"), settings.get("seed", 0))
    be = B.resolve(args.device)
    t0 = time.perf_counter()
    say(f"evaluate: {kind} after {plural(len(history), 'epoch')}, on {_describe(ds)}")
    result = {"checkpoint": ckpt, "model": kind, "epochs": len(history),
              "data": ds.source, "test_examples": len(x_test),
              "units": {"losses": "nats per example, means over the test images (lower is better)",
                        "accuracies": "fractions of the test images",
                        "mmd2": "squared MMD, RBF kernel with the median bandwidth"}}
    say(f"evaluate: test loss terms on {len(x_test)} images")
    result["test"] = evaluation.evaluate(model, x_test, ds.y_test)
    if kind == "vae" and model.likelihood != "mse" and args.iwae_k > 0:
        n = len(x_test) if args.iwae_examples == "all" else min(args.iwae_examples, len(x_test))
        rng = B.Generator(args.seed, device=be)
        total, chunk = 0.0, 100
        bar = tqdm(total=n, desc=f"IWAE_{args.iwae_k}", unit="image", leave=False, file=sys.stderr,
                   disable=args.quiet or not sys.stderr.isatty())
        if bar.disable:
            say(f"evaluate: IWAE_{args.iwae_k} bound on {n} test images")
        for s in range(0, n, chunk):
            xb = be.asarray(x_test[s:min(n, s + chunk)], model.dtype)
            total += B.to_scalar(be.xp.sum(evaluation.iwae_bound(model, xb, args.iwae_k, rng)))
            bar.update(xb.shape[0])
        bar.close()
        result["iwae"] = {"k": args.iwae_k, "examples": n, "nll": -total / n}
    if kind == "aae":
        say("evaluate: the discriminator and MMD^2 of the codes to the prior")
        rng = B.Generator(args.seed, device=be)
        n = min(len(x_test), 2000)
        x = be.asarray(x_test[:n], model.dtype)
        labels = be.asarray(ds.y_test[:n].astype("int64"), "int64") if model.supervised else None
        acc = B.to_scalar(evaluation.discriminator_accuracy(model, x, rng, labels=labels))
        mmd = evaluation.mmd2(model.encode(x), model.prior.sample(n, rng, labels, model.dtype))
        result["discriminator"] = {"accuracy": acc, "examples": n, "mmd2_to_prior": mmd,
                                   "note": "accuracy 0.5: codes and prior samples look alike"}
    if args.probe_epochs > 0:
        say(f"evaluate: a linear probe on the codes, {plural(args.probe_epochs, 'epoch')}")
        result["linear_probe"] = {"accuracy": evaluation.linear_probe(
            model, x_train, ds.y_train, x_test, ds.y_test, epochs=args.probe_epochs,
            seed=args.seed), "epochs": args.probe_epochs}
    notes = _notes({**settings, "kind": kind, "model": kind},
                   {f"test_{k}": v for k, v in result["test"].items()})
    if notes:
        result["notes"] = notes
    result["seconds"] = round(time.perf_counter() - t0, 2)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    return 0


def cmd_sample(args):
    from . import plots
    from .runs import CHECKPOINT, METRICS, checkpoint_path, load_run
    ckpt = checkpoint_path(args.checkpoint)
    folder = os.path.dirname(os.path.abspath(ckpt))
    out = args.out or os.path.join(folder, f"prior_samples_seed{args.seed}.png")
    _output_file(out, "--out", ".png",
                 protected=[ckpt, os.path.join(folder, CHECKPOINT), os.path.join(folder, METRICS)])
    model, rngs, history, settings = load_run(ckpt, device=args.device)
    if not hasattr(model, "sample"):
        raise CLIError(f"{ckpt}: a {model.config['kind']} has no prior to sample from "
                       "(sampling needs a vae or an aae)")
    rng = B.Generator(args.seed, device=args.device)
    plots.samples(B.to_numpy(model.sample(args.n, rng)), out)
    print(out)
    return 0


# --- gradcheck --------------------------------------------------------------------------------

def _layer_factory(target: str):
    """``module:Name``, ``path/file.py:Name``, either with ``(literal, args)`` after the name."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise CLIError(f"expected module:Class or path/to/file.py:Class, got {target!r}")
    call_args, call_kwargs = (), {}
    if "(" in name:
        if not name.endswith(")"):
            raise CLIError(f"{target!r}: constructor arguments go in one (...) at the end")
        name, _, inside = name.partition("(")
        try:
            call = ast.parse(f"f({inside[:-1]})", mode="eval").body
            call_args = tuple(ast.literal_eval(a) for a in call.args)
            call_kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        except (SyntaxError, ValueError, TypeError):
            raise CLIError(f"{target!r}: constructor arguments must be Python literals, "
                           "e.g. 'mylayers:Scale(3, alpha=0.5)'") from None
    try:
        if where.endswith(".py") or os.sep in where or "/" in where:
            path = where if where.endswith(".py") else where + ".py"
            if not os.path.isfile(path):
                raise CLIError(f"no such file: {path}")
            spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
            spec.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())
            module = importlib.import_module(where)
        factory = getattr(module, name)
    except CLIError:
        raise
    except Exception as err:     # ImportError, AttributeError, or the module's own code raising
        raise CLIError(f"cannot load {target}: {type(err).__name__}: {err}") from None
    return factory, call_args, call_kwargs


def cmd_gradcheck(args):
    from .gradcheck import GradcheckError, check_layer
    from .gradcheck.builtins import LayerCase, builtin_cases
    try:
        shape = tuple(int(s) for s in args.shape.split(","))
    except ValueError:
        raise CLIError(f"--shape must be N,d (two integers), got {args.shape!r}") from None
    if len(shape) != 2 or min(shape) < 1 or max(shape) > 4096:
        raise CLIError(f"--shape must be N,d with N and d from 1 to 4096, got {args.shape!r}")
    rng = B.Generator(args.seed)
    if args.target:
        factory, call_args, call_kwargs = _layer_factory(args.target)
        shown = f"{args.target}" if "(" in args.target else f"{args.target}()"
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}
        if "rng" in params and "rng" not in call_kwargs:     # seeded weights, as Linear wants
            call_kwargs["rng"] = rng
        try:
            layer = factory(*call_args, **call_kwargs)
        except Exception as err:
            hint = (" (pass constructor arguments as 'module:Class(5, 3)')"
                    if isinstance(err, TypeError) and not call_args else "")
            raise CLIError(f"cannot build {shown}: {type(err).__name__}: {err}{hint}") from None
        if not (hasattr(layer, "forward") and hasattr(layer, "backward")):
            raise CLIError(f"{shown} is a {type(layer).__name__}, not a layer with "
                           "forward and backward")
        if hasattr(layer, "to"):
            layer.to(dtype="float64")
        cases = [LayerCase(args.target, lambda d, rng, layer=layer: layer)]
    else:
        cases = builtin_cases()
    verdicts = []
    for case in cases:
        name = case.name
        try:
            layer = case.build(shape[1], rng)
            x, fk = case.inputs(shape, rng)
            report = check_layer(layer, x, forward_kwargs=fk)
        except GradcheckError as err:
            raise CLIError(str(err)) from None
        except Exception as err:       # the layer's own forward or backward raised
            raise CLIError(f"{name}: the layer raised {type(err).__name__} during the check with "
                           f"input shape {shape}: {err}") from None
        print(report)
        print()
        verdicts.append(report.verdict)
    failed, unsure = verdicts.count("FAILED"), verdicts.count("inconclusive")
    if not failed and not unsure:
        print("all passed")
        return 0
    print(f"SOME CHECKS FAILED: {failed} failed, {unsure} inconclusive, of {len(verdicts)}")
    return 1


# --- doctor -----------------------------------------------------------------------------------

def cmd_doctor(args):
    from . import doctor
    return doctor.run()


HANDLERS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
            "gradcheck": cmd_gradcheck, "doctor": cmd_doctor}


def main(argv=None) -> int:
    """Run the command; returns the exit status (:data:`EXIT_CODES`), never raises."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:            # --help, --version, or a bad option (one line)
        return done.code if isinstance(done.code, int) else 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # NumPy / matplotlib warnings never reach the user
        return _run(args)


def _run(args) -> int:
    from .checkpoint import CheckpointError
    from .data import DataError
    from .module import InputError
    prog = f"scratchae {args.command}"
    try:
        with B.resolve(getattr(args, "device", None) or "cpu").context():   # cuda:N: GPU N current
            return HANDLERS[args.command](args)
    except (B.DeviceError, CheckpointError, DataError, CLIError, InputError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except Diverged as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{prog}: error: out of memory: try a smaller --batch-size, --hidden or --latent-dim",
              file=sys.stderr)
        return 2
    except OSError as err:                 # a path that cannot be read or written
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        print(f"{prog}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except Exception as err:               # a bug: one line, and the traceback on request
        if os.environ.get("SCRATCHAE_DEBUG"):
            raise
        print(f"{prog}: internal error (a bug in scratchae; SCRATCHAE_DEBUG=1 shows the traceback): "
              f"{type(err).__name__}: {err}", file=sys.stderr)
        return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

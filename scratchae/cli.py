"""The ``scratchae`` command: train, evaluate, sample, gradcheck.

    scratchae train vae --out run            # bundled MNIST subset, CPU, classic recipe
    scratchae train aae --data mnist.npz --device cuda
    scratchae evaluate run/checkpoint.npz
    scratchae sample run/checkpoint.npz --n 100
    scratchae gradcheck                      # every built-in layer
    scratchae gradcheck mymodule:MyLayer     # your own layer
    scratchae doctor                         # Python, NumPy/BLAS, CuPy, CUDA, the GPU
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from . import backend as B

#: The classic recipe of each model (sizes are encoder widths, input first, code last).
RECIPES = {
    "ae": {"sizes": [784, 400, 32], "lr": 1e-3, "batch_size": 128},
    "dae": {"sizes": [784, 400, 32], "lr": 1e-3, "batch_size": 128, "corruption": "masking", "level": 0.5},
    "vae": {"sizes": [784, 400, 20], "lr": 1e-3, "batch_size": 128},
    "aae": {"sizes": [784, 1000, 1000, 2], "lr": 2e-4, "batch_size": 100, "prior": "mixture",
            "disc_sizes": [1000, 1000]},
}


class CLIError(Exception):
    """Reported as one line on stderr, exit status 2."""


def _sizes(text):
    return [int(s) for s in text.replace("-", ",").split(",") if s]


def build_parser():
    p = argparse.ArgumentParser(prog="scratchae", description="Autoencoders with hand-written backprop.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model and write checkpoint, metrics.json and figures")
    t.add_argument("model", choices=sorted(RECIPES))
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=None, help="default: the model's recipe")
    t.add_argument("--latent-dim", type=int, default=None, help="code size (default: the recipe's)")
    t.add_argument("--hidden", type=_sizes, default=None, help="hidden widths, e.g. 400 or 1000,1000")
    t.add_argument("--arch", default="mlp", choices=["mlp", "conv"],
                   help="mlp (default): Linear layers; conv: two k4 s2 p1 convolutions down and two "
                        "transposed convolutions up (docs/conv.md)")
    t.add_argument("--channels", type=_sizes, default=None,
                   help="--arch conv: the convolutions' channels (default 32,64)")
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd", "rmsprop"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--data", default=None, help="an .npz or a folder with the IDX .gz files")
    t.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    t.add_argument("--binarize", default="none", choices=["none", "fixed", "dynamic"])
    t.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian", "mse"])
    t.add_argument("--beta", type=float, default=1.0, help="VAE: weight of the KL term")
    t.add_argument("--corruption", default=None, choices=["masking", "gaussian", "salt_pepper"])
    t.add_argument("--level", type=float, default=None, help="DAE corruption level")
    t.add_argument("--prior", default=None, choices=["mixture", "gaussian", "swiss_roll", "uniform"])
    t.add_argument("--supervised", action="store_true", help="AAE: label-conditioned prior")
    t.add_argument("--tied", action="store_true", help="AE/DAE: tied weights")
    t.add_argument("--sparsity", type=float, default=0.0, help="AE/DAE: L1 weight on the code")
    t.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    t.add_argument("--out", default="run", help="output folder (default: ./run)")
    t.add_argument("--resume", default=None, help="checkpoint to continue from")
    t.add_argument("--no-figures", action="store_true")
    t.add_argument("--quiet", action="store_true")

    e = sub.add_parser("evaluate", help="test loss terms, IWAE bound (VAE), linear probe accuracy")
    e.add_argument("checkpoint")
    e.add_argument("--data", default=None)
    e.add_argument("--device", default="cpu")
    e.add_argument("--iwae-k", type=int, default=5000)
    e.add_argument("--iwae-examples", type=int, default=500)
    e.add_argument("--probe-epochs", type=int, default=20)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", default=None, help="also write the results here")

    s = sub.add_parser("sample", help="decode prior samples to a PNG grid")
    s.add_argument("checkpoint")
    s.add_argument("--n", type=int, default=100)
    s.add_argument("--out", default=None, help="PNG path (default: next to the checkpoint)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--seed", type=int, default=0)

    sub.add_parser("doctor", help="what this machine has for scratchae: Python, NumPy and its BLAS, "
                   "CuPy, CUDA, the GPU (runs a small kernel), and the command that fixes CuPy")

    g = sub.add_parser("gradcheck", help="check layers' backward against finite differences")
    g.add_argument("target", nargs="?", default=None,
                   help="module:Class (or module:factory) of your layer; default: every built-in layer")
    g.add_argument("--shape", default="4,5", help="input shape N,d (default 4,5)")
    g.add_argument("--seed", type=int, default=0)
    return p


# --- train ---------------------------------------------------------------------------------

def _load_data(args_data, dataset, quiet):
    from .data import load_dataset
    return load_dataset(dataset, data=args_data, quiet=quiet)


def _prepare(ds, binarize, seed):
    from .data import preprocess
    gen = B.host.random.default_rng(seed + 7)
    fixed = "fixed" if binarize == "fixed" else "none"
    return preprocess(ds.x_train, fixed, rng=gen), preprocess(ds.x_test, fixed, rng=gen)


def _build(args):
    from .models import MODELS
    r = RECIPES[args.model]
    sizes = list(r["sizes"])
    if args.hidden:
        sizes = [sizes[0], *args.hidden, sizes[-1]]
    if args.latent_dim:
        sizes[-1] = args.latent_dim
    arch = getattr(args, "arch", "mlp")
    channels = getattr(args, "channels", None)
    if arch == "conv":
        if args.hidden:
            raise CLIError("--hidden sets the widths of --arch mlp; with --arch conv use --channels")
        # the conv recipe's code: 20 (the VAE's 20 means and 20 log-variances); the AAE keeps
        # its 2-D code, which the mixture prior needs
        code = args.latent_dim or (sizes[-1] if args.model in ("vae", "aae") else 20)
        sizes = [sizes[0], code]
    elif channels:
        raise CLIError("--channels is for --arch conv; with --arch mlp use --hidden")
    rng = B.Generator(args.seed, device=args.device)
    common = dict(sizes=sizes, likelihood=args.likelihood, rng=rng, dtype=args.dtype)
    if arch == "conv":
        from .models.base import CONV_CHANNELS
        common.update(arch="conv", channels=tuple(channels or CONV_CHANNELS))
    if args.model in ("ae", "dae"):
        common.update(tied=args.tied, sparsity=args.sparsity)
    if args.model == "dae":
        common.update(corruption=args.corruption or r["corruption"],
                      level=args.level if args.level is not None else r["level"])
    if args.model == "vae":
        common.update(beta=args.beta)
    if args.model == "aae":
        prior = args.prior or r["prior"]
        if sizes[-1] != 2 and prior in ("mixture", "swiss_roll"):
            prior = "gaussian"
        common.update(prior=prior, supervised=args.supervised, disc_sizes=r["disc_sizes"])
    try:
        model = MODELS[args.model](**common)
    except ValueError as err:            # an architecture the options cannot build
        raise CLIError(f"train {args.model}: {err}") from None
    model.configure_optimizers(args.optimizer, lr=args.lr or r["lr"])
    return model, rng


def cmd_train(args):
    from .runs import load_run, save_run
    from .train import fit
    B.resolve(args.device)  # fail fast, in one line, when CUDA is asked for and missing
    os.makedirs(args.out, exist_ok=True)
    ds = _load_data(args.data, args.dataset, args.quiet)
    x_train, x_test = _prepare(ds, args.binarize, args.seed)
    y_train, y_test = ds.y_train, ds.y_test
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    settings = {k: v for k, v in vars(args).items() if k not in ("func",)}
    if args.resume:
        model, rngs, history, old = load_run(args.resume, device=args.device)
        if old.get("model") != args.model:
            raise CLIError(f"--resume {args.resume} holds a {old.get('model')} run, not {args.model}")
        shuffle = rngs["shuffle"]
        settings = {**old, "epochs": old.get("epochs", 0) + args.epochs, "out": args.out,
                    "device": args.device, "resume": args.resume}
    else:
        model, rng = _build(args)
        shuffle = B.Generator(args.seed + 1, device=args.device)
        rngs, history = {"model": rng, "shuffle": shuffle}, []
    batch = args.batch_size or settings.get("batch_size") or RECIPES[args.model]["batch_size"]
    settings["batch_size"] = batch
    ckpt = os.path.join(args.out, "checkpoint.npz")
    if not args.quiet:
        print(f"scratchae: training {args.model} {model.config['sizes']} on {ds.source} "
              f"({len(x_train)} train / {len(x_test)} test images), {args.epochs} epochs, "
              f"batch {batch}, device {B.resolve(args.device)}", file=sys.stderr)

    def on_epoch_end(epoch, record):
        save_run(ckpt, model, rngs=rngs, history=history, settings=settings)
        with open(os.path.join(args.out, "metrics.json") + ".tmp", "w") as f:
            json.dump({"model": args.model, "settings": settings, "epochs": history}, f, indent=1)
        os.replace(os.path.join(args.out, "metrics.json") + ".tmp", os.path.join(args.out, "metrics.json"))
        if not args.quiet:
            parts = " ".join(f"{k}={v:.3f}" for k, v in record.items() if k != "epoch")
            print(f"epoch {record['epoch']}: {parts}", file=sys.stderr)

    fit(model, x_train, y_train, epochs=args.epochs, batch_size=batch, x_test=x_test, y_test=y_test,
        dynamic_binarize=(args.binarize == "dynamic"), history=history, start_epoch=len(history),
        shuffle_rng=shuffle, on_epoch_end=on_epoch_end, progress=None if not args.quiet else False)
    if not args.no_figures:
        from .plots import make_figures
        figs = make_figures(model, args.model, x_test, y_test, history, args.out, args.seed)
        if not args.quiet:
            print("figures: " + ", ".join(figs), file=sys.stderr)
    print(os.path.join(args.out, "checkpoint.npz"))
    return 0


# --- evaluate / sample ------------------------------------------------------------------------

def cmd_evaluate(args):
    from . import evaluation
    from .runs import load_run
    model, rngs, history, settings = load_run(args.checkpoint, device=args.device)
    ds = _load_data(args.data or settings.get("data"), settings.get("dataset", "mnist"), quiet=False)
    x_train, x_test = _prepare(ds, settings.get("binarize", "none"), settings.get("seed", 0))
    be = B.resolve(args.device)
    result = {"checkpoint": args.checkpoint, "model": model.config["kind"],
              "test": evaluation.evaluate(model, x_test, ds.y_test)}
    if model.config["kind"] == "vae" and model.likelihood != "mse" and args.iwae_k > 0:
        rng = B.Generator(args.seed, device=be)
        n = min(args.iwae_examples, len(x_test))
        total = 0.0
        for s in range(0, n, 100):
            xb = be.asarray(x_test[s:min(n, s + 100)], model.dtype)
            total += B.to_scalar(be.xp.sum(evaluation.iwae_bound(model, xb, args.iwae_k, rng)))
        result[f"test_iwae_{args.iwae_k}_nll"] = -total / n
        result["iwae_examples"] = n
    result["linear_probe_accuracy"] = evaluation.linear_probe(
        model, x_train, ds.y_train, x_test, ds.y_test, epochs=args.probe_epochs, seed=args.seed)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    return 0


def cmd_sample(args):
    from . import plots
    from .runs import load_run
    model, rngs, history, settings = load_run(args.checkpoint, device=args.device)
    if not hasattr(model, "sample"):
        raise CLIError(f"{args.checkpoint}: a {model.config['kind']} has no prior to sample from "
                       "(sampling needs a vae or an aae)")
    rng = B.Generator(args.seed, device=args.device)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "samples.png")
    plots.samples(B.to_numpy(model.sample(args.n, rng)), out)
    print(out)
    return 0


# --- gradcheck --------------------------------------------------------------------------------

def cmd_gradcheck(args):
    from .gradcheck import GradcheckError, check_layer
    from .gradcheck.builtins import LayerCase, builtin_cases
    try:
        shape = tuple(int(s) for s in args.shape.split(","))
    except ValueError:
        raise CLIError(f"--shape must be N,d (two integers), got {args.shape!r}") from None
    if len(shape) != 2 or min(shape) < 1:
        raise CLIError(f"--shape must be N,d with N, d >= 1, got {args.shape!r}")
    rng = B.Generator(args.seed)
    if args.target:
        mod_name, _, attr = args.target.partition(":")
        if not attr:
            raise CLIError(f"expected module:Class, got {args.target!r}")
        sys.path.insert(0, os.getcwd())
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as err:
            raise CLIError(f"cannot load {args.target}: {err}") from None
        try:
            layer = factory()
        except Exception as err:
            raise CLIError(f"cannot build {args.target}(): {type(err).__name__}: {err}") from None
        if hasattr(layer, "to"):
            layer.to(dtype="float64")
        cases = [LayerCase(args.target, lambda d, rng, layer=layer: layer)]
    else:
        cases = builtin_cases()
    verdicts = []
    for case in cases:
        name, layer = case.name, case.build(shape[1], rng)
        x, fk = case.inputs(shape, rng)
        try:
            report = check_layer(layer, x, forward_kwargs=fk)
        except GradcheckError as err:
            raise CLIError(str(err)) from None
        except Exception as err:       # the layer's own forward or backward raised
            raise CLIError(f"{name}: the layer raised {type(err).__name__} during the check: {err}") from None
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .data import DataError
    from .module import InputError
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
                "gradcheck": cmd_gradcheck, "doctor": cmd_doctor}
    try:
        with B.resolve(getattr(args, "device", "cpu")).context():   # cuda:N: GPU N is current
            return handlers[args.command](args)
    except (B.DeviceError, CheckpointError, DataError, CLIError, InputError) as err:
        print(f"scratchae: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("scratchae: interrupted", file=sys.stderr)
        return 130
    except FileNotFoundError as err:
        print(f"scratchae: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


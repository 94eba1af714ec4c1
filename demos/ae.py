"""Train a plain autoencoder, look at its reconstructions and loss curves, and compare it
with the tied-weight version (decoder W = encoder W transposed) under the same budget.

The recipe is `scratchae train ae`'s: 784-400-32, ReLU, Bernoulli likelihood on pixels/255,
Adam 1e-3, batch 128. Losses are nats per example (sum over 784 pixels, mean over images).

    python demos/ae.py                      # bundled MNIST subset, CPU
    python demos/ae.py --device cuda --data mnist.npz --epochs 30
"""
from __future__ import annotations

import os
import time

import _common
from scratchae import backend as B
from scratchae import losses
from scratchae.cli import RECIPES
from scratchae.plots import make_figures
from scratchae.models import Autoencoder
from scratchae.train import fit


def train(tied, x_train, y_train, x_test, args):
    r = RECIPES["ae"]
    model = Autoencoder(sizes=r["sizes"], tied=tied, rng=B.Generator(args.seed, device=args.backend))
    model.configure_optimizers("adam", lr=r["lr"])
    t0 = time.perf_counter()
    history = fit(model, x_train, y_train, epochs=args.epochs, batch_size=r["batch_size"],
                  seed=args.seed, x_test=x_test, progress=False)
    return model, history, time.perf_counter() - t0


def test_mse(model, x_test, be):
    """Squared error of the expected reconstruction sigmoid(logits), summed over pixels."""
    x = be.asarray(x_test, "float32")
    return B.to_scalar(losses.mse(model.reconstruct(x), x)[0])


def main(args):
    ds, x_train, x_test = _common.load_mnist(args)
    be = args.backend
    results = {}
    for tied in (False, True):
        model, history, seconds = train(tied, x_train, ds.y_train, x_test, args)
        results["tied" if tied else "untied"] = (model, history, seconds)

    print(f"AE {'-'.join(map(str, RECIPES['ae']['sizes']))} on {ds.source} "
          f"({len(x_train)} train / {len(x_test)} test), {args.epochs} epochs, device {be}")
    for name, (model, history, seconds) in results.items():
        h = history[-1]
        print(f"  {name:6s} {model.num_parameters():7d} params: test BCE {h['test_recon']:6.2f} "
              f"nats/example (train {h['train_recon']:6.2f}), test MSE {test_mse(model, x_test, be):5.2f}"
              f" per example, {seconds:4.1f} s")

    model, history, _ = results["untied"]
    paths = make_figures(model, "ae", x_test, ds.y_test, history, args.out, args.seed)
    paths.append(plot_tied_vs_untied(results, os.path.join(args.out, "tied_vs_untied.png")))
    print("figures: " + ", ".join(_common.rel(p) for p in paths))


def tied_vs_untied_figure(results):
    """Test (solid) and train (dashed) BCE per epoch of both models, on a log y-axis that
    shows every point: the first epochs are several times the last ones, and the gap between
    the two models late in training is a few per cent."""
    plt = _common.pyplot()
    from matplotlib.ticker import LogLocator, ScalarFormatter
    fig, ax = plt.subplots(figsize=(4.6, 3.2), layout="constrained")
    for (name, (model, history, _)), color in zip(results.items(), ("C0", "C1")):
        epochs = [h["epoch"] for h in history]
        label = f"{name} ({model.num_parameters() / 1e3:.0f}k params)"
        ax.plot(epochs, [h["test_recon"] for h in history], "-o", ms=3, color=color,
                label=f"{label}, test")
        ax.plot(epochs, [h["train_recon"] for h in history], "--", color=color,
                label=f"{name}, train")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_locator(LogLocator(subs="all"))
    ax.yaxis.set_minor_formatter("")
    ax.margins(y=0.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("BCE (nats per example, log scale)")
    ax.set_title("tied vs untied autoencoder, same budget", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def plot_tied_vs_untied(results, path):
    plt = _common.pyplot()
    fig = tied_vs_untied_figure(results)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    _common.run(main, _common.parser("ae", __doc__, epochs=20))

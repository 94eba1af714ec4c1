"""What the demos share: the command line, the device check, the data, labelled image rows.

Not part of the library: a demo imports it as ``import _common`` (Python puts the
script's own folder on ``sys.path``).
"""
from __future__ import annotations

import argparse
import os
import sys

# One BLAS thread unless the environment says otherwise (OPENBLAS_NUM_THREADS=2 python demos/...).
# Must run before NumPy is imported, so demos import this module first. Measured on the 2-core
# machine: an epoch of the 784-400-32 AE takes 0.45-0.57 s with one thread and 0.49 s with two
# when the machine is idle, but 1.0-4.3 s with two while another process holds a core
# (OpenBLAS's threads wait for each other at every matrix product).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from scratchae import backend as B  # noqa: E402
from scratchae.data import DataError, load_dataset, preprocess  # noqa: E402


def parser(name: str, doc: str, epochs: int | None = None, data: bool = True,
           out: bool = True) -> argparse.ArgumentParser:
    """``--device --seed`` always; ``--data --epochs --out`` where the demo uses them."""
    p = argparse.ArgumentParser(prog=f"demos/{name}.py", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    if data:
        p.add_argument("--data", default=None,
                       help="MNIST as an .npz (x_train, y_train, x_test, y_test) or a folder with "
                            "the four IDX .gz files; default: the library's search order "
                            "($SCRATCHAE_DATA, cache, download, then the bundled 5000-image subset)")
    if epochs is not None:
        p.add_argument("--epochs", type=positive, default=epochs, help=f"default {epochs}")
    p.add_argument("--seed", type=int, default=0)
    if out:
        # in the folder the demo is run from, not in the clone (resolved now, shown in --help)
        default = os.path.join(os.getcwd(), "out", name)
        p.add_argument("--out", default=default,
                       help=f"figure folder (default out/{name} in the current folder: {default})")
    return p


def add_arch(p: argparse.ArgumentParser) -> None:
    """``--arch mlp|conv``: the MLPs of the recipe, or the conv encoder/decoder (docs/conv.md)."""
    p.add_argument("--arch", default="mlp", choices=["mlp", "conv"],
                   help="mlp (default) or conv: two k4 s2 p1 convolutions down, two transposed up")


def arch_kwargs(args, sizes, code=None) -> dict:
    """The model's ``sizes`` (and ``arch``) for ``--arch``: conv keeps only input and code."""
    if getattr(args, "arch", "mlp") == "conv":
        return {"arch": "conv", "sizes": [sizes[0], code or sizes[-1]]}
    return {"sizes": list(sizes)}


def positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return n


def run(main, p: argparse.ArgumentParser) -> None:
    """Parse, check the device first, run ``main(args)``; a missing GPU or missing data is one
    line on stderr and exit status 2, as the ``scratchae`` command does."""
    args = p.parse_args()
    try:
        args.backend = B.resolve(args.device)
        if getattr(args, "out", None):
            os.makedirs(args.out, exist_ok=True)
        with args.backend.context():          # cuda:N: GPU N current for the whole demo
            status = main(args)
    except (B.DeviceError, DataError) as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)


def load_mnist(args):
    """(dataset, x_train, x_test): host float32 rows (N, 784) in [0, 1]."""
    ds = load_dataset("mnist", data=args.data)
    return ds, preprocess(ds.x_train), preprocess(ds.x_test)


def rel(path: str) -> str:
    """``path`` relative to the working directory when that is shorter (for printing)."""
    r = os.path.relpath(path)
    return r if len(r) < len(os.path.abspath(path)) else os.path.abspath(path)


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def image_rows(rows, path: str, title: str | None = None) -> str:
    """One labelled row of 28x28 images per ``(label, host array (n, 784))`` pair."""
    plt = pyplot()
    np = B.host
    n = max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(n * 0.62 + 0.9, len(rows) * 0.72 + 0.35))
    axes = np.atleast_1d(axes)
    for ax, (label, imgs) in zip(axes, rows):
        imgs = np.asarray(imgs).reshape(-1, 28, 28)
        strip = np.ones((30, n * 30))
        for i, im in enumerate(imgs):
            strip[1:29, i * 30 + 1:i * 30 + 29] = im
        ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        axes[0].set_title(title, fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path

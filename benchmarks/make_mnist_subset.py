"""Make the MNIST subset shipped inside the package: ``scratchae/_data/mnist_subset.npz``.

The subset is what ``scratchae.data.load_dataset("mnist")`` falls back to when the full
data is neither given (``--data PATH`` / ``$SCRATCHAE_DATA``), nor cached, nor
downloadable: enough for the demos and the fast tests to train on real digits.

It holds the first 5,000 training images and labels and the first 1,000 test images
and labels of MNIST, unchanged (uint8), in the usual ``x_train, y_train, x_test,
y_test`` layout, saved with ``np.savez_compressed`` (about 1 MB).

Usage::

    python benchmarks/make_mnist_subset.py [--source ../shared/data/mnist.npz] [--out PATH]

The source file is checked against the SHA-256 and the statistics published with it
(``../shared/data/README.md``) before anything is written. MNIST is by Y. LeCun,
C. Cortes and C. J. C. Burges (CC BY-SA 3.0).
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "mnist.npz"
OUT = ROOT / "scratchae" / "_data" / "mnist_subset.npz"

N_TRAIN, N_TEST = 5000, 1000
MAX_BYTES = 2_000_000

#: the checks published with the full file (../shared/data/README.md)
SOURCE_SHA256 = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TRAIN_PIXEL_MEAN = 33.318
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_source(path: pathlib.Path) -> dict:
    digest = sha256(path)
    if digest != SOURCE_SHA256:
        sys.exit(f"{path}: SHA-256 {digest}, expected {SOURCE_SHA256}")
    with np.load(path, allow_pickle=False) as f:
        d = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    shapes = {k: (v.dtype.name, v.shape) for k, v in d.items()}
    want = {"x_train": ("uint8", (60000, 28, 28)), "y_train": ("uint8", (60000,)),
            "x_test": ("uint8", (10000, 28, 28)), "y_test": ("uint8", (10000,))}
    if shapes != want:
        sys.exit(f"{path}: arrays {shapes}, expected {want}")
    counts = np.bincount(d["y_train"], minlength=10).tolist()
    mean = float(d["x_train"].mean(dtype=np.float64))
    problems = []
    if counts != TRAIN_CLASS_COUNTS:
        problems.append(f"training class counts {counts}")
    if round(mean, 3) != TRAIN_PIXEL_MEAN:
        problems.append(f"mean training pixel {mean:.4f}")
    if d["y_train"][:10].tolist() != FIRST_TRAIN_LABELS:
        problems.append(f"first training labels {d['y_train'][:10].tolist()}")
    if d["y_test"][:10].tolist() != FIRST_TEST_LABELS:
        problems.append(f"first test labels {d['y_test'][:10].tolist()}")
    if problems:
        sys.exit(f"{path}: " + "; ".join(problems))
    return d


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=pathlib.Path, default=SOURCE)
    p.add_argument("--out", type=pathlib.Path, default=OUT)
    args = p.parse_args(argv)

    d = check_source(args.source)
    subset = {"x_train": np.ascontiguousarray(d["x_train"][:N_TRAIN]),
              "y_train": np.ascontiguousarray(d["y_train"][:N_TRAIN]),
              "x_test": np.ascontiguousarray(d["x_test"][:N_TEST]),
              "y_test": np.ascontiguousarray(d["y_test"][:N_TEST])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **subset)

    size = args.out.stat().st_size
    if size > MAX_BYTES:
        sys.exit(f"{args.out}: {size:,} bytes, more than the {MAX_BYTES:,} allowed in the package")
    with np.load(args.out, allow_pickle=False) as f:  # read back: identical arrays
        for k, v in subset.items():
            if f[k].dtype != v.dtype or not np.array_equal(f[k], v):
                sys.exit(f"{args.out}: {k} did not read back identically")
    counts = np.bincount(subset["y_train"], minlength=10).tolist()
    print(f"wrote {args.out} ({size:,} bytes): {N_TRAIN} train / {N_TEST} test images; "
          f"train class counts {counts}; SHA-256 {sha256(args.out)}")


if __name__ == "__main__":
    main()

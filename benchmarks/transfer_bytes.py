"""What crosses between the host and the device per training step, for each model's recipe.

Every random draw is made on the host and copied to the device (``scratchae.backend.Generator``),
so a GPU step pays for a few host-to-device copies. This counts them
(``scratchae.backend.TRANSFERS``) on ``array_api_strict:device1``, the no-GPU stand-in, which
takes the same path as CUDA: the counts are CUDA's. The one copy of the training set per
``fit`` is reported apart.

    python benchmarks/transfer_bytes.py                 # the four recipes, batch as in the CLI
    python benchmarks/transfer_bytes.py --binarize dynamic
    python benchmarks/transfer_bytes.py --device cuda   # the same counts, on a GPU

Prints a Markdown table (the one in ``docs/cuda.md``).
"""
from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from scratchae import backend as B  # noqa: E402
from scratchae import cli  # noqa: E402
from scratchae.train import fit  # noqa: E402


def measure(kind, device, steps, binarize):
    args = cli.build_parser().parse_args(["train", kind, "--device", device, "--quiet"])
    model, _ = cli._build(cli._new_settings(args))
    batch = cli.RECIPES[kind]["batch_size"]
    n = batch * steps
    x = np.random.default_rng(0).random((n, 784)).astype("float32")
    y = np.arange(n) % 10
    fit(model, x, y, epochs=1, batch_size=batch, progress=False)      # optimizer state made
    B.TRANSFERS.reset()
    fit(model, x, y, epochs=1, batch_size=batch, progress=False,
        dynamic_binarize=(binarize == "dynamic"))
    moved = B.TRANSFERS.snapshot()
    data = x.nbytes + y.astype("int64").nbytes                       # the training set, once per fit
    return {"model": kind, "batch": batch,
            "to_device_bytes_per_step": (moved["to_device_bytes"] - data) / steps,
            "to_device_copies_per_step": (moved["to_device_copies"] - 2) / steps,
            "to_host_bytes_per_step": moved["to_host_bytes"] / steps,
            "to_host_copies_per_step": moved["to_host_copies"] / steps}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="array_api_strict:device1")
    p.add_argument("--steps", type=int, default=100, help="steps per model (default 100)")
    p.add_argument("--binarize", choices=["none", "dynamic"], default="none")
    args = p.parse_args(argv)
    print(f"device {args.device}, {args.steps} steps, binarize {args.binarize}\n")
    print("| model (recipe) | batch | to device per step | copies | to host per step | copies |")
    print("|---|---|---|---|---|---|")
    for kind in ("ae", "dae", "vae", "aae"):
        r = measure(kind, args.device, args.steps, args.binarize)
        print(f"| {kind} {cli.RECIPES[kind]['sizes']} | {r['batch']} | "
              f"{r['to_device_bytes_per_step']:,.0f} B | {r['to_device_copies_per_step']:g} | "
              f"{r['to_host_bytes_per_step']:,.2f} B | {r['to_host_copies_per_step']:g} |")


if __name__ == "__main__":
    main()

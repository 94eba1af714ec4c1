"""Whole-process wall time: ``scratchae train vae`` against the PyTorch examples VAE, alternated.

Each run is a fresh process, timed from launch to exit: interpreter start, imports, loading
MNIST, E epochs of training with a test evaluation after each, checkpoints (scratchae),
and exit. The two commands alternate (scratchae first on even pairs, PyTorch first on odd
ones), so slow drifts of the machine hit both alike; the ratio of each pair is reported,
then the median and range of the ratios.

    python benchmarks/whole_process.py --data ../shared/data/mnist.npz              # 5 pairs, 3 epochs
    python benchmarks/whole_process.py --data ../shared/data/mnist.npz --reference  # also SCRATCHAE_REFERENCE=1

``--reference`` adds a third command to each round: the same scratchae run with every fast
path switched off (``SCRATCHAE_REFERENCE=1``). Needs PyTorch (``pip install torch``); see
``docs/results.md`` for what was measured.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist.npz"


def commands(args, out):
    scratchae = [sys.executable, "-m", "scratchae", "train", "vae", "--data", str(args.data),
                 "--epochs", str(args.epochs), "--no-figures", "--quiet", "--out", out]
    torch = [sys.executable, str(ROOT / "benchmarks" / "torch_vae_example.py"), "--data",
             str(args.data), "--epochs", str(args.epochs)]
    runs = {"scratchae": (scratchae, {}), "torch": (torch, {})}
    if args.reference:
        runs["reference"] = (scratchae, {"SCRATCHAE_REFERENCE": "1"})
    return runs


def timed(cmd, extra_env, out):
    env = {**os.environ, **extra_env}
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help=f"MNIST .npz (default {DEFAULT_DATA})")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--pairs", type=int, default=5, help="rounds of alternated runs (default 5)")
    p.add_argument("--reference", action="store_true",
                   help="also time scratchae with SCRATCHAE_REFERENCE=1 in every round")
    p.add_argument("--pause", type=float, default=1.0, help="seconds of rest before each run")
    args = p.parse_args(argv)
    if not pathlib.Path(args.data).exists():
        sys.exit(f"no MNIST at {args.data}: pass --data PATH/mnist.npz")
    tmp = tempfile.mkdtemp(prefix="scratchae-bench-")
    out = os.path.join(tmp, "run")
    runs = commands(args, out)
    names = list(runs)
    seconds = {n: [] for n in names}
    try:
        for r in range(args.pairs):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                time.sleep(args.pause)
                cmd, env = runs[name]
                seconds[name].append(timed(cmd, env, out))
            line = ", ".join(f"{n} {seconds[n][-1]:.2f} s" for n in names)
            print(f"round {r + 1}: {line}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.epochs}-epoch whole-process runs, {args.pairs} rounds, {os.cpu_count()} CPUs")
    for name in names:
        s = seconds[name]
        print(f"  {name:10s} median {statistics.median(s):6.2f} s  [{min(s):.2f}-{max(s):.2f}]")
    for name in names:
        if name == "torch":
            continue
        ratios = [a / b for a, b in zip(seconds[name], seconds["torch"])]
        print(f"  {name} / torch per round: median {statistics.median(ratios):.2f}x "
              f"[{min(ratios):.2f}-{max(ratios):.2f}]  ({', '.join(f'{q:.2f}' for q in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

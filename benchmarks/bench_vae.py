"""scratchae against PyTorch eager: the same MLP autoencoders, data, batches and optimizer.

Trains the PyTorch examples VAE (``pytorch/examples`` ``vae/main.py``: 784-400-20, ReLU,
Bernoulli likelihood on pixels/255, batch 128, Adam 1e-3) with scratchae and with
PyTorch, interleaving the repeats in one process (scratchae, torch, torch, scratchae,
...), and prints seconds per epoch, test losses, peak memory and how close each gets to
the float32 matmul rate of this machine at the model's own matmul shapes.
``--model ae|dae|aae`` runs the other autoencoders' training steps the same way.

    python benchmarks/bench_vae.py                          # VAE, 3 repeats of 1 epoch
    python benchmarks/bench_vae.py --model aae --repeats 1 --limit 12800
    python benchmarks/bench_vae.py --device cuda

What is measured, and how: ``benchmarks/README.md``. PyTorch is needed only here
(``pip install 'scratchae[bench]'``), never by the library or its tests.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist.npz"
MODELS = ("vae", "ae", "dae", "aae")
FRAMEWORKS = ("scratchae", "torch")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="vae",
                   help="which autoencoder's training step to compare (default: vae)")
    p.add_argument("--arch", choices=("mlp", "conv"), default="mlp",
                   help="mlp (default), or conv: the convolutional encoder and decoder of "
                        "docs/conv.md (vae, ae, dae; code 20; PyTorch's the same layers)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per timed run (default 1)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs per framework, interleaved (default 3)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--data", default=None,
                   help=f"MNIST .npz (default {DEFAULT_DATA}; the subset bundled with "
                        "scratchae if that is missing)")
    p.add_argument("--limit", type=int, default=None,
                   help="train on the first N training images only (default: all)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads for both: torch.set_num_threads and OpenBLAS/OpenMP (set "
                        "before NumPy loads, unless already in the environment) (default 2)")
    p.add_argument("--scratchae-threads", type=int, default=None,
                   help="threads of scratchae's NumPy optimizer step "
                        "(scratchae.fast.set_num_threads; default: the library's default)")
    p.add_argument("--seed", type=int, default=0, help="repeat r uses seed + r (default 0)")
    p.add_argument("--torch-bce", choices=("probs", "logits"), default="probs",
                   help="VAE in torch: 'probs' = the example's sigmoid + binary_cross_entropy "
                        "(default), 'logits' = binary_cross_entropy_with_logits")
    p.add_argument("--torch-fused-adam", action="store_true",
                   help="torch.optim.Adam(fused=True) instead of the default (per-tensor loop)")
    p.add_argument("--pause", type=float, default=1.0,
                   help="seconds to sleep before each timed run, so the worker threads the other "
                        "framework left spinning (OpenBLAS, OpenMP) are asleep (default 1)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory subprocesses")
    p.add_argument("--memory-steps", type=int, default=200,
                   help="training steps each memory subprocess runs (default 200)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--_memory-child", dest="memory_child", choices=FRAMEWORKS,
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1:
        p.error("--epochs and --repeats must be >= 1")
    return args


ARGS = parse_args()
# thread counts must be in the environment before NumPy (OpenBLAS) and torch load
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(ARGS.threads))

import numpy as np  # noqa: E402

import scratchae  # noqa: E402
from scratchae import backend as B  # noqa: E402
from scratchae import fast  # noqa: E402
from scratchae.data import load_dataset  # noqa: E402
from scratchae.conv import Conv2d, ConvTranspose2d  # noqa: E402
from scratchae.layers import Linear, TiedLinear  # noqa: E402
from scratchae.models import AdversarialAutoencoder, Autoencoder, DenoisingAutoencoder, VAE  # noqa: E402
from scratchae.train import evaluate, fit  # noqa: E402

if ARGS.memory_child != "scratchae":      # a scratchae-only child never loads torch
    import torch  # noqa: E402

    from torch_models import TorchRunner  # noqa: E402  (benchmarks/torch_models.py)


# --- data ------------------------------------------------------------------------------------

def load_data(args, limit=None):
    """(x_train, x_test, description): float32 (N, 784) pixels / 255 on the host.

    ``limit`` (else ``--limit``): keep the first that many training images. The uint8
    images are converted slice first, divided in place: no full-size temporaries.
    """
    path = pathlib.Path(args.data) if args.data else DEFAULT_DATA
    if args.data or path.exists():
        ds = load_dataset("mnist", data=str(path), download=False)
    else:
        ds = load_dataset("mnist", data=None, download=False)
    limit = limit or args.limit
    x_train = _pixels(ds.x_train[:limit] if limit else ds.x_train)
    x_test = _pixels(ds.x_test)
    return x_train, x_test, f"{ds.source} ({len(x_train)} train / {len(x_test)} test images)"


def _pixels(images):
    """uint8 (N, 28, 28) -> float32 (N, 784) / 255, the same numbers as scratchae.data.preprocess."""
    x = images.reshape(len(images), -1).astype(np.float32)
    x /= np.float32(255)
    return x


# --- the scratchae side --------------------------------------------------------------------

def scratchae_model(kind, args, seed, device):
    rng = B.Generator(seed, device=device)
    cls = {"vae": VAE, "ae": Autoencoder, "dae": DenoisingAutoencoder,
           "aae": AdversarialAutoencoder}[kind]
    arch = {"arch": "conv", "sizes": [784, 20]} if getattr(args, "arch", "mlp") == "conv" else {}
    return cls(rng=rng, **arch).configure_optimizers("adam", lr=args.lr)


def scratchae_test_loss(model, kind, x_test):
    terms = evaluate(model, x_test)
    return terms["loss"] if kind == "vae" else terms["recon"]


# --- timing ------------------------------------------------------------------------------------

def sync(device):
    B.synchronize(device)
    if device.startswith("cuda") and "torch" in sys.modules:
        torch.cuda.synchronize(device)


def run_scratchae(kind, args, seed, device, x_train, x_test):
    model = scratchae_model(kind, args, seed, device)
    sync(device)
    t0 = time.perf_counter()
    hist = fit(model, x_train, epochs=args.epochs, batch_size=args.batch_size, seed=seed,
               progress=False)
    sync(device)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds / args.epochs, "train_loss": hist[-1]["train_loss"],
            "test_loss": scratchae_test_loss(model, kind, x_test)}


def run_torch(kind, args, seed, device, X_train, X_test):
    runner = TorchRunner(kind, args, seed, device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        train_loss = runner.train_epoch(X_train, args.batch_size)
    sync(device)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds / args.epochs, "train_loss": train_loss,
            "test_loss": runner.test_loss(X_test)}


# --- matmul accounting -------------------------------------------------------------------------

def record_matmuls(model, x_batch):
    """Every matmul of one scratchae training step, as (name, (m, k), (k, n), transposes).

    Found by wrapping each Linear / TiedLinear's forward and backward on this model only.
    """
    log = []
    wrapped = []
    for mod in model.modules():
        if isinstance(mod, (Conv2d, ConvTranspose2d)):
            _record_conv(mod, log, wrapped)
            continue
        if isinstance(mod, Linear):
            d_in, d_out, input_grad = mod.d_in, mod.d_out, mod.input_grad
        elif isinstance(mod, TiedLinear):
            d_in, d_out, input_grad = mod.tied.d_out, mod.tied.d_in, True
        else:
            continue

        def fwd(x, _f=mod.forward, d_in=d_in, d_out=d_out):
            log.append(("y = x @ W", x.shape[0], d_in, d_out, "nn"))
            return _f(x)

        def bwd(dy, _b=mod.backward, d_in=d_in, d_out=d_out, input_grad=input_grad):
            n = dy.shape[0]
            log.append(("dW = x.T @ dy", d_in, n, d_out, "tn"))
            if input_grad:
                log.append(("dx = dy @ W.T", n, d_out, d_in, "nt"))
            return _b(dy)

        mod.forward, mod.backward = fwd, bwd
        wrapped.append(mod)
    try:
        model.train_step(x_batch)
    finally:
        for mod in wrapped:
            del mod.forward, mod.backward
            mod.__dict__.pop("_bench_rows", None)
    return log


def _record_conv(mod, log, wrapped):
    """The matmuls of a convolution done as im2col (scratchae.fast), as (name, m, k, n).

    With rows the positions of the window grid and K = channels * kh * kw of the windowed
    side: Conv2d (rows = N*H_out*W_out, K = C_in*kh*kw, C = C_out): y = (rows, K) @ (K, C),
    dW = (C, rows) @ (rows, K), dx = (rows, C) @ (C, K). ConvTranspose2d is its adjoint (rows
    = N*H_in*W_in, K = C_out*kh*kw, C = C_in): y = (rows, C) @ (C, K), dW the same, dx = (rows,
    K) @ (K, C)."""
    kh, kw = mod.kernel_size
    transposed = isinstance(mod, ConvTranspose2d)

    def fwd(x, _f=mod.forward):
        if transposed:
            rows, K, C = x.shape[0] * x.shape[2] * x.shape[3], mod.out_channels * kh * kw, mod.in_channels
        else:
            ho, wo = mod.output_hw(x.shape[2:])
            rows, K, C = x.shape[0] * ho * wo, mod.in_channels * kh * kw, mod.out_channels
        log.append(("convT y" if transposed else "conv y", rows, *((C, K) if transposed else (K, C)), "nn"))
        mod._bench_rows = (rows, K, C)
        return _f(x)

    def bwd(dy, _b=mod.backward):
        rows, K, C = mod._bench_rows
        log.append(("conv dW", C, rows, K, "tn"))
        if getattr(mod, "input_grad", True):
            log.append(("conv dx", rows, *((K, C) if transposed else (C, K)), "nt"))
        return _b(dy)

    mod.forward, mod.backward = fwd, bwd
    wrapped.append(mod)


def step_breakdown(kind, args, device, x_train, steps=150):
    """Where a scratchae training step's wall time goes, in ms per step.

    Times ``steps`` calls of ``model.train_step`` on consecutive batches, with the clock
    also read around every Linear / TiedLinear forward and backward (matmuls, bias, dW,
    db), every optimizer ``step``, and every ``losses.bce_with_logits`` call; "the rest"
    (activations, sampler, KL, batch checks, Python) is the total minus those. On CUDA the
    device is synchronized around each timed call, so there the parts add up to more than
    an unsynchronized step takes.
    """
    from scratchae import losses
    model = scratchae_model(kind, args, 7, device)
    backend = B.resolve(device)
    spent = {"Linear layers (matmul, bias, dW, db)": 0.0, "optimizer step (Adam)": 0.0,
             "BCE with logits (value + gradient)": 0.0}

    on_gpu = device.startswith("cuda")

    def timed(fn, key):
        def wrapper(*a, **k):
            if on_gpu:                  # kernels run asynchronously: wait before each clock read
                sync(device)
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                if on_gpu:
                    sync(device)
                spent[key] += time.perf_counter() - t0
        return wrapper

    patched = []
    for mod in model.modules():
        if isinstance(mod, (Linear, TiedLinear)):
            mod.forward = timed(mod.forward, "Linear layers (matmul, bias, dW, db)")
            mod.backward = timed(mod.backward, "Linear layers (matmul, bias, dW, db)")
            patched.append(mod)
    for opt in model.optimizers.values():
        opt.step = timed(opt.step, "optimizer step (Adam)")
        patched.append(opt)
    bce = losses.bce_with_logits
    losses.bce_with_logits = timed(bce, "BCE with logits (value + gradient)")
    bs = args.batch_size
    batches = [backend.asarray(x_train[i * bs:(i + 1) * bs], "float32")
               for i in range(min(steps + 20, len(x_train) // bs))]
    try:
        for xb in batches[:20]:                     # warm-up
            model.train_step(xb)
        sync(device)
        for k in spent:
            spent[k] = 0.0
        t0 = time.perf_counter()
        for xb in batches[20:]:
            model.train_step(xb)
        sync(device)
        total = time.perf_counter() - t0
    finally:
        losses.bce_with_logits = bce
        for obj in patched:
            for name in ("forward", "backward", "step"):
                obj.__dict__.pop(name, None)
    n = len(batches) - 20
    out = {k: 1e3 * v / n for k, v in spent.items()}
    out["the rest (activations, sampler, KL, checks, Python)"] = 1e3 * total / n - sum(out.values())
    out["total"] = 1e3 * total / n
    return out


def matmul_flops(log):
    return sum(2.0 * m * k * n for _, m, k, n, _ in log)


def torch_step_flops(kind, args, device, X):
    """FLOPs of one PyTorch training step, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode
    runner = TorchRunner(kind, args, 0, device)
    data = X[:args.batch_size]
    with FlopCounterMode(display=False) as counter:
        runner.step(data)
    return float(counter.get_total_flops())


def matmul_rate(log, framework, device, repeats=15):
    """GFLOP/s of the float32 matmuls in ``log``, run back to back as in a step: the best
    (max over ``repeats``) of each framework's own BLAS at exactly these shapes and layouts."""
    flops = matmul_flops(log)
    if framework == "scratchae":
        g = B.Generator(0, device=device)
        ops = []
        for _, m, k, n, t in log:
            a = g.normal((k, m) if t == "tn" else (m, k), "float32")
            b = g.normal((n, k) if t == "nt" else (k, n), "float32")
            ops.append((a.T if t == "tn" else a, b.T if t == "nt" else b))
        run = lambda: [a @ b for a, b in ops]  # noqa: E731
    else:
        ops = []
        for _, m, k, n, t in log:
            a = torch.randn((k, m) if t == "tn" else (m, k), device=device)
            b = torch.randn((n, k) if t == "nt" else (k, n), device=device)
            ops.append((a.T if t == "tn" else a, b.T if t == "nt" else b))
        run = lambda: [a @ b for a, b in ops]  # noqa: E731
    for _ in range(3):
        run()
    best = math.inf
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(5):
            run()
        sync(device)
        best = min(best, (time.perf_counter() - t0) / 5)
    return flops / best / 1e9


# --- peak memory, one subprocess per framework ---------------------------------------------

def memory_child(args):
    """Runs in a subprocess: set up, read RSS, reset the peak, train, read the peak."""
    device = args.device
    if args.scratchae_threads:
        fast.set_num_threads(args.scratchae_threads)
    if args.memory_child == "torch":
        torch.set_num_threads(args.threads)
    x_train, x_test, _ = load_data(args, limit=args.memory_steps * args.batch_size)
    del x_test
    if args.memory_child == "scratchae":
        model = scratchae_model(args.model, args, args.seed, device)
    else:
        X = torch.from_numpy(x_train).to(device)
        runner = TorchRunner(args.model, args, args.seed, device)
    before = _status_mb("VmRSS")
    reset = _reset_peak_rss()
    if args.memory_child == "scratchae":
        fit(model, x_train, epochs=1, batch_size=args.batch_size, seed=args.seed, progress=False)
    else:
        runner.train_epoch(X, args.batch_size)
    sync(device)
    peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {"rss_before_mb": before, "peak_mb": peak, "peak_reset": reset}
    if device.startswith("cuda"):
        # reserved by each allocator at its peak (CuPy's pool keeps what it once held, so its
        # total_bytes() is its peak reservation; torch's caching allocator is alike), and the
        # peak of live arrays where the allocator tells it (torch)
        if args.memory_child == "torch":
            out["device_peak_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
            out["device_peak_live_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            import cupy
            out["device_peak_mb"] = cupy.get_default_memory_pool().total_bytes() / 2**20
    print(json.dumps(out))


def _status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def _reset_peak_rss():
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_memory(args, framework):
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", framework,
           "--model", args.model, "--arch", args.arch, "--device", args.device,
           "--threads", str(args.threads),
           "--batch-size", str(args.batch_size), "--memory-steps", str(args.memory_steps),
           "--seed", str(args.seed), "--torch-bce", args.torch_bce]
    if args.scratchae_threads:
        cmd += ["--scratchae-threads", str(args.scratchae_threads)]
    if args.data:
        cmd += ["--data", args.data]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.torch_fused_adam:
        cmd.append("--torch-fused-adam")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


# --- main ----------------------------------------------------------------------------------------

def describe(kind, arch="mlp"):
    if arch == "conv":
        return {"vae": "conv VAE: Conv(1->32, k4 s2 p1) ReLU Conv(32->64) ReLU Linear(3136->2*20); "
                       "Linear(20->3136) ReLU ConvT(64->32) ReLU ConvT(32->1), Bernoulli on logits",
                "ae": "conv AE: the conv VAE's layers, code 20, Bernoulli",
                "dae": "conv DAE: the conv AE, masking noise 0.5"}[kind]
    return {"vae": "VAE 784-400-20, ReLU, Bernoulli; encoder 784-400-(20+20), decoder 20-400-784",
            "ae": "Autoencoder 784-256-32-256-784, ReLU, Bernoulli",
            "dae": "Denoising AE 784-256-32-256-784, ReLU, Bernoulli, masking noise 0.5",
            "aae": "Adversarial AE 784-1000-1000-2 (+ mirror decoder), discriminator "
                   "2-1000-1000-1, mixture prior, 3 Adam optimizers"}[kind]


def fmt_s(values):
    med = statistics.median(values)
    return f"{med:.3f} [{min(values):.2f}-{max(values):.2f}]" if len(values) > 1 else f"{med:.3f}"


def fmt_loss(values):
    if len(values) > 1:
        return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"
    return f"{values[0]:.3f}"


def main(args):
    if args.memory_child:
        return memory_child(args)
    device = args.device
    torch.set_num_threads(args.threads)
    if args.scratchae_threads:
        fast.set_num_threads(args.scratchae_threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA GPU")
    B.resolve(device)          # a clear DeviceError if scratchae cannot use it

    load_start = os.getloadavg()
    x_train, x_test, data_desc = load_data(args)
    X_train = torch.from_numpy(x_train).to(device)
    X_test = torch.from_numpy(x_test).to(device)
    n = len(x_train)
    steps = math.ceil(n / args.batch_size)

    # warm-up (BLAS thread pools, lazy initialisation, allocator): not timed
    warm = x_train[:20 * args.batch_size]
    fit(scratchae_model(args.model, args, 12345, device), warm, epochs=1,
        batch_size=args.batch_size, progress=False)
    TorchRunner(args.model, args, 12345, device).train_epoch(X_train[:len(warm)], args.batch_size)

    # the matmuls of one step, and how fast this machine does exactly those
    log = record_matmuls(scratchae_model(args.model, args, 0, device),
                         B.resolve(device).asarray(x_train[:args.batch_size], "float32"))
    rates = {fw: 0.0 for fw in FRAMEWORKS}

    # interleaved timed runs: s, t, t, s, s, t, ...; the matmul rates are measured after
    # every repeat too, and the best is kept (a rate is a capability: noise only lowers it)
    results = {fw: [] for fw in FRAMEWORKS}
    for r in range(args.repeats):
        order = FRAMEWORKS if r % 2 == 0 else FRAMEWORKS[::-1]
        for fw in order:
            time.sleep(args.pause)
            if fw == "scratchae":
                res = run_scratchae(args.model, args, args.seed + r, device, x_train, x_test)
            else:
                res = run_torch(args.model, args, args.seed + r, device, X_train, X_test)
            results[fw].append(res)
            print(f"  repeat {r + 1}/{args.repeats} {fw:9s} {res['seconds']:7.3f} s/epoch   "
                  f"test loss {res['test_loss']:.3f}", file=sys.stderr, flush=True)
        for fw in FRAMEWORKS:
            rates[fw] = max(rates[fw], matmul_rate(log, fw, device, repeats=5))

    step_flops = matmul_flops(log)
    torch_flops = torch_step_flops(args.model, args, device, X_train)
    epoch_flops = step_flops * n / args.batch_size          # every matmul is linear in the rows
    best_rate = max(rates.values())
    memory = {} if args.no_memory else {fw: measure_memory(args, fw) for fw in FRAMEWORKS}
    breakdown = step_breakdown(args.model, args, device, x_train)

    sec = {fw: [r["seconds"] for r in results[fw]] for fw in FRAMEWORKS}
    med = {fw: statistics.median(sec[fw]) for fw in FRAMEWORKS}
    test = {fw: [r["test_loss"] for r in results[fw]] for fw in FRAMEWORKS}
    train = {fw: [r["train_loss"] for r in results[fw]] for fw in FRAMEWORKS}
    achieved = {fw: epoch_flops / med[fw] / 1e9 for fw in FRAMEWORKS}

    blas = "OpenBLAS" if "openblas" in str(np.__config__.CONFIG.get("Build Dependencies", {})).lower() else "BLAS"
    print(f"scratchae {scratchae.__version__} (NumPy {np.__version__}, {blas}) vs PyTorch "
          f"{torch.__version__} eager | {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs | device {device}")
    print(f"model: {describe(args.model, args.arch)}")
    print(f"data: {data_desc}; pixels / 255 as float32; batch {args.batch_size}, {steps} steps "
          f"per epoch; Adam lr {args.lr:g}")
    print(f"threads: torch {torch.get_num_threads()}, OpenBLAS/OMP "
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}, scratchae optimizer step {fast.num_threads()}; "
          f"{args.repeats} interleaved repeats of {args.epochs} epoch(s) each")
    print(f"load average (1, 5, 15 min) at start {' '.join(f'{v:.2f}' for v in load_start)}, "
          f"at end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.model == "vae":
        bce = ("binary_cross_entropy_with_logits (the conv decoder outputs logits)" if args.arch == "conv"
               else "sigmoid + binary_cross_entropy (the example)" if args.torch_bce == "probs"
               else "binary_cross_entropy_with_logits")
        print(f"torch VAE loss: {bce}; "
              f"torch Adam: {'fused=True' if args.torch_fused_adam else 'default (per-tensor loop)'}")
    print()
    rows = [("", "scratchae", "torch", "scratchae/torch")]
    rows.append(("seconds / epoch, median [min-max]", fmt_s(sec["scratchae"]), fmt_s(sec["torch"]),
                 f"{med['scratchae'] / med['torch']:.3f}"))
    if args.repeats > 1:
        pair = [a / b for a, b in zip(sec["scratchae"], sec["torch"])]
        rows.append(("  per-repeat ratios, median [min-max]", "", "", fmt_s(pair)))
    rows.append(("train loss, last epoch (nats/example)", fmt_loss(train["scratchae"]),
                 fmt_loss(train["torch"]), ""))
    rows.append(("test loss (nats/example, mean +- sd)", fmt_loss(test["scratchae"]),
                 fmt_loss(test["torch"]),
                 f"{statistics.mean(test['scratchae']) - statistics.mean(test['torch']):+.3f}"))
    if memory:
        for key, label in (("rss_before_mb", "RSS before training (MB)"),
                           ("peak_mb", "peak RSS while training (MB)"),
                           ("device_peak_mb", "device memory reserved at its peak (MB)")):
            if any(key in memory[fw] for fw in FRAMEWORKS):
                vals = [memory[fw].get(key) for fw in FRAMEWORKS]
                rows.append((label, *[f"{v:.0f}" if v is not None else memory[fw].get("error", "-")
                                      for fw, v in zip(FRAMEWORKS, vals)], ""))
        if all("peak_mb" in memory[fw] for fw in FRAMEWORKS):
            inc = [memory[fw]["peak_mb"] - memory[fw]["rss_before_mb"] for fw in FRAMEWORKS]
            rows.append(("training's own memory (peak - before, MB)", f"{inc[0]:.0f}", f"{inc[1]:.0f}",
                         f"{inc[0] / inc[1]:.2f}" if inc[1] > 0 else ""))
    rows.append(("matmul GFLOP / step (fwd + bwd)", f"{step_flops / 1e9:.4f}",
                 f"{torch_flops / 1e9:.4f}", ""))
    rows.append(("achieved matmul GFLOP/s (per epoch)", f"{achieved['scratchae']:.1f}",
                 f"{achieved['torch']:.1f}", ""))
    rows.append(("float32 matmul rate, these shapes (GFLOP/s)", f"{rates['scratchae']:.1f}",
                 f"{rates['torch']:.1f}", ""))
    rows.append(("roofline fraction (own BLAS)", f"{achieved['scratchae'] / rates['scratchae']:.2f}",
                 f"{achieved['torch'] / rates['torch']:.2f}", ""))
    rows.append((f"roofline fraction (best BLAS, {best_rate:.1f})",
                 f"{achieved['scratchae'] / best_rate:.2f}", f"{achieved['torch'] / best_rate:.2f}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    ideal = step_flops / rates["scratchae"] / 1e6            # ms a step's matmuls need at the rate
    print(f"scratchae step, where the time goes ({args.batch_size}-row batches, ms/step; the "
          f"step's matmuls alone need {ideal:.2f} ms at {rates['scratchae']:.0f} GFLOP/s):")
    for k, v in breakdown.items():
        print(f"  {k:52s} {v:6.2f}")
    print()
    if memory:
        print(f"memory: a fresh subprocess per framework loads {args.memory_steps} batches, builds the "
              f"model, reads its RSS ('before'), resets its peak RSS")
        print(f"  (/proc/self/clear_refs) and trains {args.memory_steps} steps; 'peak' is VmHWM "
              "after training. Only torch's child imports torch.")
    print("roofline: matmul FLOPs of a step (every x@W, x.T@dy, dy@W.T; the first encoder layer "
          "has no dx) x steps / epoch time,")
    print("  against the same matmuls run back to back at the same shapes and layouts, "
          "measured after every repeat (best of all).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items()}, "results": results,
                       "memory": memory, "step_flops": step_flops, "torch_step_flops": torch_flops,
                       "rates": rates, "achieved": achieved, "matmuls": log,
                       "breakdown_ms_per_step": breakdown}, f, indent=1)


if __name__ == "__main__":
    with B.resolve(ARGS.device).context():     # cuda:N: every scratchae array and kernel on GPU N
        main(ARGS)

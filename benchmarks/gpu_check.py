"""The measuring steps of ``benchmarks/gpu_check.sh``: everything that needs a GPU, in one run.

    python3 benchmarks/gpu_check.py machine   --out DIR [--device cuda]
    python3 benchmarks/gpu_check.py parity    --out DIR [--device cuda] [--quick]
    python3 benchmarks/gpu_check.py speed     --out DIR [--device cuda] [--data PATH] [--quick]
    python3 benchmarks/gpu_check.py iwae      --out DIR [--device cuda] [--data PATH] [--quick]
    python3 benchmarks/gpu_check.py summarize --out DIR

Each measuring subcommand writes ``DIR/<step>.json`` (rewritten after every sub-run, so a
step stopped by its time budget still leaves what it had measured) and its sub-runs' output
under ``DIR/<step>/``; ``summarize`` turns those files, ``DIR/steps.tsv`` (written by the
shell driver) and ``DIR/gpu_tests_core.xml``, ``DIR/gpu_tests.xml`` into ``DIR/summary.json`` and ``DIR/summary.md``.

``--budget S`` (default: ``$GPU_CHECK_BUDGET_S``, else none) is the step's own deadline: no
sub-run is started without time left for it, and each is given only the time that is left.

Without a GPU, ``--device array_api_strict:device1`` (the project's no-GPU stand-in) runs
the same pipeline, with the memory figures left out and the speed step on ``cpu`` (the
PyTorch side has no array_api_strict device).

Only the standard library, NumPy and scratchae are imported here; CuPy only for the GPU
memory figures, and PyTorch only in subprocesses (``bench_vae.py``, the machine report).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import re
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

#: CPU vs GPU tolerance: the largest relative difference |a - b| / max(|a|, |b|) allowed
#: between the epoch-mean losses (every ``train_*`` and ``test_*`` term of metrics.json)
#: of one epoch trained from the same seed on two devices in float32, and between the
#: test losses of one checkpoint evaluated on two devices.
PARITY_RTOL_FLOAT32 = 1e-4

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH_VAE = ROOT / "benchmarks" / "bench_vae.py"
SUBSET = ROOT / "scratchae" / "_data" / "mnist_subset.npz"
KINDS = ("ae", "dae", "vae", "aae")
#: training images per model in the parity step (None: the whole bundled subset, 5,000);
#: the AAE (784-1000-1000-2, discriminator 2-1000-1000-1, three phases) is the slow one
PARITY_LIMIT = {"ae": None, "dae": None, "vae": None, "aae": 2000}
QUICK_PARITY_LIMIT = 1000
#: the steps of gpu_check.sh, in order: (name, what it does)
STEPS = (("wheels", "install the wheels given with --wheels"),
         ("machine", "GPU, driver, CuPy / CUDA / torch versions"),
         ("doctor", "python3 -m scratchae doctor"),
         ("tests_core", "the gpu tests of the CuPy-only lines (docs/cuda.md) and of parity"),
         ("parity", "CPU vs device: one epoch of each model, checkpoints across devices, --resume"),
         ("speed", "VAE s/epoch, scratchae vs PyTorch (bench_vae.py)"),
         ("iwae", "IWAE bound of a 1-epoch VAE on the test set"),
         ("tests", "every other gpu-marked test"),
         ("summarize", "summary.json and summary.md"))
#: the test files of the CuPy-only lines' twins (docs/cuda.md) and of CPU/GPU parity: run first
CORE_TESTS = ("tests/test_backend.py", "tests/test_fast.py", "tests/test_devices.py", "tests/test_doctor.py")
#: the junit xml each test step writes
GPU_TESTS_XML = {"tests_core": "gpu_tests_core.xml", "tests": "gpu_tests.xml"}


# --- helpers ----------------------------------------------------------------------------------

class Budget:
    """A step's deadline: ``left()`` seconds remain (math.inf without one)."""

    def __init__(self, seconds):
        self.start = time.monotonic()
        self.seconds = seconds

    def left(self):
        if self.seconds is None:
            return math.inf
        return self.seconds - (time.monotonic() - self.start)


def is_gpu(device):
    return str(device).lower().startswith("cuda")


def child_env():
    """The environment for subprocesses: the repository importable, no plot windows."""
    env = dict(os.environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in parts:
        parts.append(str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_cmd(cmd, log, budget, *, min_seconds=3.0, cwd=ROOT):
    """Run ``cmd`` with the time the budget has left; append its output to ``log``.

    Returns {"cmd", "rc" (an int, or "timeout" / "not run"), "seconds", "error"}.
    """
    text = shlex.join(str(c) for c in cmd)
    left = budget.left()
    if left < min_seconds:
        return {"cmd": text, "rc": "not run", "seconds": 0.0,
                "error": f"not run: {max(left, 0):.0f} s of the step's budget left"}
    t0 = time.perf_counter()
    timeout = None if left == math.inf else max(left - 1.0, 1.0)
    try:
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=child_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        rc, out = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as err:
        rc, out = "timeout", err.output or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
    seconds = time.perf_counter() - t0
    with open(log, "a") as f:
        f.write(f"$ {text}\n{out}")
        f.write(f"[rc {rc}, {seconds:.1f} s]\n\n")
    res = {"cmd": text, "rc": rc, "seconds": round(seconds, 3), "error": None}
    if rc != 0:
        lines = [ln for ln in out.strip().splitlines() if ln.strip()]
        res["error"] = (f"timed out after {seconds:.0f} s" if rc == "timeout"
                        else (lines[-1] if lines else f"exit status {rc}"))[:400]
    return res


def write_json(path, obj):
    tmp = pathlib.Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def read_json(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def rel_diff(a, b):
    """|a - b| / max(|a|, |b|) (0 when both are 0; inf when either is not finite)."""
    a, b = float(a), float(b)
    if not (math.isfinite(a) and math.isfinite(b)):
        return 0.0 if a == b else math.inf
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def data_args(path):
    """``--data`` for the CLI: the given file, else the bundled subset by its path (never
    a download attempt: the GPU machine has no network)."""
    return ["--data", str(path) if path else str(SUBSET)]


def data_label(path):
    if path:
        return f"{path} (given with --data)"
    return "the MNIST subset bundled with scratchae (5,000 train / 1,000 test images; no --data given)"


def epoch_terms(record):
    return {k: v for k, v in record.items()
            if (k.startswith("train_") or k.startswith("test_")) and isinstance(v, (int, float))}


def compare_histories(a_epochs, b_epochs):
    """Per-term relative differences of two metrics.json histories, epoch by epoch."""
    diffs, missing = {}, []
    if len(a_epochs) != len(b_epochs):
        missing.append(f"{len(a_epochs)} vs {len(b_epochs)} epochs")
    for ra, rb in zip(a_epochs, b_epochs):
        ta, tb = epoch_terms(ra), epoch_terms(rb)
        missing += [f"epoch {ra.get('epoch')}: {k}" for k in sorted(set(ta) ^ set(tb))]
        for k in sorted(set(ta) & set(tb)):
            diffs[f"epoch{ra.get('epoch')}/{k}"] = {"a": ta[k], "b": tb[k], "rel": rel_diff(ta[k], tb[k])}
    worst = max(diffs, key=lambda k: diffs[k]["rel"]) if diffs else None
    return {"max_rel_diff": diffs[worst]["rel"] if worst else None, "worst": worst,
            "diffs": diffs, "missing": missing}


def metrics_epochs(run_dir):
    m = read_json(pathlib.Path(run_dir) / "metrics.json")
    return None if m is None else m.get("epochs")


# --- machine ----------------------------------------------------------------------------------

TORCH_INFO = ("import json, torch; c = torch.cuda.is_available(); "
              "print(json.dumps({'torch': torch.__version__, 'torch_cuda': torch.version.cuda, "
              "'torch_cuda_available': c, "
              "'torch_device': torch.cuda.get_device_name(0) if c else None}))")


def cmd_machine(args):
    out = {"python": platform.python_version(), "platform": platform.platform(),
           "cpus": os.cpu_count(), "device": args.device,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        import numpy
        out["numpy"] = numpy.__version__
    except ImportError as err:
        out["numpy"] = f"missing ({err})"
    try:
        import scratchae
        out["scratchae"] = scratchae.__version__
    except Exception as err:    # a missing dependency (array-api-compat without --wheels)
        out["scratchae"] = f"import failed: {type(err).__name__}: {err}"
    for query in ("name,driver_version,memory.total,compute_cap", "name,driver_version,memory.total"):
        try:
            p = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as err:
            out["nvidia_smi"] = f"not available ({type(err).__name__})"
            break
        if p.returncode == 0 and p.stdout.strip():
            gpus = []
            for line in p.stdout.strip().splitlines():
                vals = [v.strip() for v in line.split(",")]
                gpus.append(dict(zip(query.split(","), vals)))
            out["gpus"] = gpus
            out["nvidia_smi"] = "ok"
            break
        out["nvidia_smi"] = (p.stderr or p.stdout).strip()[:200] or f"exit status {p.returncode}"
    try:
        import cupy
        out["cupy"] = cupy.__version__
        out["cuda_runtime"] = _cuda_version(cupy.cuda.runtime.runtimeGetVersion())
        out["cuda_driver_api"] = _cuda_version(cupy.cuda.runtime.driverGetVersion())
        out["cupy_is_available"] = bool(cupy.is_available())
        if out["cupy_is_available"]:
            name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
            out["cupy_device"] = name.decode() if isinstance(name, bytes) else str(name)
    except ImportError:
        out["cupy"] = "not installed"
    except Exception as err:
        out.setdefault("cupy", "error")
        out["cupy_error"] = f"{type(err).__name__}: {err}"[:300]
    try:
        p = subprocess.run([sys.executable, "-c", TORCH_INFO], capture_output=True, text=True,
                           timeout=max(5.0, min(60.0, args.budget_obj.left() - 1)))
        if p.returncode == 0:
            out.update(json.loads(p.stdout.strip().splitlines()[-1]))
        else:
            out["torch"] = "import failed: " + (p.stderr.strip().splitlines() or ["?"])[-1][:200]
    except (subprocess.TimeoutExpired, ValueError, IndexError) as err:
        out["torch"] = f"unknown ({type(err).__name__})"
    write_json(args.out / "machine.json", out)
    print(json.dumps(out, indent=1))
    return 0


def _cuda_version(v):
    v = int(v)
    return f"{v // 1000}.{(v % 1000) // 10}"


# --- parity -----------------------------------------------------------------------------------

def cmd_parity(args):
    dev, budget = args.device, args.budget_obj
    work = args.out / "parity"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "parity.log"
    result = {"device": dev, "rtol": PARITY_RTOL_FLOAT32,
              "data": "the MNIST subset bundled with scratchae (5,000 train / 1,000 test images)",
              "models": {}, "portability": {}, "resume": {}}
    print(f"parity: float32 tolerance PARITY_RTOL_FLOAT32 = {PARITY_RTOL_FLOAT32:g} (relative, "
          f"epoch-mean losses after one epoch), cpu vs {dev}", flush=True)
    path = args.out / "parity.json"
    ok = True

    def train(kind, device, out_dir, limit, extra=(), epochs=1):
        cmd = [sys.executable, "-m", "scratchae", "train", kind, "--epochs", str(epochs), "--no-figures",
               "--quiet", "--seed", "0", "--out", out_dir, "--device", device, "--force",
               *data_args(None)]
        if limit:
            cmd += ["--limit", str(limit)]
        return run_cmd(cmd + list(extra), log, budget)

    for kind in KINDS:
        limit = QUICK_PARITY_LIMIT if args.quick else PARITY_LIMIT[kind]
        rec = {"limit": limit, "images": limit or 5000}
        rec["cpu"] = train(kind, "cpu", work / f"{kind}_cpu", limit)
        rec["device"] = train(kind, dev, work / f"{kind}_device", limit)
        ea, eb = metrics_epochs(work / f"{kind}_cpu"), metrics_epochs(work / f"{kind}_device")
        if rec["cpu"]["rc"] == 0 and rec["device"]["rc"] == 0 and ea and eb:
            cmp = compare_histories(ea, eb)
            rec.update(max_rel_diff=cmp["max_rel_diff"], worst=cmp["worst"], missing=cmp["missing"],
                       diffs={k: v["rel"] for k, v in cmp["diffs"].items()},
                       cpu_test_loss=ea[-1].get("test_loss"), device_test_loss=eb[-1].get("test_loss"))
            rec["pass"] = (cmp["max_rel_diff"] is not None and not cmp["missing"]
                           and cmp["max_rel_diff"] <= PARITY_RTOL_FLOAT32)
        else:
            rec["pass"] = False
            rec["error"] = rec["device"]["error"] or rec["cpu"]["error"] or "metrics.json missing"
        ok &= rec["pass"]
        result["models"][kind] = rec
        write_json(path, result)
        print(f"  {kind:3s} cpu vs {dev}: " + (f"max rel diff {rec['max_rel_diff']:.2e} ({rec['worst']}) "
              f"-> {'pass' if rec['pass'] else 'FAIL'}" if "max_rel_diff" in rec
              else f"FAILED: {rec['error']}"), flush=True)

    # checkpoints across devices: the VAE trained on the device, evaluated on the cpu, and
    # the one trained on the cpu, evaluated on the device
    port = result["portability"]
    evals = {}
    for name, run, device in (("device_ckpt_on_cpu", "vae_device", "cpu"),
                              ("cpu_ckpt_on_device", "vae_cpu", dev)):
        ckpt = work / run / "checkpoint.npz"
        js = work / f"evaluate_{name}.json"
        r = run_cmd([sys.executable, "-m", "scratchae", "evaluate", ckpt, "--device", device,
                     "--iwae-k", "0", "--probe-epochs", "1", "--json", js, *data_args(None)], log, budget)
        got = read_json(js) if r["rc"] == 0 else None
        r["test_loss"] = got["test"]["loss"] if got else None
        r["linear_probe_accuracy"] = (got.get("linear_probe") or {}).get("accuracy") if got else None
        port[name] = r
        evals[name] = r["test_loss"]
    trained = {"vae_cpu": metrics_epochs(work / "vae_cpu"), "vae_device": metrics_epochs(work / "vae_device")}
    checks = {}
    pairs = (("device ckpt on cpu vs cpu ckpt on device", evals["device_ckpt_on_cpu"], evals["cpu_ckpt_on_device"]),
             ("cpu ckpt: on device vs its cpu training run's test_loss", evals["cpu_ckpt_on_device"],
              trained["vae_cpu"][-1]["test_loss"] if trained["vae_cpu"] else None),
             ("device ckpt: on cpu vs its device training run's test_loss", evals["device_ckpt_on_cpu"],
              trained["vae_device"][-1]["test_loss"] if trained["vae_device"] else None))
    for label, a, b in pairs:
        if a is None or b is None:
            checks[label] = {"a": a, "b": b, "rel": None, "pass": False}
        else:
            r = rel_diff(a, b)
            checks[label] = {"a": a, "b": b, "rel": r, "pass": r <= PARITY_RTOL_FLOAT32}
    port["checks"] = checks
    port["pass"] = all(c["pass"] for c in checks.values())
    ok &= port["pass"]
    write_json(path, result)
    for label, c in checks.items():
        print(f"  evaluate, {label}: " + (f"{c['a']:.4f} vs {c['b']:.4f}, rel {c['rel']:.2e} -> "
              f"{'pass' if c['pass'] else 'FAIL'}" if c["rel"] is not None else "FAILED (no number)"),
              flush=True)

    # --resume of the cpu run on the device for one more epoch, beside the same on the cpu
    res = result["resume"]
    limit = QUICK_PARITY_LIMIT if args.quick else PARITY_LIMIT["vae"]
    src = work / "vae_cpu" / "checkpoint.npz"
    for name, device in (("on_device", dev), ("on_cpu", "cpu")):
        # --epochs is the total to reach: the saved epoch, then one more
        res[name] = train("vae", device, work / f"vae_resume_{name}", limit, ("--resume", src), epochs=2)
        res[name]["epochs"] = metrics_epochs(work / f"vae_resume_{name}")
    orig = trained["vae_cpu"]
    on_dev, on_cpu = res["on_device"]["epochs"], res["on_cpu"]["epochs"]
    res["pass"] = False
    if res["on_device"]["rc"] == 0 and on_dev and len(on_dev) == 2 and orig:
        first = compare_histories(orig, on_dev[:1])
        res["epoch1_kept_max_rel_diff"] = first["max_rel_diff"]
        res["pass"] = first["max_rel_diff"] == 0.0
        if on_cpu and len(on_cpu) == 2:
            second = compare_histories(on_cpu[1:], on_dev[1:])
            res["epoch2_cpu_vs_device_max_rel_diff"] = second["max_rel_diff"]
            res["epoch2_worst"] = second["worst"]
            res["epoch2_test_loss"] = {"cpu": on_cpu[1].get("test_loss"), "device": on_dev[1].get("test_loss")}
            res["pass"] &= second["max_rel_diff"] is not None and second["max_rel_diff"] <= PARITY_RTOL_FLOAT32
        else:
            res["pass"] = False
    elif res["on_device"]["rc"] == 0:
        res["error"] = f"the resumed run has {len(on_dev or [])} epochs, expected 2"
    for name in ("on_device", "on_cpu"):
        res[name].pop("epochs", None)
    ok &= res["pass"]
    write_json(path, result)
    print(f"  --resume the cpu VAE on {dev} for 1 more epoch: "
          + ("pass" if res["pass"] else "FAIL") + "".join(
              f", {k} {res[k]:.2e}" for k in ("epoch1_kept_max_rel_diff", "epoch2_cpu_vs_device_max_rel_diff")
              if res.get(k) is not None) + (f" ({res['on_device']['error']})" if res["on_device"]["error"] else ""),
          flush=True)
    result["pass"] = bool(ok)
    write_json(path, result)
    print(f"parity: {'PASS' if ok else 'FAIL'} (written {path})")
    return 0 if ok else 1


# --- speed ------------------------------------------------------------------------------------

def cmd_speed(args):
    dev, budget = args.device, args.budget_obj
    work = args.out / "speed"
    work.mkdir(parents=True, exist_ok=True)
    bench_dev = dev if is_gpu(dev) or dev == "cpu" else "cpu"
    notes = []
    if bench_dev != dev:
        notes.append(f"bench_vae.py compares with PyTorch, which has no {dev} device: measured on --device cpu")
    repeats = 1 if args.quick else 3
    js = work / "bench_vae.json"
    opts = ["--device", bench_dev, "--repeats", str(repeats), "--epochs", "1", "--json", js,
            *data_args(args.data)]
    if args.quick:
        opts += ["--memory-steps", "20", "--pause", "0.2"]
    cmd = [sys.executable, BENCH_VAE, *opts]
    print(f"speed: {shlex.join(str(c) for c in cmd)}", flush=True)
    run = run_cmd(cmd, work / "bench_vae.log", budget)
    out = {"device": dev, "bench_device": bench_dev, "repeats": repeats, "data": data_label(args.data),
           "notes": notes, "run": run}
    got = read_json(js) if run["rc"] == 0 else None
    if got:
        out.update(summarize_bench(got))
    elif run["rc"] == 0:
        run["error"] = "bench_vae.py wrote no JSON"
    write_json(args.out / "speed.json", out)
    if got:
        print(f"speed: scratchae {out['scratchae_s_per_epoch']:.3f} s/epoch, torch "
              f"{out['torch_s_per_epoch']:.3f} s/epoch, torch/scratchae {out['ratio_torch_over_scratchae']:.3f} "
              f"(>= 1: scratchae no slower)")
    else:
        print(f"speed: FAILED: {run['error']}")
    return 0 if got else 1


def _median(v):
    v = sorted(v)
    n = len(v)
    return None if n == 0 else (v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2]))


def summarize_bench(got):
    res = got.get("results", {})
    s = [r["seconds"] for r in res.get("scratchae", [])]
    t = [r["seconds"] for r in res.get("torch", [])]
    out = {"scratchae_s_per_epoch": _median(s), "torch_s_per_epoch": _median(t),
           "scratchae_seconds": s, "torch_seconds": t,
           "scratchae_test_loss": [r["test_loss"] for r in res.get("scratchae", [])],
           "torch_test_loss": [r["test_loss"] for r in res.get("torch", [])]}
    if s and t:
        out["ratio_torch_over_scratchae"] = out["torch_s_per_epoch"] / out["scratchae_s_per_epoch"]
        out["per_repeat_ratio_median"] = _median([b / a for a, b in zip(s, t)])
    mem = got.get("memory", {}) or {}
    for fw in ("scratchae", "torch"):
        m = mem.get(fw) or {}
        out[f"{fw}_device_peak_mb"] = m.get("device_peak_mb")
        out[f"{fw}_peak_rss_mb"] = m.get("peak_mb")
        if m.get("error"):
            out[f"{fw}_memory_error"] = m["error"]
    out["rates_gflops"] = got.get("rates")
    out["achieved_gflops"] = got.get("achieved")
    out["breakdown_ms_per_step"] = got.get("breakdown_ms_per_step")
    return out


# --- iwae -------------------------------------------------------------------------------------

def cmd_iwae(args):
    dev, budget = args.device, args.budget_obj
    work = args.out / "iwae"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "iwae.log"
    k = args.iwae_k or (50 if args.quick else 5000)
    out = {"device": dev, "k": k, "data": data_label(args.data), "pass": False}
    path = args.out / "iwae.json"
    run_dir = work / "vae"
    train = [sys.executable, "-m", "scratchae", "train", "vae", "--epochs", "1", "--no-figures", "--quiet",
             "--seed", "0", "--out", run_dir, "--device", dev, "--force", *data_args(args.data)]
    out["train"] = run_cmd(train, log, budget)
    m = metrics_epochs(run_dir)
    out["train_test_loss"] = m[-1].get("test_loss") if m else None
    write_json(path, out)
    if out["train"]["rc"] != 0:
        print(f"iwae: training FAILED: {out['train']['error']}")
        return 1
    ckpt = run_dir / "checkpoint.npz"
    print(f"iwae: trained {ckpt} in {out['train']['seconds']:.1f} s; IWAE-{k} in-process", flush=True)
    try:
        inproc = iwae_in_process(ckpt, dev, k, args.iwae_examples, args.data, budget,
                                 check_at=args.cli_examples, seed=0)
    except Exception as err:       # record, then go on to the summary
        import traceback
        with open(log, "a") as f:
            traceback.print_exc(file=f)
        out["in_process"] = {"error": f"{type(err).__name__}: {err}"[:400]}
        write_json(path, out)
        print(f"iwae: in-process evaluation FAILED: {out['in_process']['error']}")
        return 1
    out["in_process"] = inproc
    out["nll"], out["examples"], out["seconds"] = inproc["nll"], inproc["examples"], inproc["seconds"]
    out["complete"] = inproc["examples"] == inproc["examples_asked"]
    out["pass"] = math.isfinite(inproc["nll"]) if inproc["examples"] else False
    write_json(path, out)
    print(f"iwae: IWAE-{k} NLL {inproc['nll']:.3f} nats on {inproc['examples']} of {inproc['examples_asked']} "
          f"test images in {inproc['seconds']:.1f} s" + (
              f"; memory pool peak {inproc['pool_peak_mb']:.0f} MB" if inproc.get("pool_peak_mb") is not None else ""),
          flush=True)

    # the command itself on the first few examples: the same number as the in-process loop
    m_cli = inproc.get("check_examples")
    if m_cli and inproc.get("check_nll") is not None:
        js = work / "evaluate_cli.json"
        r = run_cmd([sys.executable, "-m", "scratchae", "evaluate", ckpt, "--device", dev, "--iwae-k", str(k),
                     "--iwae-examples", str(m_cli), "--probe-epochs", "1", "--json", js,
                     *data_args(args.data)], log, budget,
                    min_seconds=inproc.get("cli_reserve_s", CLI_START_S))
        got = read_json(js) if r["rc"] == 0 else None
        r["examples"] = m_cli
        r["in_process_nll"] = inproc["check_nll"]
        if got:
            r["nll"] = (got.get("iwae") or {}).get("nll")
            r["linear_probe_accuracy"] = (got.get("linear_probe") or {}).get("accuracy")
            r["test_loss"] = got.get("test", {}).get("loss")
            r["rel"] = rel_diff(r["nll"], inproc["check_nll"]) if r["nll"] is not None else None
            r["pass"] = r["rel"] is not None and r["rel"] <= PARITY_RTOL_FLOAT32
            out["pass"] &= r["pass"]
            print(f"iwae: the CLI on the first {m_cli}: {r['nll']:.4f} vs in-process {inproc['check_nll']:.4f} "
                  f"(rel {r['rel']:.1e}) -> {'pass' if r['pass'] else 'FAIL'}")
        elif r["rc"] == "not run":
            print(f"iwae: the CLI cross-check was not run ({r['error']})")
        else:
            r["pass"] = False
            out["pass"] = False
            print(f"iwae: the CLI cross-check FAILED: {r['error']}")
        out["cli"] = r
    write_json(path, out)
    return 0 if out["pass"] else 1


#: seconds ``scratchae evaluate`` needs besides its IWAE loop (start, data, 1 probe epoch)
CLI_START_S = 12.0


def iwae_in_process(ckpt, device, k, examples, data, budget, check_at=200, seed=0, batch=100):
    """The IWAE part of ``scratchae evaluate`` (cli.cmd_evaluate), in this process, so the
    device memory can be read; stops early (and says so) when the budget runs out."""
    from scratchae import backend as B
    with B.resolve(device).context():       # cuda:N: GPU N current (and its memory read)
        return _iwae_in_process(ckpt, device, k, examples, data, budget, check_at, seed, batch)


def _iwae_in_process(ckpt, device, k, examples, data, budget, check_at, seed, batch):
    from scratchae import backend as B
    from scratchae import evaluation
    from scratchae.runs import load_run
    model, _rngs, _history, settings = load_run(str(ckpt), device=device)
    x_test = _test_images(data or settings.get("data") or str(SUBSET), settings)
    be = B.resolve(device)
    gpu = is_gpu(device)
    cupy = None
    if gpu:
        import cupy
    rng = B.Generator(seed, device=be)
    n = len(x_test) if not examples else min(examples, len(x_test))
    check_at = min(check_at, n) if check_at else 0
    res = {"examples_asked": n, "k": k, "batch": batch, "seed": seed}
    if gpu:
        pool = cupy.get_default_memory_pool()
        res["pool_before_mb"] = pool.total_bytes() / 2**20
        free, total = cupy.cuda.runtime.memGetInfo()
        res["device_used_before_mb"] = (total - free) / 2**20
        res["device_total_mb"] = total / 2**20
    B.synchronize(be)
    total_ll, done, peak = 0.0, 0, 0.0
    t0 = time.perf_counter()
    per_batch = 0.0
    for s in range(0, n, batch):
        xb = be.asarray(x_test[s:min(n, s + batch)], model.dtype)
        total_ll += B.to_scalar(be.xp.sum(evaluation.iwae_bound(model, xb, k, rng)))
        done = min(n, s + batch)
        if gpu:
            peak = max(peak, pool.total_bytes() / 2**20)
        if check_at and done == check_at:
            res["check_examples"], res["check_nll"] = done, -total_ll / done
        elapsed = time.perf_counter() - t0
        per_batch = elapsed / (done / batch)
        # what the CLI cross-check will need, if time is left once the whole set is done
        res["cli_reserve_s"] = CLI_START_S + 1.2 * per_batch * math.ceil(check_at / batch)
        if done < n and budget.left() < per_batch * 1.5 + 3:
            res["stopped"] = f"the step's budget: {done} of {n} examples in {elapsed:.1f} s"
            break
    B.synchronize(be)
    res["seconds"] = time.perf_counter() - t0
    res["examples"] = done
    res["nll"] = -total_ll / done if done else math.nan
    if check_at and "check_nll" not in res:
        res["check_examples"] = None
    if gpu:
        free, total = cupy.cuda.runtime.memGetInfo()
        res["pool_peak_mb"] = peak
        res["pool_used_after_mb"] = pool.used_bytes() / 2**20
        res["device_used_after_mb"] = (total - free) / 2**20
    return res


def _test_images(data, settings):
    """x_test exactly as cli.cmd_evaluate prepares it."""
    from scratchae import cli
    ds = cli._load_data(data, settings.get("dataset", "mnist"))
    return cli._prepare(ds, settings.get("binarize", "none"), settings.get("seed", 0))[1]


# --- summarize --------------------------------------------------------------------------------

def read_steps(out):
    """steps.tsv of gpu_check.sh: name -> {status, rc, seconds, budget, command}."""
    steps = {}
    try:
        lines = (out / "steps.tsv").read_text().splitlines()
    except OSError:
        return steps
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) < 5:
            continue
        name, status, rc, seconds, budget = parts[:5]
        steps[name] = {"status": status, "rc": rc, "seconds": _num(seconds), "budget": _num(budget),
                       "command": parts[5] if len(parts) > 5 else ""}
    return steps


def _num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_junit(path, log=None):
    """Counts of a pytest junit xml; else, from the -q progress dots of the log (a run that
    was stopped before writing the xml)."""
    try:
        root = ET.parse(path).getroot()
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        c = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
        c["passed"] = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
        c["source"] = "junit xml"
        return c
    except (OSError, ET.ParseError, ValueError):
        pass
    if log is None:
        return None
    try:
        text = pathlib.Path(log).read_text(errors="replace")
    except OSError:
        return None
    prog = "".join(m.group(1) for m in re.finditer(r"^([.FEsxX]+)\s*(?:\[\s*\d+%\])?\s*$", text, re.M))
    if not prog:
        return None
    c = {"passed": prog.count(".") + prog.count("X"), "failures": prog.count("F"), "errors": prog.count("E"),
         "skipped": prog.count("s") + prog.count("x")}
    c["tests"] = sum(c.values())
    c["source"] = "progress in the log (no junit xml: stopped early?)"
    return c


def _f(v, spec=".3f", none="-"):
    if v is None:
        return none
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def _step_status(steps, name):
    st = steps.get(name)
    if not st:
        return "not run"
    return st["status"]


def build_summary(out):
    steps = read_steps(out)
    machine = read_json(out / "machine.json") or {}
    parity = read_json(out / "parity.json")
    speed = read_json(out / "speed.json")
    iwae = read_json(out / "iwae.json")
    tests = {step: read_junit(out / xml, out / "logs" / f"{step}.log") for step, xml in GPU_TESTS_XML.items()}
    summary = {"machine": machine, "steps": {}, "tests": tests, "parity": parity, "speed": speed,
               "iwae": iwae, "rtol": PARITY_RTOL_FLOAT32}
    for name, _ in STEPS:
        default = {"status": "this step" if name == "summarize" else "not run"}
        summary["steps"][name] = dict(steps.get(name) or default)
    summary["ok"] = all(summary["steps"][n]["status"] in ("ok", "skipped (no --wheels)")
                        for n, _ in STEPS if n != "summarize")
    return summary


def _not_there(steps, name, what):
    """How a figure whose step left no results reads."""
    st = _step_status(steps, name)
    if st == "not run":
        return f"not run ({what})"
    return f"failed: {st}, no results ({what})"


def render_md(s):
    m, steps = s["machine"], s["steps"]
    lines = []
    gpu = (m.get("gpus") or [{}])[0]
    dev = m.get("device", "?")
    lines.append(f"## GPU check{(', ' + m['date'][:10]) if m.get('date') else ''}: `benchmarks/gpu_check.sh`")
    lines.append("")
    lines.append("| machine | |")
    lines.append("|---|---|")
    lines.append(f"| GPU | {gpu.get('name') or m.get('cupy_device') or 'none'}"
                 + (f", {gpu['memory.total']}" if gpu.get("memory.total") else "") + " |")
    lines.append(f"| NVIDIA driver | {gpu.get('driver_version') or m.get('nvidia_smi') or '-'} |")
    lines.append(f"| CuPy / CUDA runtime | {m.get('cupy', '-')} / {m.get('cuda_runtime', '-')} |")
    lines.append(f"| PyTorch / its CUDA | {m.get('torch', '-')} / {m.get('torch_cuda') or '-'} |")
    lines.append(f"| Python / NumPy / scratchae | {m.get('python', '-')} / {m.get('numpy', '-')} / "
                 f"{m.get('scratchae', '-')} |")
    lines.append(f"| CPUs | {m.get('cpus', '-')} |")
    lines.append(f"| device | `{dev}` |")
    lines.append("")
    lines.append("| step | status | seconds | budget (s) |")
    lines.append("|---|---|---|---|")
    for name, what in STEPS:
        st = steps[name]
        lines.append(f"| {name}: {what} | {_cell(st['status'])} | {_f(st.get('seconds'), '.1f')} | "
                     f"{_f(st.get('budget'), '.0f')} |")
    lines.append("")
    lines.append("| what | measured | command |")
    lines.append("|---|---|---|")
    # tests
    for step, label, files in (("tests_core", "gpu tests of the CuPy-only lines and parity", " ".join(CORE_TESTS)),
                               ("tests", "every other gpu-marked test", "tests (the files above left out)")):
        t = (s["tests"] or {}).get(step)
        if t:
            partial = _step_status(steps, step).startswith("TIMEOUT")
            lines.append(f"| {label} | {t['passed']} passed, {t['failures']} failed, {t['errors']} errors, "
                         f"{t['skipped']} skipped" + ("" if t["source"] == "junit xml" else f" ({t['source']})")
                         + (" (**stopped by its budget**: the tests run so far)" if partial else "")
                         + f" | `HYPOTHESIS_PROFILE=dev python3 -m pytest -m gpu {files}` |")
        else:
            lines.append(f"| {label} | {_not_there(steps, step, 'no junit xml')} | "
                         f"`python3 -m pytest -m gpu {files}` |")
    # parity
    p = s["parity"]
    rtol = s["rtol"]
    pdev = p.get("device", dev) if p else dev
    if p:
        for kind in KINDS:
            rec = p.get("models", {}).get(kind)
            if rec is None:
                lines.append(f"| parity {kind}: cpu vs {pdev}, 1 epoch | not run | |")
                continue
            what = (f"max rel diff {_f(rec.get('max_rel_diff'), '.1e')} ({rec.get('worst')}); "
                    f"test loss {_f(rec.get('cpu_test_loss'), '.4f')} vs {_f(rec.get('device_test_loss'), '.4f')}; "
                    f"{'pass' if rec.get('pass') else '**FAIL**'} (rtol {rtol:g})"
                    if rec.get("max_rel_diff") is not None else _failed(rec.get("error")))
            lines.append(f"| parity {kind}: cpu vs {pdev}, 1 epoch, {rec.get('images')} images | {what} | "
                         f"`scratchae train {kind} --epochs 1 --seed 0 --device cpu\\|{pdev}"
                         + (f" --limit {rec['limit']}" if rec.get("limit") else "") + "` |")
        port = p.get("portability") or {}
        for label, c in (port.get("checks") or {}).items():
            what = (f"{_f(c['a'], '.4f')} vs {_f(c['b'], '.4f')}, rel {_f(c['rel'], '.1e')}; "
                    f"{'pass' if c['pass'] else '**FAIL**'}" if c.get("rel") is not None else "**FAILED** (no number)")
            lines.append(f"| VAE checkpoint portability: {label} | {what} | `scratchae evaluate CKPT --device ...` |")
        if not port:
            lines.append("| VAE checkpoint portability | not run | |")
        r = p.get("resume") or {}
        if r:
            on = r.get("on_device", {})
            what = ("pass" if r.get("pass") else "**FAIL**") + (
                f": epoch 1 kept (rel {_f(r.get('epoch1_kept_max_rel_diff'), '.0e')}), epoch 2 cpu vs device "
                f"max rel diff {_f(r.get('epoch2_cpu_vs_device_max_rel_diff'), '.1e')}"
                if r.get("epoch1_kept_max_rel_diff") is not None else "") + (
                f" ({_cell(on.get('error'))})" if on.get("error") else "")
            lines.append(f"| `--resume` the cpu VAE on {pdev}, 1 more epoch | {what} | "
                         f"`scratchae train vae --epochs 2 --resume vae_cpu/checkpoint.npz --device {pdev}` |")
        else:
            lines.append(f"| `--resume` the cpu VAE on {pdev} | not run | |")
    else:
        lines.append(f"| parity, portability, --resume | {_not_there(steps, 'parity', 'no parity.json')} | |")
    # speed
    sp = s["speed"]
    if sp and sp.get("scratchae_s_per_epoch") is not None:
        n = sp.get("repeats")
        lines.append(f"| VAE s/epoch on {sp['bench_device']}, scratchae vs PyTorch (median of {n}) | "
                     f"{_f(sp['scratchae_s_per_epoch'])} vs {_f(sp['torch_s_per_epoch'])}; torch/scratchae "
                     f"{_f(sp.get('ratio_torch_over_scratchae'))} (>= 1: scratchae no slower) | "
                     f"`python3 benchmarks/bench_vae.py --device {sp['bench_device']} --repeats {n} --epochs 1` |")
        lines.append(f"| VAE test loss after 1 epoch, scratchae vs PyTorch | "
                     f"{', '.join(_f(v) for v in sp.get('scratchae_test_loss', []))} vs "
                     f"{', '.join(_f(v) for v in sp.get('torch_test_loss', []))} | |")
        if is_gpu(sp["bench_device"]):
            lines.append(f"| device memory peak while training, scratchae vs PyTorch (MB) | "
                         f"{_f(sp.get('scratchae_device_peak_mb'), '.0f', sp.get('scratchae_memory_error', '-'))} vs "
                         f"{_f(sp.get('torch_device_peak_mb'), '.0f', sp.get('torch_memory_error', '-'))} | "
                         "`device_peak_mb` of bench_vae.py |")
        for note in sp.get("notes", []):
            lines.append(f"| speed: note | {_cell(note)} | |")
    elif sp:
        lines.append(f"| VAE s/epoch, scratchae vs PyTorch | **FAILED**: {_cell(sp.get('run', {}).get('error'))} | |")
    else:
        lines.append(f"| VAE s/epoch, scratchae vs PyTorch | {_not_there(steps, 'speed', 'no speed.json')} | |")
    # iwae
    iw = s["iwae"]
    if iw and iw.get("nll") is not None:
        ip = iw.get("in_process", {})
        part = "" if iw.get("complete") else f" (**stopped early**: {_cell(ip.get('stopped'))})"
        lines.append(f"| VAE 1 epoch on {iw['device']}: IWAE-{iw['k']} NLL on {iw['examples']} test images | "
                     f"{_f(iw['nll'])} nats in {_f(iw['seconds'], '.1f')} s{part}; test -ELBO "
                     f"{_f(iw.get('train_test_loss'))} | `scratchae evaluate CKPT --device {iw['device']} "
                     f"--iwae-k {iw['k']} --iwae-examples {ip.get('examples_asked')}` (in-process) |")
        if ip.get("pool_peak_mb") is not None:
            lines.append(f"| IWAE-{iw['k']}: CuPy memory pool peak / device memory in use after (MB) | "
                         f"{_f(ip['pool_peak_mb'], '.0f')} / {_f(ip.get('device_used_after_mb'), '.0f')} of "
                         f"{_f(ip.get('device_total_mb'), '.0f')} | `cupy.get_default_memory_pool().total_bytes()`, "
                         "`memGetInfo` |")
        c = iw.get("cli")
        if c:
            what = (f"{_f(c.get('nll'), '.4f')} vs {_f(c.get('in_process_nll'), '.4f')} in-process, rel "
                    f"{_f(c.get('rel'), '.1e')}; {'pass' if c.get('pass') else '**FAIL**'}"
                    if c.get("nll") is not None else f"not compared: {_cell(c.get('error'))}")
            lines.append(f"| IWAE-{iw['k']} through the CLI, first {c.get('examples')} test images | {what} | "
                         f"`scratchae evaluate CKPT --iwae-k {iw['k']} --iwae-examples {c.get('examples')}` |")
    elif iw:
        err = (iw.get("in_process") or {}).get("error") or (iw.get("train") or {}).get("error")
        lines.append(f"| VAE IWAE-{iw.get('k')} NLL | **FAILED**: {_cell(err)} | |")
    else:
        lines.append(f"| VAE IWAE NLL | {_not_there(steps, 'iwae', 'no iwae.json')} | |")
    lines.append("")
    data = (iw or sp or {}).get("data")
    if data:
        lines.append(f"Data for speed and IWAE: {data}. Parity: the bundled subset. "
                     f"Float32 parity tolerance `PARITY_RTOL_FLOAT32` = {rtol:g} (relative).")
    if not is_gpu(dev):
        lines.append(f"No-GPU stand-in run (`--device {dev}`): no GPU memory figures, "
                     "small sizes (`--quick`).")
    return "\n".join(lines) + "\n"


def _failed(error):
    """'**FAILED**: why', or '**not run**: why' for a sub-run the step's budget left out."""
    text = _cell(error)
    return f"**not run** ({text[len('not run: '):]})" if text.startswith("not run") else f"**FAILED**: {text}"


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def cmd_summarize(args):
    s = build_summary(args.out)
    md = render_md(s)
    write_json(args.out / "summary.json", s)
    (args.out / "summary.md").write_text(md)
    print(md)
    return 0


# --- main -------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("machine", "parity", "speed", "iwae", "summarize"))
    p.add_argument("--out", default="gpu_check_out", type=pathlib.Path)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or array_api_strict:device1")
    p.add_argument("--data", default=None, help="MNIST .npz for speed and iwae (default: the bundled subset)")
    p.add_argument("--quick", action="store_true", help="small sizes (1,000 images per parity run, "
                   "1 speed repeat, IWAE k = 50)")
    p.add_argument("--budget", type=float, default=_env_budget(),
                   help="seconds this step may take (default: $GPU_CHECK_BUDGET_S, else no limit)")
    p.add_argument("--iwae-k", type=int, default=None, help="default 5000 (50 with --quick)")
    p.add_argument("--iwae-examples", type=int, default=None, help="default: the whole test set")
    p.add_argument("--cli-examples", type=int, default=200,
                   help="test images the CLI cross-check of the IWAE number uses (default 200)")
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    if args.data:
        args.data = str(pathlib.Path(args.data).resolve())
    args.budget_obj = Budget(args.budget)
    return args


def _env_budget():
    try:
        return float(os.environ["GPU_CHECK_BUDGET_S"])
    except (KeyError, ValueError):
        return None


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return {"machine": cmd_machine, "parity": cmd_parity, "speed": cmd_speed, "iwae": cmd_iwae,
            "summarize": cmd_summarize}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())

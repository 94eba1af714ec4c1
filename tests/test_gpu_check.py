"""benchmarks/gpu_check.sh and gpu_check.py: the plan, the no-GPU exit, and the summary.

Fast (a few seconds): nothing here trains a model; the summary is built from fabricated
step files shaped like the ones the steps write.
"""
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from scratchae import backend as B

ROOT = pathlib.Path(__file__).resolve().parents[1]
SH = ROOT / "benchmarks" / "gpu_check.sh"
PY = ROOT / "benchmarks" / "gpu_check.py"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


def _load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gc = _load_gpu_check()


def _env():
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("GPU_CHECK_BUDGET_S", None)
    return env


def _sh(*args, timeout=60):
    return subprocess.run(["bash", str(SH), *args], capture_output=True, text=True, env=_env(),
                          cwd=ROOT, timeout=timeout)


def test_dry_run_lists_every_step_with_a_budget_within_8_minutes(tmp_path):
    out = tmp_path / "out"
    res = _sh("--dry-run", "--out", str(out), "--wheels", str(tmp_path / "w"), "--data", "x.npz")
    assert res.returncode == 0, res.stderr
    plan = re.findall(r"^\s*\[(\d+)/(\d+)\]\s+(\w+)\s+(\d+) s\s+(.+)$", res.stdout, re.M)
    names = [p[2] for p in plan]
    assert names == [name for name, _ in gc.STEPS], res.stdout
    budgets = {p[2]: int(p[3]) for p in plan}
    assert all(b > 0 for b in budgets.values()), budgets
    assert sum(budgets.values()) <= 480, budgets
    cmds = {p[2]: p[4] for p in plan}
    assert "pip install -q --no-index --no-deps --no-compile --target" in cmds["wheels"]
    assert "-m scratchae doctor" in cmds["doctor"]
    assert "pytest -m gpu" in cmds["tests"] and "HYPOTHESIS_PROFILE=dev" in cmds["tests"]
    assert "--junitxml" in cmds["tests"] and "-p no:cacheprovider" in cmds["tests"]
    for core in gc.CORE_TESTS:            # the CuPy-only lines' tests run first, and once
        assert core in cmds["tests_core"] and f"--ignore={core}" in cmds["tests"]
    for step in ("parity", "speed", "iwae"):
        assert f"gpu_check.py {step}" in cmds[step] and "--device cuda" in cmds[step]
    assert "--data" in cmds["speed"] and "--data" in cmds["iwae"]
    assert "--data" not in cmds["parity"]                # parity: always the bundled subset
    assert not out.exists(), "a dry run writes nothing"


def test_dry_run_of_the_stand_in_is_quick_and_asks_for_no_gpu(tmp_path):
    res = _sh("--dry-run", "--device", "array_api_strict:device1", "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    assert "--device array_api_strict:device1 --quick" in res.stdout
    assert "GPU: not needed" in res.stdout


@pytest.mark.skipif(B.cuda_available(), reason="a CUDA GPU is visible here")
def test_without_a_gpu_it_exits_2_with_one_line(tmp_path):
    out = tmp_path / "out"
    res = _sh("--out", str(out))
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert "no CUDA GPU is visible" in lines[0]
    assert res.stdout == ""
    assert not out.exists()


def test_bad_argument_exits_2():
    res = _sh("--no-such-flag")
    assert res.returncode == 2 and "unknown argument" in res.stderr


# --- summarize ----------------------------------------------------------------------------------

STEPS_TSV = """name\tstatus\trc\tseconds\tbudget\tcommand
wheels\tok\t0\t2.1\t15\tpython3 -m pip install ...
machine\tok\t0\t4.0\t15\tpython3 benchmarks/gpu_check.py machine
doctor\tFAILED (rc 2)\t2\t0.5\t20\tpython3 -m scratchae doctor
tests\tok\t0\t97.3\t140\tpython3 -m pytest -m gpu
parity\tFAILED (rc 1)\t1\t61.2\t90\tpython3 benchmarks/gpu_check.py parity
speed\tok\t0\t55.0\t110\tpython3 benchmarks/gpu_check.py speed
"""

MACHINE = {"python": "3.12.3", "numpy": "2.3.1", "scratchae": "0.1.0", "cpus": 16, "device": "cuda",
           "date": "2026-12-02T15:00:00+00:00",
           "gpus": [{"name": "NVIDIA H200", "driver_version": "580.65.06", "memory.total": "143771 MiB"}],
           "cupy": "14.0.1", "cuda_runtime": "13.0", "torch": "2.13.0+cu130", "torch_cuda": "13.0"}

JUNIT = ('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" '
         'failures="2" skipped="3" tests="243" time="90.1"></testsuite></testsuites>')


def _model(rel, ok=True):
    return {"limit": None, "images": 5000, "max_rel_diff": rel, "worst": "epoch1/test_kl", "missing": [],
            "cpu_test_loss": 160.12345, "device_test_loss": 160.12349, "pass": ok}


PARITY = {
    "device": "cuda", "rtol": 1e-4, "pass": False,
    "models": {"ae": _model(3.21e-7), "dae": _model(4.5e-6), "vae": _model(7.71e-5),
               "aae": dict(_model(2.5e-3, ok=False), limit=2000, images=2000)},
    "portability": {"checks": {"device ckpt on cpu vs cpu ckpt on device":
                               {"a": 160.1111, "b": 160.1122, "rel": 6.9e-6, "pass": True}},
                    "pass": True},
    "resume": {"on_device": {"rc": 0, "error": None}, "pass": True, "epoch1_kept_max_rel_diff": 0.0,
               "epoch2_cpu_vs_device_max_rel_diff": 1.21e-5},
}

SPEED = {"device": "cuda", "bench_device": "cuda", "repeats": 3, "data": "/data/mnist.npz (given with --data)",
         "notes": [], "run": {"rc": 0},
         "scratchae_s_per_epoch": 0.8766, "torch_s_per_epoch": 1.2344, "ratio_torch_over_scratchae": 1.408,
         "scratchae_test_loss": [130.5, 130.6, 130.7], "torch_test_loss": [131.1, 131.2, 131.3],
         "scratchae_device_peak_mb": 321.4, "torch_device_peak_mb": 654.3}


def _fabricate(out, *, iwae=None, tests_log=None):
    out.mkdir(parents=True, exist_ok=True)
    (out / "steps.tsv").write_text(STEPS_TSV)
    (out / "machine.json").write_text(json.dumps(MACHINE))
    (out / "parity.json").write_text(json.dumps(PARITY))
    (out / "speed.json").write_text(json.dumps(SPEED))
    if tests_log is None:
        (out / "gpu_tests.xml").write_text(JUNIT)
    else:
        (out / "logs").mkdir()
        (out / "logs" / "tests.log").write_text(tests_log)
    if iwae is not None:
        (out / "iwae.json").write_text(json.dumps(iwae))


def _summarize(out):
    res = subprocess.run([sys.executable, str(PY), "summarize", "--out", str(out)], capture_output=True,
                         text=True, env=_env(), cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    md = (out / "summary.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    return md, summary


def _row(md, start):
    rows = [ln for ln in md.splitlines() if ln.startswith("| " + start)]
    assert rows, f"no row starting {start!r} in\n{md}"
    return rows[0]


def test_summary_holds_every_figure_and_marks_a_missing_step_as_not_run(tmp_path):
    _fabricate(tmp_path)
    md, summary = _summarize(tmp_path)
    # machine
    for text in ("NVIDIA H200", "143771 MiB", "580.65.06", "14.0.1 / 13.0", "2.13.0+cu130 / 13.0", "3.12.3"):
        assert text in md, text
    # steps: status and seconds; iwae never ran
    assert re.search(r"\| doctor: .*\| FAILED \(rc 2\) \| 0\.5 \| 20 \|", md), md
    assert re.search(r"\| tests: .*\| ok \| 97\.3 \| 140 \|", md), md
    assert re.search(r"\| iwae: .*\| not run \| - \| - \|", md), md
    assert summary["steps"]["iwae"]["status"] == "not run" and summary["ok"] is False
    # figures
    assert "237 passed, 2 failed, 1 errors, 3 skipped" in _row(md, "every other gpu-marked test")
    assert "not run" in _row(md, "gpu tests of the CuPy-only lines")      # no xml, no log
    for kind, rel in (("ae", "3.2e-07"), ("dae", "4.5e-06"), ("vae", "7.7e-05")):
        row = _row(md, f"parity {kind}:")
        assert rel in row and "pass" in row and "FAIL" not in row, row
    aae = _row(md, "parity aae:")
    assert "2.5e-03" in aae and "**FAIL**" in aae and "--limit 2000" in aae and "2000 images" in aae
    port = _row(md, "VAE checkpoint portability")
    assert "160.1111 vs 160.1122" in port and "6.9e-06" in port
    assert "1.2e-05" in _row(md, "`--resume`")
    speed = _row(md, "VAE s/epoch on cuda")
    assert "0.877 vs 1.234" in speed and "1.408" in speed and "median of 3" in speed
    assert "321 vs 654" in _row(md, "device memory peak")
    assert "130.500, 130.600, 130.700 vs 131.100" in _row(md, "VAE test loss after 1 epoch")
    assert "not run" in _row(md, "VAE IWAE NLL")
    assert "/data/mnist.npz (given with --data)" in md
    assert "PARITY_RTOL_FLOAT32` = 0.0001" in md


def test_summary_of_a_finished_iwae_and_of_tests_stopped_before_their_xml(tmp_path):
    iwae = {"device": "cuda", "k": 5000, "data": "the bundled subset", "pass": True, "train_test_loss": 140.25,
            "nll": 101.2345, "examples": 10000, "seconds": 42.5, "complete": True,
            "in_process": {"examples_asked": 10000, "examples": 10000, "pool_peak_mb": 2345.6,
                           "device_used_after_mb": 3456.7, "device_total_mb": 143771.0},
            "cli": {"examples": 200, "nll": 99.8765, "in_process_nll": 99.8766, "rel": 1e-6, "pass": True}}
    _fabricate(tmp_path, iwae=iwae, tests_log="....F..s\n..E.s [ 100%]\n")
    (tmp_path / "steps.tsv").write_text(STEPS_TSV.replace("tests\tok\t0", "tests\tTIMEOUT after 140 s\t124")
                                        + "iwae\tok\t0\t50.0\t75\tpython3 benchmarks/gpu_check.py iwae\n")
    md, _ = _summarize(tmp_path)
    row = _row(md, "VAE 1 epoch on cuda: IWAE-5000 NLL on 10000 test images")
    assert "101.234 nats in 42.5 s" in row and "140.250" in row
    mem = _row(md, "IWAE-5000: CuPy memory pool peak")
    assert "2346 / 3457 of 143771" in mem
    assert "99.8765 vs 99.8766" in _row(md, "IWAE-5000 through the CLI")
    tests = _row(md, "every other gpu-marked test")
    assert "9 passed, 1 failed, 1 errors, 2 skipped" in tests and "stopped by its budget" in tests
    assert re.search(r"\| iwae: .*\| ok \| 50\.0 \| 75 \|", md), md


def test_summary_with_nothing_at_all_says_not_run(tmp_path):
    md, summary = _summarize(tmp_path)
    for name, _ in gc.STEPS[:-1]:
        assert re.search(rf"\| {name}: .*\| not run \|", md), name
    assert "not run" in _row(md, "every other gpu-marked test")
    assert "not run" in _row(md, "parity, portability")
    assert summary["ok"] is False


# --- the comparisons --------------------------------------------------------------------------

def test_histories_compare_every_train_and_test_term_and_ignore_seconds():
    a = [{"epoch": 1, "train_loss": 100.0, "test_loss": 90.0, "test_kl": 10.0, "seconds": 1.0}]
    b = [{"epoch": 1, "train_loss": 100.0, "test_loss": 90.009, "test_kl": 10.0, "seconds": 9.0}]
    cmp = gc.compare_histories(a, b)
    assert cmp["worst"] == "epoch1/test_loss"
    assert cmp["max_rel_diff"] == pytest.approx(1e-4, rel=1e-3)
    assert cmp["missing"] == []
    b[0].pop("test_kl")
    assert gc.compare_histories(a, b)["missing"] == ["epoch 1: test_kl"]
    assert gc.rel_diff(0.0, 0.0) == 0.0 and gc.rel_diff(float("nan"), 1.0) == float("inf")
    assert gc.PARITY_RTOL_FLOAT32 == 1e-4

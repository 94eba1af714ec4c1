"""The scratchae command, run as a user would: subprocesses in an empty HOME, no network."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from scratchae import backend as B
from scratchae import cli

SMALL = ["--epochs", "1", "--limit", "512", "--hidden", "32", "--quiet"]


def run(args, tmp_path, check=True):
    env = {k: v for k, v in os.environ.items() if k != "SCRATCHAE_DATA"}
    env["HOME"] = str(tmp_path / "home")
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run([sys.executable, "-m", "scratchae.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    proc = run(["train", "vae", "--out", "run", "--latent-dim", "2", *SMALL], tmp)
    return tmp, proc


def test_train_writes_checkpoint_metrics_and_figures(vae_run):
    tmp, proc = vae_run
    out = tmp / "run"
    assert (out / "checkpoint.npz").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    epoch = metrics["epochs"][0]
    for key in ("train_loss", "test_loss", "test_recon", "test_kl", "seconds"):
        assert np.isfinite(epoch[key]), key
    for png in ("loss_curves.png", "reconstructions.png", "samples.png", "latent.png", "manifold.png"):
        assert (out / png).stat().st_size > 1000, png


def test_fallback_to_bundled_subset_says_so_in_one_line(tmp_path):
    proc = run(["train", "ae", "--out", "r", "--epochs", "1", "--limit", "256", "--hidden", "16",
                "--no-figures"], tmp_path)
    lines = [l for l in proc.stderr.splitlines() if "bundled MNIST subset" in l]
    assert len(lines) == 1, proc.stderr
    assert "--data" in lines[0]                            # how to get the full data
    assert "fail" not in proc.stderr.lower() and "not found" not in proc.stderr.lower()


def test_evaluate_and_sample(vae_run):
    tmp, _ = vae_run
    proc = run(["evaluate", "run/checkpoint.npz", "--iwae-k", "20", "--iwae-examples", "20",
                "--probe-epochs", "1", "--json", "eval.json"], tmp)
    result = json.loads((tmp / "eval.json").read_text())
    assert result["model"] == "vae"
    assert np.isfinite(result["test"]["loss"])
    # IWAE_20 bounds log p(x) at least as tightly as the ELBO (on the same examples, up to noise)
    assert result["iwae"] == {"k": 20, "examples": 20, "nll": result["iwae"]["nll"]}
    assert result["iwae"]["nll"] < result["test"]["loss"] + 5.0
    assert "nats per example" in result["units"]["losses"]
    assert 0.0 <= result["linear_probe"]["accuracy"] <= 1.0
    run(["sample", "run/checkpoint.npz", "--n", "16", "--out", "s.png"], tmp)
    assert (tmp / "s.png").stat().st_size > 500


def test_pickled_npz_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    np.savez(tmp_path / "evil.npz", x=np.array([Evil()], dtype=object))
    proc = run(["evaluate", "evil.npz"], tmp_path, check=False)
    assert proc.returncode == 2
    assert not marker.exists()
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "pickle" in proc.stderr


def test_corrupted_checkpoint_is_refused_in_one_line(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    proc = run(["sample", "bad.npz"], tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(B.cuda_available(), reason="a GPU is present: --device cuda works here")
def test_cuda_without_cupy_is_one_clear_line(tmp_path):
    proc = run(["train", "vae", "--device", "cuda", "--out", "r"], tmp_path, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and ("cupy" in err[0].lower() or "gpu" in err[0].lower())


@pytest.mark.parametrize("kind", ["ae", "dae", "aae"])
def test_train_other_models(kind, tmp_path):
    extra = ["--latent-dim", "2"] if kind == "aae" else []
    run(["train", kind, "--out", "r", *SMALL, *extra], tmp_path)
    assert (tmp_path / "r" / "checkpoint.npz").is_file()
    assert (tmp_path / "r" / "reconstructions.png").is_file()
    if kind == "aae":
        assert (tmp_path / "r" / "latent.png").is_file()


def _history(path):
    return [{k: v for k, v in e.items() if k != "seconds"}
            for e in json.loads(pathlib.Path(path).read_text())["epochs"]]


@pytest.mark.parametrize("kind", ["vae", "aae"])
def test_resume_gives_the_same_history_as_an_uninterrupted_run(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SCRATCHAE_DATA", raising=False)
    common = ["--limit", "300", "--hidden", "16", "--latent-dim", "2", "--quiet", "--no-figures"]
    assert cli.main(["train", kind, "--epochs", "2", "--out", "full", *common]) == 0
    assert cli.main(["train", kind, "--epochs", "1", "--out", "half", *common]) == 0
    assert cli.main(["train", kind, "--epochs", "2", "--out", "resumed",     # 2 in all
                     "--resume", "half/checkpoint.npz", *common]) == 0
    full, resumed = _history("full/metrics.json"), _history("resumed/metrics.json")
    assert len(full) == len(resumed) == 2
    assert full == resumed                                    # bitwise, on NumPy
    a = np.load("full/checkpoint.npz")
    b = np.load("resumed/checkpoint.npz")
    keys = [k for k in a.files if k.startswith("model/")]
    assert keys and all(np.array_equal(a[k], b[k]) for k in keys)


def test_gradcheck_command_builtin_and_user_layer(tmp_path):
    proc = run(["gradcheck"], tmp_path)
    assert "all passed" in proc.stdout and "BatchNorm1d" in proc.stdout
    (tmp_path / "mylayer.py").write_text(
        "from scratchae import Module\n"
        "class Cube(Module):\n"
        "    def forward(self, x):\n"
        "        self.save_cache(x)\n"
        "        return x * x * x\n"
        "    def backward(self, dy):\n"
        "        (x,) = self.pop_cache()\n"
        "        return dy * 2 * x * x   # wrong: should be 3 x^2\n")
    proc = run(["gradcheck", "mylayer:Cube"], tmp_path, check=False)
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "0.666667 x numerical" in proc.stdout


def test_gradcheck_command_catches_bugs_hidden_by_a_shared_seed(tmp_path):
    """The command draws x from --seed 0; the checker's dy comes from its own stream, so a
    backward using dy where x belongs, and a transposed square dW, fail."""
    (tmp_path / "seedbugs.py").write_text(
        "from scratchae import Module, backend as B, layers as L\n"
        "class Square(Module):\n"
        "    def forward(self, x):\n"
        "        self.save_cache(x)\n"
        "        return x * x\n"
        "    def backward(self, dy):\n"
        "        self.pop_cache()\n"
        "        return 2 * dy * dy          # wrong: 2 * x * dy\n"
        "class Transposed(L.Linear):\n"
        "    def backward(self, dy):\n"
        "        (x,) = self.pop_cache()\n"
        "        self.grads['W'] += dy.T @ x     # wrong: x.T @ dy\n"
        "        self.grads['b'] += B.namespace(dy).sum(dy, axis=0)\n"
        "        return dy @ self.params['W'].T\n"
        "def square_linear():\n"
        "    return Transposed(5, 5, B.Generator(0), dtype='float64')\n")
    for target in ("seedbugs:Square", "seedbugs:square_linear"):
        proc = run(["gradcheck", target, "--seed", "0"], tmp_path, check=False)
        assert proc.returncode == 1, proc.stdout
        assert "FAILED" in proc.stdout and "SOME CHECKS FAILED" in proc.stdout
    assert "looks transposed" in proc.stdout


def test_gradcheck_command_errors_are_one_line(tmp_path):
    (tmp_path / "broken.py").write_text(
        "from scratchae import Module\n"
        "class Broken(Module):\n"
        "    def forward(self, x):\n"
        "        self.save_cache(x)\n"
        "        return x\n"
        "    def backward(self, dy):\n"
        "        self.pop_cache()\n"
        "        return dy @ dy          # shapes do not fit\n")
    for args in (["gradcheck", "broken:Broken"], ["gradcheck", "--shape", "4,x"], ["gradcheck", "--shape", "4"]):
        proc = run(args, tmp_path, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("scratchae gradcheck: error:")
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["vae", "dae"])
def test_arch_conv_trains_resumes_evaluates_and_samples(kind, tmp_path, monkeypatch):
    """--arch conv end to end: the checkpoint rebuilds the conv model (resume takes the
    architecture from it), evaluate and sample work, and the recipe is the documented one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SCRATCHAE_DATA", raising=False)
    common = ["--limit", "256", "--quiet", "--no-figures", "--channels", "4,8"]
    assert cli.main(["train", kind, "--arch", "conv", "--epochs", "1", "--out", "a", *common]) == 0
    meta = json.loads(pathlib.Path("a/metrics.json").read_text())
    assert meta["settings"]["arch"] == "conv"
    from scratchae.runs import load_run
    model = load_run("a/checkpoint.npz")[0]
    assert model.config["arch"] == "conv" and model.config["channels"] == [4, 8]
    assert model.config["sizes"] == [784, 20] and model.config["image_shape"] == [1, 28, 28]
    names = [type(m).__name__ for m in model.encoder]
    assert names[:3] == ["Reshape", "Conv2d", "ReLU"] and "ConvTranspose2d" in [type(m).__name__ for m in model.decoder]
    assert cli.main(["train", kind, "--epochs", "2", "--out", "a", "--resume", "a/checkpoint.npz",
                     "--limit", "256", "--quiet", "--no-figures"]) == 0
    assert len(json.loads(pathlib.Path("a/metrics.json").read_text())["epochs"]) == 2
    assert cli.main(["evaluate", "a/checkpoint.npz", "--iwae-k", "4", "--iwae-examples", "20",
                     "--probe-epochs", "1", "--json", "e.json"]) == 0
    assert np.isfinite(json.loads(pathlib.Path("e.json").read_text())["test"]["loss"])
    if kind == "vae":
        assert cli.main(["sample", "a/checkpoint.npz", "--n", "4", "--out", "s.png"]) == 0
        assert pathlib.Path("s.png").stat().st_size > 200


def test_arch_options_that_do_not_fit_are_one_line_errors(tmp_path):
    for args, words in ((["--arch", "conv", "--hidden", "100"], "--channels"),
                        (["--channels", "8,16"], "--arch conv"),
                        (["--arch", "conv", "--tied"], "tied")):
        proc = run(["train", "ae", "--out", "r", "--epochs", "1", "--quiet", *args], tmp_path, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, proc.stderr

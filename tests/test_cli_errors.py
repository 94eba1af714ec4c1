"""The command off the happy path: every mistake is one line and a documented exit status,
runs are never clobbered, --resume continues the run, Ctrl-C keeps the last epoch.

Each case here is one a newcomer's trial hit (issue 13). Commands run in-process through
``cli.main`` (fast) unless the case needs a real process (signals, ``python -m``).
"""
import contextlib
import io
import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from scratchae import cli
from scratchae.data import load_dataset

TINY = ["--limit", "64", "--hidden", "8", "--quiet", "--no-figures", "--data", "bundled"]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SCRATCHAE_DATA", raising=False)
    return tmp_path


def call(*argv):
    """(exit status, stdout, stderr) of ``scratchae argv`` run in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def one_error_line(err, *words):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, err)
    return lines[0]


def files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in pathlib.Path(root).rglob("*") if p.is_file()}


# --- 1. options checked where they are parsed -------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["train", "vae", "--epochs", "0"], ["--epochs", "integer"]),
    (["train", "vae", "--epochs", "-3"], ["--epochs"]),
    (["train", "vae", "--latent-dim", "-2"], ["--latent-dim"]),
    (["train", "vae", "--latent-dim", "0"], ["--latent-dim"]),
    (["train", "vae", "--hidden", "0"], ["--hidden"]),
    (["train", "vae", "--hidden", "abc"], ["--hidden", "comma-separated"]),
    (["train", "vae", "--lr", "-1"], ["--lr"]),
    (["train", "vae", "--lr", "nan"], ["--lr", "finite"]),
    (["train", "vae", "--lr", "inf"], ["--lr", "finite"]),
    (["train", "vae", "--batch-size", "0"], ["--batch-size"]),
    (["train", "vae", "--batch-size", "-5"], ["--batch-size"]),
    (["train", "vae", "--limit", "0"], ["--limit"]),
    (["train", "vae", "--limit", "-100"], ["--limit"]),
    (["train", "vae", "--beta", "-1"], ["--beta"]),
    (["train", "ae", "--sparsity", "-0.1"], ["--sparsity"]),
    (["train", "vae", "--seed", "-1"], ["--seed"]),
    (["train", "vae", "--channels", "0,4"], ["--channels"]),
    (["train", "nope"], ["invalid choice"]),
    (["sample", "x.npz", "--n", "-4"], ["--n"]),
    (["sample", "x.npz", "--n", "0"], ["--n"]),
    (["evaluate", "x.npz", "--iwae-examples", "some"], ["--iwae-examples", "all"]),
    (["evaluate", "x.npz", "--iwae-k", "-1"], ["--iwae-k"]),
    (["gradcheck", "--seed", "x"], ["--seed"]),
])
def test_a_bad_option_is_one_line_naming_it_and_exit_2(argv, words, here):
    code, out, err = call(*argv)
    assert code == 2
    one_error_line(err, *words)
    assert "_sizes" not in err and "usage:" not in err
    assert list(here.iterdir()) == []                   # nothing written


@pytest.mark.parametrize("argv, words", [
    (["train", "dae", "--level", "2"], ["--level"]),
    (["train", "dae", "--level", "1", "--corruption", "salt_pepper"], ["--level"]),
    (["train", "vae", "--level", "0.3"], ["--level", "dae"]),
    (["train", "ae", "--beta", "2"], ["--beta", "vae"]),
    (["train", "aae", "--latent-dim", "8", "--prior", "mixture"], ["--prior"]),
])
def test_options_that_do_not_fit_the_model_are_refused(argv, words, here):
    code, _, err = call(*argv, *TINY)
    assert code == 2
    one_error_line(err, *words)


def test_out_naming_a_file_is_refused(here):
    (here / "afile").write_text("keep me")
    code, _, err = call("train", "vae", "--out", "afile", *TINY)
    assert code == 2
    one_error_line(err, "--out", "afile")
    assert (here / "afile").read_text() == "keep me"


@pytest.mark.parametrize("content, words", [
    (b"", ["empty"]),
    (b"just some text, not an archive\n", ["not an .npz"]),
])
def test_a_data_file_that_is_not_an_npz_gets_a_true_message(content, words, here):
    (here / "d.npz").write_bytes(content)
    code, _, err = call("train", "vae", "--data", "d.npz", "--limit", "64")
    assert code == 2
    line = one_error_line(err, "d.npz", *words)
    assert "pickle" not in line                        # no advice to load it unsafely


def test_an_npz_without_the_arrays_says_which_are_missing(here):
    np.savez(here / "e.npz")
    code, _, err = call("train", "vae", "--data", "e.npz")
    assert code == 2
    one_error_line(err, "x_train", "missing")


@pytest.mark.parametrize("argv, words", [
    (["evaluate", "missing.npz"], ["no such checkpoint", "missing.npz"]),
    (["sample", "missing.npz"], ["no such checkpoint"]),
    (["evaluate", "."], ["folder", "checkpoint.npz"]),
    (["train", "vae", "--resume", "missing.npz"], ["no such checkpoint"]),
])
def test_checkpoint_paths_that_are_not_checkpoints(argv, words, here):
    code, _, err = call(*argv)
    assert code == 2
    line = one_error_line(err, *words)
    assert "Errno" not in line


def test_gradcheck_targets(here):
    (here / "mylayers.py").write_text(
        "from scratchae import Module, backend as B\n"
        "class Swish(Module):\n"
        "    def forward(self, x):\n"
        "        s = 1.0 / (1.0 + B.namespace(x).exp(-x))\n"
        "        self.save_cache(x, s)\n"
        "        return x * s\n"
        "    def backward(self, dy):\n"
        "        x, s = self.pop_cache()\n"
        "        return dy * (s + x * s * (1.0 - s))\n")
    for target in ("./mylayers:Swish", "mylayers.py:Swish", "mylayers:Swish",
                   "scratchae.layers:Linear(5, 3)"):
        code, out, err = call("gradcheck", target)
        assert code == 0 and "all passed" in out, (target, out, err)
    code, _, err = call("gradcheck", "scratchae.layers:Linear")
    assert code == 2
    one_error_line(err, "Linear", "d_in", "module:Class(5, 3)")
    for target, words in (("scratchae.layers:Linear(4, 3)", ["(4, 5)"]),
                          ("scratchae.layers:Linear(5, x)", ["literals"]),
                          ("mylayers:Nope", ["Nope"]), ("nofile.py:Swish", ["nofile.py"]),
                          ("Swish", ["module:Class"])):
        code, _, err = call("gradcheck", target)
        assert code == 2, (target, err)
        one_error_line(err, *words)
    for shape in ("a,b", "4", "0,5", "4,5,6"):
        code, _, err = call("gradcheck", "--shape", shape)
        assert code == 2
        one_error_line(err, "--shape")


def test_divergence_is_one_line_exit_3_and_no_warnings(here):
    proc = subprocess.run([sys.executable, "-m", "scratchae", "train", "vae", "--lr", "100",
                           "--optimizer", "sgd", "--out", "r", *TINY],
                          capture_output=True, text=True, env={**os.environ, "HOME": str(here)})
    assert proc.returncode == 3, proc.stderr
    line = one_error_line(proc.stderr, "diverged", "nothing was saved")
    assert "Warning" not in proc.stderr and "learning rate" in line
    assert not (here / "r").exists()                   # no empty run folder left behind


# --- 2. runs that cannot clobber each other ---------------------------------------------------

def test_a_new_run_gets_a_fresh_folder_under_runs(here):
    for _ in range(2):
        code, out, _ = call("train", "ae", "--epochs", "1", *TINY)
        assert code == 0
    runs = sorted(p.name for p in (here / "runs").iterdir())
    assert len(runs) == 2 and all(r.startswith("ae-") for r in runs)
    assert all((here / "runs" / r / "checkpoint.npz").is_file() for r in runs)


def test_a_folder_holding_a_run_is_refused_unless_force(here):
    assert call("train", "ae", "--epochs", "1", "--out", "r", *TINY)[0] == 0
    before = files(here / "r")
    code, _, err = call("train", "vae", "--epochs", "1", "--out", "r", *TINY)
    assert code == 2
    one_error_line(err, "holds another run", "--resume", "--force")
    assert files(here / "r") == before
    assert call("train", "vae", "--epochs", "1", "--out", "r", "--force", *TINY)[0] == 0
    assert json.loads((here / "r" / "metrics.json").read_text())["model"] == "vae"


def test_resume_continues_in_the_checkpoints_folder_with_its_data(here):
    ds = load_dataset("mnist", data="bundled", quiet=True)
    np.savez(here / "mine.npz", x_train=ds.x_train[:300], y_train=ds.y_train[:300],
             x_test=ds.x_test[:100], y_test=ds.y_test[:100])
    small = ["--hidden", "8", "--quiet", "--no-figures"]
    assert call("train", "vae", "--epochs", "1", "--data", "mine.npz", "--out", "other", *small)[0] == 0
    code, out, _ = call("train", "vae", "--resume", "other/checkpoint.npz", "--epochs", "2", "--quiet")
    assert code == 0
    assert not (here / "run").exists() and not (here / "runs").exists()   # nothing else written
    metrics = json.loads((here / "other" / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2
    assert metrics["settings"]["data"] == str(here / "mine.npz")            # its data, recorded
    assert metrics["settings"]["train_examples"] == 300                     # and used
    # other data: refused unless --force
    np.savez(here / "other.npz", x_train=ds.x_train[300:600], y_train=ds.y_train[300:600],
             x_test=ds.x_test[:100], y_test=ds.y_test[:100])
    before = files(here / "other")
    code, _, err = call("train", "vae", "--resume", "other", "--epochs", "3", "--data", "other.npz")
    assert code == 2
    one_error_line(err, "not the data this run was trained on", "--force")
    assert files(here / "other") == before
    assert call("train", "vae", "--resume", "other", "--epochs", "3", "--data", "other.npz",
                "--force", "--quiet")[0] == 0
    # a setting that defines the run cannot change
    code, _, err = call("train", "vae", "--resume", "other", "--epochs", "4", "--latent-dim", "3")
    assert code == 2
    one_error_line(err, "--latent-dim", "cannot change on --resume")


def test_epochs_is_the_total_to_reach(here):
    assert call("train", "ae", "--epochs", "3", "--out", "r", *TINY)[0] == 0
    before = files(here / "r")
    code, _, err = call("train", "ae", "--resume", "r", "--epochs", "3")
    assert code == 0 and "nothing to train" in err and "3 epochs" in err
    assert files(here / "r") == before
    assert call("train", "ae", "--resume", "r", "--epochs", "5", "--quiet", "--no-figures")[0] == 0
    history = json.loads((here / "r" / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1, 2, 3, 4, 5]
    help_text = call("train", "--help")[1]
    assert "total" in help_text


def test_resume_into_another_folder_leaves_the_original(here):
    assert call("train", "ae", "--epochs", "1", "--out", "a", *TINY)[0] == 0
    before = files(here / "a")
    assert call("train", "ae", "--resume", "a", "--epochs", "2", "--out", "b", "--quiet")[0] == 0
    assert files(here / "a") == before
    assert len(json.loads((here / "b" / "metrics.json").read_text())["epochs"]) == 2


# --- 3. Ctrl-C --------------------------------------------------------------------------------

def _interrupt(here, out, after_lines):
    """Start a long run, send SIGINT once ``after_lines`` lines are on stderr."""
    env = {**os.environ, "HOME": str(here), "MPLBACKEND": "Agg"}
    env.pop("SCRATCHAE_DATA", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scratchae", "train", "vae", "--limit", "2000", "--hidden", "32",
         "--epochs", "200", "--out", out, "--data", "bundled"], cwd=here, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = 0
    while seen < after_lines:
        line = proc.stderr.readline()
        assert line, "the run ended before it was interrupted"
        seen += 1
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_ctrl_c_keeps_the_last_epoch_writes_figures_and_says_how_to_resume(here):
    code, err = _interrupt(here, "r", after_lines=3)    # the header, epochs 1 and 2
    assert code == 130
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "interrupted in epoch" in lines[-1], err
    saved = json.loads((here / "r" / "metrics.json").read_text())["epochs"]
    assert f"epoch {len(saved)} is saved" in lines[-1]
    assert (here / "r" / "loss_curves.png").is_file()
    resume = lines[-1].split("Resume with: ", 1)[1].split()
    assert resume[:4] == ["scratchae", "train", "vae", "--resume"]
    # the printed command continues the run (to a nearer total, to keep the test short)
    code, _, _ = call(*resume[1:], "--epochs", str(len(saved) + 1), "--quiet", "--no-figures")
    assert code == 0
    after = json.loads((here / "r" / "metrics.json").read_text())["epochs"]
    assert after[:len(saved)] == saved and len(after) == len(saved) + 1


def test_ctrl_c_in_the_first_epoch_says_nothing_was_saved(here):
    code, err = _interrupt(here, "r", after_lines=1)    # the header: epoch 1 is running
    assert code == 130
    assert "nothing was saved" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not (here / "r").exists()


# --- 4. progress, evaluate, sample ------------------------------------------------------------

@pytest.fixture
def vae_run(here):
    assert call("train", "vae", "--epochs", "2", "--out", "v", "--latent-dim", "2",
                "--limit", "256", "--hidden", "16", "--data", "bundled", "--quiet")[0] == 0
    return here / "v"


def test_train_prints_one_line_per_epoch_with_the_time_left(here):
    code, _, err = call("train", "ae", "--epochs", "2", "--out", "r", "--limit", "64", "--hidden", "8",
                        "--no-figures", "--data", "bundled")
    assert code == 0
    epochs = [l for l in err.splitlines() if l.startswith("epoch ")]
    assert [l.split(":")[0] for l in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert "left" in epochs[0]
    assert "1 epochs" not in err


def test_evaluate_shows_progress_units_and_iwae_on_all_images(vae_run):
    code, out, err = call("evaluate", vae_run, "--iwae-k", "3", "--iwae-examples", "all",
                          "--probe-epochs", "1")
    assert code == 0
    result = json.loads(out)
    assert result["iwae"]["examples"] == result["test_examples"] == 1000
    assert "nats per example" in result["units"]["losses"]
    assert any("IWAE_3" in l for l in err.splitlines())          # progress on stderr
    assert "500" in call("evaluate", "--help")[1]                 # the default, stated


def test_evaluate_gives_the_aae_its_discriminator_accuracy_and_mmd(here):
    assert call("train", "aae", "--epochs", "1", "--out", "a", *TINY)[0] == 0
    code, out, _ = call("evaluate", "a", "--probe-epochs", "0", "--quiet")
    assert code == 0
    d = json.loads(out)["discriminator"]
    assert 0.0 <= d["accuracy"] <= 1.0 and np.isfinite(d["mmd2_to_prior"])


def test_sample_writes_its_own_file_and_never_the_runs(vae_run):
    before = files(vae_run)
    code, out, _ = call("sample", vae_run, "--n", "4")
    assert code == 0
    written = pathlib.Path(out.strip())
    assert written.parent == vae_run and written.name != "samples.png" and written.is_file()
    assert {k: v for k, v in files(vae_run).items() if k != written.name} == before
    for bad in ("v/checkpoint.npz", "v/metrics.json", "v", "nodir/s.png"):
        code, _, err = call("sample", vae_run, "--out", bad)
        assert code == 2
        one_error_line(err, "--out")
    assert files(vae_run)["checkpoint.npz"] == before["checkpoint.npz"]


# --- 5. help, version, python -m, metrics.json, the data note ---------------------------------

def test_every_option_shows_its_default_in_help():
    for command in ("train", "evaluate", "sample", "gradcheck"):
        parser = cli.build_parser()._subparsers._group_actions[0].choices[command]
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0:     # flags and --help
                continue
            assert action.help and "default" in action.help, (command, action.option_strings)


def test_version_and_python_m(here):
    code, out, _ = call("--version")
    assert code == 0 and out.startswith("scratchae ")
    proc = subprocess.run([sys.executable, "-m", "scratchae", "--version"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and proc.stdout == out


def test_metrics_record_the_values_used(here):
    assert call("train", "vae", "--epochs", "1", "--out", "r", "--limit", "64", "--quiet",
                "--no-figures", "--data", "bundled")[0] == 0
    s = json.loads((here / "r" / "metrics.json").read_text())["settings"]
    assert s["latent_dim"] == 20 and s["hidden"] == [400] and s["lr"] == 1e-3
    assert s["batch_size"] == 128 and s["epochs"] == 1 and s["sizes"] == [784, 400, 20]
    assert s["data"] == "bundled subset" and len(s["data_sha256"]) == 64


def test_the_bundled_subset_note_is_one_line_without_failed(here):
    code, _, err = call("train", "ae", "--epochs", "1", "--out", "r", "--limit", "64",
                        "--hidden", "8", "--no-figures", "--data", "bundled")
    assert code == 0
    notes = [l for l in err.splitlines() if "bundled MNIST subset" in l]
    assert len(notes) == 1 and "--data" in notes[0] and "fail" not in err.lower()
    assert "1 epoch in" in err and "1 epochs" not in err


def test_no_python_warning_reaches_the_user(here):
    assert call("train", "vae", "--epochs", "1", "--out", "r", *TINY)[0] == 0
    proc = subprocess.run([sys.executable, "-W", "always", "-m", "scratchae", "sample", "r",
                           "--n", "1", "--out", "one.png"], capture_output=True, text=True,
                          cwd=here, env={**os.environ, "HOME": str(here), "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr

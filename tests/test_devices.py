"""CPU/device parity and device-portable runs, through the command line, for every model.

``array_api_strict:device1`` stands in for a GPU (no GPU here): its arrays refuse NumPy
conversion and device mixing, and it draws its random numbers the way CUDA does, from the
one host stream. The same seed must give the same run on every device, up to float32
rounding (``PARITY_RTOL``), and a run trained on one device must resume, evaluate and
sample on another. On a GPU machine the ``gpu``-marked twins run the same checks on CUDA
(and ``benchmarks/gpu_check.sh`` runs them through the CLI).
"""
import json
import pathlib

import numpy as np
import pytest

from scratchae import backend as B
from scratchae import cli

#: float32 parity of epoch-mean losses between devices, relative. The devices differ only in
#: rounding (reduction order, fused kernels); docs/cuda.md gives the measured differences.
PARITY_RTOL = 1e-4

STAND_IN = "array_api_strict:device1"
COMMON = ["--limit", "256", "--hidden", "16", "--latent-dim", "2", "--batch-size", "64",
          "--quiet", "--no-figures", "--seed", "3"]
MODELS = ["ae", "dae", "vae", "aae"]
PAIRS = [("cpu", STAND_IN), (STAND_IN, "cpu"),
         pytest.param("cpu", "cuda", marks=pytest.mark.gpu),
         pytest.param("cuda", "cpu", marks=pytest.mark.gpu)]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SCRATCHAE_DATA", raising=False)
    return tmp_path


def _train(kind, out, device, epochs, *extra):
    assert cli.main(["train", kind, "--epochs", str(epochs), "--out", out, "--device", device,
                     *COMMON, *extra]) == 0


def _history(folder):
    epochs = json.loads(pathlib.Path(folder, "metrics.json").read_text())["epochs"]
    return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]


def _assert_close(a, b, what):
    assert len(a) == len(b), what
    for ea, eb in zip(a, b):
        assert ea.keys() == eb.keys(), what
        for k in ea:
            assert ea[k] == pytest.approx(eb[k], rel=PARITY_RTOL, abs=1e-6), f"{what}: {k}"


def _evaluate(checkpoint, device, out):
    assert cli.main(["evaluate", checkpoint, "--device", device, "--iwae-k", "4",
                     "--iwae-examples", "50", "--probe-epochs", "1", "--json", out]) == 0
    result = json.loads(pathlib.Path(out).read_text())
    return result


@pytest.mark.parametrize("first, second", PAIRS)
@pytest.mark.parametrize("kind", MODELS)
def test_a_run_moves_between_devices(kind, first, second, in_tmp, capsys):
    """Train on one device; resume, evaluate and sample on the other; and the same seed on
    the other device gives the same run."""
    _train(kind, "one", first, 1)
    _train(kind, "two", first, 2)
    _train(kind, "moved", second, 2, "--resume", "one/checkpoint.npz")   # --epochs: the total
    _train(kind, "other", second, 2)
    straight, moved, other = _history("two"), _history("moved"), _history("other")
    assert moved[0] == _history("one")[0]             # the first epoch is the saved one
    _assert_close(moved, straight, f"{kind}: resumed on {second}")
    _assert_close(other, straight, f"{kind}: the same seed on {second}")
    # the moved run's checkpoint is a plain host file again: it loads on the first device
    a, b = _evaluate("moved/checkpoint.npz", first, "a.json"), _evaluate("moved/checkpoint.npz", second, "b.json")
    assert a["model"] == b["model"] == kind
    _assert_close([a["test"]], [b["test"]], f"{kind}: evaluate on {first} vs {second}")
    if kind == "vae":
        assert a["iwae"]["nll"] == pytest.approx(b["iwae"]["nll"], rel=PARITY_RTOL)
    assert abs(a["linear_probe"]["accuracy"] - b["linear_probe"]["accuracy"]) <= 0.02
    if kind in ("vae", "aae"):
        images = []
        for device, png in ((first, "a.png"), (second, "b.png")):
            assert cli.main(["sample", "moved/checkpoint.npz", "--device", device, "--n", "16",
                             "--out", png]) == 0
            images.append(_png_pixels(png))
        assert images[0].shape == images[1].shape
        assert np.abs(images[0] - images[1]).max() <= 1.0 / 255 + 1e-6   # one grey level at most
    capsys.readouterr()


def _png_pixels(path):
    import matplotlib.image
    return np.asarray(matplotlib.image.imread(path), dtype="float64")


@pytest.mark.parametrize("other", [STAND_IN, pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("kind", MODELS)
def test_the_same_seed_gives_the_same_first_steps_on_every_device(kind, other):
    """Initial weights are equal bit for bit, and the first training steps agree to float32
    rounding: the numbers of a GPU run can be checked against a CPU run one by one."""
    from scratchae.models import MODELS as BUILD
    host = np.random.default_rng(0).random((64, 784))
    losses, weights = {}, {}
    for device in ("cpu", other):
        extra = {"prior": "gaussian"} if kind == "aae" else {}
        model = BUILD[kind](sizes=[784, 16, 2], rng=B.Generator(5, device=device), **extra)
        weights[device] = {k: np.array(B.to_numpy(v)) for k, v in model.state_dict().items()}  # a copy
        model.configure_optimizers("adam", lr=1e-3)
        be = B.resolve(device)
        with be.context():
            x = be.asarray(host, "float32")
            losses[device] = [B.to_scalar(model.train_step(x)["loss"]) for _ in range(3)]
    for k in weights["cpu"]:
        np.testing.assert_array_equal(weights[other][k], weights["cpu"][k], err_msg=k)
    np.testing.assert_allclose(losses[other], losses["cpu"], rtol=PARITY_RTOL)


def test_training_moves_only_the_noise_and_the_batch_indices(in_tmp):
    """What crosses to the device each step, on the stand-in (CUDA moves the same): a VAE step
    copies its batch indices (int64) and its eps (float32); nothing else, and one loss value
    comes back every 50 steps for the divergence guard."""
    from scratchae.models import VAE
    from scratchae.train import fit
    batch, latent, n = 64, 2, 256
    model = VAE(sizes=[784, 16, latent], rng=B.Generator(0, device=STAND_IN))
    model.configure_optimizers("adam", lr=1e-3)
    x = np.random.default_rng(0).random((n, 784)).astype("float32")
    fit(model, x, epochs=1, batch_size=batch, progress=False)     # warm: optimizer state, X
    B.TRANSFERS.reset()
    fit(model, x, epochs=1, batch_size=batch, progress=False)
    steps = n // batch
    moved = B.TRANSFERS.snapshot()
    data = n * 784 * 4                                             # the training set, once per fit
    per_step = batch * 8 + batch * latent * 4
    assert moved["to_device_bytes"] == data + steps * per_step
    assert moved["to_device_copies"] == 1 + 2 * steps

"""The four autoencoders: full-objective gradient checks, training, bounds, bad input, fit.

Gradient checks run each model's whole objective (likelihood, sparsity, sampler, KL,
discriminator) against central differences w.r.t. every parameter, with all noise held
fixed (``eps=``, ``noise=``, ``z_prior=``). Models are tiny, float64 and mostly tanh
(smooth, so no kinks and non-zero gradients everywhere), and run on NumPy and on
array_api_strict's non-CPU ``device1`` (the no-GPU stand-in for CUDA).

Every test here runs twice: with scratchae's fast paths on, and in reference mode
(``scratchae.fast.reference_mode``: the code exactly as written, no fast path).
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from scratchae import backend as B
from scratchae.gradcheck import check_objective
from scratchae.models import (
    AdversarialAutoencoder, Autoencoder, DenoisingAutoencoder, VAE, build_model,
)
from scratchae.module import InputError
from scratchae.stochastic import GaussianSample
from scratchae import evaluation, fast
from scratchae.evaluation import evaluate
from scratchae.train import TrainingDiverged, fit

#: NumPy, array_api_strict on its non-CPU device (refuses silent conversion and device
#: mixing), and CuPy when a GPU is present.
GC_DEVICES = ["cpu", "array_api_strict:device1", pytest.param("cuda", marks=pytest.mark.gpu)]

N, D = 4, 6                  # batch and input width of the gradient checks
SIZES = (D, 5, 3)


@pytest.fixture(params=["fast", "reference"], scope="module", autouse=True)
def speed_mode(request):
    """The whole module once with the fast paths, once in reference mode."""
    with fast.reference_mode(request.param == "reference"):
        yield request.param


@pytest.fixture(params=GC_DEVICES, scope="module")
def gc_device(request):
    return B.resolve(request.param)


def _rng(device, seed=0):
    return B.Generator(seed, device=device)


# =============================================================================================
# Full-objective gradient checks
# =============================================================================================

# Each case: build(device) -> (model, forward, backward, params or None, smooth?).
# forward() must be deterministic: every random draw is made once, outside it.

def _x(device, seed=100):
    """A (N, D) float64 batch in (0, 1) (valid targets for every likelihood)."""
    return _rng(device, seed).uniform((N, D), 0.05, 0.95, dtype="float64")


def _ae(device, **kw):
    kw.setdefault("activation", "tanh")
    m = Autoencoder(SIZES, rng=_rng(device, 1), dtype="float64", **kw)
    x = _x(device)
    return m, (lambda: m.loss(x)), m.backward, None


def _dae(device, corruption):
    m = DenoisingAutoencoder(SIZES, activation="tanh", corruption=corruption, level=0.3,
                             rng=_rng(device, 2), dtype="float64")
    x = _x(device)
    r = _rng(device, 3)
    noise = {"masking": lambda: r.bernoulli((N, D), 0.7, "float64"),
             "gaussian": lambda: r.normal((N, D), "float64"),
             "salt_pepper": lambda: r.uniform((N, D), dtype="float64")}[corruption]()
    return m, (lambda: m.loss(x, noise=noise)), m.backward, None


def _vae(device, **kw):
    kw.setdefault("activation", "tanh")
    m = VAE(SIZES, rng=_rng(device, 4), dtype="float64", **kw)
    x = _x(device)
    eps = _rng(device, 5).normal((N, SIZES[-1]), "float64")
    return m, (lambda: m.loss(x, eps=eps)), m.backward, None


def _aae(device, supervised=False, activation="tanh"):
    m = AdversarialAutoencoder((D, 5, 2), activation=activation, disc_sizes=(4,), prior="mixture",
                               supervised=supervised, n_classes=10, rng=_rng(device, 6),
                               dtype="float64")
    labels = _rng(device, 7).integers(0, 10, (N,)) if supervised else None
    return m, _x(device), labels


def _aae_disc(device, **kw):
    m, x, labels = _aae(device, **kw)
    zp = m.prior.sample(N, _rng(device, 8), labels, "float64")
    return (m, (lambda: m.discriminator_loss(x, z_prior=zp, labels=labels)),
            m.backward_discriminator, ["discriminator"])


def _aae_gen(device, **kw):
    m, x, labels = _aae(device, **kw)
    return m, (lambda: m.generator_loss(x, labels=labels)), m.backward_generator, ["encoder"]


def _aae_recon(device):
    m, x, _ = _aae(device)
    return m, (lambda: m.loss(x)), m.backward, ["encoder", "decoder"]


# --arch conv: 4x4 single-channel images, channels (2, 3): two k4 s2 p1 convolutions down to a
# 1x1 grid, two transposed convolutions back up
D_CONV, CONV = 16, dict(arch="conv", channels=(2, 3), activation="tanh")


def _conv_case(device, kind, **kw):
    x = _rng(device, 100).uniform((N, D_CONV), 0.05, 0.95, dtype="float64")
    if kind == "vae":
        m = VAE((D_CONV, 2), rng=_rng(device, 4), dtype="float64", **CONV, **kw)
        eps = _rng(device, 5).normal((N, 2), "float64")
        return m, (lambda: m.loss(x, eps=eps)), m.backward, None
    if kind == "dae":
        m = DenoisingAutoencoder((D_CONV, 3), rng=_rng(device, 2), dtype="float64", level=0.3, **CONV)
        noise = _rng(device, 3).bernoulli((N, D_CONV), 0.7, "float64")
        return m, (lambda: m.loss(x, noise=noise)), m.backward, None
    if kind == "aae-gen":
        m = AdversarialAutoencoder((D_CONV, 2), disc_sizes=(4,), prior="gaussian", rng=_rng(device, 6),
                                   dtype="float64", **CONV)
        return m, (lambda: m.generator_loss(x)), m.backward_generator, ["encoder"]
    m = Autoencoder((D_CONV, 3), rng=_rng(device, 1), dtype="float64", **CONV, **kw)
    return m, (lambda: m.loss(x)), m.backward, None


CONV_CASES = {
    "ae-conv": lambda d: _conv_case(d, "ae"),
    "ae-conv-gaussian": lambda d: _conv_case(d, "ae", likelihood="gaussian"),
    "dae-conv": lambda d: _conv_case(d, "dae"),
    "vae-conv": lambda d: _conv_case(d, "vae"),
    "aae-conv-gen": lambda d: _conv_case(d, "aae-gen"),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_objective_gradients_match_finite_differences(gc_device, case, speed_mode):
    """Whole conv models, noise fixed. Every entry on NumPy (fast paths on and off); off NumPy,
    where only the reference runs, along random directions of each array (an entry-by-entry
    check of the reference loops on array_api_strict takes half a minute a model)."""
    if not B.is_numpy(gc_device.zeros((1,))) and speed_mode == "fast":
        pytest.skip("off NumPy the fast paths do not apply: the reference run covers it")
    model, forward, backward, params = CONV_CASES[case](gc_device)
    elementwise = B.is_numpy(gc_device.zeros((1,)))
    rep = check_objective(model, forward, backward, params=params, title=case,
                          mode="elementwise" if elementwise else "directional", directions=2)
    assert rep.passed, str(rep)
    slots = [n for n, _, _ in model.parameter_slots()
             if params is None or any(n == p or n.startswith(p + ".") for p in params)]
    assert [r.name for r in rep.rows] == slots
    assert rep.rows and all(r.numerical_norm > 0 for r in rep.rows), str(rep)
    assert not any(m.has_cache for m in model.modules())


CASES = {
    "ae": lambda d: _ae(d),
    "ae-mse": lambda d: _ae(d, likelihood="mse"),
    "ae-gaussian": lambda d: _ae(d, likelihood="gaussian"),
    "ae-tied": lambda d: _ae(d, tied=True),
    "ae-sparse": lambda d: _ae(d, sparsity=0.3),
    "ae-relu": lambda d: _ae(d, activation="relu"),
    "dae-masking": lambda d: _dae(d, "masking"),
    "dae-gaussian": lambda d: _dae(d, "gaussian"),
    "dae-salt_pepper": lambda d: _dae(d, "salt_pepper"),
    "vae-bernoulli": lambda d: _vae(d),
    "vae-gaussian": lambda d: _vae(d, likelihood="gaussian"),
    "vae-beta": lambda d: _vae(d, beta=3.5),
    "vae-logvar_bound": lambda d: _vae(d, likelihood="gaussian", beta=0.4, logvar_bound=0.3),
    "vae-relu": lambda d: _vae(d, activation="relu"),
    "aae-recon": _aae_recon,
    "aae-disc": lambda d: _aae_disc(d),
    "aae-gen": lambda d: _aae_gen(d),
    "aae-disc-supervised": lambda d: _aae_disc(d, supervised=True),
    "aae-gen-supervised": lambda d: _aae_gen(d, supervised=True),
    "aae-gen-relu": lambda d: _aae_gen(d, activation="relu"),
}
RELU_CASES = {"ae-relu", "vae-relu", "aae-gen-relu"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_objective_gradients_match_finite_differences(gc_device, case):
    model, forward, backward, params = CASES[case](gc_device)
    rep = check_objective(model, forward, backward, params=params, title=case)
    assert rep.passed, str(rep)
    # every selected parameter is checked, and the check is not vacuous
    slots = [n for n, _, _ in model.parameter_slots()
             if params is None or any(n == p or n.startswith(p + ".") for p in params)]
    assert [r.name for r in rep.rows] == slots
    assert all(r.mode == "elementwise" for r in rep.rows)
    assert rep.rows and all(r.numerical_norm > 0 for r in rep.rows), str(rep)
    if case not in RELU_CASES:
        assert all(r.kinks == 0 for r in rep.rows), str(rep)
    # the check leaves no cache behind
    assert not any(m.has_cache for m in model.modules())


def test_sparse_codes_are_away_from_the_l1_kink(gc_device):
    """The sparsity check above is meaningful only if no code sits at |code| ~ eps."""
    model, forward, _, _ = CASES["ae-sparse"](gc_device)
    obj = forward()
    model.clear_cache()
    assert "l1" in obj.terms
    assert float(np.min(np.abs(B.to_numpy(obj.outputs["code"])))) > 1e-3


def test_aae_generator_gradient_reaches_every_encoder_array(gc_device):
    model, forward, backward, params = CASES["aae-gen"](gc_device)
    rep = check_objective(model, forward, backward, params=params)
    assert rep.passed, str(rep)
    assert [r.name for r in rep.rows] == [f"encoder.{n}" for n, _ in model.encoder.named_parameters()]
    for r in rep.rows:
        assert r.analytic_norm > 0, f"{r.name}: the generator gradient does not reach it\n{rep}"


def test_vae_logvar_bound_clamps_the_encoder_output(gc_device):
    model, forward, _, _ = CASES["vae-logvar_bound"](gc_device)
    obj = forward()
    model.clear_cache()
    lv = B.to_numpy(obj.outputs["logvar"])
    assert np.all(np.abs(lv) < 0.3)


# --- deliberately broken models: the check must fail -----------------------------------------

class _SigmaForVarianceSample(GaussianSample):
    """Backward treats exp(logvar) as sigma: dz/dlogvar = eps * exp(logvar) (should be
    eps * 0.5 * exp(0.5 logvar)). The forward is right, so only the gradient is wrong."""

    def forward(self, mu, logvar, eps=None):
        xp = B.namespace(mu, logvar)
        z = super().forward(mu, logvar, eps=eps)
        self.pop_cache()
        eps = (z - mu) * xp.exp(-0.5 * logvar)
        self.save_cache(eps * xp.exp(logvar))           # BUG
        return z


class BrokenVAE(VAE):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sampler = _SigmaForVarianceSample(self.rng)


class BrokenAAE(AdversarialAutoencoder):
    """Generator backward that does not go through the discriminator (a detached code)."""

    def backward_generator(self, obj):
        dcode = self.discriminator.backward(obj.grads["logits"])
        return self.encoder.backward(0.0 * dcode)       # BUG


def test_vae_with_sigma_for_variance_bug_fails(gc_device):
    m = BrokenVAE(SIZES, activation="tanh", rng=_rng(gc_device, 4), dtype="float64")
    x = _x(gc_device)
    eps = _rng(gc_device, 5).normal((N, SIZES[-1]), "float64")
    rep = check_objective(m, lambda: m.loss(x, eps=eps), m.backward)
    assert not rep.passed, str(rep)
    # the decoder does not see the bug; the encoder (which outputs logvar) does
    assert all(r.passed for r in rep.rows if r.name.startswith("decoder.")), str(rep)
    assert not rep.row("encoder.2.W").passed and not rep.row("encoder.2.b").passed


def test_aae_generator_not_through_discriminator_fails(gc_device):
    m = BrokenAAE((D, 5, 2), activation="tanh", disc_sizes=(4,), prior="mixture",
                  rng=_rng(gc_device, 6), dtype="float64")
    x = _x(gc_device)
    rep = check_objective(m, lambda: m.generator_loss(x), m.backward_generator, params=["encoder"])
    assert not rep.passed, str(rep)
    assert all(not r.passed and r.analytic_norm == 0 for r in rep.rows), str(rep)
    assert "all-zero" in rep.rows[0].hint


# =============================================================================================
# Training: the loss falls on small data
# =============================================================================================

def _patterns(n=256, d=32, rank=3, seed=0):
    """Low-rank, nearly binary patterns in [0, 1] (float32, host)."""
    g = np.random.default_rng(seed)
    logits = 6.0 * g.standard_normal((n, rank)) @ g.standard_normal((rank, d))
    return (1.0 / (1.0 + np.exp(-logits))).astype("float32")


def _small(kind, seed=0, dtype="float32", d=32, device="cpu"):
    r = B.Generator(seed, device=device)
    if kind == "ae":
        return Autoencoder((d, 16, 4), rng=r, dtype=dtype)
    if kind == "ae-tied":
        return Autoencoder((d, 16, 4), tied=True, rng=r, dtype=dtype)
    if kind == "dae":
        return DenoisingAutoencoder((d, 16, 4), corruption="masking", level=0.3, rng=r, dtype=dtype)
    if kind == "vae":
        return VAE((d, 16, 4), rng=r, dtype=dtype)
    if kind == "aae":
        return AdversarialAutoencoder((d, 16, 2), disc_sizes=(16,), rng=r, dtype=dtype)
    raise KeyError(kind)


@pytest.mark.parametrize("kind", ["ae", "ae-tied", "dae", "vae", "aae"])
def test_loss_falls_on_small_data(kind):
    x = _patterns()
    model = _small(kind).configure_optimizers("adam", lr=3e-3)
    hist = fit(model, x, epochs=20, batch_size=32, seed=0, progress=False)
    first, last = hist[0]["train_loss"], hist[-1]["train_loss"]
    assert all(math.isfinite(h["train_loss"]) for h in hist)
    # measured at these seeds: AE/DAE/VAE/AAE fall by 30-65%; 15% is "clearly"
    assert last < 0.85 * first, [round(h["train_loss"], 2) for h in hist]


# =============================================================================================
# VAE: bounds, sampling, encoding
# =============================================================================================

@pytest.fixture(scope="module")
def trained_vae():
    """A float64 VAE fitted briefly on the patterns (bounds are more telling than at init)."""
    x = _patterns().astype("float64")
    m = _small("vae", dtype="float64").configure_optimizers("adam", lr=3e-3)
    fit(m, x, epochs=20, batch_size=32, seed=0, progress=False)
    return m, x


def test_iwae_64_is_at_least_the_elbo(trained_vae):
    m, x = trained_vae
    xb = x[:64]
    # the mean ELBO over 200 single-sample estimates (per example SE ~ 1 nat / sqrt(200))
    elbo = np.mean([np.mean(B.to_numpy(evaluation.elbo(m, xb, B.Generator(s)))) for s in range(200)])
    iwae = float(np.mean(B.to_numpy(evaluation.iwae_bound(m, xb, 64, B.Generator(1000)))))
    # IWAE_64 >= ELBO in expectation; measured gap ~0.9 nats here, MC noise ~0.05
    assert iwae >= elbo - 0.05, (iwae, elbo)


def test_iwae_grows_with_k(trained_vae):
    m, x = trained_vae
    means = {}
    for k in (1, 16, 256):
        # average of two seeds over 256 examples: SE of each mean ~0.02 nats;
        # measured E[IWAE_1] - E[IWAE_16] ~0.8, E[IWAE_16] - E[IWAE_256] ~0.1
        means[k] = np.mean([np.mean(B.to_numpy(evaluation.iwae_bound(m, x, k, B.Generator(s))))
                            for s in (1, 2)])
    assert means[1] < means[16] < means[256], means


def test_iwae_matches_a_direct_host_computation(trained_vae):
    """IWAE_k = log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), recomputed on the host from the
    same eps stream (k = 7 in chunks of 2, 2, 2, 1 samples)."""
    m, x = trained_vae
    xb, k = x[:3], 7
    got = B.to_numpy(evaluation.iwae_bound(m, xb, k, B.Generator(4), max_rows=6))
    mu, logvar = (B.to_numpy(a) for a in m.posterior(xb))
    eps = np.random.default_rng(4).standard_normal((k, 3, 4))
    z = mu + np.exp(0.5 * logvar) * eps
    m.decoder.eval()
    try:
        p = B.to_numpy(m.decode(np.reshape(z, (k * 3, 4)))).reshape(k, 3, 32)
    finally:
        m.decoder.train()
    log_px = (xb * np.log(p) + (1 - xb) * np.log1p(-p)).sum(2)
    log_pz = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(2)
    log_qz = (-0.5 * eps ** 2 - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(2)
    lw = log_px + log_pz - log_qz
    want = np.log(np.mean(np.exp(lw - lw.max(0)), axis=0)) + lw.max(0)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_iwae_1_is_the_elbo_in_expectation(trained_vae):
    m, x = trained_vae
    xb = x[:64]
    elbo = np.array([np.mean(B.to_numpy(evaluation.elbo(m, xb, B.Generator(s)))) for s in range(300)])
    iw1 = np.array([np.mean(B.to_numpy(evaluation.iwae_bound(m, xb, 1, B.Generator(10_000 + s))))
                    for s in range(300)])
    # both are unbiased estimates of the same mean ELBO: the difference of the two averages
    # has SE sqrt(var_a / 300 + var_b / 300); allow 5 SE
    se = math.sqrt(elbo.var(ddof=1) / elbo.size + iw1.var(ddof=1) / iw1.size)
    assert abs(elbo.mean() - iw1.mean()) < 5 * se, (elbo.mean(), iw1.mean(), se)


def test_iwae_k5000_chunks_and_is_finite(trained_vae, monkeypatch):
    m, x = trained_vae
    xb = x[:4]
    calls = []
    real = m.decoder.forward

    def counting(z):
        calls.append(tuple(z.shape))
        return real(z)

    monkeypatch.setattr(m.decoder, "forward", counting)
    small = B.to_numpy(evaluation.iwae_bound(m, xb, 5000, B.Generator(3), max_rows=1000))
    # 1000 rows // 4 examples = 250 samples per chunk: 20 chunks of 1000 decoder rows
    assert len(calls) == 20 and all(c == (1000, 4) for c in calls), calls[:3]
    assert small.shape == (4,) and np.all(np.isfinite(small))
    calls.clear()
    big = B.to_numpy(evaluation.iwae_bound(m, xb, 5000, B.Generator(3), max_rows=20_000))
    assert len(calls) == 1
    # chunking draws the same eps stream, so the bounds agree up to log-sum-exp rounding
    np.testing.assert_allclose(small, big, rtol=1e-10)
    # uneven last chunk: k not a multiple of the chunk size
    calls.clear()
    odd = B.to_numpy(evaluation.iwae_bound(m, xb, 1003, B.Generator(3), max_rows=1000))
    assert [c[0] for c in calls] == [1000, 1000, 1000, 1000, 12]
    assert np.all(np.isfinite(odd))


def test_vae_sample_reconstruct_encode(trained_vae):
    m, x = trained_vae
    s = B.to_numpy(m.sample(7, rng=B.Generator(0)))
    assert s.shape == (7, 32) and s.min() >= 0.0 and s.max() <= 1.0
    rec = B.to_numpy(m.reconstruct(x[:5]))
    assert rec.shape == (5, 32) and rec.min() >= 0.0 and rec.max() <= 1.0
    mu, logvar = m.posterior(x[:5])
    assert tuple(mu.shape) == (5, 4) and tuple(logvar.shape) == (5, 4)
    np.testing.assert_array_equal(B.to_numpy(m.encode(x[:5])), B.to_numpy(mu))   # the code is mu
    # reconstruct decodes the posterior mean
    np.testing.assert_allclose(rec, B.to_numpy(m.decode(mu)), rtol=1e-12)
    # using the model leaves it in training mode with no cache
    assert m.training and not any(mod.has_cache for mod in m.modules())


def test_vae_encode_on_strict_device():
    dev = B.resolve("array_api_strict:device1")
    m = VAE((6, 5, 2), likelihood="gaussian", logvar_bound=1.0, rng=_rng(dev, 0), dtype="float64")
    x = _x(dev)
    mu, logvar = m.posterior(x)
    assert B.device_of(mu) == dev.device and tuple(mu.shape) == (N, 2)
    assert np.all(np.abs(B.to_numpy(logvar)) < 1.0)
    assert tuple(m.sample(3, rng=_rng(dev, 1)).shape) == (3, 6)
    assert np.all(np.isfinite(B.to_numpy(evaluation.iwae_bound(m, x, 8, _rng(dev, 2)))))


# =============================================================================================
# AAE: the three-phase train step
# =============================================================================================

def test_aae_train_step_and_discriminator_accuracy():
    m = _small("aae").configure_optimizers("adam", lr=1e-3)
    x = B.resolve("cpu").asarray(_patterns(64), "float32")
    before = {k: np.array(v) for k, v in m.state_dict().items()}
    terms = m.train_step(x)
    assert set(terms) == {"recon", "disc", "gen", "loss"}
    assert all(math.isfinite(B.to_scalar(v)) for v in terms.values())
    after = m.state_dict()
    # all three parts moved
    for part in ("encoder.", "decoder.", "discriminator."):
        assert any(not np.array_equal(before[k], after[k]) for k in before if k.startswith(part)), part
    acc = B.to_scalar(evaluation.discriminator_accuracy(m, x, rng=B.Generator(1)))
    assert 0.0 <= acc <= 1.0
    assert not any(mod.has_cache for mod in m.modules())
    # the same number computed directly: prior rows should score > 0, code rows <= 0
    zp = m.prior.sample(64, B.Generator(1), dtype="float32")
    m.eval()
    logits = B.to_numpy(m.discriminator(np.concatenate([zp, m.encoder(x)])))[:, 0]
    m.train()
    assert acc == pytest.approx(((logits[:64] > 0).sum() + (logits[64:] <= 0).sum()) / 128)
    # a discriminator that calls everything "prior" is right on exactly half the rows
    m.discriminator[-1].params["b"][...] = 1e3
    assert B.to_scalar(evaluation.discriminator_accuracy(m, x, rng=B.Generator(1))) == 0.5


def test_supervised_aae_needs_labels():
    m = AdversarialAutoencoder((32, 16, 2), disc_sizes=(8,), supervised=True, rng=B.Generator(0))
    m.configure_optimizers("adam", lr=1e-3)
    be = B.resolve("cpu")
    x = be.asarray(_patterns(16), "float32")
    with pytest.raises(ValueError, match="labels"):
        m.train_step(x)
    m.clear_cache()
    y = be.asarray(np.arange(16) % 10, "int64")
    terms = m.train_step(x, y)
    assert all(math.isfinite(B.to_scalar(v)) for v in terms.values())
    acc = B.to_scalar(evaluation.discriminator_accuracy(m, x, labels=y, rng=B.Generator(2)))
    assert 0.0 <= acc <= 1.0
    # fit passes the labels through
    hist = fit(m, _patterns(64), np.arange(64) % 10, epochs=1, batch_size=16, progress=False)
    assert math.isfinite(hist[0]["train_gen"])


def test_supervised_aae_without_labels_changes_nothing():
    m = AdversarialAutoencoder((32, 16, 2), disc_sizes=(8,), supervised=True, rng=B.Generator(0))
    m.configure_optimizers("adam", lr=1e-3)
    before = {k: np.array(v) for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="labels"):
        m.train_step(B.resolve("cpu").asarray(_patterns(16), "float32"))
    assert all(np.array_equal(before[k], v) for k, v in m.state_dict().items())


# =============================================================================================
# Bad input: a clear InputError naming the model
# =============================================================================================

def _f64_models():
    r = lambda s: B.Generator(s)   # noqa: E731
    return {
        "Autoencoder": Autoencoder(SIZES, rng=r(0), dtype="float64"),
        "DenoisingAutoencoder": DenoisingAutoencoder(SIZES, rng=r(1), dtype="float64"),
        "VAE": VAE(SIZES, rng=r(2), dtype="float64"),
        "AdversarialAutoencoder": AdversarialAutoencoder((D, 5, 2), disc_sizes=(4,), rng=r(3),
                                                         dtype="float64"),
    }


def _entry_points(model):
    calls = [model.loss]
    if isinstance(model, AdversarialAutoencoder):
        calls += [model.discriminator_loss, model.generator_loss]
    return calls


@pytest.mark.parametrize("name", ["Autoencoder", "DenoisingAutoencoder", "VAE", "AdversarialAutoencoder"])
def test_bad_batches_raise_input_error_naming_the_model(name):
    model = _f64_models()[name]
    good = np.full((3, D), 0.5)
    nan = good.copy()
    nan[1, 2] = np.nan
    bad = [
        (np.full((3, D + 1), 0.5), [r"\(3, 7\)", r"\(N, 6\)"]),          # wrong width
        (np.full((3, D), 0.5)[:, :, None], [r"\(3, 6, 1\)"]),               # wrong rank
        (np.ones((3, D), dtype="int64"), ["int64", "float64"]),              # integer pixels
        (good.astype("float32"), ["float32", "float64"]),                    # float32 into float64
        (nan, ["NaN", r"\(3, 6\)"]),                                         # NaN in the batch
        (np.where(good > 0, np.inf, good), ["Inf"]),
    ]
    for entry in _entry_points(model):
        for x, patterns in bad:
            # errstate: kept harmless; the DAE validates before corrupting
            with pytest.raises(InputError) as err, np.errstate(invalid="ignore"):
                entry(x)
            msg = str(err.value)
            assert name in msg, msg
            for p in patterns:
                assert re.search(p, msg), (p, msg)
            model.clear_cache()
    # the good batch passes
    for entry in _entry_points(model):
        entry(good)
        model.clear_cache()


def test_dae_refuses_a_bad_batch_before_drawing_noise():
    m = DenoisingAutoencoder(SIZES, rng=B.Generator(0), dtype="float64")
    before = m.rng.state()["state"]
    with pytest.raises(InputError):
        m.loss(np.full((3, D + 1), 0.5))
    assert m.rng.state()["state"] == before
    with pytest.raises(InputError):
        m.loss([[0.5] * D])


def test_batch_on_another_device_is_refused():
    model = _f64_models()["VAE"]
    x = B.resolve("array_api_strict:device1").asarray(np.full((3, D), 0.5), "float64")
    with pytest.raises(InputError, match="VAE"):
        model.loss(x)


# =============================================================================================
# fit: determinism, the NaN guard, history keys
# =============================================================================================

KINDS = ["ae", "dae", "vae", "aae"]


def _fit(kind, model_seed=0, fit_seed=0, epochs=2, **kw):
    model = _small(kind, seed=model_seed, d=20).configure_optimizers("adam", lr=1e-3)
    return model, fit(model, _patterns(96, 20), epochs=epochs, batch_size=32, seed=fit_seed,
                      progress=False, **kw)


def _strip(history):
    return [{k: v for k, v in rec.items() if k != "seconds"} for rec in history]


@pytest.mark.parametrize("kind", KINDS)
def test_fit_is_bitwise_reproducible(kind):
    _, h1 = _fit(kind)
    _, h2 = _fit(kind)
    assert _strip(h1) == _strip(h2)          # exact float equality, every key
    assert all("seconds" in rec for rec in h1)
    _, h3 = _fit(kind, fit_seed=1)           # same model, other shuffling
    assert _strip(h3) != _strip(h1)
    assert {k for k in h3[0]} == {k for k in h1[0]}


def test_fit_history_has_train_and_test_keys():
    x_test = _patterns(40, 20, seed=1)
    for kind, terms in (("ae", {"recon", "loss"}), ("vae", {"recon", "kl", "loss"}),
                        ("aae", {"recon", "disc", "gen", "loss"})):
        _, hist = _fit(kind, epochs=2, x_test=x_test)
        assert [rec["epoch"] for rec in hist] == [1, 2]
        want = {"epoch", "seconds"} | {f"train_{t}" for t in terms} | {f"test_{t}" for t in terms}
        assert set(hist[0]) == want, (kind, sorted(hist[0]))
        assert all(math.isfinite(v) for rec in hist for v in rec.values())
        _, plain = _fit(kind, epochs=1)
        assert not any(k.startswith("test_") for k in plain[0])


def test_fit_raises_training_diverged_naming_the_term():
    model = _small("ae", d=20).configure_optimizers("adam", lr=1e-3)
    model.decoder[0].params["W"][0, 0] = np.nan
    with pytest.raises(TrainingDiverged, match=r"loss term '(recon|loss)' is nan"):
        fit(model, _patterns(64, 20), epochs=2, batch_size=32, progress=False)
    assert model.check_values     # restored after the error


def test_fit_raises_training_diverged_on_an_absurd_learning_rate():
    model = Autoencoder((20, 8, 3), likelihood="mse", rng=B.Generator(0), dtype="float32")
    model.configure_optimizers("sgd", lr=1e8)
    with np.errstate(all="ignore"):
        with pytest.raises(TrainingDiverged, match=r"loss term '\w+' is (nan|inf)"):
            fit(model, _patterns(128, 20), epochs=5, batch_size=16, progress=False)


def test_fit_refuses_nan_data_and_evaluate_matches_eval_terms():
    model = _small("ae", d=20).configure_optimizers("adam", lr=1e-3)
    x = _patterns(64, 20)
    x[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(model, x, epochs=1, progress=False)
    x = _patterns(50, 20)
    ev = evaluate(model, x, batch_size=20)
    direct = {k: B.to_scalar(v) for k, v in model.eval_terms(B.resolve("cpu").asarray(x, "float32")).items()}
    assert set(ev) == set(direct)
    for k in ev:
        assert abs(ev[k] - direct[k]) < 1e-4 * (1 + abs(direct[k])), k


def test_fit_refuses_nan_test_data():
    model = _small("ae", d=20).configure_optimizers("adam", lr=1e-3)
    x_test = _patterns(10, 20)
    x_test[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(model, _patterns(64, 20), epochs=1, x_test=x_test, progress=False)


def test_build_model_round_trips_the_config():
    for kind in KINDS:
        m = _small(kind, d=20)
        m2 = build_model(m.config, B.Generator(0))
        assert type(m2) is type(m) and m2.config == m.config
        assert [n for n, _ in m2.named_parameters()] == [n for n, _ in m.named_parameters()]


def test_discriminator_accuracy_and_dae_eval_terms_on_strict_device():
    dev = B.resolve("array_api_strict:device1")
    r = B.Generator(3, device=dev)
    aae = AdversarialAutoencoder((12, 8, 2), disc_sizes=(6,), rng=r, dtype="float64")
    x = r.uniform((10, 12), dtype="float64")
    acc = B.to_scalar(evaluation.discriminator_accuracy(aae, x, rng=B.Generator(1, device=dev)))
    assert 0.0 <= acc <= 1.0
    dae = DenoisingAutoencoder((12, 8, 3), corruption="masking", level=0.5, rng=r, dtype="float64")
    terms = dae.eval_terms(x)
    again = dae.eval_terms(x)
    # the denoising term uses a fixed corruption: repeatable, and different from the clean term
    assert B.to_scalar(terms["recon_corrupted"]) == B.to_scalar(again["recon_corrupted"])
    assert B.to_scalar(terms["recon_corrupted"]) != B.to_scalar(terms["recon"])


@pytest.mark.parametrize("kind", KINDS)
def test_evaluating_never_changes_the_noise_of_later_training(kind):
    """Evaluation has its own random stream: test terms, IWAE, samples and figures drawn
    between two epochs leave the second epoch's training bitwise as without them."""
    def second_epoch(evaluate_between):
        model = _small(kind, d=20).configure_optimizers("adam", lr=1e-3)
        x = _patterns(64, 20)
        fit(model, x, epochs=1, batch_size=16, progress=False)
        if evaluate_between:
            evaluate(model, x)
            if kind == "vae":
                evaluation.iwae_bound(model, B.resolve("cpu").asarray(x[:8]), 4, B.Generator(5))
                evaluation.elbo(model, B.resolve("cpu").asarray(x[:8]), B.Generator(6))
            if kind == "aae":
                evaluation.discriminator_accuracy(model, B.resolve("cpu").asarray(x[:8]), B.Generator(7))
            if kind in ("vae", "aae"):
                model.sample(5, B.Generator(8))
        return fit(model, x, epochs=1, batch_size=16, progress=False, start_epoch=1)[-1]
    plain, evaluated = second_epoch(False), second_epoch(True)
    for k in plain:
        if k != "seconds":
            assert plain[k] == evaluated[k], k

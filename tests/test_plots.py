"""scratchae.plots: what the figures show (panel order and titles, series colours and labels,
the notes in the titles) read from the matplotlib objects, and errors for empty inputs."""
import warnings

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from scratchae import backend as B  # noqa: E402
from scratchae import plots  # noqa: E402
from scratchae.models import VAE, DenoisingAutoencoder  # noqa: E402


def history(**terms):
    """Three epochs of {"epoch", <key>: value}; ``terms``: key -> value at epoch 1 (halved at
    each later epoch), in the order given (the order a model returns its terms in)."""
    return [{"epoch": e, **{k: v / e for k, v in terms.items()}, "seconds": 0.1} for e in (1, 2, 3)]


@pytest.fixture
def figure():
    """Build a loss figure (a bare matplotlib Figure: nothing to close)."""
    return plots.loss_figure


def titles(fig):
    return [ax.get_title() for ax in fig.axes]


def lines(ax):
    return [(line.get_label(), line.get_color()) for line in ax.get_lines()]


VAE_H = history(train_recon=300.0, train_kl=20.0, train_loss=320.0,
                test_recon=250.0, test_kl=21.0, test_loss=271.0)
AE_H = history(train_recon=300.0, train_loss=300.0, test_recon=250.0, test_loss=250.0)
AAE_H = history(train_recon=300.0, train_disc=1.3, train_gen=0.7, train_loss=300.0,
                test_recon=250.0, test_loss=250.0, test_disc=1.2, test_gen=0.8)
DAE_H = history(train_recon=300.0, train_loss=300.0, test_recon=250.0, test_loss=250.0,
                test_recon_corrupted=230.0)


# --- 1. panel order ----------------------------------------------------------------------------
def test_vae_panels_are_loss_then_recon_then_kl_not_alphabetical(figure):
    assert titles(figure(VAE_H)) == ["loss", "recon", "kl"]


def test_order_does_not_depend_on_the_order_of_the_history_keys(figure):
    shuffled = [dict(sorted(h.items())) for h in VAE_H]          # kl, loss, recon
    assert titles(figure(shuffled)) == ["loss", "recon", "kl"]


def test_aae_panels_follow_its_train_step_terms(figure):
    assert titles(figure(AAE_H)) == ["loss (= recon)", "disc", "gen"]


def test_unknown_terms_come_last_in_the_order_they_first_appear(figure):
    h = history(train_zeta=1.0, train_recon=5.0, train_alpha=2.0, train_loss=8.0, test_recon=4.0)
    assert titles(figure(h)) == ["loss", "recon", "zeta", "alpha"]


def test_keys_choose_the_panels_and_their_order(figure):
    assert titles(figure(VAE_H, keys=["kl", "loss"])) == ["kl", "loss"]
    with pytest.raises(ValueError, match="nope"):
        plots.loss_figure(VAE_H, keys=["nope"])


# --- 2. no duplicated panels -------------------------------------------------------------------
def test_loss_equal_to_recon_is_one_panel_saying_so(figure):
    fig = figure(AE_H)
    assert titles(fig) == ["loss (= recon)"]
    assert [label for label, _ in lines(fig.axes[0])] == ["train", "test"]


def test_loss_differing_from_recon_in_one_epoch_keeps_both_panels(figure):
    h = [dict(r) for r in AE_H]
    h[-1]["test_loss"] += 1.0
    assert titles(figure(h)) == ["loss", "recon"]


# --- 3. each series its own colour and label ---------------------------------------------------
def test_dae_series_have_distinct_colours_and_say_which_input(figure):
    fig = figure(DAE_H)
    assert titles(fig) == ["loss (= recon)"]          # recon_corrupted is a series, not a panel
    got = lines(fig.axes[0])
    assert [label for label, _ in got] == ["train (corrupted input)", "test (clean input)",
                                           "test (corrupted input)"]
    assert len({colour for _, colour in got}) == 3
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == [label for label, _ in got]
    corrupted = fig.axes[0].get_lines()[2]
    assert list(corrupted.get_ydata()) == [h["test_recon_corrupted"] for h in DAE_H]


def test_train_and_test_colours_differ_in_every_panel(figure):
    for ax in figure(VAE_H).axes:
        assert lines(ax) == [("train", "C0"), ("test", "C1")]


# --- 5. Gaussian likelihood: negative NLL explained -------------------------------------------
NOTE = "nats per example; a Gaussian density's NLL can be negative"


def test_gaussian_likelihood_says_its_nll_can_be_negative(figure):
    neg = history(train_recon=-300.0, train_kl=20.0, train_loss=-280.0)
    assert NOTE in figure(neg, likelihood="gaussian")._suptitle.get_text()
    assert NOTE not in figure(neg, likelihood="bernoulli")._suptitle.get_text()


def loss_titles_of_make_figures(monkeypatch, tmp_path, model, kind, hist):
    seen = []
    build = plots.loss_figure

    def spy(*args, **kwargs):
        fig = build(*args, **kwargs)
        seen.append(fig._suptitle.get_text())
        return fig
    monkeypatch.setattr(plots, "loss_figure", spy)
    x = np.random.default_rng(0).random((12, 784)).astype("float32")
    paths = plots.make_figures(model, kind, x, np.arange(12) % 10, hist, str(tmp_path), 0)
    assert paths[0] == str(tmp_path / "loss_curves.png") and all(isinstance(p, str) for p in paths)
    return seen


def test_make_figures_reads_the_models_likelihood(monkeypatch, tmp_path):
    vae = VAE(sizes=[784, 8, 3], likelihood="gaussian", rng=B.Generator(0))
    neg = history(train_recon=-300.0, train_kl=20.0, train_loss=-280.0)
    assert NOTE in loss_titles_of_make_figures(monkeypatch, tmp_path, vae, "vae", neg)[0]


# --- 6. DAE: why clean input can score worse ---------------------------------------------------
def test_dae_loss_figure_explains_clean_input_scoring_worse(figure):
    text = " ".join(figure(DAE_H, corruption="masking", level=0.5)._suptitle.get_text().split())
    assert ("test (clean input) can be worse than test (corrupted input): the DAE only ever saw "
            "masked inputs, with 0.5 of the ink on average (demos/dae.py)") in text
    assert "DAE" not in figure(AE_H)._suptitle.get_text()


def test_make_figures_gives_the_dae_note_its_corruption(monkeypatch, tmp_path):
    dae = DenoisingAutoencoder(sizes=[784, 8, 3], corruption="masking", level=0.25,
                               rng=B.Generator(0))
    text = " ".join(loss_titles_of_make_figures(monkeypatch, tmp_path, dae, "dae", DAE_H)[0].split())
    assert "masked inputs, with 0.75 of the ink on average" in text


# --- 8. empty inputs: a clear ValueError; normal use: no warnings ------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda p: plots.samples(np.zeros((0, 784)), p), "samples: no images to draw (n=0)"),
    (lambda p: plots.image_grid(np.zeros((0, 784)), p), "image_grid: no images to draw (n=0)"),
    (lambda p: plots.reconstructions(np.zeros((0, 784)), np.zeros((0, 784)), p),
     "reconstructions: no images to draw (n=0)"),
    (lambda p: plots.latent_scatter(np.zeros((0, 2)), np.zeros(0), p),
     "latent_scatter: no codes to draw (n=0)"),
    (lambda p: plots.loss_curves([], p), "loss_curves: no epochs to draw"),
    (lambda p: plots.samples(np.zeros((3, 10)), p), "samples: expected rows of 784 pixels"),
    (lambda p: plots.manifold(lambda z: np.zeros((len(z), 784)), p, n=0), "manifold: n must be"),
])
def test_empty_or_malformed_inputs_raise_a_clear_value_error(tmp_path, call, message):
    path = tmp_path / "fig.png"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(str(path))
    assert not path.exists()


def test_normal_use_issues_no_warnings(tmp_path):
    rng = np.random.default_rng(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.samples(rng.random((3, 784)), str(tmp_path / "s.png"))        # fewer than cols
        plots.reconstructions(rng.random((1, 784)), rng.random((1, 784)), str(tmp_path / "r.png"),
                              corrupted=rng.random((1, 784)))
        plots.latent_scatter(rng.normal(size=(20, 2)), rng.integers(0, 10, 20),
                             str(tmp_path / "z.png"), prior_samples=rng.normal(size=(20, 2)))
        plots.loss_curves(history(train_loss=1.0)[:1], str(tmp_path / "l.png"),
                          title="a long title " * 30)
    assert [str(w.message) for w in caught] == []
    for name in ("s.png", "r.png", "z.png", "l.png"):
        assert (tmp_path / name).stat().st_size > 500


def test_figures_leave_the_callers_backend_and_pyplot_alone(tmp_path):
    """A notebook's inline backend must survive a call into scratchae.plots: the figures are
    bare matplotlib Figures, drawn and saved without pyplot."""
    import matplotlib
    import matplotlib.pyplot as plt
    before = matplotlib.get_backend()
    plt.close("all")
    matplotlib.use("svg")                       # any backend but Agg, the one a headless tool would force
    try:
        rng = np.random.default_rng(0)
        plots.image_grid(rng.uniform(size=(6, 784)), str(tmp_path / "grid.png"), cols=3)
        plots.latent_scatter(rng.normal(size=(20, 2)), np.arange(20) % 10, str(tmp_path / "codes.png"))
        fig = plots.loss_figure(VAE_H)
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == []
        assert (tmp_path / "grid.png").stat().st_size > 100 and (tmp_path / "codes.png").stat().st_size > 100
        assert type(fig).__name__ == "Figure" and fig.axes
    finally:
        matplotlib.use(before)

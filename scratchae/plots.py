"""Figures (matplotlib, headless PNG). Needs ``pip install 'scratchae[plots]'``.

Every function takes host (NumPy) arrays and a path, writes one PNG and returns the path
(:func:`loss_figure` returns the loss figure unsaved); :func:`make_figures` writes all of a
training run's figures. Nothing to draw (no images, no codes, no epochs) is a ValueError that
names the function; matplotlib's cosmetic warnings are not passed on.
"""
from __future__ import annotations

import contextlib
import math
import os
import textwrap
import warnings

from . import backend as B

__all__ = ["image_grid", "reconstructions", "samples", "latent_scatter", "manifold",
           "loss_figure", "loss_curves", "make_figures"]

#: loss terms in the order the models return them (``loss`` first); other terms follow in
#: the order they first appear in the history
TERM_ORDER = ("loss", "recon", "l1", "kl", "disc", "gen")

#: (split, variant) -> colour and style of a loss-curve series; "corrupted" is the DAE's
#: ``test_recon_corrupted`` (clean x reconstructed from a corrupted copy)
_SERIES = {("train", ""): ("C0", "-o"), ("train", "corrupted"): ("C3", "-.v"),
           ("test", ""): ("C1", "--s"), ("test", "corrupted"): ("C2", ":^")}


def _subplots(*args, figsize=None, layout=None, **kwargs):
    """``(figure, axes)`` like ``plt.subplots``, but a bare ``matplotlib.figure.Figure``:
    no pyplot, so no backend is chosen or switched (a notebook's inline figures keep
    working) and nothing is left open in pyplot's figure manager."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("figures need matplotlib: pip install 'scratchae[plots]'") from err
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(*args, **kwargs)


@contextlib.contextmanager
def _quiet():
    """Drawing and saving a figure: inputs are checked first, so what matplotlib or NumPy
    would still warn about (layout engines giving up on a crowded figure, ...) is cosmetic
    and is not passed on to the user as a Python warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with _quiet():
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _images(images, what, side=28):
    """Host array (n, side*side) of the images to draw; a ValueError names ``what`` if there
    are none or they are not side x side images."""
    np_ = B.host
    a = np_.asarray(images, dtype=float)
    if a.ndim == 0 or a.shape[0] == 0 or a.size == 0:
        raise ValueError(f"{what}: no images to draw (n=0)")
    if a.size % (side * side) or a.size // a.shape[0] != side * side:
        raise ValueError(f"{what}: expected rows of {side * side} pixels ({side}x{side} images), "
                         f"got an array of shape {a.shape}")
    return a.reshape(-1, side * side)


def _positive(value, name, what):
    if not isinstance(value, (int, B.host.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _tile(images, cols, side=28):
    np_ = B.host
    images = np_.asarray(images).reshape(-1, side, side)
    rows = -(-len(images) // cols)
    canvas = np_.ones((rows * (side + 2), cols * (side + 2)))
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (side + 2) + 1:r * (side + 2) + 1 + side, c * (side + 2) + 1:c * (side + 2) + 1 + side] = im
    return canvas


def _grid(images, path, cols, title, what):
    images = _images(images, what)
    cols = min(_positive(cols, "cols", what), len(images))
    canvas = _tile(images, cols)
    with _quiet():
        fig, ax = _subplots(figsize=(max(cols * 0.6, 1.0),
                                     canvas.shape[0] / canvas.shape[1] * max(cols * 0.6, 1.0) + 0.3))
        ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
        if title:
            ax.set_title(title, fontsize=9)
    return _save(fig, path)


def image_grid(images, path, cols=10, title=None):
    """A grid of 28x28 images (rows of (N, 784) in [0, 1]), ``cols`` per row (fewer if there
    are fewer images)."""
    return _grid(images, path, cols, title, "image_grid")


def reconstructions(x, recon, path, corrupted=None, n=10, title="reconstructions"):
    """Rows: input, (corrupted input), reconstruction, for the first n examples."""
    what = "reconstructions"
    n = _positive(n, "n", what)
    x = _images(x, what)[:n]
    n = len(x)
    rows = [("input", x)] + ([("corrupted", _images(corrupted, what)[:n])] if corrupted is not None else []) + \
           [("output", _images(recon, what)[:n])]
    for name, imgs in rows:
        if len(imgs) != n:
            raise ValueError(f"{what}: {n} inputs but {len(imgs)} {name} images")
    with _quiet():
        fig, axes = _subplots(len(rows), 1, figsize=(max(n * 0.6, 1.2), len(rows) * 0.75 + 0.3))
        for ax, (name, imgs) in zip(axes, rows):
            ax.imshow(_tile(imgs, n), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0].set_title(title, fontsize=9)
    return _save(fig, path)


def samples(images, path, cols=10, title="samples from the prior"):
    """A grid of sampled 28x28 images (rows of (N, 784) in [0, 1])."""
    return _grid(images, path, cols, title, "samples")


def latent_scatter(codes, labels, path, prior_samples=None, title="latent codes"):
    """2-D codes coloured by digit label, prior samples (if given) in grey behind them."""
    what = "latent_scatter"
    np_ = B.host
    codes = np_.asarray(codes, dtype=float)
    if codes.size == 0:
        raise ValueError(f"{what}: no codes to draw (n=0)")
    if codes.ndim != 2 or codes.shape[1] != 2:
        raise ValueError(f"{what}: expected 2-D codes, an array of shape (n, 2), got {codes.shape}")
    labels = np_.asarray(labels).reshape(-1)
    if len(labels) != len(codes):
        raise ValueError(f"{what}: {len(codes)} codes but {len(labels)} labels")
    ps = None
    if prior_samples is not None:
        ps = np_.asarray(prior_samples, dtype=float)
        if ps.ndim != 2 or ps.shape[0] == 0 or ps.shape[1] != 2:
            raise ValueError(f"{what}: expected prior samples of shape (n, 2) with n >= 1, got {ps.shape}")
    with _quiet():
        fig, ax = _subplots(figsize=(5.5, 5))
        if ps is not None:
            ax.scatter(ps[:, 0], ps[:, 1], s=2, c="0.8", label="prior samples", rasterized=True)
        sc = ax.scatter(codes[:, 0], codes[:, 1], s=2, c=labels, cmap="tab10", vmin=-0.5, vmax=9.5,
                        rasterized=True)
        fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
        if ps is not None:
            ax.legend(loc="upper right", fontsize=7, markerscale=4)
    return _save(fig, path)


def manifold(decode, path, n=15, span=2.0, title="decoded 2-D latent grid"):
    """Decode an n x n grid of 2-D latent points in [-span, span]^2 (for a 2-D VAE: the
    Gaussian's quantiles would warp it; a plain grid is easier to read). ``decode``: host (k,2)
    -> host (k,784)."""
    n = _positive(n, "n", "manifold")
    if not span > 0:
        raise ValueError(f"manifold: span must be > 0, got {span!r}")
    np_ = B.host
    g = np_.linspace(-span, span, n)
    zz = np_.array([[a, b] for b in g[::-1] for a in g])
    return _grid(decode(zz), path, n, title, "manifold")


# --- loss curves ---------------------------------------------------------------------------------
def _loss_series(history):
    """{term: {(split, variant): [(epoch, value), ...]}}, terms in first-appearance order."""
    terms = {}
    for i, h in enumerate(history):
        epoch = h.get("epoch", i + 1)
        for k, v in h.items():
            split, _, term = k.partition("_")
            if split not in ("train", "test") or not term or isinstance(v, (bool, str)) or v is None:
                continue
            variant = ""
            if term.endswith("_corrupted") and term != "_corrupted":
                term, variant = term[:-len("_corrupted")], "corrupted"
            terms.setdefault(term, {}).setdefault((split, variant), []).append((epoch, float(v)))
    return terms


def _same(a, b):
    """Two panels' plain train/test series hold the same points (so one duplicates the other)."""
    base = [("train", ""), ("test", "")]
    if [s in a for s in base] != [s in b for s in base] or not any(s in a for s in base):
        return False
    for s in base:
        pa, pb = a.get(s, []), b.get(s, [])
        if len(pa) != len(pb) or any(ea != eb or not math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-12)
                                     for (ea, va), (eb, vb) in zip(pa, pb)):
            return False
    return True


def _series_label(split, variant, dae):
    if not dae:
        return split if not variant else f"{split} ({variant} input)"
    return f"{split} ({variant or 'clean'} input)" if split == "test" else \
        f"{split} ({variant or 'corrupted'} input)"


def _dae_note(corruption=None, level=None):
    """Why a DAE's clean-input test loss can be the worse one (demos/dae.py measures it)."""
    if corruption == "masking" and level is not None:
        saw = f"masked inputs, with {1 - float(level):g} of the ink on average"
    elif corruption is not None:
        saw = f"corrupted inputs ({corruption}" + (f" at level {float(level):g})" if level is not None else ")")
    else:
        saw = "corrupted inputs"
    return (f"test (clean input) can be worse than test (corrupted input): the DAE only ever saw "
            f"{saw} (demos/dae.py)")


def _units(likelihood):
    if likelihood == "gaussian":
        return "nats per example; a Gaussian density's NLL can be negative"
    if likelihood == "mse":
        return "per example; recon is a squared error, not nats"
    return "nats per example"


def loss_figure(history, keys=None, title=None, likelihood=None, corruption=None, level=None):
    """The figure :func:`loss_curves` saves, not saved (a matplotlib Figure; close it with
    ``matplotlib.pyplot.close``).

    One panel per loss term of the history's ``train_<term>``/``test_<term>`` values:
    ``loss`` first, then the models' terms in their order (``recon``, ``l1``, ``kl``,
    ``disc``, ``gen``), then any others in the order they first appear (``keys``: these
    terms, in this order). A panel that would repeat another (every ``loss`` equal to
    ``recon``, as for the AE, DAE and AAE) is drawn once, titled ``loss (= recon)``. A DAE's
    ``test_<term>_corrupted`` is a third series of its term's panel. Each series has its own
    colour: train C0, test C1, test on corrupted input C2.

    ``likelihood`` (the model's) sets the units in the default title: "gaussian" says that a
    density's NLL can be negative; "mse", that ``recon`` is a squared error. ``corruption`` and ``level`` (a DAE's) word the note on why its
    clean-input test loss can be the worse one.
    """
    history = list(history or [])
    if not history:
        raise ValueError("loss_curves: no epochs to draw (the history is empty)")
    series = _loss_series(history)
    if keys is None:
        keys = [t for t in TERM_ORDER if t in series] + [t for t in series if t not in TERM_ORDER]
    else:
        keys = list(keys)
        missing = [k for k in keys if k not in series]
        if missing:
            raise ValueError(f"loss_curves: no train_/test_ values for {missing} in the history "
                             f"(its terms: {list(series)})")
    if not keys:
        raise ValueError("loss_curves: the history has no train_<term> or test_<term> values")
    panels = []                                     # [names, {series: points}]
    for k in keys:
        for names, data in panels:
            if _same(data, series[k]):
                names.append(k)
                for s, pts in series[k].items():
                    data.setdefault(s, pts)
                break
        else:
            panels.append([[k], dict(series[k])])
    dae = any(v == "corrupted" for _, data in panels for (_, v) in data)

    if title is None:
        title = f"loss per epoch ({_units(likelihood)})"
    width = max(3.4 * len(panels), 5.0)
    lines = [title]
    if dae:
        lines.append(textwrap.fill(_dae_note(corruption, level), width=int(width * 15)))
    from matplotlib.ticker import MaxNLocator
    with _quiet():
        fig, axes = _subplots(1, len(panels), figsize=(width, 3.0 + 0.15 * len(lines)),
                              squeeze=False, layout="constrained")
        for ax, (names, data) in zip(axes[0], panels):
            for s in sorted(data, key=list(_SERIES).index):
                color, style = _SERIES[s]
                ep, ys = zip(*data[s])
                ax.plot(ep, ys, style, ms=3, color=color, label=_series_label(*s, dae))
            ax.set_title(names[0] if len(names) == 1 else f"{names[0]} (= {' = '.join(names[1:])})",
                         fontsize=9)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("per example" if likelihood == "mse" else "nats per example",
                              fontsize=8)
        fig.suptitle("\n".join(lines), fontsize=9)
    return fig


def loss_curves(history, path, keys=None, title=None, likelihood=None, corruption=None,
                level=None):
    """Save :func:`loss_figure` (train and test curves of every loss term) as a PNG at
    ``path``; returns ``path``."""
    return _save(loss_figure(history, keys, title, likelihood, corruption, level), path)


def make_figures(model, kind, x_test, y_test, history, out, seed):
    """Write a training run's PNGs into ``out`` and return their paths: loss curves,
    reconstructions (with the corrupted inputs for a DAE), samples (VAE, AAE), and for a
    2-D code the latent scatter (with prior samples for an AAE) and the VAE's manifold.
    Noise comes from ``Generator(seed + 99)``, never from the model's generator."""
    from .stochastic import corrupt
    p0 = next(iter(model.named_parameters()))[1]
    be, dt = B.resolve(p0), B.dtype_name(p0.dtype)
    rng = B.Generator(seed + 99, device=be)
    x = be.asarray(x_test[:10], dt)
    paths = [loss_curves(history, os.path.join(out, "loss_curves.png"),
                         likelihood=getattr(model, "likelihood", None),
                         corruption=getattr(model, "corruption", None) if kind == "dae" else None,
                         level=getattr(model, "level", None) if kind == "dae" else None)]
    corrupted = None
    if kind == "dae":
        xc = corrupt(x, model.corruption, model.level, rng=rng)
        corrupted = B.to_numpy(xc)
        recon = B.to_numpy(model.reconstruct(xc))
    else:
        recon = B.to_numpy(model.reconstruct(x))
    paths.append(reconstructions(x_test[:10], recon, os.path.join(out, "reconstructions.png"),
                                 corrupted=corrupted))
    if kind in ("vae", "aae"):
        paths.append(samples(B.to_numpy(model.sample(100, rng)), os.path.join(out, "samples.png")))
    if model.config["sizes"][-1] == 2:
        codes = B.to_numpy(model.encode(be.asarray(x_test[:5000], dt)))
        prior = None
        if kind == "aae":
            prior = B.to_numpy(model.prior.sample(5000, rng, None, dt))
        paths.append(latent_scatter(codes, y_test[:5000], os.path.join(out, "latent.png"),
                                    prior_samples=prior))
        if kind == "vae":
            paths.append(manifold(lambda z: B.to_numpy(model.decode(be.asarray(z, dt))),
                                  os.path.join(out, "manifold.png")))
    return paths

"""Figures (matplotlib, headless PNG). Needs ``pip install 'scratchae[plots]'``.

Every function takes host (NumPy) arrays and a path, writes one PNG and returns the path;
:func:`make_figures` writes all of a training run's figures.
"""
from __future__ import annotations

import os

from . import backend as B

__all__ = ["image_grid", "reconstructions", "samples", "latent_scatter", "manifold",
           "loss_curves", "make_figures"]


def _plt():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("figures need matplotlib: pip install 'scratchae[plots]'") from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _tile(images, cols, side=28):
    np_ = B.host
    images = np_.asarray(images).reshape(-1, side, side)
    rows = -(-len(images) // cols)
    canvas = np_.ones((rows * (side + 2), cols * (side + 2)))
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (side + 2) + 1:r * (side + 2) + 1 + side, c * (side + 2) + 1:c * (side + 2) + 1 + side] = im
    return canvas


def image_grid(images, path, cols=10, title=None):
    """A grid of 28x28 images (rows of (N, 784) in [0, 1])."""
    plt = _plt()
    canvas = _tile(images, cols)
    fig, ax = plt.subplots(figsize=(cols * 0.6, canvas.shape[0] / canvas.shape[1] * cols * 0.6 + 0.3))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def reconstructions(x, recon, path, corrupted=None, n=10, title="reconstructions"):
    """Rows: input, (corrupted input), reconstruction, for n examples."""
    plt = _plt()
    rows = [("input", x[:n])] + ([("corrupted", corrupted[:n])] if corrupted is not None else []) + \
           [("output", recon[:n])]
    fig, axes = plt.subplots(len(rows), 1, figsize=(n * 0.6, len(rows) * 0.75 + 0.3))
    for ax, (name, imgs) in zip(axes, rows):
        ax.imshow(_tile(imgs, n), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_title(title, fontsize=9)
    return _save(fig, path)


def samples(images, path, cols=10, title="samples from the prior"):
    return image_grid(images, path, cols=cols, title=title)


def latent_scatter(codes, labels, path, prior_samples=None, title="latent codes"):
    """2-D codes coloured by digit label, prior samples (if given) in grey behind them."""
    plt = _plt()
    np_ = B.host
    codes = np_.asarray(codes)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if prior_samples is not None:
        ps = np_.asarray(prior_samples)
        ax.scatter(ps[:, 0], ps[:, 1], s=2, c="0.8", label="prior samples", rasterized=True)
    sc = ax.scatter(codes[:, 0], codes[:, 1], s=2, c=labels, cmap="tab10", rasterized=True)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    if prior_samples is not None:
        ax.legend(loc="upper right", fontsize=7, markerscale=4)
    return _save(fig, path)


def manifold(decode, path, n=15, span=2.0, title="decoded 2-D latent grid"):
    """Decode an n x n grid of 2-D latent points in [-span, span]^2 (for a 2-D VAE: the
    Gaussian's quantiles would warp it; a plain grid is easier to read). ``decode``: host (k,2)
    -> host (k,784)."""
    np_ = B.host
    g = np_.linspace(-span, span, n)
    zz = np_.array([[a, b] for b in g[::-1] for a in g])
    return image_grid(decode(zz), path, cols=n, title=title)


def loss_curves(history, path, keys=None, title="loss per epoch (nats per example)"):
    """Train and test curves of every ``train_*``/``test_*`` term in the history."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    keys = keys or sorted({k.split("_", 1)[1] for h in history for k in h if k.startswith(("train_", "test_"))})
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        for split, style in (("train", "-o"), ("test", "--s")):
            ys = [h.get(f"{split}_{k}") for h in history]
            if any(y is not None for y in ys):
                ax.plot(epochs, ys, style, ms=3, label=split)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


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
    paths = [loss_curves(history, os.path.join(out, "loss_curves.png"))]
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

"""Denoising vs plain autoencoder on masked digits.

A DenoisingAutoencoder (masking noise: each pixel zeroed with probability --level during
training, loss against the clean image) and an Autoencoder of the same size are trained
with the same budget (784-400-32, Adam 1e-3, batch 128, same epochs and seed). Both then
reconstruct the *same* masked test digits (one fixed, seeded mask, --test-level of the
pixels zeroed), scored against the clean digits: BCE in nats per example and squared error
per example (both summed over the 784 pixels), and, for reference, on the clean digits.

    python demos/dae.py
    python demos/dae.py --level 0.3 --test-level 0.5 --device cuda
"""
from __future__ import annotations

import os
import time

import _common
from scratchae import backend as B
from scratchae import losses
from scratchae.cli import RECIPES
from scratchae.models import Autoencoder, DenoisingAutoencoder
from scratchae.stochastic import corrupt
from scratchae.train import fit


def train(model, x_train, args):
    model.configure_optimizers("adam", lr=RECIPES["dae"]["lr"])
    t0 = time.perf_counter()
    history = fit(model, x_train, epochs=args.epochs, batch_size=RECIPES["dae"]["batch_size"],
                  seed=args.seed, progress=False)
    return history, time.perf_counter() - t0


def scores(model, x_in, x_clean):
    """(BCE, MSE) of reconstructing x_clean from x_in, per example (eval mode: no corruption)."""
    model.eval()
    logits = model.decoder(model.encoder(x_in))
    model.train()
    bce = losses.bce_with_logits(logits, x_clean)[0]
    mse = losses.mse(model.decode(model.encode(x_in)), x_clean)[0]
    return B.to_scalar(bce), B.to_scalar(mse)


def main(args):
    ds, x_train, x_test = _common.load_mnist(args)
    be = args.backend
    sizes = RECIPES["dae"]["sizes"]
    arch = _common.arch_kwargs(args, sizes, code=20)        # conv: the conv recipe's code of 20
    dae = DenoisingAutoencoder(**arch, corruption="masking", level=args.level,
                               rng=B.Generator(args.seed, device=be))
    ae = Autoencoder(**arch, rng=B.Generator(args.seed, device=be))   # same initial weights
    _, t_dae = train(dae, x_train, args)
    _, t_ae = train(ae, x_train, args)

    # one fixed keep-mask for every model: P(keep) = 1 - test_level
    x = be.asarray(x_test, "float32")
    keep = B.Generator(args.seed + 12345, device=be).bernoulli(tuple(x.shape), 1.0 - args.test_level)
    x_masked = corrupt(x, "masking", args.test_level, noise=keep)
    frac = 1.0 - B.to_scalar(be.xp.mean(keep))

    res = {name: {"masked": scores(m, x_masked, x), "clean": scores(m, x, x)}
           for name, m in (("AE", ae), ("DAE", dae))}
    print(f"{'-'.join(map(str, sizes)) if args.arch == 'mlp' else 'conv (docs/conv.md)'}, {args.epochs} epochs each on {ds.source} ({len(x_train)} "
          f"images; AE {t_ae:.1f} s, DAE {t_dae:.1f} s), DAE trained with masking level {args.level}")
    print(f"{len(x_test)} test digits, {100 * frac:.1f}% of pixels masked (same mask for both); "
          "error against the clean digits, per example:")
    print(f"  {'':6s}{'BCE masked':>11s}{'MSE masked':>11s}{'BCE clean':>11s}{'MSE clean':>11s}")
    for name, r in res.items():
        print(f"  {name:6s}{r['masked'][0]:11.2f}{r['masked'][1]:11.2f}{r['clean'][0]:11.2f}{r['clean'][1]:11.2f}")
    ra = [res["AE"]["masked"][i] / res["DAE"]["masked"][i] for i in (0, 1)]
    print(f"  on masked digits AE / DAE = {ra[0]:.2f} (BCE), {ra[1]:.2f} (MSE)")
    # why the DAE can score worse on clean digits than on masked ones (scratchae.plots says the
    # same under a DAE's loss curves, where test_recon is clean and test_recon_corrupted masked)
    half = scores(dae, (1.0 - args.level) * x, x)[0]
    clean, masked = res["DAE"]["clean"][0], res["DAE"]["masked"][0]
    worse = (f"the DAE scores worse on clean digits than on masked ones, {clean:.2f} vs {masked:.2f} BCE: "
             "it" if clean > masked else "the DAE")
    print(f"  ({worse} only ever saw masked inputs, with {1 - args.level:g} of the ink on average; "
          f"fed {1 - args.level:g} x the clean digit it scores {half:.2f} BCE)")

    n = 10
    rows = [("clean", x_test[:n]), (f"masked {args.test_level:g}", B.to_numpy(x_masked[:n, :])),
            ("AE", B.to_numpy(ae.reconstruct(x_masked[:n, :]))),
            ("DAE", B.to_numpy(dae.reconstruct(x_masked[:n, :])))]
    path = _common.image_rows(rows, os.path.join(args.out, "denoising.png"),
                              title=f"masked test digits: BCE per example AE {res['AE']['masked'][0]:.1f}, "
                                    f"DAE {res['DAE']['masked'][0]:.1f} nats")
    print("figures: " + _common.rel(path))


if __name__ == "__main__":
    p = _common.parser("dae", __doc__, epochs=20)
    _common.add_arch(p)
    p.add_argument("--level", type=float, default=RECIPES["dae"]["level"],
                   help="training masking level of the DAE (default 0.5)")
    p.add_argument("--test-level", type=float, default=0.5,
                   help="fraction of test pixels masked (default 0.5)")
    _common.run(main, p)

"""Adversarial autoencoder with a 2-D code pushed onto a prior (Makhzani et al. 2016, Fig. 4).

Each minibatch: a reconstruction step, a discriminator step (prior samples vs codes) and a
generator step (the encoder fools the discriminator). Afterwards, on held-out digits:

* the discriminator's accuracy on [prior samples; test codes] (0.5 = it cannot tell them apart);
* MMD^2 between the test codes and as many prior samples (unbiased estimate, RBF kernel,
  median-heuristic bandwidth), next to MMD^2 between two independent prior samples of the
  same size: the value to expect when the codes really follow the prior.

The paper's networks are 784-1000-1000-2 with a 1000-1000 discriminator; to train in well
under two minutes on the 5000-image subset on a CPU the default here is --hidden 256.

    python demos/aae.py
    python demos/aae.py --supervised                   # each digit onto its own component
    python demos/aae.py --prior swiss_roll --epochs 40
    python demos/aae.py --hidden 1000 --data mnist.npz --device cuda
"""
from __future__ import annotations

import os
import time

import _common
from scratchae import backend as B
from scratchae import evaluation
from scratchae import plots
from scratchae.cli import RECIPES
from scratchae.plots import make_figures
from scratchae.models import AdversarialAutoencoder
from scratchae.train import fit


def main(args):
    ds, x_train, x_test = _common.load_mnist(args)
    be = args.backend
    h = args.hidden
    model = AdversarialAutoencoder(sizes=[784, h, h, 2], disc_sizes=[h, h], prior=args.prior,
                                   supervised=args.supervised, rng=B.Generator(args.seed, device=be))
    model.configure_optimizers("adam", lr=args.lr)
    t0 = time.perf_counter()
    history = fit(model, x_train, ds.y_train, epochs=args.epochs, batch_size=args.batch_size,
                  seed=args.seed, x_test=x_test, y_test=ds.y_test, progress=False)
    seconds = time.perf_counter() - t0
    last = history[-1]

    # held-out evaluation, with its own seeded generator
    rng = B.Generator(args.seed + 1, device=be)
    x = be.asarray(x_test, "float32")
    labels = be.asarray(ds.y_test.astype("int64"), "int64") if args.supervised else None
    acc = B.to_scalar(evaluation.discriminator_accuracy(model, x, rng, labels=labels))
    codes = model.encode(x)
    n = codes.shape[0]
    # supervised: prior samples take the test labels' components, so the class mix matches
    mmd_codes = evaluation.mmd2(codes, model.prior.sample(n, rng, labels))
    refs = B.host.array([evaluation.mmd2(model.prior.sample(n, rng, labels), model.prior.sample(n, rng, labels))
                         for _ in range(args.mmd_repeats)])

    kind = "supervised " if args.supervised else ""
    print(f"{kind}AAE 784-{h}-{h}-2, discriminator {h}-{h}, prior {args.prior}, on {ds.source} "
          f"({len(x_train)} train / {len(x_test)} test), {args.epochs} epochs in {seconds:.1f} s, "
          f"device {be}")
    print(f"  test reconstruction BCE {last['test_recon']:.2f} nats/example "
          f"(train {last['train_recon']:.2f}); last epoch's losses D {last['train_disc']:.3f}, "
          f"G {last['train_gen']:.3f}")
    print(f"  held-out discriminator accuracy on [prior; codes]: {acc:.3f}  (0.5 = indistinguishable)")
    print(f"  MMD^2(test codes, prior)   = {mmd_codes:+.5f}   ({n} vs {n} points, RBF, median bandwidth)")
    print(f"  MMD^2(prior, prior') ref.  = {refs.mean():+.5f} +- {refs.std():.5f}  (mean +- sd over "
          f"{args.mmd_repeats} pairs of independent prior samples: what matching codes would give)")

    paths = make_figures(model, "aae", x_test, ds.y_test, history, args.out, args.seed)
    if args.supervised:
        lab = be.asarray(B.host.tile(B.host.arange(10), 10), "int64")   # column c: component c
        imgs = B.to_numpy(model.sample(100, B.Generator(args.seed + 2, device=be), labels=lab))
        paths.append(plots.samples(imgs, os.path.join(args.out, "samples_by_label.png"),
                                   title="decoded prior samples, column c from component c"))
    print("figures: " + ", ".join(_common.rel(p) for p in paths))


if __name__ == "__main__":
    p = _common.parser("aae", __doc__, epochs=30)
    p.add_argument("--prior", default="mixture", choices=["mixture", "swiss_roll", "gaussian", "uniform"],
                   help="prior on the 2-D code (default: 10-Gaussian mixture)")
    p.add_argument("--supervised", action="store_true",
                   help="label-conditioned: the discriminator sees the one-hot label, and prior "
                        "samples come from the label's component")
    p.add_argument("--hidden", type=int, default=256,
                   help="width of the two hidden layers of encoder, decoder and discriminator "
                        "(paper: 1000; default 256)")
    p.add_argument("--lr", type=float, default=RECIPES["aae"]["lr"], help="Adam learning rate of all three phases (default 2e-4, the recipe)")
    p.add_argument("--batch-size", type=int, default=RECIPES["aae"]["batch_size"])
    p.add_argument("--mmd-repeats", type=int, default=5,
                   help="independent prior-vs-prior pairs for the MMD reference (default 5)")
    _common.run(main, p)

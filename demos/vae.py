"""Train the VAE recipe (784-400-20, Bernoulli decoder, Adam 1e-3, batch 128) and measure it.

Prints the test negative ELBO (nats per example: reconstruction + analytic KL, one z sample
per image) and the tighter importance-weighted bound -IWAE_k (Burda et al. 2016) with a
modest k: -log p(x) <= -IWAE_k <= -ELBO in expectation. Draws samples from the prior and
reconstructions; with --latent-dim 2 also the decoded latent grid and the test codes.

    python demos/vae.py
    python demos/vae.py --latent-dim 2 --epochs 40
    python demos/vae.py --device cuda --data mnist.npz --iwae-k 5000
"""
from __future__ import annotations

import time

import _common
from scratchae import backend as B
from scratchae import evaluation
from scratchae.cli import RECIPES
from scratchae.plots import make_figures
from scratchae.models import VAE
from scratchae.train import fit


def main(args):
    ds, x_train, x_test = _common.load_mnist(args)
    be = args.backend
    r = RECIPES["vae"]
    sizes = [*r["sizes"][:-1], args.latent_dim]
    model = VAE(**_common.arch_kwargs(args, sizes), rng=B.Generator(args.seed, device=be))
    model.configure_optimizers("adam", lr=r["lr"])
    t0 = time.perf_counter()
    history = fit(model, x_train, ds.y_train, epochs=args.epochs, batch_size=r["batch_size"],
                  seed=args.seed, x_test=x_test, y_test=ds.y_test, progress=False)
    seconds = time.perf_counter() - t0
    h = history[-1]

    # -IWAE_k on the first n test images, 100 at a time (its own seeded generator)
    t0 = time.perf_counter()
    rng = B.Generator(args.seed + 1, device=be)
    n = min(args.iwae_examples, len(x_test))
    total = {1: 0.0, args.iwae_k: 0.0}
    for s in range(0, n, 100):
        xb = be.asarray(x_test[s:min(n, s + 100)], "float32")
        for k in total:
            total[k] += B.to_scalar(be.xp.sum(evaluation.iwae_bound(model, xb, k, rng)))
    iwae_seconds = time.perf_counter() - t0

    print(f"VAE {'-'.join(map(str, sizes)) if args.arch == 'mlp' else 'conv (docs/conv.md)'} on {ds.source} ({len(x_train)} train / "
          f"{len(x_test)} test), {args.epochs} epochs in {seconds:.1f} s, device {be}")
    print(f"  test -ELBO  {h['test_loss']:7.2f} nats/example  (recon {h['test_recon']:.2f} + KL "
          f"{h['test_kl']:.2f}; train -ELBO {h['train_loss']:.2f})")
    print(f"  test -IWAE_1 {-total[1] / n:7.2f}, -IWAE_{args.iwae_k} {-total[args.iwae_k] / n:7.2f} "
          f"nats/example on {n} test images ({iwae_seconds:.1f} s; an upper bound on -log p(x))")
    paths = make_figures(model, "vae", x_test, ds.y_test, history, args.out, args.seed)
    print("figures: " + ", ".join(_common.rel(p) for p in paths))


if __name__ == "__main__":
    p = _common.parser("vae", __doc__, epochs=30)
    _common.add_arch(p)
    p.add_argument("--latent-dim", type=int, default=RECIPES["vae"]["sizes"][-1],
                   help="size of z (default 20; 2 adds the manifold and latent scatter)")
    p.add_argument("--iwae-k", type=int, default=200, help="importance samples (default 200)")
    p.add_argument("--iwae-examples", type=int, default=1000,
                   help="test images for the IWAE bound (default 1000)")
    _common.run(main, p)

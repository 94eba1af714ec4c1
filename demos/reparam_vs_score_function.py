r"""Two unbiased estimators of d/dmu E_q[f(z)], q = N(mu, sigma^2), and their variances.

* reparameterisation (pathwise): z = mu + sigma * eps, so d/dmu f(z) = f'(z) * dz/dmu. Here it
  is scratchae.stochastic.GaussianSample's forward and backward (the VAE's sampler): the
  estimate is the dmu its backward returns for dz = f'(z) / S.
* score function (REINFORCE): d/dmu E_q[f] = E_q[f(z) * d/dmu log q(z)],
  d/dmu log q(z) = (z - mu) / sigma^2. It needs only values of f, never its derivative.

For S samples each estimator is the mean of S per-sample terms; it is repeated --repeats
times with fresh noise to measure its mean and variance. Two functions:

    quadratic     f(z) = (z - 2)^2             d/dmu E f = 2 (mu - 2)            (closed form)
    log-sigmoid   f(z) = log sigmoid(z)        d/dmu E f = E sigmoid(-z)         (Gauss-Hermite, 100 nodes)

(log sigmoid(z) is the log-likelihood of a Bernoulli observation 1 with logit z.)

    python demos/reparam_vs_score_function.py
    python demos/reparam_vs_score_function.py --mu 1 --sigma 0.5 --device cuda
"""
from __future__ import annotations

import math
import os

import _common
from scratchae import backend as B
from scratchae.layers import sigmoid, softplus
from scratchae.stochastic import GaussianSample

SAMPLE_SIZES = (1, 4, 16, 64, 256, 1024)


def functions(mu, sigma):
    """name -> (f, f', exact d/dmu E_q f)."""
    np = B.host
    nodes, weights = np.polynomial.hermite_e.hermegauss(100)      # weight exp(-x^2 / 2)
    e_sig_minus = float(np.sum(weights * (1.0 / (1.0 + np.exp(mu + sigma * nodes))))) / math.sqrt(2 * math.pi)
    return {
        "(z-2)^2": (lambda z: (z - 2.0) ** 2, lambda z: 2.0 * (z - 2.0), 2.0 * (mu - 2.0)),
        "log sigmoid(z)": (lambda z: -softplus(-z), lambda z: sigmoid(-z), e_sig_minus),
    }


def estimates(f, df, mu, sigma, S, repeats, rng, be):
    """(reparameterisation, score function) estimates, each of shape (repeats,)."""
    xp = be.xp
    shape = (repeats, S)
    mu_a = be.asarray(B.host.full(shape, mu), "float64")
    logvar_a = be.asarray(B.host.full(shape, 2.0 * math.log(sigma)), "float64")   # sigma^2 = exp(logvar)
    eps = rng.normal(shape, "float64")
    sampler = GaussianSample()
    z = sampler.forward(mu_a, logvar_a, eps=eps)         # z = mu + exp(0.5 logvar) * eps
    dmu, _ = sampler.backward(df(z) / S)                 # L = mean_s f(z_s)  ->  dL/dz = f'(z) / S
    reparam = xp.sum(dmu, axis=1)
    score = xp.mean(f(z) * (z - mu_a) / sigma ** 2, axis=1)
    return B.to_numpy(reparam), B.to_numpy(score)


def main(args):
    be, np = args.backend, B.host
    rng = B.Generator(args.seed, device=be)
    results = {}
    print(f"q = N(mu={args.mu:g}, sigma={args.sigma:g}); each estimate repeated {args.repeats} times; "
          f"mean +- standard error, variance of one S-sample estimate (device {be})")
    for name, (f, df, exact) in functions(args.mu, args.sigma).items():
        print(f"f(z) = {name}: exact d/dmu E f = {exact:.6f}")
        print(f"  {'S':>5s}  {'reparam mean':>20s}  {'score-fn mean':>20s}  {'var reparam':>11s}"
              f"  {'var score':>10s}  {'ratio':>6s}")
        rows = []
        for S in SAMPLE_SIZES:
            r, s = estimates(f, df, args.mu, args.sigma, S, args.repeats, rng, be)
            n = len(r)
            row = (S, r.mean(), r.std(ddof=1) / math.sqrt(n), s.mean(), s.std(ddof=1) / math.sqrt(n),
                   r.var(ddof=1), s.var(ddof=1))
            rows.append(row)
            print(f"  {S:5d}  {row[1]:+10.5f} +- {row[2]:.5f}  {row[3]:+10.5f} +- {row[4]:.5f}  "
                  f"{row[5]:11.3e}  {row[6]:10.3e}  {row[6] / row[5]:6.1f}")
        z_scores = [abs(rw[m] - exact) / rw[m + 1] for rw in rows for m in (1, 3)]
        print(f"  both unbiased: every mean within {max(z_scores):.1f} standard errors of the exact value; "
              f"score-function variance {np.median([rw[6] / rw[5] for rw in rows]):.0f}x the "
              f"reparameterisation's (median over S)")
        results[name] = (exact, rows)
    path = plot(results, os.path.join(args.out, "variance_vs_samples.png"), args)
    print("figures: " + _common.rel(path))


def plot(results, path, args):
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(4.3 * len(results), 3.6))
    for ax, (name, (exact, rows)) in zip(axes, results.items()):
        S = [r[0] for r in rows]
        ax.loglog(S, [r[5] for r in rows], "o-", label="reparameterisation")
        ax.loglog(S, [r[6] for r in rows], "s-", label="score function")
        for k, style in ((5, "C0:"), (6, "C1:")):
            ax.loglog(S, [rows[0][k] / s for s in S], style, lw=1)
        ax.set_xlabel("samples S per estimate")
        ax.set_ylabel("variance of the estimate")
        ax.set_title(f"f(z) = {name}, exact {exact:.4f}", fontsize=9)
        ax.legend(fontsize=8, title="dotted: 1/S", title_fontsize=7)
    fig.suptitle(f"d/dmu E[f(z)], z ~ N({args.mu:g}, {args.sigma:g}^2): variance over "
                 f"{args.repeats} repeats", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    p = _common.parser("reparam_vs_score_function", __doc__, data=False)
    p.add_argument("--mu", type=float, default=0.5)
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=2000, help="independent estimates per S (default 2000)")
    _common.run(main, p)

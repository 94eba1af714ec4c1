# %% [markdown]
r"""
# 4. The variational autoencoder

**What this notebook teaches.** The VAE of `scratchae.models.VAE` from its objective to its
backward:

1. the **ELBO**, with its reconstruction term written as $\mathbb E_{q(z\mid x)}[\log p(x\mid z)]$;
2. why the **KL term is analytic** (both distributions are Gaussian), checked against a Monte
   Carlo estimate;
3. what the **reparameterisation trick** is for instead (a low-variance gradient of the
   reconstruction term), measured against the score-function estimator;
4. the **sampler's backward** $z = \mu + e^{\frac12\text{logvar}}\odot\varepsilon$, checked, and
   a bug a gradient check can and one it cannot see;
5. the **whole VAE backward**, checked with the noise fixed;
6. a VAE with a **2-D code** trained briefly on the bundled MNIST subset: samples, the 2-D
   manifold, the codes; and the **IWAE$_k$** bound growing with $k$.

Conventions: $\sigma^2 = \exp(\text{logvar})$ everywhere, so $\sigma = \exp(\tfrac12\text{logvar})$
(and $\sigma$ is never the sigmoid, written $\operatorname{sigmoid}$ here); losses in nats per
example (summed over pixels and latent units, averaged over the batch).

**How to run it.** Locally, from a clone of the repository: `pip install -e ".[dev]"`,
then open `docs/notebooks/` in VS Code (the dev extra has the kernel) or Jupyter
(`pip install jupyterlab`, `jupyter lab`) and run all cells (about 10 s on a laptop CPU: one
small VAE trains for ten epochs on the 5,000-digit MNIST subset shipped with the package).
On Colab: open the notebook, run the first code cell (it installs scratchae when it is not
importable; set `SOURCE` there to your clone's git URL), then run all. Every random number
comes from a seeded `scratchae.backend.Generator`.

Background: [`docs/vae.md`](../vae.md) (these derivations as text).
"""

# %% {include=_install.py}

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from scratchae import backend as B
from scratchae import evaluation, losses
from scratchae.data import load_dataset, preprocess
from scratchae.gradcheck import FAILED, check_function, check_layer, check_objective
from scratchae.layers import sigmoid, softplus
from scratchae.models import VAE
from scratchae.stochastic import GaussianSample, SoftClamp, gaussian_kl, gaussian_kl_per_example
from scratchae.train import fit

blas_limits = threadpool_limits(1)   # one BLAS thread: fastest for these small matrices, even on a busy machine

def tile(images, cols):
    """(n, 784) images as one (rows*28, cols*28) canvas."""
    images = np.asarray(images).reshape(-1, 28, 28)
    rows = -(-len(images) // cols)
    canvas = np.zeros((rows * 28, cols * 28))
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[28 * r:28 * r + 28, 28 * c:28 * c + 28] = im
    return canvas


ds = load_dataset("mnist", data="bundled")      # the 5000 / 1000-digit subset shipped with the package
x_train, x_test = preprocess(ds.x_train), preprocess(ds.x_test)   # (N, 784) float32 in [0, 1]


# %% {include=_docstring_block.py}
# %% [markdown]
r"""
## The model and the ELBO

* prior $p(z) = \mathcal N(0, I_d)$, $z$ of shape `(d,)` per example;
* decoder $p_\theta(x\mid z)$: Bernoulli with logits $g_\theta(z)$ `(N, D)`, $D = 784$;
* encoder $q_\phi(z\mid x) = \mathcal N\bigl(\mu_\phi(x), \operatorname{diag}(e^{\text{logvar}_\phi(x)})\bigr)$:
  its last layer outputs `[mu | logvar]`, `(N, 2d)`.

The marginal $p_\theta(x) = \int p_\theta(x\mid z)\,p(z)\,dz$ has no closed form, and neither
has the posterior $p_\theta(z\mid x)$. For any $q$, since $\log p(x)$ does not depend on $z$,

$$
\log p(x) = \mathbb E_{q}\Bigl[\log\frac{p(x,z)}{q(z\mid x)}\Bigr] + \mathbb E_q\Bigl[\log\frac{q(z\mid x)}{p(z\mid x)}\Bigr]
= \mathrm{ELBO}(x) + \mathrm{KL}\bigl(q(z\mid x)\,\Vert\,p(z\mid x)\bigr) \;\ge\; \mathrm{ELBO}(x),
$$

and writing $p(x, z) = p(x\mid z)\,p(z)$ splits the bound into two terms:

$$
\mathrm{ELBO}(x) = \underbrace{\mathbb E_{z\sim q(z\mid x)}\bigl[\log p(x\mid z)\bigr]}_{\text{reconstruction}}
\;-\;\underbrace{\mathrm{KL}\bigl(q(z\mid x)\,\Vert\,p(z)\bigr)}_{\text{regulariser}} .
$$

The reconstruction term is the log-likelihood of the data **given a code drawn from the
encoder**, $\log p(x\mid z)$; it is not $\log p(z\mid x)$, the intractable posterior, which
only appears in the gap. The library minimises, per batch,

$$
L = \frac1N\sum_{n}\Bigl[-\log p(x_n\mid z_n) + \beta\,\mathrm{KL}\bigl(q(z\mid x_n)\Vert p(z)\bigr)\Bigr],
\qquad z_n = \mu_n + \sigma_n\odot\varepsilon_n,\ \varepsilon_n\sim\mathcal N(0, I),
$$

for $\beta = 1$ an unbiased one-sample estimate of the batch's mean $-\mathrm{ELBO}$ (only the
reconstruction term is sampled; the KL is exact, see below), in nats per example
(`terms["recon"]`, `terms["kl"]`, `terms["loss"]`).

## The KL term is analytic, because both distributions are Gaussian

Per latent unit, with $q = \mathcal N(\mu, \sigma^2)$ and $p = \mathcal N(0, 1)$, using
$\mathbb E_q[(z-\mu)^2] = \sigma^2$ and $\mathbb E_q[z^2] = \mu^2 + \sigma^2$:

$$
\mathrm{KL}(q\Vert p) = \mathbb E_q\Bigl[-\tfrac12\log\sigma^2 - \tfrac{(z-\mu)^2}{2\sigma^2} + \tfrac{z^2}{2}\Bigr]
= \tfrac12\bigl(\sigma^2 + \mu^2 - 1 - \log\sigma^2\bigr).
$$

A diagonal Gaussian factorises, so the KL sums over the $d$ units. With
$\sigma^2 = e^{\text{logvar}}$ and the batch mean, for $\mu$, logvar `(N, d)`:

$$
\mathrm{KL} = \frac1N\sum_{n,j}\tfrac12\bigl(e^{\text{logvar}_{nj}} + \mu_{nj}^2 - 1 - \text{logvar}_{nj}\bigr),
\qquad
\underbrace{\frac{\partial\mathrm{KL}}{\partial\mu}}_{(N,d)} = \frac{\mu}{N},
\qquad
\underbrace{\frac{\partial\mathrm{KL}}{\partial\,\text{logvar}}}_{(N,d)} = \frac{\tfrac12(e^{\text{logvar}} - 1)}{N}.
$$

Below: the analytic value against a Monte Carlo estimate
$\frac1S\sum_s[\log q(z_s) - \log p(z_s)]$ with $z_s\sim q$, which is unbiased, so the two
should agree within about 3 standard errors ($\hat s/\sqrt S$, with $\hat s$ the sample
standard deviation of the $S$ terms); then the two gradients checked.
"""

# %%
mu = np.array([[0.8, -1.5, 0.2]])                    # one example, d = 3
logvar = np.array([[-1.0, 0.5, -2.5]])
kl_exact = float(gaussian_kl_per_example(mu, logvar)[0])

S = 100_000
eps = B.Generator(0).normal((S, 3), "float64")
z = mu + np.exp(0.5 * logvar) * eps                  # z_s ~ q, (S, 3)
log_q = losses.gaussian_log_density(z, mu, logvar)                  # (S,): summed over the 3 units
log_p = losses.gaussian_log_density(z, 0.0, 0.0)                    # N(0, I): mean 0, logvar 0
terms = log_q - log_p
n = np.arange(1, S + 1)
running = np.cumsum(terms) / n                                      # the estimate from the first n samples
sd = terms.std(ddof=1)
se = sd / np.sqrt(S)
print(f"analytic KL = {kl_exact:.4f} nats;  Monte Carlo with {S} samples = {running[-1]:.4f} +- {se:.4f} "
      f"(standard error): {abs(running[-1] - kl_exact) / se:.1f} standard errors apart")
assert abs(running[-1] - kl_exact) < 3 * se

fig, ax = plt.subplots(figsize=(6.5, 3))
ax.semilogx(n, running, label="Monte Carlo mean of log q(z) - log p(z)")
ax.fill_between(n[9:], (kl_exact - 2 * sd / np.sqrt(n))[9:], (kl_exact + 2 * sd / np.sqrt(n))[9:],
                alpha=0.2, label="analytic +- 2 standard errors of an S-sample mean")
ax.axhline(kl_exact, color="k", lw=1, label=f"analytic {kl_exact:.3f}")
ax.set_title("KL(q || N(0, I)) for one q with d = 3: analytic against Monte Carlo", fontsize=9)
ax.set_xlabel("samples S")
ax.set_ylabel("KL (nats)")
ax.set_ylim(kl_exact - 1.5, kl_exact + 1.5)
ax.legend(fontsize=8)
plt.show()

g = B.Generator(1)
mu_b, logvar_b = g.normal((4, 3), "float64"), g.normal((4, 3), "float64")
report = check_function(gaussian_kl, mu_b, logvar_b, wrt=(0, 1))
print(report)
assert report.passed
docstring_block(gaussian_kl)

# %% [markdown]
r"""
The analytic KL is exact, cheap and has an exact gradient, **because $q$ and $p(z)$ are both
Gaussian**; this has nothing to do with reparameterisation. (With a prior whose KL against
$q$ has no closed form, a mixture say, this term would need sampling too; the adversarial
autoencoder of notebook 5 replaces it by a discriminator.)

## What the reparameterisation trick is for: the reconstruction term

$\mathbb E_{q_\phi}[\log p_\theta(x\mid z)]$ has no closed form, and its gradient in the
encoder's parameters $\phi$ is awkward because the distribution averaged over depends on
$\phi$. For $f(z) = \log p(x\mid z)$ two unbiased estimators exist:

* **score function** (REINFORCE): $\nabla_\phi\mathbb E_q[f] = \mathbb E_q[f(z)\,\nabla_\phi\log q_\phi(z)]$;
  for $\mu$: $\mathbb E_q[f(z)\,(z-\mu)/\sigma^2]$. It uses only *values* of $f$.
* **reparameterisation**: $z = \mu + \sigma\varepsilon$ with $\varepsilon\sim\mathcal N(0, 1)$
  independent of $\phi$, so $\nabla_\mu\mathbb E_q[f] = \mathbb E_\varepsilon[f'(\mu + \sigma\varepsilon)]$:
  the derivative of $f$, which backpropagation through the decoder provides. Here it is
  exactly `GaussianSample`'s backward: $d\mu = dz$ for $dz = f'(z)/S$.

The score-function estimate multiplies the value of $f$ by a zero-mean score, so any offset
in $f$ becomes noise: for $q = \mathcal N(\mu, 1)$ and $f(z) = az + c$, the one-sample
score-function estimate $(a\mu + c + a\varepsilon)\,\varepsilon$ has mean $a$ and variance
$(a\mu + c)^2 + 2a^2$, while the reparameterised one, $f'(z) = a$, is exact: variance 0. A
VAE's $\log p(x\mid z)$ is of order $-100$ nats. Below: $\partial_\mu\mathbb E_q[f]$ for
$q = \mathcal N(0.5, 1)$ and $f(z) = \log\operatorname{sigmoid}(z)$ (the log-likelihood of
one "ink" pixel with logit $z$; $f'(z) = \operatorname{sigmoid}(-z)$), and the same $f$
shifted by $-100$ nats; each estimator averages $S$ samples, and each estimate is repeated
2,000 times. The exact value comes from Gauss-Hermite quadrature.
"""

# %%
m0, s0, R = 0.5, 1.0, 2000
nodes, weights = np.polynomial.hermite_e.hermegauss(100)            # Gauss-Hermite, weight exp(-x^2/2)
exact = float(np.sum(weights * sigmoid(-(m0 + s0 * nodes)))) / math.sqrt(2 * math.pi)   # E[f'(z)]
rng = B.Generator(2)
results, worst = {}, 0.0
for shift in (0.0, -100.0):
    rows = []
    for S in (1, 4, 16, 64, 256):
        eps = rng.normal((R, S), "float64")
        mu_a = np.full((R, S), m0)
        logvar_a = np.full((R, S), 2 * math.log(s0))
        sampler = GaussianSample()
        z = sampler(mu_a, logvar_a, eps=eps)                        # z = mu + exp(0.5 logvar) eps
        dmu, _ = sampler.backward(sigmoid(-z) / S)                  # dz = f'(z) / S for L = mean_s f(z_s)
        reparam = dmu.sum(axis=1)                                   # (R,) estimates
        f = -softplus(-z) + shift                                   # log sigmoid(z) + shift
        score = np.mean(f * (z - mu_a) / s0 ** 2, axis=1)           # (R,) estimates
        rows.append((S, reparam.mean(), reparam.var(ddof=1), score.mean(), score.var(ddof=1)))
    results[shift] = rows
    print(f"f(z) = log sigmoid(z) {shift:+g}: exact d/dmu E f = {exact:.4f}")
    for S, rm, rv, sm, sv in rows:
        print(f"  S = {S:4d}: reparam {rm:+.4f} (var {rv:.2e})   score function {sm:+.4f} (var {sv:.2e})   ratio {sv / rv:9.0f}")
        for mean, var in ((rm, rv), (sm, sv)):                      # unbiased: within 3 standard errors
            worst = max(worst, abs(mean - exact) / math.sqrt(var / R))
        assert sv > rv
print(f"largest distance of a mean of {R} estimates from the exact value: {worst:.1f} standard errors")
assert worst < 3

fig, ax = plt.subplots(figsize=(6.5, 3.4))
for shift, style in ((0.0, "-"), (-100.0, "--")):
    rows = results[shift]
    Ss = [r[0] for r in rows]
    if shift == 0.0:
        ax.loglog(Ss, [r[2] for r in rows], "o-", color="C0", label="reparameterisation (either f)")
    ax.loglog(Ss, [r[4] for r in rows], "s" + style, color="C1", label=f"score function, f {shift:+g} nats")
ax.set_xlabel("samples S per estimate")
ax.set_ylabel("variance of the estimate")
ax.set_title(f"d/dmu E[log sigmoid(z)], z ~ N({m0}, {s0}^2), {R} repeats", fontsize=9)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
r"""
Both estimators are unbiased (every mean of 2,000 estimates is within 3 standard errors of
the exact value); the score function's variance is 25 times larger already, and a constant
offset of $-100$ nats, which changes nothing about the gradient, multiplies it by about
$10^4 \approx 100^2$, as the linear example predicts. Both variances fall as $1/S$, so the
ratio does not depend on $S$: more samples do not close the gap. The
reparameterised estimate does not see the offset at all. (It is not lower-variance for every
possible $f$, and it needs $f$ differentiable and $z$ continuous; `demos/reparam_vs_score_function.py`
runs the same comparison with more options.)

## The sampler's backward

`GaussianSample` computes $z = \mu + \sigma\odot\varepsilon$, $\sigma = e^{\frac12\text{logvar}}$,
all `(N, d)`. Element-wise,

$$
\frac{\partial z}{\partial\mu} = 1,\qquad
\frac{\partial z}{\partial\,\text{logvar}} = \varepsilon\,\frac{d}{d\,\text{logvar}}e^{\frac12\text{logvar}} = \tfrac12\sigma\,\varepsilon
\quad\Longrightarrow\quad
\underbrace{d\mu}_{(N,d)} = dz,\qquad \underbrace{d\,\text{logvar}}_{(N,d)} = dz\odot\varepsilon\odot\tfrac12\sigma .
$$

Two inputs, so `backward(dz)` returns `(dmu, dlogvar)`; $\varepsilon$ is passed in
(`forward(mu, logvar, eps=e)`), which is how the check holds it fixed.
"""

# %%
docstring_block(GaussianSample)
g = B.Generator(3)
mu_b, logvar_b, eps_b = g.normal((4, 3), "float64"), g.normal((4, 3), "float64"), g.normal((4, 3), "float64")
report = check_layer(GaussianSample(), mu_b, logvar_b, forward_kwargs={"eps": eps_b})
print(report)
assert report.passed

# %% [markdown]
r"""
**A bug a check can see, and where it cannot.** Using $e^{\text{logvar}}$ as $\sigma$ in the
backward only ($d\,\text{logvar} = dz\,\varepsilon\,e^{\text{logvar}}\cdot\tfrac12$) is wrong
everywhere except at $\text{logvar} = 0$, where $e^{\text{logvar}} = e^{\frac12\text{logvar}} = 1$:
a check at $\text{logvar} = 0$ passes it. Check at generic inputs.

**A bug no gradient check can see.** Make the *same* mistake in the forward too,
$z = \mu + e^{\text{logvar}}\varepsilon$: forward and backward agree, the check passes, and the
model is wrong (its samples have variance $e^{2\,\text{logvar}}$ while the KL assumes
$e^{\text{logvar}}$). A test of the forward's *meaning* catches it: the sample variance.
"""

# %%
class SigmaForVarianceBackward(GaussianSample):
    """Right forward; backward uses exp(logvar) as the std."""

    def forward(self, mu, logvar, eps=None):
        self.save_cache(eps, logvar)
        return mu + np.exp(0.5 * logvar) * eps

    def backward(self, dz):
        eps, logvar = self.pop_cache()
        return dz, dz * eps * 0.5 * np.exp(logvar)                  # BUG: exp(0.5 * logvar)


class SigmaForVarianceEverywhere(GaussianSample):
    """exp(logvar) as the std in forward and backward: self-consistent, and wrong."""

    def forward(self, mu, logvar, eps=None):
        std = np.exp(logvar)                                        # BUG (both places)
        self.save_cache(eps, std)
        return mu + std * eps

    def backward(self, dz):
        eps, std = self.pop_cache()
        return dz, dz * eps * std


zeros = np.zeros((4, 3))
at_zero = check_layer(SigmaForVarianceBackward(), mu_b, zeros, forward_kwargs={"eps": eps_b})
generic = check_layer(SigmaForVarianceBackward(), mu_b, logvar_b, forward_kwargs={"eps": eps_b})
print("backward only, at logvar = 0:   ", at_zero.verdict)
print(generic, "\n")
assert at_zero.passed and generic.verdict == FAILED

consistent = check_layer(SigmaForVarianceEverywhere(), mu_b, logvar_b, forward_kwargs={"eps": eps_b})
print("forward and backward both wrong:", consistent.verdict, "(the gradient check cannot see it)")
assert consistent.passed

lv = np.full((200_000, 1), 0.7)                                     # 200,000 draws, logvar = 0.7
var_se = math.exp(0.7) * math.sqrt(2 / len(lv))                     # std error of a sample variance (Gaussian)
print(f"the variance the KL assumes: exp(logvar) = {math.exp(0.7):.3f} (a sample variance has standard error {var_se:.3f})")
for name, sampler in (("GaussianSample", GaussianSample()), ("exp(logvar) as std", SigmaForVarianceEverywhere())):
    zs = sampler(np.zeros_like(lv), lv, eps=B.Generator(4).normal(lv.shape, "float64"))
    sampler.clear_cache()
    print(f"  {name:20s} sample variance {zs.var():.3f}: {abs(zs.var() - math.exp(0.7)) / var_se:5.1f} standard errors away")
    assert (abs(zs.var() - math.exp(0.7)) < 3 * var_se) == (name == "GaussianSample")

# %% [markdown]
r"""
## The whole VAE backward

$L = R(z) + \beta K(\mu, \text{logvar})$, with $R = -\frac1N\sum_n\log p(x_n\mid z_n)$ the
reconstruction term, $K$ the analytic KL and $z = z(\mu, \text{logvar}, \varepsilon)$.
$\mu$ and logvar reach $L$ along two paths each (through the sampler into the decoder, and
through the KL), and the chain rule adds them. `dout` (for the Bernoulli likelihood
$(\operatorname{sigmoid}(l) - x)/N$) and the KL gradients already carry the $1/N$:

$$
\begin{aligned}
\underbrace{dz}_{(N,d)} &= \text{decoder.backward}(dout), \\
\underbrace{d\mu}_{(N,d)} &= dz + \beta\,\mu/N, \\
\underbrace{d\,\text{logvar}}_{(N,d)} &= dz\odot\varepsilon\odot\tfrac12\sigma + \beta\,\tfrac12(e^{\text{logvar}} - 1)/N, \\
&\text{encoder.backward}\bigl([\,d\mu \mid d\,\text{logvar}\,]\bigr)\quad (N, 2d)\text{: the concatenation undoes the split of the encoder's output.}
\end{aligned}
$$

With `logvar_bound=b` the encoder's logvar half first goes through
`SoftClamp(b)`, $\text{logvar} = b\tanh(u/b)$, which keeps it in $(-b, b)$ (a guard
against $e^{\text{logvar}}$ overflowing early in training). Its backward is tanh's chain
rule: $\frac{d}{du}\,b\tanh(u/b) = 1 - \tanh^2(u/b)$, so
$\underbrace{du}_{(N,d)} = d\,\text{logvar}\odot\bigl(1 - (\text{logvar}/b)^2\bigr)$, the
`clamp` line of the model's docstring:
"""

# %%
docstring_block(VAE)

# a model of MNIST's width, small inside (784-8-2, tanh), four real digits, eps fixed
vae_small = VAE((784, 8, 2), activation="tanh", rng=B.Generator(5), dtype="float64")
x4 = x_train[:4].astype("float64")
eps4 = B.Generator(6).normal((4, 2), "float64")
report = check_objective(vae_small, lambda: vae_small.loss(x4, eps=eps4), vae_small.backward)
print(report, "\n")
assert report.passed

# and a tiny one with a Gaussian likelihood and beta = 3.5 (tests/test_models.py checks each separately)
xs = B.Generator(100).uniform((4, 6), 0.05, 0.95, dtype="float64")
eps_s = B.Generator(7).normal((4, 3), "float64")
vae_g = VAE((6, 5, 3), activation="tanh", likelihood="gaussian", beta=3.5, rng=B.Generator(4), dtype="float64")
report = check_objective(vae_g, lambda: vae_g.loss(xs, eps=eps_s), vae_g.backward, title="VAE gaussian beta=3.5")
print(report, "\n")
assert report.passed

# the clamp alone, at pre-activations u beyond the bound too, then a VAE with logvar_bound = 2
docstring_block(SoftClamp, start="``y = bound", stop="Cache:")
report = check_layer(SoftClamp(2.0), 3.0 * B.Generator(8).normal((4, 3), "float64"))
print(report.headline())
assert report.passed
vae_b = VAE((6, 5, 3), activation="tanh", logvar_bound=2.0, rng=B.Generator(4), dtype="float64")
report = check_objective(vae_b, lambda: vae_b.loss(xs, eps=eps_s), vae_b.backward, title="VAE logvar_bound=2")
print(report.headline())
assert report.passed

# %% [markdown]
r"""
## A VAE with a 2-D code

784-256-2, ten epochs of Adam on the 5,000 bundled digits. The test loss is the one-sample
$-\mathrm{ELBO}$ in nats per example, with its noise from a fixed evaluation stream. (These
numbers are for grey-level pixels in $[0, 1]$ with a Bernoulli likelihood, comparable with
each other and with PyTorch's example, not with log-likelihoods on binarised MNIST; a 2-D
code reconstructs far worse than the usual 20-D one.)
"""

# %%
vae = VAE((784, 256, 2), rng=B.Generator(0)).configure_optimizers("adam", lr=2e-3)
hist = fit(vae, x_train, epochs=10, batch_size=128, seed=0, x_test=x_test, progress=False)
last = hist[-1]
print(f"test: recon {last['test_recon']:.1f} + KL {last['test_kl']:.1f} = -ELBO {last['test_loss']:.1f} nats per example")

fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), gridspec_kw={"width_ratios": [1.1, 1, 1, 1.15]})
ep = [h["epoch"] for h in hist]
for key in ("recon", "kl"):
    axes[0].plot(ep, [h[f"test_{key}"] for h in hist], "o-", label=f"test {key}")
axes[0].set_yscale("log")
axes[0].set_title("the two terms of the test -ELBO", fontsize=9)
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("nats per example")
axes[0].legend(fontsize=8)
samples = B.to_numpy(vae.sample(64, B.Generator(8)))                # z ~ N(0, I), decoded to sigmoid(logits)
axes[1].imshow(tile(samples, 8), cmap="gray")
axes[1].set_title("samples: decode z ~ N(0, I)", fontsize=9)
grid_1d = np.array([-2.0 + 4.0 * i / 11 for i in range(12)])
zz = np.array([[a, b] for b in grid_1d[::-1] for a in grid_1d], dtype="float32")
axes[2].imshow(tile(B.to_numpy(vae.decode(zz)), 12), cmap="gray")
axes[2].set_title("the 2-D manifold: decode z on [-2, 2]^2", fontsize=9)
mu_test = evaluation.codes(vae, x_test)                             # the posterior means
sc = axes[3].scatter(mu_test[:, 0], mu_test[:, 1], c=ds.y_test, cmap="tab10", s=6)
axes[3].set_title("posterior means of the 1000 test digits", fontsize=9)
axes[3].set_xlabel("mu_1")
axes[3].set_ylabel("mu_2")
fig.colorbar(sc, ax=axes[3], ticks=range(10), label="digit")
for ax in axes[1:3]:
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %% [markdown]
r"""
## IWAE$_k$: a tighter bound as $k$ grows

With $k$ samples $z_i\sim q(z\mid x)$ and weights $w_i = p(x\mid z_i)\,p(z_i)/q(z_i\mid x)$,

$$
\mathcal L_k = \mathbb E\Bigl[\log\frac1k\sum_{i=1}^k w_i\Bigr] \le \log p(x),
\qquad \mathcal L_1 = \mathrm{ELBO},\qquad \mathcal L_k \le \mathcal L_{k+1}
$$

(Burda et al. 2016). The first inequality is Jensen's (log is concave and
$\mathbb E[\frac1k\sum_i w_i] = p(x)$). The second is Jensen's too: the mean of $k+1$
weights is the average, over the $k+1$ ways to leave one out, of the mean of the other $k$,
so its log is at least the average of their logs, each of which has expectation
$\mathcal L_k$. Both hold **in expectation**; one draw of $\log\frac1k\sum_i w_i$ can
fall as $k$ grows, or land above $\log p(x)$.

The weights are of order $e^{-165}$ here, far below float32's smallest normal number (about
$e^{-87}$), so `evaluation.iwae_bound(model, x, k, rng)` works in log space:
$\operatorname{logsumexp}_i(\log w_i) - \log k$, per example. Below: its mean over 200 test
digits and two seeds. Each seed gives every $k$ the same noise stream, so $\mathrm{IWAE}_k$'s
samples are the first $k$ of $\mathrm{IWAE}_{256}$'s, and each step up in $k$ is measured
on the same digits and samples: its standard error is over the 400 paired differences,
much smaller than the spread of the bound from digit to digit. (The decoder sees the samples
in chunks of at most `max_rows=4096` rows, never less than one sample of all $N$ rows,
combined by a running log-sum-exp: memory stays bounded for any $k$.)
`evaluation.elbo`, averaged over 20 seeds, is another estimate of $\mathcal L_1$: it
samples $\log p(x\mid z)$ but takes the KL analytic.
"""

# %%
ks = (1, 4, 16, 64, 256)
x200 = x_test[:200]
iwae = {k: np.concatenate([B.to_numpy(evaluation.iwae_bound(vae, x200, k, B.Generator(seed)))
                           for seed in (1, 2)]) for k in ks}                     # (400,): 200 digits x 2 seeds
elbo = np.mean([B.to_numpy(evaluation.elbo(vae, x200, B.Generator(seed))) for seed in range(20)])
print(f"IWAE_1    {iwae[1].mean():8.2f} nats per example   (ELBO with the analytic KL, 20 seeds: {elbo:.2f})")
for k_prev, k in zip(ks, ks[1:]):
    step = iwae[k] - iwae[k_prev]                                                 # paired, (400,)
    step_se = step.std(ddof=1) / np.sqrt(len(step))
    print(f"IWAE_{k:<4d} {iwae[k].mean():8.2f} nats per example   IWAE_{k} - IWAE_{k_prev} = "
          f"{step.mean():+.3f} +- {step_se:.3f}  ({step.mean() / step_se:.1f} standard errors)")
    assert step.mean() > 2 * step_se                                            # and positive beyond noise

fig, ax = plt.subplots(figsize=(5.5, 3))
ax.semilogx(ks, [iwae[k].mean() for k in ks], "o-", label="IWAE_k")
ax.axhline(elbo, color="k", lw=1, ls=":", label="ELBO, analytic KL (20 seeds)")
ax.set_title("IWAE_k of the 2-D VAE: mean over 200 test digits, 2 seeds", fontsize=9)
ax.set_xlabel("k (importance samples)")
ax.set_ylabel("nats per example")
ax.margins(y=0.15)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
r"""
**Every backward of the VAE, in one place:** $dout = (\operatorname{sigmoid}(l) - x)/N$
(Bernoulli); the decoder's Linear/ReLU rules give $dz$; the sampler gives $d\mu = dz$,
$d\,\text{logvar} = dz\odot\varepsilon\odot\frac12\sigma$; the KL adds $\beta\mu/N$ and
$\beta\frac12(e^{\text{logvar}}-1)/N$ (with `logvar_bound`, the clamp then multiplies
$d\,\text{logvar}$ by $1 - (\text{logvar}/b)^2$); the encoder's rules take $[d\mu\mid d\,\text{logvar}]$
down to its first Linear, which returns no $dx$. The IWAE and ELBO estimates are evaluation
only: no backward.
"""

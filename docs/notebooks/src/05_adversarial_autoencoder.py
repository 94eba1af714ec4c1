# %% [markdown]
r"""
# 5. The adversarial autoencoder

**What this notebook teaches.** The adversarial autoencoder (AAE, Makhzani et al. 2015) of
`scratchae.models.AdversarialAutoencoder`: a deterministic autoencoder whose codes are
pushed onto a chosen prior by a discriminator, trained in **three phases** per minibatch
(reconstruction, discriminator, generator). We derive each phase's backward with shapes and
check each with finite differences; follow the generator's gradient **through the
discriminator into the encoder** (the chain through $D$'s weights written out by hand, then
finite differences one entry at a time, then `check_objective`); see a detached-code bug
fail; sample the four priors; and train a 2-D AAE on the bundled MNIST subset to compare its
codes with the 10-Gaussian mixture prior, in a plot and with two-sample statistics.

**How to run it.** Locally, from a clone of the repository: `pip install -e ".[dev]"`,
then open `docs/notebooks/` in VS Code (the dev extra has the kernel) or Jupyter
(`pip install jupyterlab`, `jupyter lab`) and run all cells (5-15 s on a laptop CPU, most of
it the training cell). On Colab: open the notebook, run the first code cell (it installs
scratchae when it is not importable; set `SOURCE` there to your clone's git URL), then run
all. Every random number comes from a seeded `scratchae.backend.Generator`.

Background: [`docs/aae.md`](../aae.md) (these derivations as text); notebook 1 (BCE on
logits, used by phases 2 and 3); notebook 3 (the autoencoder's backward, which is phase 1
here).
"""

# %% {include=_install.py}

# %%
import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from scratchae import backend as B
from scratchae import evaluation
from scratchae.data import load_dataset, preprocess
from scratchae.gradcheck import FAILED, check_objective, numerical_gradient
from scratchae.layers import sigmoid
from scratchae.losses import bce_with_logits
from scratchae.models import AdversarialAutoencoder
from scratchae.stochastic import make_prior
from scratchae.train import fit

blas_limits = threadpool_limits(1)   # one BLAS thread: fastest for these small matrices, even on a busy machine

ds = load_dataset("mnist", data="bundled")      # the 5000 / 1000-digit subset shipped with the package
x_train, x_test = preprocess(ds.x_train), preprocess(ds.x_test)   # (N, 784) float32 in [0, 1]


# %% {include=_docstring_block.py}
# %% [markdown]
r"""
## The objective and the three phases

An encoder $h = f(x)$ `(N, d)` and a decoder $g$ as in notebook 3, plus a discriminator
$D$, an MLP from a code `(d,)` to one **logit** $a$: the probability that its input came
from the prior is $\sigma(a)$. The AAE matches the *aggregated posterior*
$q(z) = \int\delta(z - f(x))\,p_{\text{data}}(x)\,dx$, the distribution of the codes over the
data, to a prior $p(z)$ by playing a GAN game in code space (the encoder is the generator,
the prior plays the data):

$$
\min_{f,g}\ \mathbb E_x\bigl[-\log p(x\mid g(f(x)))\bigr]
\qquad\text{and}\qquad
\min_f\max_D\ \mathbb E_{z\sim p}\bigl[\log\sigma(D(z))\bigr] + \mathbb E_x\bigl[\log(1 - \sigma(D(f(x))))\bigr].
$$

Unlike the VAE's KL, this needs only **samples** from the prior, never its density, so a
ring of ten Gaussians or a swiss roll is as easy as $\mathcal N(0, I)$. Each minibatch runs
three phases, each with its own optimizer:

| phase | loss | gradients reach | stepped |
|---|---|---|---|
| 1 reconstruction | $L_{rec} = \frac1N\sum_n -\log p(x_n\mid g(f(x_n)))$ | decoder, encoder | encoder + decoder |
| 2 discriminator | $L_D$ on `[prior samples; codes]`, targets `[1; 0]` | $D$ only (the codes are constants) | $D$ |
| 3 generator | $L_G$, non-saturating, through $D$ | $D$ (touched, not stepped) and encoder | encoder only |

The docstring:
"""

# %%
docstring_block(AdversarialAutoencoder, start="Each minibatch", stop="With ``supervised")

# %% [markdown]
r"""
Every check below uses one small model: MNIST's width but small inside (784-8-2, a 2-4-1
discriminator), tanh rather than ReLU (smooth, so no finite difference straddles a kink),
float64, and four real digits. Phase 1 is notebook 3's autoencoder backward
($d\,\text{out} = (\sigma(l) - x)/N$ into the decoder, then the encoder), checked once here:
"""

# %%
def small_aae(cls=AdversarialAutoencoder):
    return cls((784, 8, 2), activation="tanh", disc_sizes=(4,), prior="mixture", rng=B.Generator(6), dtype="float64")


x4 = x_train[:4].astype("float64")                                   # (4, 784)
aae = small_aae()
report = check_objective(aae, lambda: aae.loss(x4), aae.backward, params=["encoder", "decoder"], title="AAE phase 1")
print(report.headline())
assert report.passed

# %% [markdown]
r"""
## Phase 2: the discriminator

Draw $N$ prior samples $z^p$ `(N, d)`, compute the codes $h = f(x)$ `(N, d)` and score both
**with one forward on their concatenation** (a second training forward while the first's
cache still waits for its backward raises `CacheError`):

$$
\underbrace{a}_{(2N,1)} = D\bigl(\underbrace{[z^p; h]}_{(2N,d)}\bigr),\qquad
\underbrace{t}_{(2N,1)} = [\mathbf 1_N; \mathbf 0_N],\qquad
L_D = \frac1{2N}\sum_{r=1}^{2N}\bigl(\operatorname{softplus}(a_r) - t_r a_r\bigr),
$$

notebook 1's BCE on logits over $2N$ rows: $L_D$ is minus half the game's value (estimated
on the batch), so minimising it is $D$'s $\max$. Its gradient:

$$
\underbrace{d\,\text{logits}}_{(2N,1)} = \frac{\sigma(a) - t}{2N},
\qquad D.\text{backward}(d\,\text{logits})\ \text{fills } D\text{'s grads (the Linear and activation backwards)}.
$$

The codes are constants here: the encoder's cache is cleared right after computing them,
and no gradient reaches the encoder. For a fixed encoder the best discriminator has
$\sigma(a^*) = p/(p + q)$, i.e. $a^*(z) = \log p(z) - \log q(z)$ (Goodfellow et al. 2014).

The checks: $d\,\text{logits}$ against the formula, the encoder untouched, and $D$'s
parameter gradients against finite differences, with the prior samples held fixed
(`z_prior=`) so that the objective is a deterministic function of the parameters.
"""

# %%
aae = small_aae()
z_prior = aae.prior.sample(4, B.Generator(8), dtype="float64")       # (4, 2), held fixed
obj = aae.discriminator_loss(x4, z_prior=z_prior)
a = obj.outputs["logits"]                                            # (8, 1): 4 prior rows, then 4 code rows
t = np.concatenate([np.ones((4, 1)), np.zeros((4, 1))])
np.testing.assert_allclose(obj.grads["logits"], (sigmoid(a) - t) / 8, rtol=1e-12)
aae.backward_discriminator(obj)
assert not any(m.has_cache for m in aae.encoder.modules())                    # no pending encoder forward
assert not any(np.any(g) for _, g in aae.encoder.named_grads())              # and no encoder gradient
print("dlogits = (sigmoid(a) - t) / 2N; the encoder has neither a cache nor a gradient")

report = check_objective(aae, lambda: aae.discriminator_loss(x4, z_prior=z_prior),
                         aae.backward_discriminator, params=["discriminator"], title="AAE phase 2 (discriminator)")
print(report)
assert report.passed

# %% [markdown]
r"""
## Phase 3: the encoder as generator, through $D$

The encoder wants $D$ to call its codes "prior". The minimax generator loss
$\frac1N\sum_n\log(1 - \sigma(a_n))$ has gradient $-\sigma(a_n)/N$ in the logit, which vanishes
exactly when $D$ confidently rejects the codes ($a\ll0$, the situation early in training).
The **non-saturating** loss flips the target instead:

$$
L_G = \frac1N\sum_n -\log\sigma(a_n) = \frac1N\sum_n\operatorname{softplus}(-a_n) = \text{bce}(a, \mathbf 1),
\qquad
\underbrace{d\,\text{logits}}_{(N,1)} = \frac{\sigma(a) - 1}{N} \to -\frac1N\ \text{as}\ a\to-\infty .
$$

The codes affect $L_G$ only through $D$'s logit, so the gradient must go **through** $D$,
and row $n$ of $D$'s input gradient is that logit's gradient scaled by $d\,\text{logits}_n$:

$$
\underbrace{dh}_{(N,d)} = D.\text{backward}(d\,\text{logits}),\qquad
dh_n = \frac{\sigma(a_n) - 1}{N}\,\nabla_z a(z)\big|_{z=h_n},
\qquad \text{then encoder.backward}(dh)\ \ \text{(parameter gradients; } x \text{ is data)}.
$$

For our 2-4-1 discriminator, $a = \tanh(hW_1 + b_1)\,W_2 + b_2$ with $W_1$ `(2, 4)` and
$W_2$ `(4, 1)`, the chain rule through its three layers reads (Linear's $dx = dy\,W^\top$,
tanh's $dx = dy\odot(1 - \tanh^2)$):

$$
\underbrace{dh}_{(N,2)} = \Bigl(\underbrace{d\,\text{logits}}_{(N,1)}\,\underbrace{W_2^\top}_{(1,4)}
\odot \bigl(1 - \tanh^2(\underbrace{u}_{(N,4)})\bigr)\Bigr)\,\underbrace{W_1^\top}_{(4,2)},
\qquad u = hW_1 + b_1 .
$$

$\sigma(a) - 1 < 0$, so a descent step moves each code along $+\nabla_z a$: uphill on $D$'s
logit, towards where $D$ says "prior", hardest for the codes $D$ is surest are fake. Near
the optimal $D$, $\nabla_z a^* = \nabla\log p - \nabla\log q$: codes move towards high prior
density and away from where codes already crowd.

$D$.backward necessarily **adds** $\partial L_G/\partial\theta_D$ into $D$'s grads. Those point
the wrong way for $D$ (they would teach it to be fooled), so the generator's optimizer holds
the encoder's parameters only, and phase 2 of the next minibatch starts with the
discriminator's `zero_grad`. The encoder has two optimizers, each with its own Adam state
(the reconstruction and adversarial gradients have very different scales):
"""

# %%
demo = AdversarialAutoencoder((784, 16, 2), disc_sizes=(8,), rng=B.Generator(0)).configure_optimizers("adam", lr=1e-3)
for phase, opt in demo.optimizers.items():
    print(f"{phase:14s} steps {[s.name for s in opt.slots]}")

# %% [markdown]
r"""
**The code gradient, three ways.** One generator forward, then $dh$ `(4, 2)` from the
formula above (written with $D$'s weights), from `D.backward`, and from central differences
of $L_G$ as a function of the codes alone, $\bigl(L_G(h + \epsilon e_{nj}) - L_G(h - \epsilon e_{nj})\bigr)/2\epsilon$
(a forward through $D$ only, with `bce_with_logits` against ones):
"""

# %%
aae = small_aae()
D = aae.discriminator                                                # Linear(2 -> 4), Tanh, Linear(4 -> 1)
obj = aae.generator_loss(x4)                                         # forward: encoder, then D
h, a, dlogits = obj.outputs["code"], obj.outputs["logits"], obj.grads["logits"]   # (4, 2), (4, 1), (4, 1)
np.testing.assert_allclose(dlogits, (sigmoid(a) - 1) / 4, rtol=1e-12)

W1, b1, W2 = D[0].params["W"], D[0].params["b"], D[2].params["W"]  # (2, 4), (4,), (4, 1)
u = h @ W1 + b1                                                      # (4, 4): D's hidden pre-activation
dh_chain = ((dlogits @ W2.T) * (1 - np.tanh(u) ** 2)) @ W1.T        # (4, 2)
dh_backward = D.backward(dlogits)                                    # what backward_generator does first
aae.clear_cache()                                                    # the encoder's half is the next cell's


def generator_loss_of_codes(z):
    value = float(bce_with_logits(D(z), np.ones((len(z), 1)))[0])
    D.clear_cache()                                                  # a forward we do not backpropagate
    return value


dh_numerical = numerical_gradient(generator_loss_of_codes, h, eps=1e-6)
print("   chain rule     D.backward     finite differences")
print(np.column_stack([dh_chain.ravel(), dh_backward.ravel(), dh_numerical.ravel()]))
np.testing.assert_allclose(dh_backward, dh_chain, rtol=1e-12, atol=1e-15)
np.testing.assert_allclose(dh_backward, dh_numerical, rtol=1e-6, atol=1e-10)

# %% [markdown]
r"""
**Into the encoder, by hand.** Now perturb each entry of the encoder's last weight $W$
`(8, 2)` by $\pm\epsilon$, recompute $L_G$ (a forward through the encoder *and* $D$), and
compare the central differences with what `backward_generator` (`D.backward`, then
`encoder.backward`) adds into `encoder.2.W`'s gradient.
"""

# %%
aae = small_aae()
W = aae.encoder[2].params["W"]                  # (8, 2): the encoder's last Linear
W0 = W.copy()


def generator_loss_of_W(W_new):
    W[...] = W_new
    value = float(aae.generator_loss(x4).value)
    aae.clear_cache()                           # a forward we do not backpropagate
    return value


numeric = numerical_gradient(generator_loss_of_W, W0, eps=1e-6)
W[...] = W0
aae.zero_grad()
aae.backward_generator(aae.generator_loss(x4))
analytic = aae.encoder[2].grads["W"]
print("   analytic      numerical   (first 6 of 16 entries)")
print(np.column_stack([analytic.ravel(), numeric.ravel()])[:6])
print(f"max |analytic - numerical| = {np.max(np.abs(analytic - numeric)):.2e}, "
      f"max |gradient| = {np.max(np.abs(analytic)):.2e}")
np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-10)

# %% [markdown]
r"""
And the checker's version, with its tolerance model, over **every** encoder parameter
(`params=["encoder"]`: the generator objective is checked *through* the discriminator, whose
own parameters are not selected). Then a classic bug: the generator loss computed on codes
treated as constants (here: the code's gradient multiplied by 0, as a `.detach()` would do)
gives the encoder an all-zero gradient, and the check fails on every row.
"""

# %%
aae = small_aae()
report = check_objective(aae, lambda: aae.generator_loss(x4), aae.backward_generator,
                         params=["encoder"], title="AAE phase 3 (generator, through D)")
print(report, "\n")
assert report.passed and all(r.analytic_norm > 0 for r in report.rows)


class DetachedCodeAAE(AdversarialAutoencoder):
    def backward_generator(self, obj):
        dcode = self.discriminator.backward(obj.grads["logits"])
        return self.encoder.backward(0.0 * dcode)   # BUG: the gradient does not reach the encoder


broken = small_aae(DetachedCodeAAE)
report = check_objective(broken, lambda: broken.generator_loss(x4), broken.backward_generator,
                         params=["encoder"], title="detached codes")
print(report)
assert report.verdict == FAILED and all(r.failed for r in report.rows)

# %% [markdown]
r"""
## Priors

`make_prior(name, dim)` returns an object with `sample(n, rng, labels=None)`; the four the
library defines (`scratchae/stochastic.py`):

| name | a sample | dim |
|---|---|---|
| `"mixture"` | component $c$ uniform in $\{0,\dots,9\}$; $(1.4 + 0.5\alpha,\ 0.1\beta)$, $\alpha,\beta\sim\mathcal N(0,1)$, rotated by $2\pi c/10$: ten elongated Gaussians on a ring (std 0.5 along the radius, 0.1 across), the paper's 2-D figures | 2 |
| `"swiss_roll"` | $t\sim U(0,1)$; radius $3\sqrt t$, angle $3\pi\sqrt t$ (one and a half turns) | 2 |
| `"gaussian"` | $\mathcal N(0, I_d)$ | any |
| `"uniform"` | $U[-1, 1]^d$ | any |

With `supervised=True` each label gets its own part of the prior (mixture component or
tenth of the roll; not used here).
"""

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
g = B.Generator(9)
for ax, name in zip(axes, ("mixture", "swiss_roll", "gaussian", "uniform")):
    s = make_prior(name, 2).sample(2000, g)
    ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.5)
    ax.set_title(f"make_prior({name!r}, 2): 2000 samples", fontsize=9)
    ax.set_xlabel("$z_1$")
    ax.set_aspect("equal")
axes[0].set_ylabel("$z_2$")
fig.tight_layout()
plt.show()

# %% [markdown]
r"""
## Training a 2-D AAE

784-128-128-2, a 128-128-1 discriminator (ReLU), the 10-Gaussian mixture prior, Adam with
learning rate $2\times10^{-3}$ in all three phases, batches of 100, ten epochs on the 5,000
bundled digits (the paper's networks are 1000 wide and train far longer: `python demos/aae.py`
runs a longer recipe).
"""

# %%
model = AdversarialAutoencoder((784, 128, 128, 2), disc_sizes=(128, 128), prior="mixture",
                               rng=B.Generator(0)).configure_optimizers("adam", lr=2e-3)
hist = fit(model, x_train, epochs=10, batch_size=100, seed=0, progress=False)
last = hist[-1]
print(f"epoch {last['epoch']} (means over its batches): recon {last['train_recon']:.1f} nats per example, "
      f"D loss {last['train_disc']:.3f}, G loss {last['train_gen']:.3f} (ln 2 = {np.log(2):.3f})")

# %% [markdown]
r"""
### Do the codes follow the prior?

On the 1,000 held-out digits:

* the **discriminator's accuracy** on `[1000 prior samples; 1000 codes]`: 0.5 when it cannot
  tell them apart, give or take the binomial error $\sqrt{0.25/2000}\approx 0.011$; but the
  encoder was trained to fool this very $D$, and a weak $D$ also scores 0.5, so it is a weak
  witness;
* the unbiased **MMD$^2$** between 500 codes and 500 prior samples (a kernel two-sample
  statistic, 0 in expectation for identical distributions), with a Gaussian kernel
  $k(u, v) = \exp(-\lVert u - v\rVert^2/2\ell^2)$, next to the MMD$^2$ of five pairs of
  independent prior samples of the same size: what codes that truly followed the prior would
  give. The bandwidth $\ell$ sets the scale at which the two are compared, so we try several:
  $\ell = 0.2$ (twice an arm's std across, 0.1), 0.5, 1 and the median pairwise distance of
  the pooled sample (the median heuristic, what `evaluation.mmd2(a, b)` uses unless given
  `bandwidth=`).
"""

# %%
rng = B.Generator(1)
acc = float(evaluation.discriminator_accuracy(model, x_test, rng))
c = evaluation.codes(model, x_test).astype("float64")               # (1000, 2) on the host
n = 500
z = model.prior.sample(n, rng, dtype="float64")
pairs = [(model.prior.sample(n, rng, dtype="float64"), model.prior.sample(n, rng, dtype="float64")) for _ in range(5)]
pooled = np.concatenate([c[:n], z])                                   # (1000, 2)
ell_median = np.sqrt(np.median(np.sum((pooled[:, None] - pooled[None]) ** 2, axis=-1)[np.triu_indices(2 * n, 1)]))
# bandwidth=None (the default) is the median heuristic: the same number as ell_median given
assert abs(evaluation.mmd2(c[:n], z) - evaluation.mmd2(c[:n], z, bandwidth=ell_median)) < 1e-9

err = np.sqrt(0.25 / (2 * len(x_test)))                              # binomial error of an accuracy over 2000
print(f"held-out discriminator accuracy {acc:.3f}: {(acc - 0.5) / err:+.1f} binomial errors ({err:.3f}) from 0.5\n")
print(f"{'bandwidth':>18s}  {'codes vs prior':>14s}  {'prior vs prior (5 pairs)':>24s}")
for label, ell in (("0.2", 0.2), ("0.5", 0.5), ("1.0", 1.0), (f"median {ell_median:.2f}", ell_median)):
    ref = [evaluation.mmd2(p, q, bandwidth=ell) for p, q in pairs]   # one bandwidth for all rows of the table
    ours = evaluation.mmd2(c[:n], z, bandwidth=ell)
    verdict = "within" if ours <= np.mean(ref) + 3 * np.std(ref) else f"{(ours - np.mean(ref)) / np.std(ref):.0f} sd above"
    print(f"{label:>18s}  {ours:+14.4f}  {np.mean(ref):+13.4f} +- {np.std(ref):.4f}   {verdict}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1, 1.25]})
ep = [h["epoch"] for h in hist]
ax2 = axes[0].twinx()
axes[0].plot(ep, [h["train_recon"] for h in hist], "o-", color="C0", label="reconstruction (left)")
ax2.plot(ep, [h["train_disc"] for h in hist], "s-", color="C1", label="discriminator (right)")
ax2.plot(ep, [h["train_gen"] for h in hist], "^-", color="C2", label="generator (right)")
ax2.axhline(np.log(2), color="k", lw=0.8, ls=":")
axes[0].set_title("training losses, mean over each epoch's batches", fontsize=9)
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("reconstruction, nats per example")
ax2.set_ylabel("D and G loss, nats per logit (ln 2 dotted)")
axes[0].legend(loc="upper center", fontsize=8)
ax2.legend(loc="center right", fontsize=8)
prior = model.prior.sample(3000, B.Generator(2))
axes[1].scatter(prior[:, 0], prior[:, 1], s=2, color="0.8", label="prior samples")
sc = axes[1].scatter(c[:, 0], c[:, 1], c=ds.y_test, cmap="tab10", s=5)
fig.colorbar(sc, ax=axes[1], ticks=range(10), label="digit")
axes[1].set_aspect("equal")
axes[1].set_xlabel("$z_1$")
axes[1].set_ylabel("$z_2$")
axes[1].set_title("1000 test codes (colour: digit) over the mixture prior (grey)", fontsize=9)
axes[1].legend(fontsize=8, loc="upper right")
fig.tight_layout()
plt.show()

# %% [markdown]
r"""
Read the table and the plot together. After ten short epochs the codes cover roughly the
prior's disc: at $\ell = 1$ and at the median bandwidth (comparable to the ring's radius,
1.4) their MMD$^2$ lies within the prior-against-prior spread, because at that scale the
kernel sees only the overall spread. At $\ell = 0.2$ and $0.5$, the scale of the arms, it is
many standard deviations above: the codes do not follow the ten arms (the plot shows them
crowding between the arms and towards the centre). The held-out discriminator, a few
binomial errors above 0.5, weakly agrees. So a small MMD$^2$ at one bandwidth, or a
discriminator near 0.5, shows a match only at that statistic's resolution. An unsupervised AAE
need not give each digit its own arm either (`supervised=True` does that); the paper's
figures come from far wider networks trained far longer (`demos/aae.py`). The D and G losses
near $\ln 2\approx 0.69$ are what a discriminator that cannot separate the two gives
($\sigma(a) = \frac12$ on every row).

**Every backward of the AAE, in one place:** phase 1 is the autoencoder's
($d\,\text{out} = (\sigma(l) - x)/N$, decoder then encoder, no $dx$); phase 2 is
$d\,\text{logits} = (\sigma(a) - t)/2N$ into $D$ alone, the codes constants; phase 3 is
$d\,\text{logits} = (\sigma(a) - 1)/N$, $dh = D.\text{backward}(d\,\text{logits})$, then
$\text{encoder.backward}(dh)$, with only the encoder stepped.
"""

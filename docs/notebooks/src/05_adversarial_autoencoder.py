# %% [markdown]
r"""
# 5. The adversarial autoencoder

**What this notebook teaches.** The adversarial autoencoder (AAE, Makhzani et al. 2015) of
`scratchae.models.AdversarialAutoencoder`: a deterministic autoencoder whose codes are
pushed onto a chosen prior by a discriminator, trained in **three phases** per minibatch
(reconstruction, discriminator, generator). We derive each phase's backward with shapes,
check each with finite differences, follow the generator's gradient **through the
discriminator into the encoder** (by hand, one finite difference at a time, and with
`check_objective`), see a detached-code bug fail, sample the priors, and train a 2-D AAE on
the bundled MNIST subset to plot its codes against the 10-Gaussian mixture prior.

**How to run it.** Locally, from a clone of the repository: `pip install -e ".[dev]"`,
then open `docs/notebooks/` in VS Code (the dev extra has the kernel) or Jupyter (`pip install jupyterlab`, `jupyter lab`) and run all cells (about
15 s on a laptop CPU). On Colab: open the notebook, run the first code cell (it installs
scratchae when it is not importable; set `SOURCE` there to your clone's git URL), then run
all. Every random number comes from a seeded `scratchae.backend.Generator`.

Background: [`docs/aae.md`](../aae.md) (these derivations as text); notebook 3 (the
autoencoder's backward, which is phase 1 here).
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
from scratchae.models import AdversarialAutoencoder
from scratchae.stochastic import make_prior
from scratchae.train import fit

threadpool_limits(1)   # one BLAS thread: fastest for these small matrices, even on a busy machine

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
| 2 discriminator | $L_D$ on `[prior samples; codes]`, targets `[1; 0]` | $D$ (the codes are constants) | $D$ |
| 3 generator | $L_G$, non-saturating, through $D$ | $D$ (touched) and encoder | encoder only |

Phase 1 is notebook 3's autoencoder backward. The docstring:
"""

# %%
docstring_block(AdversarialAutoencoder, start="Each minibatch", stop="With ``supervised")

# %% [markdown]
r"""
## Phase 2: the discriminator

Draw $N$ prior samples $z^p$ `(N, d)`, compute the codes $h = f(x)$ `(N, d)` and score both
**with one forward on their concatenation** (a second forward would overwrite the first's
cache, which the library refuses):

$$
\underbrace{a}_{(2N,1)} = D\bigl(\underbrace{[z^p; h]}_{(2N,d)}\bigr),\qquad
\underbrace{t}_{(2N,1)} = [\mathbf 1_N; \mathbf 0_N],\qquad
L_D = \frac1{2N}\sum_{r=1}^{2N}\operatorname{softplus}(a_r) - t_r a_r ,
$$

notebook 1's BCE on logits over $2N$ rows, so

$$
\underbrace{d\,\text{logits}}_{(2N,1)} = \frac{\sigma(a) - t}{2N},
\qquad D.\text{backward}(d\,\text{logits})\ \text{fills } D\text{'s grads (Linear/ReLU rules)}.
$$

The codes are constants here: the encoder's cache is cleared right after computing them,
and its gradient is not formed. For a fixed encoder the best discriminator has
$\sigma(a^*) = p/(p + q)$, i.e. $a^*(z) = \log p(z) - \log q(z)$ (Goodfellow et al. 2014).

The check: a model of MNIST's width, small inside (784-8-2, a 2-4-1 discriminator, tanh),
four real digits, prior samples fixed (`z_prior=`), float64, only $D$'s parameters.
"""

# %%
def small_aae():
    return AdversarialAutoencoder((784, 8, 2), activation="tanh", disc_sizes=(4,), prior="mixture",
                                  rng=B.Generator(6), dtype="float64")


aae = small_aae()
x4 = x_train[:4].astype("float64")
z_prior = aae.prior.sample(4, B.Generator(8), dtype="float64")
report = check_objective(aae, lambda: aae.discriminator_loss(x4, z_prior=z_prior),
                         aae.backward_discriminator, params=["discriminator"], title="AAE phase 2 (discriminator)")
print(report)
assert report.passed

# %% [markdown]
r"""
## Phase 3: the encoder as generator, through $D$

The encoder wants $D$ to call its codes "prior". The minimax generator loss
$\frac1N\sum\log(1 - \sigma(a_n))$ has gradient $-\sigma(a_n)/N$ in the logit, which vanishes
exactly when $D$ confidently rejects the codes ($a\ll0$, the situation early in training).
The **non-saturating** loss flips the target instead:

$$
L_G = \frac1N\sum_n -\log\sigma(a_n) = \frac1N\sum_n\operatorname{softplus}(-a_n) = \text{bce}(a, \mathbf 1),
\qquad
\underbrace{d\,\text{logits}}_{(N,1)} = \frac{\sigma(a) - 1}{N} \to -\frac1N\ \text{as}\ a\to-\infty .
$$

The codes affect $L_G$ only through $D$'s logit, so the gradient must go **through** $D$:

$$
\underbrace{dh}_{(N,d)} = D.\text{backward}(d\,\text{logits}) = \frac{\sigma(a) - 1}{N}\odot\nabla_z a(z)\big|_{z=h},
\qquad \text{encoder.backward}(dh)\ \ \text{(parameter gradients; } x \text{ is data)}.
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
**Finite differences by hand.** First the idea in its plainest form: perturb each entry of
the encoder's last weight $W$ `(8, 2)` by $\pm\epsilon$, recompute $L_G$ (a forward through
encoder *and* $D$), and compare the central differences
$\bigl(L_G(W + \epsilon e_{ij}) - L_G(W - \epsilon e_{ij})\bigr)/2\epsilon$ with what
`backward_generator` adds into `encoder.2.W`'s gradient.
"""

# %%
aae = small_aae()
W = aae.encoder[2].params["W"]                  # (8, 2): the encoder's last Linear
W0 = W.copy()


def generator_value(W_new):
    W[...] = W_new
    value = float(aae.generator_loss(x4).value)
    aae.clear_cache()                           # a forward we do not backpropagate
    return value


numeric = numerical_gradient(generator_value, W0, eps=1e-6)
W[...] = W0
aae.zero_grad()
aae.backward_generator(aae.generator_loss(x4))
analytic = aae.encoder[2].grads["W"]
print(np.column_stack([analytic.ravel(), numeric.ravel()])[:6], "...")
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


broken = DetachedCodeAAE((784, 8, 2), activation="tanh", disc_sizes=(4,), rng=B.Generator(6), dtype="float64")
report = check_objective(broken, lambda: broken.generator_loss(x4), broken.backward_generator,
                         params=["encoder"], title="detached codes")
print(report)
assert report.verdict == FAILED and all(r.failed for r in report.rows)

# phase 1 is the autoencoder's objective
aae = small_aae()
report = check_objective(aae, lambda: aae.loss(x4), aae.backward, params=["encoder", "decoder"], title="AAE phase 1")
print("\n" + report.headline())
assert report.passed

# %% [markdown]
r"""
## Priors

`make_prior(name, dim)` returns an object with `sample(n, rng, labels=None)`. The mixture
(ten elongated Gaussians on a ring, the paper's 2-D figures) and the swiss roll are 2-D; the
Gaussian and the uniform take any width. With `supervised=True` each label gets its own part
of the prior (not used here).
"""

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
g = B.Generator(9)
for ax, name in zip(axes, ("mixture", "swiss_roll", "gaussian", "uniform")):
    s = make_prior(name, 2).sample(2000, g)
    ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.5)
    ax.set_title(f"make_prior({name!r}, 2)", fontsize=9)
    ax.set_aspect("equal")
fig.tight_layout()
plt.show()

# %% [markdown]
r"""
## Training a 2-D AAE

784-128-128-2, a 128-128-1 discriminator, the 10-Gaussian mixture prior, Adam with
learning rate $2\times10^{-3}$ in all three phases, batches of 100, ten epochs on the 5,000 bundled digits (the
paper's networks are 1000 wide and train far longer: `python demos/aae.py` runs a longer
recipe). Then, on the 1,000 held-out digits:

* the discriminator's accuracy on `[prior samples; codes]` (0.5: it cannot tell them apart;
  but a weak $D$ also scores 0.5, so this is a weak witness);
* the MMD$^2$ between the codes and as many prior samples (a kernel two-sample statistic,
  0 for identical distributions), next to the MMD$^2$ of two independent prior samples of
  the same size: what codes that truly followed the prior would give.
"""

# %%
model = AdversarialAutoencoder((784, 128, 128, 2), disc_sizes=(128, 128), prior="mixture",
                               rng=B.Generator(0)).configure_optimizers("adam", lr=2e-3)
hist = fit(model, x_train, epochs=10, batch_size=100, seed=0, progress=False)
rng = B.Generator(1)
acc = float(evaluation.discriminator_accuracy(model, x_test, rng))
c = evaluation.codes(model, x_test)                              # (1000, 2) on the host
n = 500                                                          # MMD^2 on 500 codes: an O(n^2) statistic
mmd_codes = evaluation.mmd2(c[:n], model.prior.sample(n, rng))
mmd_ref = [evaluation.mmd2(model.prior.sample(n, rng), model.prior.sample(n, rng)) for _ in range(3)]
print(f"last epoch: recon {hist[-1]['train_recon']:.1f} nats per example, D loss {hist[-1]['train_disc']:.3f}, "
      f"G loss {hist[-1]['train_gen']:.3f}")
print(f"held-out discriminator accuracy {acc:.3f}   (0.5 = indistinguishable)")
print(f"MMD^2({n} test codes, {n} prior samples) = {mmd_codes:.4f};   "
      f"MMD^2(prior, prior') = {np.mean(mmd_ref):+.4f} +- {np.std(mmd_ref):.4f} (3 pairs of {n})")

fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1, 1.25]})
ep = [h["epoch"] for h in hist]
ax2 = axes[0].twinx()
axes[0].plot(ep, [h["train_recon"] for h in hist], "o-", color="C0", label="reconstruction (left)")
ax2.plot(ep, [h["train_disc"] for h in hist], "s-", color="C1", label="discriminator (right)")
ax2.plot(ep, [h["train_gen"] for h in hist], "^-", color="C2", label="generator (right)")
ax2.axhline(np.log(2), color="k", lw=0.8, ls=":")
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("nats per example")
ax2.set_ylabel("nats per logit (ln 2 dotted)")
axes[0].legend(loc="upper center", fontsize=8)
ax2.legend(loc="center right", fontsize=8)
prior = model.prior.sample(3000, B.Generator(2))
axes[1].scatter(prior[:, 0], prior[:, 1], s=2, color="0.8", label="prior samples")
sc = axes[1].scatter(c[:, 0], c[:, 1], c=ds.y_test, cmap="tab10", s=5)
fig.colorbar(sc, ax=axes[1], ticks=range(10), label="digit")
axes[1].set_aspect("equal")
axes[1].set_title(f"test codes over the mixture prior: held-out D accuracy {acc:.2f}, MMD^2 {mmd_codes:.3f}", fontsize=9)
axes[1].legend(fontsize=8, loc="upper right")
fig.tight_layout()
plt.show()

# %% [markdown]
r"""
After ten short epochs the codes spread over the whole prior, and the MMD$^2$ is small,
though still above the prior-against-prior value; the codes do not yet follow the ten arms
closely (and an unsupervised AAE need not give each digit its own arm: `supervised=True`
does that). Longer training with wider networks closes the gap. The D and G losses near
$\ln 2\approx 0.69$ are what a discriminator that cannot separate the two gives.

**Every backward of the AAE, in one place:** phase 1 is the autoencoder's
($dout = (\sigma(l) - x)/N$, decoder then encoder, no $dx$); phase 2 is
$d\,\text{logits} = (\sigma(a) - t)/2N$ into $D$ alone, the codes constants; phase 3 is
$d\,\text{logits} = (\sigma(a) - 1)/N$, $dh = D.\text{backward}(d\,\text{logits})$, then
$\text{encoder.backward}(dh)$, with only the encoder stepped.
"""

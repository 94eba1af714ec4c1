# %% [markdown]
r"""
# 3. Autoencoders and denoising autoencoders

**What this notebook teaches.** The plain autoencoder (AE) of `scratchae.models.Autoencoder`,
its whole backward pass derived layer by layer with shapes and then recomputed by hand in
NumPy and compared with the library's gradients, number for number; the **tied-weight** and
**L1-sparse** variants and what each changes in the backward (the tied weight's two gradient
shares, again by hand); then the **denoising
autoencoder** (DAE, `scratchae.models.DenoisingAutoencoder`): the three corruptions of
`scratchae.stochastic.corrupt`, why its backward is the AE's, and a DAE against an AE of
the same size and training budget on **masked digits**, scored against the clean digits.
Every model's whole objective is gradient-checked with `check_objective`, its noise held
fixed.

**How to run it.** Locally, from a clone of the repository: `pip install -e ".[dev]"`,
then open `docs/notebooks/` in VS Code (the dev extra has the kernel) or Jupyter
(`pip install jupyterlab`, `jupyter lab`) and run all cells (about 10 s on a laptop CPU:
four small models train for five or ten epochs each on the 5,000-digit MNIST subset shipped
with the package). On Colab: open the notebook, run the first code cell (it
installs scratchae when it is not importable; set `SOURCE` there to your clone's git URL),
then run all. Every random number comes from a seeded `scratchae.backend.Generator`.

Background: [`docs/autoencoders.md`](../autoencoders.md) (these derivations as text) and
notebook 1 (the Linear, ReLU and BCE backwards used here).
"""

# %% {include=_install.py}

# %%
import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from scratchae import backend as B
from scratchae import losses
from scratchae.data import load_dataset, preprocess
from scratchae.evaluation import codes
from scratchae.gradcheck import check_objective
from scratchae.layers import sigmoid
from scratchae.models import Autoencoder, DenoisingAutoencoder
from scratchae.stochastic import corrupt
from scratchae.train import fit

blas_limits = threadpool_limits(1)   # one BLAS thread: fastest for these small matrices, even on a busy machine

def show_rows(rows, title=None):
    """One labelled row of 28x28 images per (label, array (n, 784)) pair."""
    n = max(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.62 * n + 1.0, 0.72 * len(rows) + 0.4))
    for ax, (label, imgs) in zip(np.atleast_1d(axes), rows):
        strip = np.ones((30, 30 * n))
        for i, im in enumerate(np.asarray(imgs).reshape(-1, 28, 28)):
            strip[1:29, 30 * i + 1:30 * i + 29] = im
        ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        np.atleast_1d(axes)[0].set_title(title, fontsize=9)
    plt.show()


ds = load_dataset("mnist", data="bundled")      # the 5000 / 1000-digit subset shipped with the package
x_train, x_test = preprocess(ds.x_train), preprocess(ds.x_test)   # (N, 784) float32 in [0, 1]
print(ds, x_train.shape, x_train.dtype)


# %% {include=_docstring_block.py}
# %% [markdown]
r"""
## The autoencoder, forward and backward

For `Autoencoder(sizes=(784, 128, 32))` with ReLU and the Bernoulli likelihood, a batch
$x$ `(N, 784)` goes through (the decoder mirrors the encoder; there is no activation on the
code or on the logits):

$$
\begin{aligned}
u_1 &= xW_1 + b_1 & (N, 128)\qquad & h_1 = \mathrm{relu}(u_1) & (N, 128)\\
c &= h_1W_2 + b_2 & (N, 32)\qquad & \text{the code}\\
u_3 &= cW_3 + b_3 & (N, 128)\qquad & h_3 = \mathrm{relu}(u_3) & (N, 128)\\
l &= h_3W_4 + b_4 & (N, 784)\qquad & \text{the logits}\\
L &= \frac1N\sum_{n,j}\operatorname{softplus}(l_{nj}) - x_{nj}l_{nj} & ()\qquad & \text{nats per example}
\end{aligned}
$$

with $W_1$ `(784, 128)`, $W_2$ `(128, 32)`, $W_3$ `(32, 128)`, $W_4$ `(128, 784)`. The
backward runs the same lines in reverse, each one notebook 1's Linear or ReLU rule:

$$
\begin{aligned}
dl &= (\sigma(l) - x)/N & (N, 784)\\
dW_4 &= h_3^\top dl\ \ (128, 784), \quad db_4 = \textstyle\sum_n dl\ \ (784,), & dh_3 = dl\,W_4^\top\ \ (N, 128)\\
du_3 &= dh_3\odot\mathbf 1[u_3>0] & (N, 128)\\
dW_3 &= c^\top du_3\ \ (32, 128), \quad db_3 = \textstyle\sum_n du_3\ \ (128,), & dc = du_3W_3^\top\ \ (N, 32)\\
dW_2 &= h_1^\top dc\ \ (128, 32), \quad db_2 = \textstyle\sum_n dc\ \ (32,), & dh_1 = dc\,W_2^\top\ \ (N, 128)\\
du_1 &= dh_1\odot\mathbf 1[u_1>0] & (N, 128)\\
dW_1 &= x^\top du_1\ \ (784, 128), \quad db_1 = \textstyle\sum_n du_1\ \ (128,) & \text{and no } dx\text{: } x \text{ is data}
\end{aligned}
$$

The last line is why the encoder's first `Linear` is built with `input_grad=False`: $dx$
would cost a $(N, 128)\times(128, 784)$ matmul and nobody needs it. In the library this
whole table is three lines, the model's docstring *Backward* block (`dout` is $dl$, `dcode`
is $dc$); `decoder.backward` and `encoder.backward` are `Sequential`s running the layer
rules in reverse:
"""

# %%
docstring_block(Autoencoder)

# %% [markdown]
r"""
Now the table above, typed out in NumPy from the model's own parameters and compared with
what `model.backward` adds into `grads`. `model.loss(x)` is forward-only: it returns an
`Objective` with the value, its terms and $dl$ (`obj.grads["out"]`); `model.backward(obj)`
runs the backward.
"""

# %%
model = Autoencoder((784, 128, 32), rng=B.Generator(0), dtype="float64")
x = x_train[:16].astype("float64")
model.zero_grad()
obj = model.loss(x)
model.backward(obj)

p = dict(model.named_parameters())                       # "encoder.0.W", "encoder.0.b", ...
W1, b1, W2, b2 = p["encoder.0.W"], p["encoder.0.b"], p["encoder.2.W"], p["encoder.2.b"]
W3, b3, W4, b4 = p["decoder.0.W"], p["decoder.0.b"], p["decoder.2.W"], p["decoder.2.b"]
N = x.shape[0]
u1 = x @ W1 + b1; h1 = np.maximum(u1, 0)                  # (N, 128)
c = h1 @ W2 + b2                                         # (N, 32)
u3 = c @ W3 + b3; h3 = np.maximum(u3, 0)                 # (N, 128)
l = h3 @ W4 + b4                                         # (N, 784)
L_hand = np.sum(np.logaddexp(0, l) - x * l) / N          # softplus(l) = log(1 + e^l)
dl = (sigmoid(l) - x) / N                                # (N, 784)
hand = {"decoder.2.W": h3.T @ dl, "decoder.2.b": dl.sum(0)}
du3 = (dl @ W4.T) * (u3 > 0)                             # (N, 128)
hand.update({"decoder.0.W": c.T @ du3, "decoder.0.b": du3.sum(0)})
dc = du3 @ W3.T                                          # (N, 32)
hand.update({"encoder.2.W": h1.T @ dc, "encoder.2.b": dc.sum(0)})
du1 = (dc @ W2.T) * (u1 > 0)                             # (N, 128)
hand.update({"encoder.0.W": x.T @ du1, "encoder.0.b": du1.sum(0)})

np.testing.assert_allclose(L_hand, obj.value, rtol=1e-12)
for name, g in model.named_grads():
    np.testing.assert_allclose(hand[name], g, rtol=1e-9, atol=1e-15)
    print(f"{name:12s} {str(g.shape):11s} by hand == model.backward")
print(f"L = {L_hand:.4f} nats per example, both ways")

# %% [markdown]
r"""
### A whole-model gradient check

`check_objective(model, forward, backward)` differences the *whole* objective with respect
to every parameter of the model: `forward()` must be deterministic (an AE has no noise; the
DAE and VAE below get theirs passed in). A model of MNIST's width, small inside (784-8-3,
tanh: smooth, so no kinks), on four real digits, in float64; its large arrays are checked
along random directions, the small ones entry by entry.
"""

# %%
small = Autoencoder((784, 8, 3), activation="tanh", rng=B.Generator(1), dtype="float64")
x4 = x_train[:4].astype("float64")
report = check_objective(small, lambda: small.loss(x4), small.backward)
print(report)
assert report.passed

# %% [markdown]
r"""
### Training it

Ten epochs of Adam (learning rate $2\times10^{-3}$, batches of 128) on the 5,000 training
digits, with the test loss after each epoch (`fit(..., x_test=...)`, in nats per example).
After epoch 5, the test digits' codes and two weight norms are kept (`fit`'s
`on_epoch_end`), to compare with variants trained for five epochs below.
"""

# %%
def train(model, epochs, lr=2e-3, on_epoch_end=None):
    model.configure_optimizers("adam", lr=lr)
    return fit(model, x_train, epochs=epochs, batch_size=128, seed=0, x_test=x_test, progress=False,
               on_epoch_end=on_epoch_end)


def code_and_weight_sizes(model):
    """The test digits' codes (1000, 32) and the Frobenius norms of W2 (encoder.2.W) and W3 (decoder.0.W)."""
    p = dict(model.named_parameters())
    return {"codes": codes(model, x_test), "|W2|": np.linalg.norm(p["encoder.2.W"]),
            "|W3|": np.linalg.norm(p["decoder.0.W"])}


plain_after_5 = {}


def keep_sizes_after_epoch_5(epoch, record):
    if record["epoch"] == 5:
        plain_after_5.update(code_and_weight_sizes(ae))


ae = Autoencoder((784, 128, 32), rng=B.Generator(0))
hist_ae = train(ae, 10, on_epoch_end=keep_sizes_after_epoch_5)
print(f"AE 784-128-32: test BCE {hist_ae[-1]['test_recon']:.1f} nats per example after 10 epochs")
show_rows([("test digits", x_test[:12]), ("AE", B.to_numpy(ae.reconstruct(x_test[:12])))],
          title="the plain AE's reconstructions (sigmoid of the logits)")

# %% [markdown]
r"""
## Tied weights

With `tied=True` each decoder layer is a `TiedLinear` that reuses an encoder weight,
transposed: $u_3 = cW_2^\top + b_3$, $l = h_3W_1^\top + b_4$. There is no $W_3$ or $W_4$; the
decoder keeps its own biases $b_3$ `(128,)` and $b_4$ `(784,)` (a `TiedLinear` calls its
bias `c`: `decoder.0.c`, `decoder.2.c`). Now $W_1$ reaches $L$ along two paths (encoder and
decoder), and so does $W_2$; the multivariable chain rule **adds** the two contributions:

$$
\underbrace{dW_1}_{(784,128)} = \underbrace{x^\top du_1}_{\text{encoder's Linear}} + \underbrace{dl^\top h_3}_{\text{decoder's TiedLinear}},
\qquad
\underbrace{dW_2}_{(128,32)} = h_1^\top dc + du_3^\top c .
$$

The decoder's share has the transposed form ($dy^\top x$, not $x^\top dy$) because the layer
multiplies by $W^\top$; its input gradients change too ($dh_3 = dl\,W_1$, $dc = du_3W_2$).
In code both shares are `+=` into the **same** array: `Linear.backward` does
`grads["W"] += x.T @ dy`, `TiedLinear.backward` does `tied.grads["W"] += dy.T @ x` (notebook
1's mistake 4, `=` for `+=`, would silently drop one path here). The tied model lists each
shared $W$ once, under the encoder, so the optimizer updates it once, with the sum. Below,
the two shares by hand, for the same 16 digits as above: their sum is the model's gradient,
and either share alone is far from it.
"""

# %%
from scratchae.layers import TiedLinear

docstring_block(TiedLinear)

tied64 = Autoencoder((784, 128, 32), tied=True, rng=B.Generator(0), dtype="float64")
print("parameters:", [name for name, _ in tied64.named_parameters()])
tied64.zero_grad()
tied64.backward(tied64.loss(x))
p = dict(tied64.named_parameters())
W1, b1, W2, b2, b3, b4 = (p[k] for k in ("encoder.0.W", "encoder.0.b", "encoder.2.W", "encoder.2.b",
                                         "decoder.0.c", "decoder.2.c"))
u1 = x @ W1 + b1; h1 = np.maximum(u1, 0)
c = h1 @ W2 + b2
u3 = c @ W2.T + b3; h3 = np.maximum(u3, 0)               # W2 transposed: decoder.0
l = h3 @ W1.T + b4                                       # W1 transposed: decoder.2
dl = (sigmoid(l) - x) / N
du3 = (dl @ W1) * (u3 > 0)                               # dh3 = dl W1 (not dl W4^T)
dc = du3 @ W2
du1 = (dc @ W2.T) * (u1 > 0)


def rel_err(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


grads = dict(tied64.named_grads())
for name, enc_share, dec_share in (("encoder.0.W", x.T @ du1, dl.T @ h3), ("encoder.2.W", h1.T @ dc, du3.T @ c)):
    np.testing.assert_allclose(enc_share + dec_share, grads[name], rtol=1e-9, atol=1e-15)
    print(f"{name}: encoder share + decoder share == model.backward;  relative error of the encoder "
          f"share alone {rel_err(enc_share, grads[name]):.2f}, of the decoder share alone {rel_err(dec_share, grads[name]):.2f}")

# %% [markdown]
r"""
### The sparse autoencoder

`sparsity=λ` adds an L1 penalty on the code, $\frac{\lambda}{N}\sum_{n,k}|c_{nk}|$. The code
now reaches $L$ along two paths, the decoder and the penalty, so $dc$ gets a second term:

$$
\underbrace{dc}_{(N,32)} = \underbrace{du_3W_3^\top}_{\text{decoder.backward}} + \frac{\lambda}{N}\operatorname{sign}(c),
$$

using the subgradient $\operatorname{sign}(0) = 0$ at the kink (that is the
`dcode += sparsity * sign(code) / N` line of the block above).

**A Gaussian likelihood instead of the Bernoulli one** (`likelihood="gaussian"`): the
decoder outputs `[m | v]` `(N, 2D)`, a mean and a log-variance per pixel, and
$L = \frac1N\sum_{n,j}\tfrac12\bigl(\log 2\pi + v + (x - m)^2e^{-v}\bigr)$. With
$r = (x - m)\,e^{-v}$ `(N, D)`: $\partial L/\partial m = -r/N$ and
$\partial L/\partial v = \tfrac12\bigl(1 - (x - m)\,r\bigr)/N$, concatenated back into
`dout` `(N, 2D)` (`losses.gaussian_nll`, whose docstring block is printed below).

Both variants, and the AE with a Gaussian likelihood, pass the whole-objective check (tiny
float64 models as in `tests/test_models.py`: 6 inputs in $(0.05, 0.95)$, tanh):
"""

# %%
docstring_block(losses.gaussian_nll)
xs = B.Generator(100).uniform((4, 6), 0.05, 0.95, dtype="float64")
for kw in ({"tied": True}, {"sparsity": 0.3}, {"likelihood": "gaussian"}):
    m = Autoencoder((6, 5, 3), activation="tanh", rng=B.Generator(1), dtype="float64", **kw)
    report = check_objective(m, lambda: m.loss(xs), m.backward, title=f"Autoencoder({kw})")
    print(report, "\n")
    assert report.passed

# %% [markdown]
r"""
Both variants trained for five epochs, against the plain AE after its fifth epoch (same
initial weights, batches and learning rate). Tying halves the weights for a few nats of
reconstruction at this budget. The L1 penalty ($\lambda = 0.5$) shrinks the codes
several-fold without costing reconstruction here, but read that with care: dividing $W_2$
and $b_2$ by $s > 1$ and multiplying $W_3$ by $s$ leaves the reconstruction unchanged
($c/s$ times $sW_3$) and divides the penalty by $s$. So part of the shrinking is such a
rescaling (the printed norms: $W_2$ smaller, $W_3$ larger), not sparsity; sparse
autoencoders usually bound the decoder's weights for this reason. Few codes are exactly 0:
subgradient steps make them hover around 0 rather than land on it.
"""

# %%
tied = Autoencoder((784, 128, 32), tied=True, rng=B.Generator(0))
sparse = Autoencoder((784, 128, 32), sparsity=0.5, rng=B.Generator(0))
hist_tied, hist_sparse = train(tied, 5), train(sparse, 5)
for name, m, h in (("plain", ae, hist_ae[4]), ("tied", tied, hist_tied[-1]), ("sparse", sparse, hist_sparse[-1])):
    print(f"{name:7s} {m.num_parameters():7d} parameters, test BCE after 5 epochs {h['test_recon']:.1f} nats"
          + (f" (+ L1 {h['test_l1']:.1f})" if "test_l1" in h else ""))
assert hist_tied[-1]["test_recon"] > hist_ae[4]["test_recon"]
assert hist_sparse[-1]["test_recon"] < hist_ae[4]["test_recon"] + 2

sizes = {"plain": plain_after_5, "L1, lambda = 0.5": code_and_weight_sizes(sparse)}
for name, size in sizes.items():
    print(f"{name:17s} after 5 epochs: mean |c| = {np.abs(size['codes']).mean():.2f}, "
          f"|W2| = {size['|W2|']:.2f}, |W3| = {size['|W3|']:.2f}")
plain_s, sparse_s = sizes.values()
assert np.abs(sparse_s["codes"]).mean() < np.abs(plain_s["codes"]).mean() / 2
assert sparse_s["|W2|"] < plain_s["|W2|"] and sparse_s["|W3|"] > plain_s["|W3|"]

fig, ax = plt.subplots(figsize=(6, 3))
bins = np.linspace(-12, 12, 97)                          # holds every code of both models
for name, size in sizes.items():
    ax.hist(size["codes"].ravel(), bins=bins, alpha=0.6, density=True, label=name)
ax.set_title("codes of the 1000 test digits after 5 epochs (all 32 units)", fontsize=9)
ax.set_xlabel("code value")
ax.set_ylabel("density")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
r"""
## The denoising autoencoder

The DAE (Vincent et al. 2008) reconstructs the **clean** $x$ from a corrupted copy
$\tilde x \sim C(\tilde x\mid x)$:

$$
L = \frac1N\sum_n -\log p\bigl(x_n \mid g(f(\tilde x_n))\bigr).
$$

`scratchae.stochastic.corrupt(x, kind, level, rng=..., noise=...)` has three corruptions
(`level` $\nu$); the noise can be passed in, which is how a gradient check holds it fixed:

| kind | $\tilde x$ | `noise=` |
|---|---|---|
| `"gaussian"` | $x + \nu n$, $n\sim\mathcal N(0, I)$ | $n$ |
| `"masking"` | $x\odot m$, $m_j\sim\text{Bernoulli}(1-\nu)$: each pixel zeroed with probability $\nu$ | the keep mask $m$ |
| `"salt_pepper"` | with $u_j\sim U(0,1)$: 0 if $u_j<\nu/2$, 1 if $u_j > 1-\nu/2$, else $x_j$: each pixel set to 0 or to 1 with probability $\nu/2$ each | $u$ |

Each pixel is corrupted independently, so a fraction $\nu$ is corrupted *on average*
(Vincent et al. 2008 zero a fixed number of pixels per image instead). Gaussian noise is not
clipped: $\tilde x$ leaves $[0, 1]$ (the figure clips it for display only).
"""

# %%
g = B.Generator(3)
clean = x_test[:10]
show_rows([("clean", clean),
           ("gaussian 0.3", np.clip(corrupt(clean, "gaussian", 0.3, rng=g), 0, 1)),
           ("masking 0.5", corrupt(clean, "masking", 0.5, rng=g)),
           ("salt & pepper 0.3", corrupt(clean, "salt_pepper", 0.3, rng=g))],
          title="the three corruptions of scratchae.stochastic.corrupt (gaussian clipped to [0, 1] for display)")

# %% [markdown]
r"""
**Its backward is the autoencoder's.** The corruption acts on the *data*: it has no
parameters and nothing upstream of it needs a gradient, so the backward is the table above
with $\tilde x$ in place of $x$ in the last line, $dW_1 = \tilde x^\top du_1$, and the loss
still compares the logits with the clean $x$ (so $dl = (\sigma(l) - x)/N$). No $d\tilde x$ is
ever formed. `DenoisingAutoencoder.loss(x, noise=...)` corrupts in training mode only; in
eval mode it reconstructs its input as it is.
"""

# %%
docstring_block(DenoisingAutoencoder, start="The loss is against")
r = B.Generator(3)
noises = {"masking": r.bernoulli((4, 6), 0.7, "float64"),          # the keep mask: P(keep) = 1 - level
          "gaussian": r.normal((4, 6), "float64"),
          "salt_pepper": r.uniform((4, 6), dtype="float64")}
for kind, noise in noises.items():
    m = DenoisingAutoencoder((6, 5, 3), activation="tanh", corruption=kind, level=0.3,
                             rng=B.Generator(2), dtype="float64")
    report = check_objective(m, lambda: m.loss(xs, noise=noise), m.backward, title=f"DAE({kind})")
    print(report, "\n")
    assert report.passed

# %% [markdown]
r"""
**Why corruption teaches structure, not the identity.** Fed $\tilde x$, the identity outputs
$\tilde x$ and is scored against $x$: it cannot copy the target, because the target is not
in its input. For the Bernoulli cross-entropy (as for the squared error) the best output for
each $\tilde x$ is, pixel by pixel, the posterior mean $\mathbb E[x\mid\tilde x]$, which
depends on the data distribution $p(x)$: with masking, the network must predict the missing
pixels from the present ones, so it has to learn how pixels depend on each other. (For Gaussian noise the
residual $\mathbb E[x\mid\tilde x] - \tilde x$ is $\nu^2$ times the score
$\nabla\log q_\nu(\tilde x)$ of the noisy data density: Tweedie's formula; see
[`docs/autoencoders.md`](../autoencoders.md).)

## A DAE against an AE on masked digits

Same architecture (784-128-32), same initial weights, same ten epochs, batches and learning
rate; the DAE trains with masking noise of level 0.5. Then both reconstruct the **same**
masked test digits (one fixed, seeded keep mask, each pixel zeroed with probability 0.5),
scored with the BCE against the **clean** digits, in nats per example (summed over the 784
pixels, averaged over the 1000 test digits). The difference is paired (same digits, same
mask), so its standard error is over the 1000 per-digit differences; it measures the
spread over test digits for these two trained models, not over training seeds.
"""

# %%
dae = DenoisingAutoencoder((784, 128, 32), corruption="masking", level=0.5, rng=B.Generator(0))
train(dae, 10)

keep = B.Generator(12345).bernoulli(x_test.shape, 0.5)          # P(keep) = 0.5
x_masked = corrupt(x_test, "masking", 0.5, noise=keep)


def bce_against_clean(model, x_in, x_clean):
    """Per-digit BCE (N,) of reconstructing x_clean from x_in, in nats (eval mode: no corruption)."""
    model.eval()
    logits = model.decoder(model.encoder(x_in))
    model.train()
    return B.to_numpy(losses.bce_per_example(logits, x_clean))


per_digit = {name: {"masked": bce_against_clean(m, x_masked, x_test), "clean": bce_against_clean(m, x_test, x_test)}
             for name, m in (("AE", ae), ("DAE", dae))}
scores = {name: {k: v.mean() for k, v in s.items()} for name, s in per_digit.items()}
print(f"{1 - keep.mean():.1%} of the test pixels masked; BCE against the clean digits, nats per example:")
for name, s in scores.items():
    print(f"  {name:4s} from masked digits {s['masked']:6.1f}    from clean digits {s['clean']:6.1f}")
gain = per_digit["AE"]["masked"] - per_digit["DAE"]["masked"]          # (1000,), paired
gain_se = gain.std(ddof=1) / np.sqrt(len(gain))
print(f"from masked digits the DAE is better by {gain.mean():.1f} +- {gain_se:.1f} nats per example "
      f"(mean +- standard error over the test digits; better on {(gain > 0).mean():.0%} of them)")
assert gain.mean() > 3 * gain_se

show_rows([("clean", x_test[:12]), ("masked 0.5", x_masked[:12]),
           ("AE", B.to_numpy(ae.reconstruct(x_masked[:12]))),
           ("DAE", B.to_numpy(dae.reconstruct(x_masked[:12])))],
          title=f"masked test digits: BCE per example AE {scores['AE']['masked']:.1f}, "
                f"DAE {scores['DAE']['masked']:.1f} nats")

# %% [markdown]
r"""
The DAE fills in the missing strokes; the AE, which never saw a hole in training and
learned to copy whatever ink it is given, returns faint, blurred digits. The price shows in
the "from clean digits" column: the DAE only ever saw inputs with about half the ink, so on
clean digits it does worse than the AE (worse even than on masked ones), while clean digits
are exactly the task the AE was trained for. With the full 60,000 digits and 784-400-32 the
gap on masked digits is larger (75.8 against 163.5 nats:
`python demos/dae.py --data mnist.npz --epochs 10`, in the [README](../../README.md)).

**Every backward of the AE and DAE, in one place:** $dl = (\sigma(l) - x)/N$ (the BCE on
logits, against the clean $x$), then for each `Linear` $dW \mathrel{+}= x_{in}^\top dy$,
$db \mathrel{+}= \sum_n dy$, $dx_{in} = dy\,W^\top$; for each ReLU $dx = dy\odot\mathbf 1[x>0]$;
`+=` into one array for a tied $W$ ($dy^\top x_{in}$ from the `TiedLinear`); plus
$\frac\lambda N\operatorname{sign}(c)$ into $dc$ with sparsity; and nothing for the
corruption or for the input, both data.
"""

# %% [markdown]
r"""
# 1. Backpropagation by hand: Linear, ReLU and BCE with logits

**What this notebook teaches.** How to derive a backward pass on paper, with the shape of
every quantity written next to it, how to turn the derivation into a layer
(`forward` + `backward`, no autograd), and how to *prove* the layer right with the
library's gradient checker, `scratchae.gradcheck.check_layer`. We derive and code the three
pieces every autoencoder in this library is made of:

1. `Linear`, $y = xW + b$;
2. `ReLU`, $y = \max(x, 0)$;
3. the Bernoulli negative log-likelihood on logits, `bce_with_logits`, the reconstruction
   loss of the AE, DAE, VAE and AAE on MNIST;

then chain them into a tiny autoencoder that trains, and finally make the **classic
mistakes** on purpose (a transposed `dW`, a bias not summed over the batch, a flipped sign,
`=` instead of `+=`, a missing 0.5) and read what the checker reports for each. The
notebook asserts that every wrong layer gets the verdict `FAILED`, so it fails if the
checker ever passes a wrong backward.

**How to run it.** Locally, from a clone of the repository: `pip install -e ".[dev]"`,
then open `docs/notebooks/` in VS Code (the dev extra has the kernel) or Jupyter (`pip install jupyterlab`, `jupyter lab`) and run all cells (a few
seconds on a laptop CPU). On Colab: open the notebook, run the first code cell (it
installs scratchae when it is not importable; set `SOURCE` there to your clone's git URL),
then run all. Every random number comes from a seeded `scratchae.backend.Generator`, so
every number printed is the same on every run.

Background reading: [`docs/conventions.md`](../conventions.md) (shapes, `dy`, the one
reduction) and [`docs/layers.md`](../layers.md) (these derivations, as text).
"""

# %% {include=_install.py}

# %%
import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from scratchae import Module, Sequential
from scratchae import backend as B
from scratchae import layers as L
from scratchae import losses
from scratchae.data import load_dataset, preprocess
from scratchae.gradcheck import FAILED, check_function, check_layer
from scratchae.layers import sigmoid, softplus
from scratchae.optim import Adam

blas_limits = threadpool_limits(1)   # one BLAS thread: fastest for these small matrices, even on a busy machine


# %% {include=_docstring_block.py}
# %% [markdown]
r"""
## The protocol: what a backward computes

A layer computes $y = f(x;\theta)$ from an input $x$ and parameters $\theta$. Somewhere
downstream a scalar loss $L$ is computed from $y$. Backpropagation hands the layer the
**upstream gradient** $dy = \partial L/\partial y$, an array of exactly $y$'s shape, and the
layer must

* return $dx = \partial L/\partial x$, an array of exactly $x$'s shape (the next layer down
  needs it as *its* $dy$), and
* **add** $\partial L/\partial\theta$ into `self.grads[name]` for each parameter (`+=`, never
  `=`: a parameter used along two paths must receive the sum).

By the chain rule, entry by entry,
$dx_{i} = \sum_{j} dy_{j}\,\partial y_{j}/\partial x_{i}$, a **vector-Jacobian product**
$J^\top dy$; no Jacobian is ever built.

In scratchae a layer is a `Module` subclass: parameters are registered with
`add_param(name, array)` (which puts a zero gradient in `grads` beside it), `forward` keeps
what `backward` needs with `save_cache(...)`, and `backward` takes it back with
`pop_cache()`, which **always returns a tuple** in the order saved: `(x,) = self.pop_cache()`
for one value, `x, s = self.pop_cache()` for two. `check_dy(dy, shape)` refuses an upstream
gradient of the wrong shape.

**How the checker tests a backward.** `check_layer(layer, x)` draws a random $dy$ (from its
own seeded stream) and builds the scalar

$$
L(x, \theta) = \sum_{n,k} f(x;\theta)_{nk}\, dy_{nk},
\qquad \frac{\partial L}{\partial x} = J_x^\top dy,\quad \frac{\partial L}{\partial \theta} = J_\theta^\top dy,
$$

exactly what `backward(dy)` returns and adds into `grads`. It compares every entry (or, for
big arrays, a few random directions) with a central finite difference of $L$, within a
tolerance made from the measured rounding noise. It works in float64 (float32 rounding would
hide small bugs) and pre-fills `grads` with random numbers, so an overwrite (`=`) fails.
"""

# %% [markdown]
r"""
## Linear: $y = xW + b$

Shapes: $x$ `(N, d_in)`, $W$ `(d_in, d_out)`, $b$ `(d_out,)`, $y$ `(N, d_out)`. The bias is
broadcast over the $N$ rows. In entries,

$$
y_{nk} = \sum_{i} x_{ni} W_{ik} + b_k .
$$

**$dW$.** $W_{ik}$ appears in $y_{nk}$ for every row $n$ (and in no other column), with
$\partial y_{nk}/\partial W_{ik} = x_{ni}$:

$$
dW_{ik} = \sum_{n,k'} dy_{nk'} \frac{\partial y_{nk'}}{\partial W_{ik}} = \sum_n x_{ni}\, dy_{nk}
\quad\Longrightarrow\quad
\underbrace{dW}_{(d_{in},\,d_{out})} = \underbrace{x^\top}_{(d_{in},\,N)}\ \underbrace{dy}_{(N,\,d_{out})}.
$$

**$db$.** $\partial y_{nk}/\partial b_k = 1$ for every row $n$:

$$
db_k = \sum_n dy_{nk}
\quad\Longrightarrow\quad
\underbrace{db}_{(d_{out},)} = \sum_{n} \underbrace{dy}_{(N,\,d_{out})} \quad\text{(over the batch axis)}.
$$

The sum over the batch is the transpose of the broadcast in the forward: $b$ was copied into
$N$ rows, so its gradient collects $N$ rows.

**$dx$.** $\partial y_{nk}/\partial x_{ni} = W_{ik}$, and $x_{ni}$ reaches every column $k$ of
row $n$:

$$
dx_{ni} = \sum_k dy_{nk} W_{ik}
\quad\Longrightarrow\quad
\underbrace{dx}_{(N,\,d_{in})} = \underbrace{dy}_{(N,\,d_{out})}\ \underbrace{W^\top}_{(d_{out},\,d_{in})}.
$$

A shape check alone nearly gives all three: the only product of `x (N, d_in)` and
`dy (N, d_out)` with `W`'s shape is `x.T @ dy`, the only product of `dy` and `W` with
`x`'s shape is `dy @ W.T`, and `db` must reduce `dy` over its batch axis. *Nearly*: for a
square $W$, `dy.T @ x` (and `dy @ W`) have the right shapes too, and a *mean* over the
batch has `db`'s shape as well (mistakes 1 and 2 below).
"""

# %%
class MyLinear(Module):
    """y = x @ W + b.  Shapes: x (N, d_in), W (d_in, d_out), b (d_out,), y (N, d_out).

    Backward:  dW += x.T @ dy;  db += sum(dy, axis=0);  dx = dy @ W.T.   Cache: x.
    """

    def __init__(self, d_in, d_out, rng, dtype="float64"):
        super().__init__()
        bound = 1.0 / np.sqrt(d_in)
        self.add_param("W", rng.uniform((d_in, d_out), -bound, bound, dtype))
        self.add_param("b", rng.uniform((d_out,), -bound, bound, dtype))

    def forward(self, x):
        self.save_cache(x)
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dy):
        (x,) = self.pop_cache()
        self.check_dy(dy, (x.shape[0], self.params["W"].shape[1]))
        self.grads["W"] += x.T @ dy                 # (d_in, N) @ (N, d_out) = (d_in, d_out)
        self.grads["b"] += np.sum(dy, axis=0)       # (N, d_out) summed over N: (d_out,)
        return dy @ self.params["W"].T              # (N, d_out) @ (d_out, d_in) = (N, d_in)


rng = B.Generator(0)
x = rng.normal((4, 3), "float64")
report = check_layer(MyLinear(3, 2, B.Generator(1)), x)
print(report)
assert report.passed

# %% [markdown]
r"""
Every row says `ok`: `dx` and both parameters agree with the finite differences to a few
$10^{-9}$ relative or better (the `max rel err` column). The library's
`scratchae.layers.Linear` is the same three lines (plus an optional bias and
`input_grad=False`, below); its docstring's *Backward* block is the body of its
`backward`, line for line. (It writes
`xp = B.namespace(dy)` and `xp.sum(...)` where we wrote `np.sum(...)`: the array namespace
comes from the data, so the same code runs on CuPy; on NumPy arrays it is the same call.)
"""

# %%
docstring_block(L.Linear)

# same weights, same x, same dy: the library's Linear and ours agree number for number
mine, lib = MyLinear(3, 2, B.Generator(1)), L.Linear(3, 2, B.Generator(1), dtype="float64")
np.testing.assert_array_equal(mine.params["W"], lib.params["W"])
dy = B.Generator(2).normal((4, 2), "float64")
np.testing.assert_array_equal(mine(x), lib(x))
np.testing.assert_array_equal(mine.backward(dy), lib.backward(dy))
for k in ("W", "b"):
    np.testing.assert_array_equal(mine.grads[k], lib.grads[k])
print("MyLinear == scratchae.layers.Linear, bit for bit (forward, dx, dW, db)")

# %% [markdown]
r"""
## ReLU: $y = \max(x, 0)$

Shapes: $x$, $y$, $dy$, $dx$ all `(N, d)`. The layer is element-wise, $y_{nj} = \phi(x_{nj})$,
so $\partial y_{mk}/\partial x_{nj}$ is zero unless $(m, k) = (n, j)$: the Jacobian is
diagonal and the vector-Jacobian product is one product per entry,

$$
dx_{nj} = \sum_{m,k} dy_{mk}\frac{\partial y_{mk}}{\partial x_{nj}} = dy_{nj}\,\phi'(x_{nj}),
\qquad
\phi'(x) = \mathbf 1[x > 0]
\quad\Longrightarrow\quad
\underbrace{dx}_{(N,d)} = \underbrace{dy}_{(N,d)} \odot \underbrace{\mathbf 1[x > 0]}_{(N,d)} .
$$

At exactly $x = 0$ ReLU has no derivative (a kink: the slopes are 0 on the left, 1 on the
right); the library takes 0 there. The cache is the Boolean mask $x > 0$, not $x$.
"""

# %%
class MyReLU(Module):
    """y = max(x, 0).  Backward: dx = dy * (x > 0).  Cache: the mask x > 0."""

    def forward(self, x):
        self.save_cache(x > 0)
        return np.maximum(x, 0.0)

    def backward(self, dy):
        (positive,) = self.pop_cache()
        self.check_dy(dy, positive.shape)
        return dy * positive                         # (N, d) * (N, d)


x = B.Generator(3).normal((4, 5), "float64")
report = check_layer(MyReLU(), x)
print(report)
assert report.passed

x_kink = x.copy()
x_kink[0, 0] = 0.0                                   # one input exactly at the kink
report_kink = check_layer(MyReLU(), x_kink)
print(report_kink)
assert report_kink.passed and report_kink.row("dx").kinks == 1
docstring_block(L.ReLU)

# %% [markdown]
r"""
With one input exactly at 0, the checker sees the two one-sided differences disagree there
(slope 0 on the left, 1 on the right, so the central difference is 0.5 while the backward
says 0) and skips that entry ("1 non-differentiable point skipped"); the other 19 are still
judged.

## BCE with logits: the reconstruction loss

The decoder outputs a **logit** $l_{nj}$ per pixel; the Bernoulli probability of "ink" is
$p = \sigma(l) = 1/(1 + e^{-l})$, and the pixel's target $t_{nj}\in[0,1]$ is the grey level.
Shapes: $l$, $t$ `(N, D)` with $D = 784$. Per entry, the negative log-likelihood is

$$
\ell(l, t) = -t\log\sigma(l) - (1-t)\log\bigl(1-\sigma(l)\bigr).
$$

Rewrite it without ever forming $\sigma(l)$: $\log\sigma(l) = -\log(1 + e^{-l}) =
-\operatorname{softplus}(-l)$, and $1 - \sigma(l) = \sigma(-l)$, so
$\log(1 - \sigma(l)) = -\operatorname{softplus}(l)$. With
$\operatorname{softplus}(-l) = \operatorname{softplus}(l) - l$:

$$
\ell(l,t) = t\operatorname{softplus}(-l) + (1-t)\operatorname{softplus}(l)
= \operatorname{softplus}(l) - t\,l ,
\qquad \operatorname{softplus}(l) = \max(l, 0) + \log\bigl(1 + e^{-|l|}\bigr),
$$

finite for every $l$ (the last form never exponentiates a positive number). The loss is
summed over pixels and averaged over the batch, so it is in **nats per example**:

$$
\underbrace{L}_{()} = \frac1N\sum_{n=1}^{N}\sum_{j=1}^{D}\ell(l_{nj}, t_{nj}).
$$

**Backward.** $\operatorname{softplus}'(l) = e^{l}/(1 + e^{l}) = \sigma(l)$, so
$\partial\ell/\partial l = \sigma(l) - t$, and the $1/N$ of the mean comes along:

$$
\underbrace{\frac{\partial L}{\partial l}}_{(N, D)} = \frac{\sigma(l) - t}{N}.
$$

As a layer, the loss is the last one: its output is the scalar $L$, so its upstream gradient
$dL = \partial(\text{final scalar})/\partial L$ is a 0-d array (1 when $L$ *is* the final
scalar) and `backward(dL)` returns $dL\cdot(\sigma(l) - t)/N$. The target is data, not an
input we differentiate: it goes to `forward` as a keyword, which `check_layer` passes with
`forward_kwargs`.
"""

# %%
class MyBCEWithLogits(Module):
    """L = (1/N) sum_{n,j} softplus(l) - t * l  (nats per example).

    Backward: dlogits = dL * (sigmoid(l) - t) / N.   Cache: l, t.
    """

    def forward(self, logits, target):
        self.save_cache(logits, target)
        n = logits.shape[0]
        return np.sum(softplus(logits) - target * logits) / n

    def backward(self, dL):
        logits, target = self.pop_cache()
        self.check_dy(dL, (), "dL")                  # the output L is a scalar: dL is 0-d
        n = logits.shape[0]
        return dL * (sigmoid(logits) - target) / n   # (N, D)


rng = B.Generator(4)
logits = 3.0 * rng.normal((4, 6), "float64")
target = rng.uniform((4, 6), dtype="float64")
report = check_layer(MyBCEWithLogits(), logits, forward_kwargs={"target": target})
print(report)
assert report.passed

# the library's loss is a function returning (value, dlogits): the same numbers as our layer
# with dL = 1, and check_function checks it the way check_layer checks a layer
value, dlogits = losses.bce_with_logits(logits, target)
mine = MyBCEWithLogits()
np.testing.assert_allclose(value, mine(logits, target))
np.testing.assert_allclose(dlogits, mine.backward(np.asarray(1.0)))
print(check_function(losses.bce_with_logits, logits, target, wrt=(0,)))
docstring_block(losses.bce_with_logits, start="Backward")

# %% [markdown]
r"""
**Why logits (numerical honesty).** Computing $\sigma(l)$ first and then its log is exact
algebra and terrible arithmetic: for a confident logit, $1 - \sigma(l)$ rounds to 0 and its
log to $-\infty$ (at $l \approx 17$ in float32, $l \approx 37$ in float64), and long before
that the subtraction keeps only a few significant digits, so the loss becomes a staircase.
The softplus form is exact and finite everywhere, and so is its gradient $\sigma(l) - t$.
"""

# %%
l_grid = np.linspace(-30, 30, 601)
with np.errstate(divide="ignore"):
    naive32 = -np.log(1.0 - sigmoid(l_grid.astype("float32")))   # t = 0, via the probability
stable = softplus(l_grid)                                         # t = 0, on the logit: softplus(l) - 0 * l

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].plot(l_grid, stable, lw=3, alpha=0.5, label="softplus(l) - t l  (float64)")
axes[0].plot(l_grid, naive32, "--", label="-log(1 - sigmoid(l))  (float32)")
axes[0].set_xlabel("logit l")
axes[0].set_ylabel("loss of one pixel with t = 0 (nats)")
axes[0].legend(fontsize=8)
axes[0].set_title(f"the naive loss is inf from l = {l_grid[np.isinf(naive32)][0]:.1f} on", fontsize=9)
zoom = (l_grid > 8) & (l_grid < 17)
axes[1].plot(l_grid[zoom], stable[zoom] - naive32[zoom], ".")
axes[1].set_xlabel("logit l")
axes[1].set_ylabel("stable - naive (nats)")
axes[1].set_title("before it reaches inf, the naive float32 loss loses its digits", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
r"""
## Chaining the layers: a tiny autoencoder

Backpropagation through a composition is the composition of the backwards, in reverse:
for $L = \text{bce}(f_2(\text{relu}(f_1(x))), x)$,

$$
\underbrace{dl}_{(N,784)} = \text{bce.backward}(1),\quad
\underbrace{dh}_{(N,32)} = f_2.\text{backward}(dl),\quad
\underbrace{da}_{(N,32)} = \text{relu.backward}(dh),\quad
\underbrace{dx}_{(N,784)} = f_1.\text{backward}(da),
$$

with $a = f_1(x)$, $h = \text{relu}(a)$, $l = f_2(h)$.

`Sequential` does exactly this loop. Below, a 784-32-784 autoencoder built only from our
three layers. Its input is also its target, so $x$ reaches $L$ along two paths, and
`TinyAE.backward` returns the gradient along the first (through the network) only: that is
not $\partial L/\partial x$, and a check of it would rightly fail. The input is data, we only
want parameter gradients, so the check runs with `check_input=False`, as the library's
encoders skip $dx$ with `Linear(..., input_grad=False)`. The big arrays
(`W` of the first layer has $784\times32$ entries) are checked along random directions, with
a failure localised to one entry by bisection.
"""

# %%
class TinyAE(Module):
    """L = bce(dec(relu(enc(x))), x), in nats per example."""

    def __init__(self, rng, hidden=32, dtype="float64"):
        super().__init__()
        self.net = Sequential(MyLinear(784, hidden, rng, dtype), MyReLU(), MyLinear(hidden, 784, rng, dtype))
        self.loss = MyBCEWithLogits()

    def forward(self, x):
        return self.loss(self.net(x), x)

    def backward(self, dL):
        return self.net.backward(self.loss.backward(dL))


ds = load_dataset("mnist", data="bundled")           # the 5000-image subset shipped with the package
x_train = preprocess(ds.x_train)                     # (5000, 784) float32 in [0, 1]
x8 = x_train[:8].astype("float64")
report = check_layer(TinyAE(B.Generator(5)), x8, check_input=False)
print(report)
assert report.passed

# %% [markdown]
r"""
And since every gradient is right, it trains: four epochs of Adam on the 5000 bundled digits
(float32 now: training does not need float64), with the library's optimizer over our
module's parameters.
"""

# %%
model = TinyAE(B.Generator(6), dtype="float32")
opt = Adam(model, lr=3e-3)
order = B.Generator(7).permutation(len(x_train))
curve = []
for epoch in range(4):
    for s in range(0, len(x_train), 100):
        xb = x_train[order[s:s + 100]]
        opt.zero_grad()
        value = model(xb)
        model.backward(np.asarray(1.0, dtype="float32"))
        opt.step()
        curve.append(float(value))
print(f"BCE per example: first batch {curve[0]:.1f} nats, last batch {curve[-1]:.1f} nats")

model.eval()
recon = sigmoid(model.net(x_train[:8]))
model.train()
fig, axes = plt.subplots(1, 2, figsize=(10, 2.8), gridspec_kw={"width_ratios": [1, 2]})
axes[0].plot(curve)
axes[0].set_xlabel("step")
axes[0].set_ylabel("BCE (nats per example)")
strip = np.vstack([np.hstack(list(x_train[:8].reshape(-1, 28, 28))), np.hstack(list(recon.reshape(-1, 28, 28)))])
axes[1].imshow(strip, cmap="gray")
axes[1].set_axis_off()
axes[1].set_title("top: digits; bottom: TinyAE reconstructions (sigmoid of the logits)", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
r"""
## The classic mistakes, and what the checker says

Each class below is a correct layer with one deliberate bug in `backward` (the forward is
untouched): our layers from above, and for mistake 5 a squared loss and a sampler. For
each, we print the report and **assert that the verdict is `FAILED`**. Read the `FAIL` row:
`array` names the wrong array, `worst at` its worst entry, and the hint after `<-` guesses
the mistake (the hints are heuristics; the verdict is not).

### 1. Transposed `dW`

`dy.T @ x` instead of `x.T @ dy`. For a non-square `W` it has the wrong shape
`(d_out, d_in)` and NumPy refuses the `+=` at once. For a square `W` it runs, the loss may
even fall, and only a gradient check notices. Entry $(i, k)$ gets $\sum_n dy_{ni}x_{nk}$
instead of $\sum_n x_{ni}dy_{nk}$, a different number unless $x^\top dy$ is symmetric. It
would be symmetric if $dy$ were $x$ ($x^\top x$), which is why the checker draws its $dy$
from a stream of its own, never the one your `Generator(seed)` drew $x$ from. The hint
*looks transposed* comes from the analytic `dW` matching the transpose of the numerical one.
"""

# %%
class LinearTransposedDW(MyLinear):
    def backward(self, dy):
        (x,) = self.pop_cache()
        self.grads["W"] += dy.T @ x                  # BUG: x.T @ dy
        self.grads["b"] += np.sum(dy, axis=0)
        return dy @ self.params["W"].T


x = B.Generator(8).normal((4, 3), "float64")
try:
    check_layer(LinearTransposedDW(3, 2, B.Generator(1)), x)
except ValueError as err:
    print(f"non-square W (3, 2): NumPy refuses it: {err}\n")

reports = {}
report = reports["transposed dW"] = check_layer(LinearTransposedDW(3, 3, B.Generator(1)), x)
print(report)
assert report.verdict == FAILED and report.row("W").failed

# %% [markdown]
r"""
### 2. The bias not summed over the batch

For one example, $db = dy$. Written that way for a batch (`grads["b"] += dy`), NumPy refuses
to add `(N, d_out)` into `(d_out,)`. The silent versions are a `mean` where the sum belongs
(a factor $1/N$ too small: every example's contribution is divided by the batch size) and
keeping only the first row.
"""

# %%
class LinearBiasMean(MyLinear):
    def backward(self, dy):
        (x,) = self.pop_cache()
        self.grads["W"] += x.T @ dy
        self.grads["b"] += np.mean(dy, axis=0)       # BUG: sum over the batch, not mean
        return dy @ self.params["W"].T


class LinearBiasFirstRow(MyLinear):
    def backward(self, dy):
        (x,) = self.pop_cache()
        self.grads["W"] += x.T @ dy
        self.grads["b"] += dy[0]                     # BUG: only the first example's share
        return dy @ self.params["W"].T


for name, cls in (("bias: mean, not sum", LinearBiasMean), ("bias: first row only", LinearBiasFirstRow)):
    report = reports[name] = check_layer(cls(3, 2, B.Generator(1)), x)
    print(report, "\n")
    assert report.verdict == FAILED and report.row("b").failed and not report.row("W").failed

# %% [markdown]
r"""
The first report's hint reads the factor: analytic $= 0.25\times$ numerical, $1/N$ for
$N = 4$. The second has no single factor (each entry misses a different share of the other
rows, since the checker's $dy$ rows differ), so its hint says the entries disagree in
pattern.

### 3. A flipped sign

$\partial\ell/\partial l = \sigma(l) - t$; writing $t - \sigma(l)$ (or `target - pred` in a
squared loss) turns gradient descent into ascent. The loss then *rises*, which is easy to
notice in a plain model, and easy to miss in one term among several (a sign error in the
VAE's KL gradient can hide behind a falling reconstruction term). The checker sees analytic
$= -1\times$ numerical: a relative error of exactly 2.
"""

# %%
class BCESignFlip(MyBCEWithLogits):
    def backward(self, dL):
        logits, target = self.pop_cache()
        return dL * (target - sigmoid(logits)) / logits.shape[0]   # BUG: sigmoid(l) - t


report = reports["sign flip"] = check_layer(BCESignFlip(), logits, forward_kwargs={"target": target})
print(report)
assert report.verdict == FAILED

# %% [markdown]
r"""
### 4. Overwritten gradients: `=` instead of `+=`

`self.grads["W"] = x.T @ dy` is right whenever the layer is used once per step and
`zero_grad()` ran before. It is wrong the moment a weight is reached along two paths: a tied
decoder (`TiedLinear` adds the decoder's contribution into the encoder's `grads["W"]`), the
AAE's encoder (reconstruction and adversarial phases), any shared weight: the `=` silently
drops every contribution but the last. A single-use check would not see it: a fresh
layer's `grads` are zeros, and `0 + g` is `g`. So the checker **pre-fills** every `grads`
entry with random numbers $r$ before calling `backward` and reads the analytic gradient as
`grads["W"] - r`. With `+=` that is $x^\top dy$; with `=` the $r$ was thrown away and the
checker reads $x^\top dy - r$, off by a random array of order 1. The raw `grads["W"]` then
equals the numerical gradient, which is how the hint knows it was *overwritten*.
"""

# %%
class LinearOverwrite(MyLinear):
    def backward(self, dy):
        (x,) = self.pop_cache()
        self.grads["W"] = x.T @ dy                   # BUG: = instead of +=
        self.grads["b"] += np.sum(dy, axis=0)
        return dy @ self.params["W"].T


report = reports["= instead of +="] = check_layer(LinearOverwrite(3, 2, B.Generator(1)), x)
print(report)
assert report.verdict == FAILED and report.row("W").failed

# %% [markdown]
r"""
### 5. The missing 0.5

**(a) In a squared loss: the $\tfrac12$ missing from the forward.** The library's `mse` is
$L = \frac1N\sum_{n,j}(\hat x - x)^2$ with $\partial L/\partial\hat x = 2(\hat x - x)/N$.
The classic slip is to pair this forward with the backward of the *other* convention,
$\frac1{2N}\sum(\hat x - x)^2$, whose gradient $(\hat x - x)/N$ has no 2: the forward and
backward then belong to different losses, a factor 0.5 apart. The checker differentiates
the forward you wrote, so it reports analytic $= 0.5\times$ numerical.

**(b) In the VAE's sampler.** $z = \mu + \sigma\odot\varepsilon$ with
$\sigma = \exp(\tfrac12\,\text{logvar})$ (so that $\sigma^2 = \exp(\text{logvar})$). Then
$\partial z/\partial\mu = 1$ and
$\partial z/\partial\,\text{logvar} = \varepsilon\cdot\tfrac{d}{d\,\text{logvar}}e^{\frac12\text{logvar}} = \tfrac12\sigma\varepsilon$,
all element-wise with shapes `(N, d)`:

$$
\underbrace{d\mu}_{(N,d)} = dz, \qquad \underbrace{d\,\text{logvar}}_{(N,d)} = dz\odot\varepsilon\odot\tfrac12\sigma .
$$

Forgetting the $\tfrac12$ from the chain rule through $\exp(\tfrac12\,\cdot)$ doubles the
log-variance gradient. The sampler has two inputs, so `backward` returns `(dmu, dlogvar)` and
`check_layer(layer, mu, logvar)` checks both; the noise $\varepsilon$ is held fixed with
`forward_kwargs={"eps": eps}`.
"""

# %%
class MSEMissingHalf(Module):
    """L = (1/N) sum (pred - target)**2, with the backward of (1/2N) sum (...)**2."""

    def forward(self, pred, target):
        self.save_cache(pred - target)
        return np.sum((pred - target) ** 2) / pred.shape[0]

    def backward(self, dL):
        (diff,) = self.pop_cache()
        return dL * diff / diff.shape[0]             # BUG: 2 * diff / N


class MySampler(Module):
    """z = mu + exp(0.5 * logvar) * eps.  Backward: dmu = dz; dlogvar = dz * eps * 0.5 * std."""

    def forward(self, mu, logvar, eps):
        std = np.exp(0.5 * logvar)
        self.save_cache(eps, std)
        return mu + std * eps

    def backward(self, dz):
        eps, std = self.pop_cache()
        return dz, dz * eps * 0.5 * std              # (dmu, dlogvar), both (N, d)


class SamplerMissingHalf(MySampler):
    def backward(self, dz):
        eps, std = self.pop_cache()
        return dz, dz * eps * std                    # BUG: d exp(0.5 v)/dv = 0.5 exp(0.5 v)


pred, tgt = B.Generator(9).normal((4, 5), "float64"), B.Generator(10).uniform((4, 5), dtype="float64")
report = reports["mse: backward of the 1/2 convention"] = check_layer(MSEMissingHalf(), pred, forward_kwargs={"target": tgt})
print(report, "\n")
assert report.verdict == FAILED

rng = B.Generator(11)
mu, logvar, eps = rng.normal((4, 3), "float64"), rng.normal((4, 3), "float64"), rng.normal((4, 3), "float64")
report = check_layer(MySampler(), mu, logvar, forward_kwargs={"eps": eps})
print(report, "\n")
assert report.passed
report = reports["sampler: missing 0.5"] = check_layer(SamplerMissingHalf(), mu, logvar, forward_kwargs={"eps": eps})
print(report)
assert report.verdict == FAILED and report.row("dx[1]").failed and not report.row("dx[0]").failed

# %% [markdown]
r"""
`dx[0]` ($d\mu$) is right and `dx[1]` ($d\,\text{logvar}$) is off by exactly 2, which the hint
reads off. The library's sampler, `scratchae.stochastic.GaussianSample`, caches
`eps * 0.5 * std` so the 0.5 is written once:
"""

# %%
from scratchae.stochastic import GaussianSample

docstring_block(GaussianSample)
report = check_layer(GaussianSample(), mu, logvar, forward_kwargs={"eps": eps})
print(report)
assert report.passed

# %% [markdown]
r"""
## Summary: how far off each mistake is

The worst relative error of each check, correct layers against wrong ones. The correct
float64 backwards here agree to better than $10^{-8}$ (the TinyAE above, whose $L$ sums
thousands of terms, to about $10^{-7}$); every mistake above is off by order 1, far beyond the
tolerance (the checker catches relative errors down to about $3\times10^{-7}$; see
[`docs/gradcheck.md`](../gradcheck.md)). What a gradient check **cannot** see is a mistake
made identically in forward and backward (using $e^{\text{logvar}}$ as $\sigma$ in both, say):
then the two agree with each other and are both wrong. Tests of the forward's *meaning*
(a sample's variance, a Monte Carlo KL; notebook 4) catch those.
"""

# %%
correct = {
    "Linear": check_layer(MyLinear(3, 3, B.Generator(1)), x),
    "ReLU": check_layer(MyReLU(), B.Generator(3).normal((4, 5), "float64")),
    "BCE": check_layer(MyBCEWithLogits(), logits, forward_kwargs={"target": target}),
    "sampler": check_layer(MySampler(), mu, logvar, forward_kwargs={"eps": eps}),
}
names = list(correct) + list(reports)
worst = [max(r.max_rel_err for r in rep.rows) for rep in list(correct.values()) + list(reports.values())]
colours = ["tab:green"] * len(correct) + ["tab:red"] * len(reports)
fig, ax = plt.subplots(figsize=(9, 3.2))
ax.bar(range(len(names)), worst, color=colours)
ax.set_yscale("log")
ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
ax.set_ylabel("worst relative error")
ax.set_title("green: correct backward (passed); red: one classic mistake (FAILED)", fontsize=9)
fig.tight_layout()
plt.show()
assert all(r.passed for r in correct.values()) and all(r.verdict == FAILED for r in reports.values())

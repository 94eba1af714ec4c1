# %% [markdown] {only=exercise}
r"""
# 2. Write your own layer: exercises

**What this notebook teaches.** You write the backward pass of four layers yourself, and
the library's gradient checker, `scratchae.gradcheck.check_layer`, grades each one against
finite differences in the cell right after it:

1. **Swish** with a learned slope, $y = x\,\sigma(\beta x)$ (a parameter, an element-wise
   product rule);
2. **LayerNorm**, normalising each row over its features (a reduction inside the layer: the
   hard one);
3. a **tied-weight decoder**, $y = hW^\top + c$ with $W$ owned by an encoder layer (a
   gradient that goes into *another* layer's `grads`);
4. a **two-input layer**, $y = (x_1W + b)\odot\sigma(x_2)$ (`backward` returns one gradient
   per input).

Each exercise cell has a `forward` that works and a `backward` that raises
`NotImplementedError`. Replace the `raise` with your code, run the cell, then run the
grading cell below it: it prints the checker's table and `passed`, or what is wrong (a
backward that raises, on a `+=` of the wrong shape say, is reported too). While a backward is
still blank, its grading cell prints "not done yet" instead of failing, so the notebook
always runs top to bottom. Worked solutions, with the derivations, are in
[`02_write_your_own_layer_solutions.ipynb`](02_write_your_own_layer_solutions.ipynb).

**How to run it.** Locally, from a clone of the repository: `pip install -e ".[dev]"`,
then open `docs/notebooks/` in VS Code (the dev extra has the kernel) or Jupyter (`pip install jupyterlab`, `jupyter lab`). On Colab: open the
notebook, run the first code cell (it installs scratchae when it is not importable; set
`SOURCE` there to your clone's git URL). Randomness is seeded (`scratchae.backend.Generator`),
so the checker sees the same inputs on every run.

**Rules of the protocol** (notebook 1 derives them): `backward(dy)` gets $dy=\partial L/\partial y$
of $y$'s shape, returns $dx$ of $x$'s shape, and **adds** (`+=`) each parameter's gradient
into `self.grads[name]`. `pop_cache()` always returns a tuple, in the order `save_cache` got
the values: `(x,) = self.pop_cache()` for one value, `x, s = self.pop_cache()` for two.
Derive on paper first, with the shape of every quantity; the checker tells you *which* array
is wrong and often *how* (a sign, a factor 2, a transpose, `=` for `+=`).
"""

# %% [markdown] {only=solution}
r"""
# 2. Write your own layer: solutions

The worked solutions of [`02_write_your_own_layer.ipynb`](02_write_your_own_layer.ipynb):
for each of the four layers (Swish with a learned slope, LayerNorm, a tied-weight decoder,
a two-input gated layer) the derivation with the shape of every quantity, the backward, and
a grading cell that **asserts** that `scratchae.gradcheck.check_layer` passes it. Try the
exercises first.

**How to run it.** Locally, from a clone of the repository: `pip install -e ".[dev]"`,
then open `docs/notebooks/` in VS Code (the dev extra has the kernel) or Jupyter (`pip install jupyterlab`, `jupyter lab`) and run all cells (a few
seconds). On Colab: open the notebook, run the first code cell (it installs scratchae when
it is not importable; set `SOURCE` there to your clone's git URL), then run all. Randomness
is seeded (`scratchae.backend.Generator`), so every number is the same on every run.

**Rules of the protocol** (notebook 1 derives them): `backward(dy)` gets $dy=\partial L/\partial y$
of $y$'s shape, returns $dx$ of $x$'s shape, and **adds** (`+=`) each parameter's gradient
into `self.grads[name]`. `pop_cache()` always returns a tuple, in the order `save_cache` got
the values: `(x,) = self.pop_cache()` for one value, `x, s = self.pop_cache()` for two.
"""

# %% {include=_install.py}

# %%
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display
from threadpoolctl import threadpool_limits

from scratchae import Module, Sequential
from scratchae import backend as B
from scratchae import layers as L
from scratchae.gradcheck import check_layer
from scratchae.layers import sigmoid

blas_limits = threadpool_limits(1)   # one BLAS thread: fastest for these small matrices

RESULTS = {}   # exercise name -> "passed", "FAILED", "inconclusive", "error" or "not done yet"


def grade(name, make_layer, *inputs, **check_kwargs):
    """Check make_layer()'s backward with check_layer; 'not done yet' while it is blank."""
    try:
        report = check_layer(make_layer(), *inputs, **check_kwargs)
    except NotImplementedError as err:
        RESULTS[name] = "not done yet"
        print(f"{name}: not done yet ({err}). Write its backward above, run that cell, then this one.")
        return None
    except Exception as err:                   # the backward crashed: e.g. a += of the wrong shape
        RESULTS[name] = "error"
        print(f"{name}: your backward raised {type(err).__name__}: {err}\n"
              "  A shape error in a += usually means a parameter's gradient was not summed over the\n"
              "  batch axis (it must have exactly the parameter's shape), or a matmul's operands are swapped.")
        return None
    display(report)
    RESULTS[name] = report.verdict
    if report.passed:
        print(f"{name}: passed")
    else:
        print(f"{name}: {report.verdict}. Each FAIL row names the wrong array; its hint guesses the mistake.")
    return report

# %% [markdown]
r"""
## Exercise 1: Swish with a learned slope

$$
y = x\odot\sigma(\beta\odot x),\qquad
x,\ y\ \text{(N, d)},\quad \beta\ \text{(d,)}\ \text{one slope per feature, broadcast over the rows}.
$$

($\beta = 1$ is SiLU; Ramachandran et al. 2017.) Write $s = \sigma(\beta x)$ `(N, d)`; the
derivative of the logistic function is $\sigma'(u) = \sigma(u)(1 - \sigma(u))$.
The forward caches `x` and `s`.

You need `dx` `(N, d)` and `self.grads["beta"] += ...` `(d,)`. Hints: the product rule for
$\partial y/\partial x$ (there are two terms, and the inner derivative of $\sigma(\beta x)$ in
$x$ brings a factor $\beta$); $\beta_j$ is broadcast over the batch, so its gradient sums over
the batch axis.
"""

# %% [markdown] {only=solution}
r"""
**Derivation.** Element-wise, with $s = \sigma(\beta x)$ and $s' = s(1 - s)$ (all `(N, d)`):

$$
\frac{\partial y_{nj}}{\partial x_{nj}} = s_{nj} + x_{nj}\,s'_{nj}\,\beta_j,
\qquad
\frac{\partial y_{nj}}{\partial \beta_j} = x_{nj}\,s'_{nj}\,x_{nj}.
$$

$x_{nj}$ reaches only $y_{nj}$, so $dx = dy\odot(s + \beta\, x\odot s')$ `(N, d)`. $\beta_j$
reaches $y_{nj}$ for every row $n$, so its gradient sums over the batch:
$d\beta_j = \sum_n dy_{nj}\,x_{nj}^2\,s'_{nj}$, shape `(d,)`.
"""

# %%
class Swish(Module):
    """y = x * sigmoid(beta * x), beta (d,) learned.  Shapes: x, y (N, d).  Cache: x, s."""

    def __init__(self, d, beta=1.0, dtype="float64"):
        super().__init__()
        self.add_param("beta", np.full(d, beta, dtype=dtype))

    def forward(self, x):
        s = sigmoid(self.params["beta"] * x)
        self.save_cache(x, s)
        return x * s

    def backward(self, dy):
        # BEGIN SOLUTION
        x, s = self.pop_cache()
        self.check_dy(dy, x.shape)
        ds = s * (1.0 - s)                                          # sigma'(beta x), (N, d)
        self.grads["beta"] += np.sum(dy * x * x * ds, axis=0)       # (d,): summed over the batch
        return dy * (s + self.params["beta"] * x * ds)              # (N, d)
        # END SOLUTION
        # EXERCISE: x, s = self.pop_cache()
        # EXERCISE: # your code: self.grads["beta"] += ...  (shape (d,)), then return dx (shape (N, d))
        # EXERCISE: raise NotImplementedError("Swish.backward is still blank")

# %%
rng = B.Generator(0)
x = rng.normal((6, 4), "float64")
beta = rng.uniform((4,), 0.5, 2.0, "float64")   # generic slopes: at beta = 1 a lost factor beta is invisible


def make_swish():
    layer = Swish(4)
    layer.params["beta"][...] = beta
    return layer


report = grade("Swish", make_swish, x)
# BEGIN SOLUTION
assert report is not None and report.passed, report
# END SOLUTION

# %% [markdown]
r"""
Your $\partial y/\partial x$ as a curve, on top of a central difference of the forward, for
three slopes. Swish is element-wise (its Jacobian is diagonal), so a backward with $dy = 1$
returns the derivative at every point. While the backward is blank, the right panel shows
only the finite differences.
"""

# %%
grid = np.linspace(-6, 6, 241)[:, None]            # (241, 1): 241 rows of one feature
step = 1e-5
fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
for slope in (0.5, 1.0, 3.0):
    layer = Swish(1, beta=slope)
    y = layer(grid)                                 # training forward: keeps the cache for backward
    axes[0].plot(grid, y, label=f"beta = {slope:g}")
    layer.eval()                                    # eval forwards keep no cache
    numeric = (layer(grid + step) - layer(grid - step)) / (2 * step)
    layer.train()
    line, = axes[1].plot(grid, numeric, lw=4, alpha=0.3, label=f"finite difference, beta = {slope:g}")
    try:
        analytic = layer.backward(np.ones_like(y))
        axes[1].plot(grid, analytic, "--", color=line.get_color(), label=f"your backward, beta = {slope:g}")
    except Exception:                               # blank (NotImplementedError) or crashing: no dashed line
        layer.clear_cache()
axes[0].set_title("Swish forward: y = x sigmoid(beta x)", fontsize=9)
axes[1].set_title("dy/dx: finite difference (thick) and your backward (dashed)", fontsize=9)
for ax in axes:
    ax.set_xlabel("x")
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
r"""
## Exercise 2: LayerNorm

Each **row** is normalised over its $d$ features (Ba et al. 2016), then scaled and shifted
per feature:

$$
\mu_n = \frac1d\sum_j x_{nj},\quad
v_n = \frac1d\sum_j (x_{nj}-\mu_n)^2,\quad
r_n = (v_n + \epsilon)^{-1/2},\quad
\hat x_{nj} = (x_{nj}-\mu_n)\,r_n,\quad
y_{nj} = \gamma_j\hat x_{nj} + \beta_j .
$$

Shapes: $x$, $\hat x$, $y$ `(N, d)`; $\mu$, $v$, $r$ `(N, 1)` (kept as columns, so they
broadcast over the features); $\gamma$, $\beta$ `(d,)` (this $\beta$ is the shift, not
Swish's slope). The forward caches `xhat` and `r` ($r$ is what `BatchNorm1d` calls
`inv_std`).

You need $d\gamma$, $d\beta$ (both `(d,)`, summed over the batch) and $dx$ `(N, d)`. Hints:
first $d\hat x = dy\odot\gamma$. Then every $\hat x_{nj}$ of a row depends on **every**
$x_{ni}$ of that row, through $\mu_n$ and $r_n$: work out $\partial\hat x_{nj}/\partial x_{ni}$
for one row (use $\partial\mu/\partial x_i = 1/d$ and
$\partial v/\partial x_i = 2(x_i-\mu)/d$), then sum over $j$. The answer needs two row sums,
of $d\hat x$ and of $d\hat x\odot\hat x$; `np.sum(..., axis=1, keepdims=True)` keeps a row
sum as an `(N, 1)` column that broadcasts back over the features. (`BatchNorm1d` in
`scratchae/layers.py` is the same computation over the other axis: peek only if stuck.)
"""

# %% [markdown] {only=solution}
r"""
**Derivation.** $\gamma_j$ and $\beta_j$ are broadcast over the rows:
$d\gamma = \sum_n dy\odot\hat x$ and $d\beta = \sum_n dy$, both `(d,)`. Inside the layer,
$d\hat x = dy\odot\gamma$ `(N, d)`.

Rows do not interact, so take one row and drop $n$. With $\partial\mu/\partial x_i = 1/d$ and
$\partial v/\partial x_i = \frac2d\sum_j(x_j-\mu)(\delta_{ij} - \frac1d) = \frac2d(x_i-\mu)$
(the $\frac1d$ terms cancel because $\sum_j (x_j-\mu) = 0$):

$$
\frac{\partial r}{\partial x_i} = -\tfrac12(v+\epsilon)^{-3/2}\,\frac{2(x_i-\mu)}{d} = -\frac{r^2\,\hat x_i}{d},
\qquad
\frac{\partial\hat x_j}{\partial x_i} = r\Bigl(\delta_{ij}-\frac1d\Bigr) + (x_j - \mu)\frac{\partial r}{\partial x_i}
= \frac{r}{d}\bigl(d\,\delta_{ij} - 1 - \hat x_i\hat x_j\bigr).
$$

Then $dx_i = \sum_j d\hat x_j\,\partial\hat x_j/\partial x_i$:

$$
\underbrace{dx}_{(N,d)} = \frac{r}{d}\Bigl(d\; d\hat x - \underbrace{\textstyle\sum_j d\hat x}_{(N,1)} - \hat x\odot\underbrace{\textstyle\sum_j d\hat x\odot\hat x}_{(N,1)}\Bigr),
$$

`BatchNorm1d`'s backward with the roles of the two axes exchanged (`keepdims=True` keeps the
row sums as `(N, 1)` columns). The two subtracted terms remove from $d\hat x$ its mean and
(exactly for $\epsilon = 0$, nearly for a small $\epsilon$) its component along $\hat x$:
moving all of a row's inputs together does not change $\hat x$, and neither, for
$\epsilon = 0$, does scaling them about their mean.
"""

# %%
class LayerNorm(Module):
    """Per-row normalisation over the d features, then y = gamma * xhat + beta.

    Shapes: x, xhat, y (N, d); r (N, 1); gamma, beta (d,).  Cache: xhat, r.
    """

    def __init__(self, d, eps=1e-5, dtype="float64"):
        super().__init__()
        self.eps = eps
        self.add_param("gamma", np.ones(d, dtype=dtype))
        self.add_param("beta", np.zeros(d, dtype=dtype))

    def forward(self, x):
        mu = np.mean(x, axis=1, keepdims=True)                      # (N, 1)
        centered = x - mu
        var = np.mean(centered * centered, axis=1, keepdims=True)   # (N, 1), biased
        r = 1.0 / np.sqrt(var + self.eps)                           # (N, 1)
        xhat = centered * r                                         # (N, d)
        self.save_cache(xhat, r)
        return self.params["gamma"] * xhat + self.params["beta"]

    def backward(self, dy):
        # BEGIN SOLUTION
        xhat, r = self.pop_cache()
        self.check_dy(dy, xhat.shape)
        d = xhat.shape[1]
        self.grads["gamma"] += np.sum(dy * xhat, axis=0)            # (d,)
        self.grads["beta"] += np.sum(dy, axis=0)                    # (d,)
        dxhat = dy * self.params["gamma"]                           # (N, d)
        return r / d * (d * dxhat - np.sum(dxhat, axis=1, keepdims=True)
                        - xhat * np.sum(dxhat * xhat, axis=1, keepdims=True))
        # END SOLUTION
        # EXERCISE: xhat, r = self.pop_cache()
        # EXERCISE: # your code: grads["gamma"] and grads["beta"] (+=, shape (d,)), then return dx (N, d)
        # EXERCISE: raise NotImplementedError("LayerNorm.backward is still blank")

# %%
rng = B.Generator(1)
x = 2.0 * rng.normal((5, 6), "float64") + 1.0
gamma, shift = rng.uniform((6,), 0.5, 1.5, "float64"), rng.normal((6,), "float64")


def make_layernorm():
    layer = LayerNorm(6)
    layer.params["gamma"][...] = gamma      # generic values: a gamma of ones hides a forgotten gamma
    layer.params["beta"][...] = shift
    return layer


report = grade("LayerNorm", make_layernorm, x)
# BEGIN SOLUTION
assert report is not None and report.passed, report
# END SOLUTION

# %% [markdown]
r"""
## Exercise 3: a tied-weight decoder

A tied autoencoder decodes with the **transpose** of the encoder's weight. The encoder layer
is `Linear(d_in, d_code)` with $W$ `(d_in, d_code)`; the decoder is

$$
y = hW^\top + c,\qquad h\ (N,\,d_{code}),\quad W^\top\ (d_{code},\,d_{in}),\quad c\ (d_{in},),\quad y\ (N,\,d_{in}) .
$$

The decoder owns only its bias $c$; $W$ stays the encoder's. So the decoder's backward adds
its share of $\partial L/\partial W$ into **the encoder's** `grads["W"]` (`self.tied.grads["W"]`,
`+=`: the encoder adds its own share there too).

You need $dW$ `(d_in, d_code)` (into `self.tied.grads["W"]`), $dc$ `(d_in,)` (into
`self.grads["c"]`) and $dh$ `(N, d_code)` (returned). Hints: write
$y_{nj} = \sum_k h_{nk}W_{jk} + c_j$ and differentiate in $W_{jk}$; the result must have
$W$'s shape. The forward caches `h`.

The decoder keeps the encoder in a plain attribute (`object.__setattr__` skips `Module`'s
registration of children): the encoder is not the decoder's child but its own layer of the
model, so $W$ is listed once, under the encoder's name (`0.W` in the tied autoencoder
below), for the optimizer. The checker also follows modules kept in attributes: in the
decoder's own check, $W$'s row is called `tied.W`.
"""

# %% [markdown] {only=solution}
r"""
**Derivation.** $\partial y_{nj}/\partial W_{jk} = h_{nk}$, and $W_{jk}$ reaches $y_{nj}$ for
every row $n$:

$$
dW_{jk} = \sum_n dy_{nj}\,h_{nk}\ \Longrightarrow\ \underbrace{dW}_{(d_{in},\,d_{code})} = \underbrace{dy^\top}_{(d_{in},\,N)}\underbrace{h}_{(N,\,d_{code})},
\qquad
\underbrace{dc}_{(d_{in},)} = \sum_n dy,
\qquad
\underbrace{dh}_{(N,\,d_{code})} = \underbrace{dy}_{(N,\,d_{in})}\underbrace{W}_{(d_{in},\,d_{code})} .
$$

In a tied autoencoder $W$ is used twice, by the encoder (`x.T @ dy_enc`) and by the decoder
(`dy_dec.T @ h`); the chain rule sums the two, which is exactly what two `+=` into the same
array do. This is `scratchae.layers.TiedLinear`.
"""

# %%
class TiedDecoder(Module):
    """y = h @ W.T + c, with W (d_in, d_code) owned by the encoder Linear `tied`.  Cache: h."""

    def __init__(self, tied, dtype="float64"):
        super().__init__()
        object.__setattr__(self, "tied", tied)      # not a child: the encoder owns W
        self.add_param("c", np.zeros(tied.params["W"].shape[0], dtype=dtype))

    def forward(self, h):
        self.save_cache(h)
        return h @ self.tied.params["W"].T + self.params["c"]

    def backward(self, dy):
        # BEGIN SOLUTION
        (h,) = self.pop_cache()
        self.check_dy(dy, (h.shape[0], self.tied.params["W"].shape[0]))
        self.tied.grads["W"] += dy.T @ h            # (d_in, N) @ (N, d_code): the encoder's W
        self.grads["c"] += np.sum(dy, axis=0)       # (d_in,)
        return dy @ self.tied.params["W"]           # (N, d_in) @ (d_in, d_code)
        # END SOLUTION
        # EXERCISE: (h,) = self.pop_cache()
        # EXERCISE: # your code: self.tied.grads["W"] += ..., self.grads["c"] += ..., return dh
        # EXERCISE: raise NotImplementedError("TiedDecoder.backward is still blank")

# %% [markdown]
r"""
Two gradings: the decoder alone (rows `dx` $= dh$, `c` and the borrowed `tied.W`), then a
whole tied autoencoder `Linear -> Tanh -> TiedDecoder`, where $W$ is one array reached along
two paths: its row checks the **sum** of both contributions.
"""

# %%
rng = B.Generator(2)
h = rng.normal((4, 3), "float64")
x = rng.normal((4, 5), "float64")


def make_decoder():
    encoder = L.Linear(5, 3, B.Generator(3), dtype="float64")
    decoder = TiedDecoder(encoder)
    decoder.params["c"][...] = B.Generator(4).normal((5,), "float64")
    return decoder


def make_tied_autoencoder():
    encoder = L.Linear(5, 3, B.Generator(3), dtype="float64")
    return Sequential(encoder, L.Tanh(), TiedDecoder(encoder))


# tied.b, the encoder's bias, never reaches the decoder's output (its row would be 0 = 0): skip it
report = grade("TiedDecoder", make_decoder, h, params=["c", "tied.W"])
# BEGIN SOLUTION
assert report is not None and report.passed and "tied.W" in [r.name for r in report.rows], report
# END SOLUTION
report = grade("tied autoencoder", make_tied_autoencoder, x)
# BEGIN SOLUTION
assert report is not None and report.passed, report
# END SOLUTION

# %% [markdown]
r"""
## Exercise 4: a layer with two inputs

A gated linear unit whose gate comes from a second input:

$$
a = x_1W + b,\qquad y = a\odot\sigma(x_2),
\qquad x_1\ (N,\,d_{in}),\ W\ (d_{in},\,d_{out}),\ b\ (d_{out},),\ x_2,\ a,\ y\ (N,\,d_{out}) .
$$

`forward(x1, x2)` takes two arrays, so `backward(dy)` returns **a tuple** `(dx1, dx2)`, one
gradient per input, in order; `check_layer(layer, x1, x2)` checks both (rows `dx[0]`,
`dx[1]`). You need $dx_1$ `(N, d_in)`, $dx_2$ `(N, d_out)` and the `+=` of $dW$
`(d_in, d_out)` and $db$ `(d_out,)`. Hints: with $g = \sigma(x_2)$, the product rule splits
$dy$ into a part for $a$ and a part for $g$; from $da$ on, it is notebook 1's Linear. The
forward caches `x1`, `a` and `g`.
"""

# %% [markdown] {only=solution}
r"""
**Derivation.** With $g = \sigma(x_2)$ `(N, d_out)`, $y = a\odot g$ gives
$da = dy\odot g$ and $dg = dy\odot a$ (both `(N, d_out)`); then
$dx_2 = dg\odot g\odot(1-g)$ `(N, d_out)`, and for the affine part
$dW = x_1^\top da$ `(d_in, d_out)`, $db = \sum_n da$ `(d_out,)`, $dx_1 = da\,W^\top$ `(N, d_in)`.
"""

# %%
class GatedLinear(Module):
    """y = (x1 @ W + b) * sigmoid(x2).  backward(dy) -> (dx1, dx2).  Cache: x1, a, g."""

    def __init__(self, d_in, d_out, rng, dtype="float64"):
        super().__init__()
        bound = 1.0 / np.sqrt(d_in)
        self.add_param("W", rng.uniform((d_in, d_out), -bound, bound, dtype))
        self.add_param("b", rng.uniform((d_out,), -bound, bound, dtype))

    def forward(self, x1, x2):
        a = x1 @ self.params["W"] + self.params["b"]
        g = sigmoid(x2)
        self.save_cache(x1, a, g)
        return a * g

    def backward(self, dy):
        # BEGIN SOLUTION
        x1, a, g = self.pop_cache()
        self.check_dy(dy, a.shape)
        da = dy * g                                  # (N, d_out)
        dx2 = dy * a * g * (1.0 - g)                 # (N, d_out)
        self.grads["W"] += x1.T @ da                 # (d_in, d_out)
        self.grads["b"] += np.sum(da, axis=0)        # (d_out,)
        return da @ self.params["W"].T, dx2          # (dx1, dx2)
        # END SOLUTION
        # EXERCISE: x1, a, g = self.pop_cache()
        # EXERCISE: # your code: grads["W"], grads["b"] (+=), then return dx1, dx2
        # EXERCISE: raise NotImplementedError("GatedLinear.backward is still blank")

# %%
rng = B.Generator(5)
x1, x2 = rng.normal((4, 3), "float64"), rng.normal((4, 2), "float64")
report = grade("GatedLinear", lambda: GatedLinear(3, 2, B.Generator(6)), x1, x2)
# BEGIN SOLUTION
assert report is not None and report.passed and [r.name for r in report.rows] == ["dx[0]", "dx[1]", "W", "b"], report
# END SOLUTION

# %% [markdown]
r"""
## Where you stand

The verdict of every grading above.
"""

# %%
for name, verdict in RESULTS.items():
    print(f"{name:18s} {verdict}")
# BEGIN SOLUTION
assert all(v == "passed" for v in RESULTS.values()), RESULTS
# END SOLUTION

# %% [markdown]
r"""
**Going further.** A check tests the inputs it is given. To test a layer over many random
shapes and values, write a hypothesis property test with the strategies in
`scratchae.testing` (`batch_shapes`, `arrays_on`); `demos/check_my_layer.py` and
[`docs/gradcheck.md`](../gradcheck.md#checking-your-own-layer) show a complete one. From the
shell, `scratchae gradcheck mymodule:MyLayer` checks a layer of yours.
"""

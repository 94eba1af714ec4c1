# %% [markdown]
r"""
# 6. Convolution by hand

**What this notebook teaches.** The 2-D convolution of `scratchae.layers.Conv2d` (and the
reference functions in `scratchae/conv.py`) from a naive loop to its fast form and its
backward:

1. the forward as a naive loop over output positions, then as a **sum of shifted matmuls
   over the kernel offsets**, both against the library's `conv2d`, and timed;
2. the backward: $dx$ is a **transposed convolution** (each offset's matmul transposed and
   scatter-added back where it read), $dW$ a correlation of the input with $dy$, $db$ a sum;
   each derived with shapes, coded, compared with a naive loop and the library, and the
   adjoint identity $\langle\operatorname{conv}(x), dy\rangle = \langle x, \operatorname{conv}^\top(dy)\rangle$;
3. a `Conv2d` of our own, checked with `check_layer`, and the library's `Conv2d` checked too;
4. `ConvTranspose2d`: its shape formula, and its forward as exactly `Conv2d`'s $dx$ map
   (checked), then `check_layer` on it;
5. a classic mistake (the "textbook" $dx$ without the kernel flip) failing the check;
6. what a stride that skips input rows does to the gradient.

**How to run it.** Locally, from a clone of the repository: `pip install -e ".[dev]"`,
then open `docs/notebooks/` in VS Code (the dev extra has the kernel) or Jupyter
(`pip install jupyterlab`, `jupyter lab`) and run all cells (a few seconds). On Colab: open
the notebook, run the first code cell (it installs scratchae when it is not importable; set
`SOURCE` there to your clone's git URL), then run all. Every random number comes from a
seeded `scratchae.backend.Generator`.

Background: [`docs/conv.md`](../conv.md) (these derivations as text).
"""

# %% {include=_install.py}

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from scratchae import Module
from scratchae import backend as B
from scratchae.conv import (conv2d, conv2d_input_grad, conv2d_output_hw, conv2d_weight_grad,
                            conv_transpose2d_output_hw)
from scratchae.data import load_dataset
from scratchae.gradcheck import FAILED, check_layer
from scratchae.layers import Conv2d, ConvTranspose2d

blas_limits = threadpool_limits(1)   # one BLAS thread: fastest for these small matrices, even on a busy machine


def pad(x, p):
    """x (N, C, H, W) with p zero rows above and below and p zero columns left and right."""
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


# %% {include=_docstring_block.py}
# %% [markdown]
r"""
## The forward

Images are NCHW: $x$ `(N, C_in, H_in, W_in)`, the weight $W$ `(C_out, C_in, k, k)`
(PyTorch's layout), $b$ `(C_out,)`, $y$ `(N, C_out, H_out, W_out)`. With $\bar x$ the input
padded with $p$ zeros on each side and stride $s$, the convolution (a cross-correlation: the
kernel is not flipped, as in PyTorch and every deep-learning library) is

$$
y_{n,o,h,w} = b_o + \sum_{c}\sum_{i<k}\sum_{j<k} W_{o,c,i,j}\;\bar x_{n,\,c,\,hs + i,\,ws + j} .
$$

Window $h$ covers padded rows $hs$ to $hs + k - 1$, and the last one must end inside the
$H_{in} + 2p$ padded rows, so $H_{out}$ is the largest count with
$(H_{out} - 1)s + k - 1 \le H_{in} + 2p - 1$. The library also has a dilation $d$ (tap $i$
reads row $hs + id$, so a window spans $d(k-1) + 1$ rows), and its size formula is

$$
H_{out} = \Bigl\lfloor\frac{H_{in} + 2p - d(k-1) - 1}{s}\Bigr\rfloor + 1
\ \overset{d=1}{=}\ \Bigl\lfloor\frac{H_{in} + 2p - k}{s}\Bigr\rfloor + 1 ,
$$

the same per axis for $W_{out}$ (`conv2d_output_hw`). We keep $d = 1$. The most literal code
is a loop over the output positions, one window each:
"""

# %%
def conv2d_naive(x, W, s=1, p=0):
    """y[n, o, h, w] = sum over c, i, j of W[o, c, i, j] * xpad[n, c, h*s + i, w*s + j] (no bias)."""
    N, C, H, Wd = x.shape                                           # Wd: the width (W is the weight)
    O, _, k, _ = W.shape
    Ho, Wo = (H + 2 * p - k) // s + 1, (Wd + 2 * p - k) // s + 1
    xpad = pad(x, p)
    y = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            for h in range(Ho):
                for w in range(Wo):
                    y[n, o, h, w] = np.sum(W[o] * xpad[n, :, h * s:h * s + k, w * s:w * s + k])
    return y

# %% [markdown]
r"""
### As a sum of shifted matmuls

Fix one kernel offset $(i, j)$. The entries of $\bar x$ it meets, over all output positions,
form a strided slice with the output's spatial shape,

$$
\underbrace{X^{(ij)}}_{(N,\,C_{in},\,H_{out},\,W_{out})}:\qquad X^{(ij)}_{n,c,h,w} = \bar x_{n,\,c,\,i + hs,\,j + ws},
$$

`xpad[:, :, i : i + s*(H_out-1) + 1 : s, j : j + s*(W_out-1) + 1 : s]`. Offset $(i, j)$
contributes $\sum_c W_{o,c,i,j}X^{(ij)}_{n,c,h,w}$: at every position, the `(C_out, C_in)`
matrix $W_{:,:,i,j}$ times the $C_{in}$ channels. With the $L = H_{out}W_{out}$ positions
flattened, one matmul per offset, and $k^2$ of them in all:

$$
\underbrace{y}_{(N,\,C_{out},\,L)} = b + \sum_{i,j}\ \underbrace{W_{:,:,i,j}}_{(C_{out},\,C_{in})}\ \underbrace{X^{(ij)}}_{(N,\,C_{in},\,L)} .
$$

(im2col stacks the $k^2$ slices into one `(N, C_in k^2, L)` array and does the same sum as
one big matmul: equal up to rounding; it is the library's fast path.)
"""

# %%
def taps(k, s, out_hw):
    """For each kernel offset (i, j): the index of the slice of the padded input it reads at
    every output position, xpad[:, :, i : i + s*(Ho-1) + 1 : s, j : j + s*(Wo-1) + 1 : s]."""
    Ho, Wo = out_hw
    for i in range(k):
        for j in range(k):
            yield i, j, (slice(None), slice(None), slice(i, i + s * (Ho - 1) + 1, s), slice(j, j + s * (Wo - 1) + 1, s))


def conv2d_shifted(x, W, s=1, p=0):
    """The same y as conv2d_naive, as k*k matmuls, one per kernel offset."""
    N, C, H, Wd = x.shape
    O, _, k, _ = W.shape
    Ho, Wo = (H + 2 * p - k) // s + 1, (Wd + 2 * p - k) // s + 1
    xpad = pad(x, p)
    y = np.zeros((N, O, Ho * Wo))
    for i, j, tap in taps(k, s, (Ho, Wo)):
        y += W[:, :, i, j] @ xpad[tap].reshape(N, C, Ho * Wo)      # (O, C) @ (N, C, L) -> (N, O, L)
    return y.reshape(N, O, Ho, Wo)


g = B.Generator(0)
x = g.normal((2, 3, 9, 8), "float64")
W = g.normal((4, 3, 3, 3), "float64")
for s, p in ((1, 0), (2, 1), (3, 2)):
    y_naive, y_shift = conv2d_naive(x, W, s, p), conv2d_shifted(x, W, s, p)
    y_lib = conv2d(x, W, stride=s, padding=p)
    np.testing.assert_allclose(y_shift, y_naive, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y_lib, y_naive, rtol=1e-12, atol=1e-12)
    assert y_naive.shape[2:] == conv2d_output_hw((9, 8), 3, s, p) == ((9 + 2 * p - 3) // s + 1, (8 + 2 * p - 3) // s + 1)
    print(f"stride {s}, padding {p}: y {y_naive.shape}, (H_out, W_out) = conv2d_output_hw = {conv2d_output_hw((9, 8), 3, s, p)}; "
          "naive == shifted == scratchae.conv.conv2d")

# %% [markdown]
r"""
The same arithmetic, very different speed: on a batch of 16 MNIST digits through a
1 -> 8 channel, 3x3, padding-1 convolution, the naive loop runs $16\cdot8\cdot28\cdot28 = 100{,}352$
small Python-level window sums; the shifted form runs 9 matmuls. Best of 5 runs for the fast
two, one run of the slow loop; the ratios printed are what this machine measures.
"""

# %%
ds = load_dataset("mnist", data="bundled")
digits = ds.x_test[:16, None].astype("float64") / 255.0           # (16, 1, 28, 28)
W8 = B.Generator(1).normal((8, 1, 3, 3), "float64")


def timed(f, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t0)
    return out, best


y_naive, t_naive = timed(lambda: conv2d_naive(digits, W8, 1, 1), 1)
y_shift, t_shift = timed(lambda: conv2d_shifted(digits, W8, 1, 1), 5)
y_lib, t_lib = timed(lambda: conv2d(digits, W8, stride=1, padding=1), 5)
np.testing.assert_allclose(y_shift, y_naive, atol=1e-12)
np.testing.assert_allclose(y_lib, y_naive, atol=1e-12)
print(f"{'naive loop':22s} {1e3 * t_naive:8.2f} ms")
for name, t in (("shifted matmuls", t_shift), ("scratchae.conv.conv2d", t_lib)):
    print(f"{name:22s} {1e3 * t:8.2f} ms   ({t_naive / t:.0f}x faster than the loop)")

# %% [markdown]
r"""
## The backward

$y$ is linear in $x$ and in $W$. Write the forward as three linear maps applied to $x$: $P$
pads, $S_{ij}$ takes offset $(i, j)$'s strided slice, $W_{:,:,i,j}$ mixes the channels:

$$
y = b + \sum_{i,j} W_{:,:,i,j}\,S_{ij}\,P\,x .
$$

**$dx$: the transposed convolution.** Transposing each map and reversing the order,

$$
\underbrace{dx}_{(N,\,C_{in},\,H_{in},\,W_{in})} = P^\top\sum_{i,j}S_{ij}^\top\Bigl(\underbrace{W_{:,:,i,j}^\top}_{(C_{in},\,C_{out})}\ \underbrace{dy}_{(N,\,C_{out},\,L)}\Bigr):
$$

$W_{:,:,i,j}^\top dy$ maps the channels back; $S_{ij}^\top$ puts an array of the slice's shape
back where the slice came from (zeros elsewhere): a **scatter-add** into a zero `dxpad`
(`dxpad[tap] += ...`) on the very slice the forward read; $P^\top$ crops the padding off
(what lands there is the gradient of zeros that are not inputs). In entries: every output
that read $\bar x_{n,c,r,q}$ sends its $dy$ back through the weight it used. This map
$dy\mapsto dx$ is the transpose of the convolution's matrix, hence *transposed convolution*;
it is also `ConvTranspose2d`'s forward.

**$dW$: a correlation of the input with $dy$.** Offset $(i, j)$'s matmul
$W_{:,:,i,j}X^{(ij)}$ has, like a Linear, the gradient $dy\,X^{(ij)\top}$ with respect to
$W_{:,:,i,j}$, summed over the batch and the $L$ positions:

$$
\underbrace{dW_{:,:,i,j}}_{(C_{out},\,C_{in})} = \sum_{n}\underbrace{dy_{n}}_{(C_{out},\,L)}\underbrace{X^{(ij)\top}_{n}}_{(L,\,C_{in})}
\qquad\text{(the matmul sums over the } L \text{ positions)},
$$

`tensordot(dy, x_tap, axes=([0, 2], [0, 2]))`, with `dy` as `(N, C_out, L)` and the slice as `(N, C_in, L)`. In entries,
$dW_{o,c,i,j} = \sum_{n,h,w} dy_{n,o,h,w}\,\bar x_{n,\,c,\,i + hs,\,j + ws}$: as a function of
the offset $(i, j)$, a cross-correlation of the padded input with $dy$ used as the kernel
(its taps $s$ apart: the forward's stride acts as a dilation).

**$db$.** The bias is broadcast over $N$, $H_{out}$, $W_{out}$: $db_o = \sum_{n,h,w}dy_{n,o,h,w}$,
shape `(C_out,)`.

The naive loop's backward is the forward loop with each multiply-add transposed: the window
that produced $y_{n,o,h,w}$ receives $W_o\,dy_{n,o,h,w}$, and $W_o$ receives the window times
$dy_{n,o,h,w}$.
"""

# %%
def conv2d_backward_naive(x, W, dy, s=1, p=0):
    """(dx, dW, db) of y = conv2d_naive(x, W, s, p) + b, one window at a time."""
    N, C, H, Wd = x.shape
    O, _, k, _ = W.shape
    _, _, Ho, Wo = dy.shape
    xpad = pad(x, p)
    dxpad, dW = np.zeros_like(xpad), np.zeros_like(W)
    for n in range(N):
        for o in range(O):
            for h in range(Ho):
                for w in range(Wo):
                    window = (n, slice(None), slice(h * s, h * s + k), slice(w * s, w * s + k))
                    dxpad[window] += W[o] * dy[n, o, h, w]
                    dW[o] += xpad[window] * dy[n, o, h, w]
    return dxpad[:, :, p:p + H, p:p + Wd], dW, dy.sum(axis=(0, 2, 3))


def conv2d_input_grad_shifted(dy, W, x_hw, s=1, p=0):
    """dx: each offset's matmul transposed and scatter-added back into the slice it read."""
    N, O, Ho, Wo = dy.shape
    _, C, k, _ = W.shape
    H, Wd = x_hw
    dxpad = np.zeros((N, C, H + 2 * p, Wd + 2 * p))
    dy_rows = dy.reshape(N, O, Ho * Wo)
    for i, j, tap in taps(k, s, (Ho, Wo)):
        dxpad[tap] += (W[:, :, i, j].T @ dy_rows).reshape(N, C, Ho, Wo)   # (C, O) @ (N, O, L)
    return dxpad[:, :, p:p + H, p:p + Wd]


def conv2d_weight_grad_shifted(x, dy, k, s=1, p=0):
    """dW[:, :, i, j] = sum over the batch and the positions of dy times offset (i, j)'s slice."""
    N, C, _, _ = x.shape
    _, O, Ho, Wo = dy.shape
    xpad = pad(x, p)
    dW = np.zeros((O, C, k, k))
    for i, j, tap in taps(k, s, (Ho, Wo)):
        dW[:, :, i, j] = np.tensordot(dy.reshape(N, O, -1), xpad[tap].reshape(N, C, -1), axes=([0, 2], [0, 2]))
    return dW


for s, p in ((1, 0), (2, 1), (3, 2)):
    dy = B.Generator(2).normal(conv2d_naive(x, W, s, p).shape, "float64")
    dx_n, dW_n, db_n = conv2d_backward_naive(x, W, dy, s, p)
    np.testing.assert_allclose(conv2d_input_grad_shifted(dy, W, (9, 8), s, p), dx_n, atol=1e-12)
    np.testing.assert_allclose(conv2d_weight_grad_shifted(x, dy, 3, s, p), dW_n, atol=1e-12)
    np.testing.assert_allclose(conv2d_input_grad(dy, W, (9, 8), stride=s, padding=p), dx_n, atol=1e-12)
    np.testing.assert_allclose(conv2d_weight_grad(x, dy, 3, stride=s, padding=p), dW_n, atol=1e-12)
    # the adjoint identity: <conv(x), dy> = <x, conv^T(dy)>, the definition of the transpose
    lhs, rhs = np.sum(conv2d_shifted(x, W, s, p) * dy), np.sum(x * dx_n)
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)
    print(f"stride {s}, padding {p}: naive == shifted == scratchae.conv for dx and dW; "
          f"<conv(x), dy> = {lhs:.6f} = <x, conv^T(dy)>")
docstring_block(conv2d_input_grad, start="Each offset's forward matmul", stop="Input rows no window")

# %% [markdown]
r"""
## A `Conv2d` of our own, checked

Our two functions make a layer. `check_layer` compares $dx$, $dW$ and $db$ with finite
differences entry by entry (float64, and a small input: it goes entry by entry up to
`MAX_ELEMENTWISE` = 2048 entries per array, and the largest here, $dx$, has 168). Then the
library's `Conv2d`, whose backward is the same three lines.
"""

# %%
class MyConv2d(Module):
    """y = conv2d(x, W, s, p) + b.  x (N, C_in, H, W), W (C_out, C_in, k, k), b (C_out,).  Cache: x."""

    def __init__(self, c_in, c_out, k, s, p, rng, dtype="float64"):
        super().__init__()
        self.k, self.s, self.p = k, s, p
        bound = 1.0 / np.sqrt(c_in * k * k)                              # PyTorch's init, fan-in C_in k^2
        self.add_param("W", rng.uniform((c_out, c_in, k, k), -bound, bound, dtype))
        self.add_param("b", rng.uniform((c_out,), -bound, bound, dtype))

    def forward(self, x):
        self.save_cache(x)
        return conv2d_shifted(x, self.params["W"], self.s, self.p) + self.params["b"][:, None, None]

    def backward(self, dy):
        (x,) = self.pop_cache()
        self.grads["W"] += conv2d_weight_grad_shifted(x, dy, self.k, self.s, self.p)
        self.grads["b"] += np.sum(dy, axis=(0, 2, 3))
        return conv2d_input_grad_shifted(dy, self.params["W"], x.shape[2:], self.s, self.p)


xc = B.Generator(3).normal((2, 2, 7, 6), "float64")
report = check_layer(MyConv2d(2, 3, 3, 2, 1, B.Generator(4)), xc)
print(report, "\n")
assert report.passed

docstring_block(Conv2d)
report = check_layer(Conv2d(2, 3, 3, stride=2, padding=1, rng=B.Generator(4), dtype="float64"), xc)
print(report.headline())
assert report.passed

# %% [markdown]
r"""
## `ConvTranspose2d`: the convolution's $dx$ as a layer

The map $dy\mapsto dx$ above is linear, so it can be a layer's forward: that layer is
`ConvTranspose2d`. A `ConvTranspose2d` from $C_{out}$ to $C_{in}$ channels with weight $W$
`(C_out, C_in, k, k)` (PyTorch's layout: the weight of the `Conv2d` from $C_{in}$ to
$C_{out}$ whose $dx$ it is) computes `y = conv2d_input_grad(x, W, ...) + b`, and its own
backward's $dx$ is `conv2d(dy, W, ...)`: each layer's forward is the other's input gradient.

**Its output size** (here $H_{in}$ and $H_{out}$ are the transposed layer's own input and
output). A stride-$s$ convolution sends $s$ consecutive input sizes to the same number of
outputs (the floor), so the transposed one must be told which size to give back. It gives the
smallest, $(H_{in}-1)s - 2p + d(k-1) + 1$ (the convolution's size formula solved without the
floor), plus `output_padding` $a$ rows, $0\le a < s$:

$$
H_{out} = (H_{in} - 1)\,s - 2p + d(k-1) + a + 1 .
$$

Our $x$ above is `(2, 3, 9, 8)`; with $k = 3$, $s = 2$, $p = 1$ the convolution gives
`(5, 4)` outputs, and the transposed one gives back $(5-1)2 - 2 + 2 + 1 = 9$ rows but only
$(4-1)2 - 2 + 2 + 1 = 7$ columns: widths 7 and 8 both give 4 outputs
($\lfloor(7 + 2 - 3)/2\rfloor = \lfloor(8 + 2 - 3)/2\rfloor = 3$; for width 8 the floor drops the
right padding column), so `output_padding=(0, 1)` is what asks for width 8. With it, the
layer's forward is our scatter-add exactly. Then `check_layer` on a `ConvTranspose2d` of the
decoders' configuration (2 -> 3 channels, $k = 4$, $s = 2$, $p = 1$):
"""

# %%
docstring_block(ConvTranspose2d, start="Shapes:", stop="Backward")
s, p = 2, 1
dy = B.Generator(2).normal(conv2d_naive(x, W, s, p).shape, "float64")         # (2, 4, 5, 4): dL/dy of the Conv2d
print(f"\nfrom (5, 4): output_padding 0 gives {conv_transpose2d_output_hw((5, 4), 3, s, p)}, "
      f"output_padding (0, 1) gives {conv_transpose2d_output_hw((5, 4), 3, s, p, output_padding=(0, 1))} = x's (H, W)")
up = ConvTranspose2d(4, 3, 3, stride=s, padding=p, output_padding=(0, 1), bias=False, rng=B.Generator(0), dtype="float64")
up.params["W"][...] = W                                             # the Conv2d's weight (4, 3, 3, 3), unchanged
y_up = up(dy)
up.clear_cache()                                                    # a forward we do not backpropagate
np.testing.assert_allclose(y_up, conv2d_input_grad_shifted(dy, W, (9, 8), s, p), atol=1e-12)
print(f"ConvTranspose2d(4 -> 3)(dy): {y_up.shape} == the Conv2d's dx, by our scatter-add\n")

report = check_layer(ConvTranspose2d(2, 3, 4, stride=2, padding=1, rng=B.Generator(5), dtype="float64"), xc)
print(report.headline())
assert report.passed
docstring_block(ConvTranspose2d)

# %% [markdown]
r"""
That is why the convolutional decoders of the library (`arch="conv"`,
[`docs/conv.md`](../conv.md)) use it: a $k = 4$, $s = 2$, $p = 1$ `Conv2d` halves the side
($\lfloor(28 + 2 - 4)/2\rfloor + 1 = 14$), and the `ConvTranspose2d` with the same
$k, s, p$ doubles it back ($(14 - 1)2 - 2 + 3 + 1 = 28$): two of them take the decoder's
7x7 feature maps (a Linear of the code, reshaped) to 28x28 images.

## A classic mistake: the textbook formula without the flip

For stride 1, textbooks write $dx$ as an ordinary convolution of $dy$, padded with $k-1-p$
zeros, with the kernel **flipped** in both spatial axes and its two channel axes swapped:
$dx = \operatorname{conv}\bigl(\operatorname{pad}_{k-1-p}(dy),\ \tilde W\bigr)$ with
$\tilde W_{c,o,i,j} = W_{o,c,k-1-i,k-1-j}$ (for stride $s$ they first insert $s - 1$ zeros
between the entries of $dy$). It is the scatter-add above, reorganised as a gather: input
row $r$ was read by output $h$ through tap $i = r + p - h$, so as $h$ increases the tap
index decreases, hence the flip. Forgetting the flip is a bug that keeps every shape right.
"""

# %%
class ConvTextbookDx(MyConv2d):
    """MyConv2d with dx computed as a stride-1 convolution of the padded dy with the flipped kernel."""
    flip = True

    def backward(self, dy):
        assert self.s == 1, "this formula is for stride 1"
        (x,) = self.pop_cache()
        self.grads["W"] += conv2d_weight_grad_shifted(x, dy, self.k, self.s, self.p)
        self.grads["b"] += np.sum(dy, axis=(0, 2, 3))
        W_t = np.swapaxes(self.params["W"], 0, 1)                    # (C_in, C_out, k, k)
        if self.flip:
            W_t = W_t[:, :, ::-1, ::-1]
        return conv2d_shifted(dy, W_t, 1, self.k - 1 - self.p)


class ConvTextbookDxNoFlip(ConvTextbookDx):
    flip = False                                                     # BUG: the kernel is not flipped


right = check_layer(ConvTextbookDx(2, 3, 3, 1, 1, B.Generator(4)), xc)
wrong = check_layer(ConvTextbookDxNoFlip(2, 3, 3, 1, 1, B.Generator(4)), xc)
print(right.headline())
print(wrong)
assert right.passed and wrong.verdict == FAILED and wrong.row("dx").failed

# %% [markdown]
r"""
## Rows a stride skips get no gradient

Window $h$ covers padded rows $hs$ to $hs + k - 1$. With a stride longer than the kernel
($k = 2$, $s = 3$) the row between two windows is read by none of them, and the floor in
$H_{out}$ drops the rows after the last window; no output depends on those rows, so their
gradient is exactly zero (the scatter-add never writes there). On 28 rows:
$H_{out} = \lfloor 26/3\rfloor + 1 = 9$ windows, on rows 0-1, 3-4, ..., 24-25, so rows 2, 5,
..., 26 and the dropped row 27 get $dx = 0$.

Below: a digit through two edge filters (stride-1 convolutions), and the input gradient of the
$k = 2$, $s = 3$ convolution with $dy = 1$. The Sobel kernels show the cross-correlation: unflipped,
$[-1, 0, 1]$ gives right minus left, positive (red) on each stroke's left edge, where the
brightness rises to the right; a true (flipped) convolution would swap the colours.
"""

# %%
digit = digits[:1]                                                  # (1, 1, 28, 28)
sobel = np.array([[[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]], [[[-1, -2, -1], [0, 0, 0], [1, 2, 1]]]], dtype="float64")
edges = conv2d(digit, sobel, stride=1, padding=1)                   # (1, 2, 28, 28)

W_skip = B.Generator(6).normal((1, 1, 2, 2), "float64")
y_skip = conv2d(digit, W_skip, stride=3)                            # (1, 1, 9, 9): windows on rows 0-1, 3-4, ...
dx_skip = conv2d_input_grad(np.ones_like(y_skip), W_skip, (28, 28), stride=3)
zero_rows = [r for r in range(28) if np.all(dx_skip[0, 0, r] == 0)]
print(f"k = 2, s = 3 on 28 rows: output {y_skip.shape[2:]}, rows with zero gradient: {zero_rows}")
assert zero_rows == [r for r in range(28) if r % 3 == 2 or r >= 27]

fig, axes = plt.subplots(1, 4, figsize=(13, 3.3))
panels = ((digit[0, 0], "a test digit"), (edges[0, 0], "conv with Sobel x (right - left)"),
          (edges[0, 1], "conv with Sobel y (below - above)"), (dx_skip[0, 0], "dx of a k=2, s=3 conv (dy = 1)"))
for ax, (img, title) in zip(axes, panels):
    v = np.abs(img).max()
    im = ax.imshow(img, cmap="gray") if ax is axes[0] else ax.imshow(img, cmap="RdBu_r", vmin=-v, vmax=v)
    ax.set_title(title, fontsize=9)
    if ax is not axes[0]:
        fig.colorbar(im, ax=ax, fraction=0.046)
    if ax is axes[3]:                                               # ticks on the rows 2, 5, ..., 26 a stride skips
        ax.set_xticks(range(2, 27, 3), [str(r) for r in range(2, 27, 3)], fontsize=6)
        ax.set_yticks(range(2, 27, 3), [str(r) for r in range(2, 27, 3)], fontsize=6)
        ax.set_xlabel("column (ticks: skipped; 27: dropped)", fontsize=8)
        ax.set_ylabel("row (ticks: skipped; 27: dropped)", fontsize=8)
    else:
        ax.set_axis_off()
fig.tight_layout()
plt.show()

# %% [markdown]
r"""
**Every backward of a convolution, in one place:** $dx$ = for each offset,
$W_{:,:,i,j}^\top dy$ scatter-added into the slice the forward read, then the padding cropped
(`conv2d_input_grad`, the transposed convolution); $dW_{:,:,i,j}$ = $dy$ contracted with that
offset's slice over the batch and positions (`conv2d_weight_grad`); $db$ = $dy$ summed over
$N$, $H_{out}$, $W_{out}$. `ConvTranspose2d` is the same pair of maps the other way round:
its forward is `conv2d_input_grad`, its $dx$ is `conv2d`, and its $dW$ is
`conv2d_weight_grad(dy, x)`. The scatter-adds run over the offsets in one fixed order, so the
library's reference backward gives the same bits on every run ([`docs/conv.md`](../conv.md)
explains why GPU libraries' atomics do not).
"""

r"""Check your own layer: write forward and backward, then let scratchae check them.

1. ``Swish``: a coursework-style layer with a learned parameter, y = x * sigmoid(beta * x)
   with one beta per feature, checked against finite differences by
   ``scratchae.gradcheck.check_layer``;
2. ``BuggySwish``: the same layer with two classic mistakes, and the report that finds them;
3. a hypothesis property test (``scratchae.testing``): the check over many random shapes,
   inputs and betas; it passes for Swish and finds (and shrinks) a failing case for BuggySwish.

    python demos/check_my_layer.py
    python demos/check_my_layer.py --device cuda
"""
from __future__ import annotations

import _common  # first: the demos' shared command line (and one BLAS thread)
from hypothesis import given, settings, strategies as st
from scratchae import Module, backend as B
from scratchae.gradcheck import check_layer
from scratchae.layers import sigmoid
from scratchae.testing import arrays_on, batch_shapes


class Swish(Module):
    r"""Swish with a learned slope per feature: ``y = x * sigmoid(beta * x)``.

    Shapes: x, y (N, d); beta (d,). (Ramachandran, Zoph, Le 2017; beta = 1 is SiLU.)

    Backward, with s = sigmoid(beta * x) and ds = s * (1 - s) = d sigmoid(u)/du::

        dbeta += sum(dy * x * x * ds, axis=0)      (d,)    dy/dbeta = x * ds * x
        dx     = dy * (s + beta * x * ds)          (N, d)  dy/dx = s + x * ds * beta

    Cache: x, s.
    """

    def __init__(self, d, beta=1.0, dtype="float32", device="cpu"):
        super().__init__()
        self.d = int(d)
        self.add_param("beta", B.resolve(device).asarray([beta] * self.d, dtype))

    def extra_repr(self):
        return f"{self.d}"

    def forward(self, x):
        self.check_input(x, features=self.d, ndim=2)
        s = sigmoid(self.params["beta"] * x)
        self.save_cache(x, s)
        return x * s

    def backward(self, dy):
        x, s = self.pop_cache()
        self.check_dy(dy, x.shape)
        xp = B.namespace(dy)
        ds = s * (1.0 - s)
        self.grads["beta"] += xp.sum(dy * x * x * ds, axis=0)
        return dy * (s + self.params["beta"] * x * ds)


class BuggySwish(Swish):
    """Swish with two classic mistakes in its backward."""

    def backward(self, dy):
        x, s = self.pop_cache()
        xp = B.namespace(dy)
        ds = s * (1.0 - s)
        self.grads["beta"] = xp.sum(dy * x * x * ds, axis=0)   # bug 1: = instead of +=
        return dy * (s + x * ds)                               # bug 2: inner derivative beta lost


def swish_property(cls, device, max_examples):
    """check_layer over hypothesis-drawn shapes, inputs and betas; returns the test function."""
    @settings(max_examples=max_examples, deadline=None, database=None)
    @given(data=st.data(), shape=batch_shapes(max_features=6))
    def test_swish(data, shape):
        x = data.draw(arrays_on(device, shape))                          # float64 in [-3, 3]
        layer = cls(shape[1], dtype="float64", device=device)
        layer.params["beta"][...] = data.draw(arrays_on(device, shape[1:], low=0.2, high=2.0))
        report = check_layer(layer, x)
        assert report.passed, f"\n{report}"
    return test_swish


def main(args):
    dev = args.device
    rng = B.Generator(args.seed, device=dev)
    x = rng.normal((4, 5), "float64")
    beta = rng.uniform((5,), 0.5, 2.0, "float64")     # check at generic values, not only at beta = 1

    print("1. Swish: the correct backward")
    layer = Swish(5, dtype="float64", device=dev)
    layer.params["beta"][...] = beta
    print(check_layer(layer, x))

    print("\n2. BuggySwish: '=' instead of '+=' for dbeta, and dx without the factor beta")
    buggy = BuggySwish(5, dtype="float64", device=dev)
    buggy.params["beta"][...] = beta
    print(check_layer(buggy, x))
    at_one = check_layer(BuggySwish(5, dtype="float64", device=dev), x).row("dx")
    print(f"   (at beta = 1, the initial value, bug 2 is invisible: dx {'passes' if at_one.passed else 'fails'}"
          " there; check at generic parameter values)")

    print(f"\n3. hypothesis: check_layer over {args.examples} random shapes, inputs and betas")
    for cls in (Swish, BuggySwish):
        try:
            swish_property(cls, dev, args.examples)()
            print(f"   {cls.__name__}: passed on every example")
        except AssertionError as err:
            text = "\n".join([*getattr(err, "__notes__", []), str(err).strip()])
            print(f"   {cls.__name__}: hypothesis found a failing case and shrank it:")
            print("\n".join("     " + line for line in text.splitlines()))


if __name__ == "__main__":
    p = _common.parser("check_my_layer", __doc__, data=False, out=False)
    p.add_argument("--examples", type=int, default=50, help="hypothesis examples per layer (default 50)")
    _common.run(main, p)

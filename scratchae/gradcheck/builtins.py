"""Every built-in layer as a gradient-check case: what ``scratchae gradcheck`` runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .. import backend as B

__all__ = ["LayerCase", "builtin_cases"]


def _no_kwargs(shape, rng) -> dict:
    return {}


@dataclass(frozen=True)
class LayerCase:
    """How to check one layer: ``build(d, rng)`` makes it (float64, input width d);
    ``forward_kwargs(shape, rng)`` gives what its forward takes besides x (a fixed dropout
    mask); inputs within 0.05 of a value in ``kinks`` are moved 0.1 away from it."""
    name: str
    build: Callable
    kinks: tuple = ()
    forward_kwargs: Callable = field(default=_no_kwargs)

    def inputs(self, shape, rng):
        """``(x, forward_kwargs)`` for one check: x ~ N(0, 1) of ``shape``, away from the kinks."""
        x = rng.normal(shape, "float64")
        xp = B.namespace(x)
        for k in self.kinks:
            x = xp.where(xp.abs(x - k) < 0.05, x + 0.1, x)
        return x, self.forward_kwargs(shape, rng)


def builtin_cases() -> list:
    """A :class:`LayerCase` for every built-in layer."""
    from .. import layers as L
    from ..stochastic import SoftClamp
    f64 = "float64"
    return [
        LayerCase("Linear", lambda d, rng: L.Linear(d, 3, rng, dtype=f64)),
        LayerCase("TiedLinear", lambda d, rng: L.TiedLinear(L.Linear(3, d, rng, dtype=f64), dtype=f64)),
        LayerCase("ReLU", lambda d, rng: L.ReLU(), kinks=(0.0,)),
        LayerCase("LeakyReLU", lambda d, rng: L.LeakyReLU(0.1), kinks=(0.0,)),
        LayerCase("ELU", lambda d, rng: L.ELU(), kinks=(0.0,)),
        LayerCase("Sigmoid", lambda d, rng: L.Sigmoid()),
        LayerCase("Tanh", lambda d, rng: L.Tanh()),
        LayerCase("Softplus", lambda d, rng: L.Softplus()),
        LayerCase("Identity", lambda d, rng: L.Identity()),
        LayerCase("Dropout", lambda d, rng: L.Dropout(0.3, rng),
                  forward_kwargs=lambda shape, rng: {"mask": rng.bernoulli(shape, 0.7, f64)}),
        LayerCase("BatchNorm1d", lambda d, rng: L.BatchNorm1d(d, rng, dtype=f64)),
        LayerCase("Flatten", lambda d, rng: L.Flatten()),
        LayerCase("SoftClamp", lambda d, rng: SoftClamp(3.0)),
        LayerCase("Sequential", lambda d, rng: L.Sequential(
            L.Linear(d, 4, rng, dtype=f64), L.Tanh(), L.Linear(4, 2, rng, dtype=f64))),
        # the image layers, each on the (N, d) rows seen as one-channel 1 x d images
        LayerCase("Conv2d", lambda d, rng: _image(d, L.Conv2d(1, 3, (1, 2), padding=(0, 1), rng=rng, dtype=f64))),
        LayerCase("ConvTranspose2d", lambda d, rng: _image(d, L.ConvTranspose2d(
            1, 2, (1, 3), stride=(1, 2), padding=(0, 1), rng=rng, dtype=f64))),
        LayerCase("MaxPool2d", lambda d, rng: _image(d, L.MaxPool2d((1, 2), stride=1, padding=(0, 1)))),
        LayerCase("AvgPool2d", lambda d, rng: _image(d, L.AvgPool2d((1, 2), stride=1, padding=(0, 1)))),
        LayerCase("Upsample", lambda d, rng: _image(d, L.Upsample(2))),
    ]


def _image(d, layer):
    """``layer`` on the (N, d) rows seen as one-channel 1 x d images: Reshape, layer, Flatten."""
    from .. import layers as L
    return L.Sequential(L.Reshape(1, 1, d), layer, L.Flatten())

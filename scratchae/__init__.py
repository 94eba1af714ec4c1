"""scratchae: autoencoders whose backpropagation is written, and checked, by hand.

Importing scratchae imports neither CuPy nor matplotlib nor hypothesis.
"""
from . import backend, gradcheck, layers, losses
from .backend import Generator, resolve, to_numpy
from .module import CacheError, InputError, Module, Sequential

__version__ = "0.1.0"

__all__ = ["backend", "gradcheck", "layers", "losses", "Generator", "resolve", "to_numpy",
           "CacheError", "InputError", "Module", "Sequential", "__version__"]

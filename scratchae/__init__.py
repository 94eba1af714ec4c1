"""scratchae: autoencoders whose backpropagation is written, and checked, by hand.

Importing scratchae imports neither CuPy nor matplotlib nor hypothesis.
"""
from . import backend, fast, gradcheck, layers, losses
from .backend import Generator, resolve, to_numpy
from .fast import reference_mode, use_reference
from .module import CacheError, InputError, Module, Sequential

__version__ = "0.1.0"

__all__ = ["backend", "fast", "gradcheck", "layers", "losses", "Generator", "resolve", "to_numpy",
           "use_reference", "reference_mode", "CacheError", "InputError", "Module", "Sequential",
           "__version__"]

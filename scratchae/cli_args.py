"""The ``scratchae`` command's option types: each checks its value where it is parsed.

A bad value is one line, ``scratchae train: error: argument --epochs: expected an integer
>= 1, got '0'``, and exit status 2, before anything is loaded or written.
"""
from __future__ import annotations

import argparse
import math


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and every default in the help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def integer(low: int, high: int | None = None):
    """An int in ``[low, high]``."""
    allowed = f">= {low}" if high is None else f"from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer {allowed}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected an integer {allowed}, got {text!r}")
        return value
    return parse


def number(low: float, high: float | None = None, low_open: bool = False):
    """A finite float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    left = ">" if low_open else ">="
    allowed = f"{left} {low:g}" if high is None else f"{left} {low:g} and <= {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {allowed}, got {text!r}") from None
        bad = (not math.isfinite(value) or value < low or (low_open and value == low)
               or (high is not None and value > high))
        if bad:
            raise argparse.ArgumentTypeError(f"expected a finite number {allowed}, got {text!r}")
        return value
    return parse


def widths(high: int):
    """Comma-separated positive integers, e.g. ``400`` or ``1000,1000``."""
    def parse(text: str) -> list[int]:
        parts = [p.strip() for p in text.split(",")]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = None
        if not values or any(v < 1 or v > high for v in values):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers from 1 to {high} (e.g. 400 or 1000,1000), "
                f"got {text!r}")
        return values
    return parse


def count_or_all(low: int = 1):
    """A positive integer, or ``all``."""
    def parse(text: str):
        if text.strip().lower() == "all":
            return "all"
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low} or 'all', got {text!r}")
        return value
    return parse


def plural(n: int, word: str) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"

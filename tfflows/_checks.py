"""Argument checks shared by every layer of the house (no TensorFlow here).

Each returns the value in its plain Python form or raises a `ValueError`
that names the argument and quotes what it received:

    integer("num_layers", 0)     # ValueError: num_layers must be a positive
                                 # integer. Received: num_layers=0
    widths("hidden_units", 64)   # ValueError: hidden_units must be a non-empty
                                 # sequence of integers >= 1 ...

NumPy integers count as integers; bools, floats (even `3.0`) and strings
do not.
"""

import math
import numbers

import numpy as np

__all__ = ["integer", "widths", "positive_number", "flag"]


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(name, value, minimum=1, optional=False):
    """`int(value)` if it is an integer >= `minimum` (or None if `optional`)."""
    if optional and value is None:
        return None
    if not _is_int(value) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {'None or ' if optional else ''}{kind}. "
                         f"Received: {name}={value!r}")
    return int(value)


def widths(name, value):
    """`tuple(value)` of ints if `value` is a non-empty sequence of integers >= 1."""
    if (isinstance(value, (str, bytes)) or not hasattr(value, "__len__")
            or len(value) == 0 or not all(_is_int(u) and u >= 1 for u in value)):
        raise ValueError(f"{name} must be a non-empty sequence of integers >= 1, "
                         f"e.g. (64, 64). Received: {name}={value!r}")
    return tuple(int(u) for u in value)


def positive_number(name, value):
    """`float(value)` if it is a finite real number > 0."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be a positive number. Received: "
                         f"{name}={value!r}")
    return float(value)


def flag(name, value, optional=False):
    """`value` if it is a bool (or None if `optional`)."""
    if not (isinstance(value, bool) or (optional and value is None)):
        raise ValueError(f"{name} must be {'None, ' if optional else ''}True or "
                         f"False. Received: {name}={value!r}")
    return value


def draw_seed():
    """A seed for a layer built without one: drawn from NumPy's global
    generator, so flows built after `keras.utils.set_random_seed` (which
    seeds it) are the same every time, and differ otherwise."""
    return int(np.random.randint(0, 2**31 - 1))

"""Checks of the parameters users pass, all worded by one template.

Every check raises :class:`~modgraph.errors.InputError` with the message

    The 'eps' parameter of analyze must be a positive finite float. Got -0.1 instead.

naming the parameter, the public function it was given to, the constraint and the value, and
returns the value in its canonical type (``float``, ``int``). ``where`` is the public function's
name (or ``"Class.method"``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection

import numpy as np

from .errors import InputError

__all__ = [
    "SEED_MAX",
    "invalid",
    "describe",
    "a_or_an",
    "check_real",
    "check_int",
    "check_seed",
    "check_choice",
    "check_bool",
    "check_instance",
]

#: Seeds are non-negative and fit every consumer (leidenalg takes a C int).
SEED_MAX = 2**31 - 1


def invalid(where: str, name: str, constraint: str, value, *, shown: str | None = None):
    """The :class:`InputError` for ``value`` breaking ``constraint`` as ``name`` of ``where``.

    ``shown`` replaces :func:`describe`'s words for the value (e.g. to add its shape).
    """
    shown = describe(value) if shown is None else shown
    return InputError(
        f"The {name!r} parameter of {where} must be {constraint}. Got {shown} instead."
    )


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _bounds(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        return f" in {lo}{_num(low)}, {_num(high)}{hi}"
    if low is not None:
        return f" {'>' if low_open else '>='} {_num(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {_num(high)}"
    return ""


def a_or_an(noun: str) -> str:
    """``noun`` with its indefinite article: "an Axes", "a list"."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def describe(value) -> str:
    """A value as an error message shows it: its repr when short, else its type ("a Tensor")."""
    r = repr(value)
    short = isinstance(value, (numbers.Number, str, bytes, type(None))) or len(r) <= 60
    return (r if len(r) <= 200 else r[:197] + "...") if short else a_or_an(type(value).__name__)


def check_real(
    where: str,
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number within the bounds; ``low=0, low_open=True`` reads "positive"."""
    if low == 0 and low_open and high is None:
        constraint = "a positive finite float"
    elif low == 0 and not low_open and high is None:
        constraint = "a non-negative finite float"
    else:
        constraint = "a finite float" + _bounds(low, high, low_open, high_open)
    ok = _is_real(value) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = not (
            (low is not None and (v < low or (low_open and v == low)))
            or (high is not None and (v > high or (high_open and v == high)))
        )
    if not ok:
        raise invalid(where, name, constraint, value)
    return float(value)


def check_int(where: str, name: str, value, *, low: int | None = None, high: int | None = None):
    """An integer (not a bool) within the inclusive bounds."""
    ok = isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )
    if ok:
        v = int(value)
        ok = (low is None or v >= low) and (high is None or v <= high)
    if not ok:
        raise invalid(where, name, "an int" + _bounds(low, high, False, False), value)
    return int(value)


def check_seed(where: str, value, name: str = "seed") -> int:
    """A seed: an int in ``[0, SEED_MAX]``."""
    return check_int(where, name, value, low=0, high=SEED_MAX)


def check_choice(where: str, name: str, value, choices: Collection):
    """One of ``choices`` (compared with ``==``; unhashable values are simply not among them)."""
    try:
        ok = value in choices
    except TypeError:
        ok = False
    if not ok:
        raise invalid(where, name, f"one of {tuple(choices)!r}", value)
    return value


def check_bool(where: str, name: str, value) -> bool:
    """True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise invalid(where, name, "True or False", value)
    return bool(value)


def check_instance(where: str, name: str, value, types, description: str | None = None):
    """An instance of ``types``; ``description`` words the constraint (default: the type names)."""
    if not isinstance(value, types):
        if description is None:
            ts = types if isinstance(types, tuple) else (types,)
            description = " or ".join(a_or_an(t.__name__) for t in ts)
        raise invalid(where, name, description, value)
    return value

"""Exceptions raised on bad input (kept free of heavy imports so every stage can use them)."""

__all__ = ["InputError", "NonFiniteError"]


class InputError(ValueError):
    """Bad argument or data given to modgraph; the message names the argument and the value."""


class NonFiniteError(InputError):
    """An activation or Jacobian contained NaN or inf; the message names the layer and batch."""

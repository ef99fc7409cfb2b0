"""Adapters: models of other layouts read as layer chains.

- :func:`transformer_chain`: decoder-only transformers in the TransformerLens
  ``HookedTransformer`` layout (and :class:`~modgraph.toys.TinyTransformer`).
"""

from .transformer import transformer_chain

__all__ = ["transformer_chain"]

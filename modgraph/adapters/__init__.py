"""Adapters: models of other layouts read as layer chains.

- :func:`transformer_chain`: decoder-only transformers cut at the residual stream: TransformerLens
  3.x ``HookedTransformer`` and 4.x ``TransformerBridge``, Hugging Face GPT-2-style LMs, and the
  ``HookedTransformer`` attribute layout (:class:`~modgraph.toys.TinyTransformer`).
"""

from .transformer import is_transformer, transformer_chain

__all__ = ["transformer_chain", "is_transformer"]

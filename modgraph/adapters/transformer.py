"""Transformers as layer chains: the residual stream between blocks is the layer.

:func:`transformer_chain` cuts a decoder-only transformer into ``embed -> blocks -> unembed``
stages. It reads any model with the attribute layout of TransformerLens' ``HookedTransformer``
(``embed(tokens)``, ``pos_embed(tokens)``, ``blocks``, ``ln_final``, ``unembed``), including
the small plain-PyTorch :class:`~modgraph.toys.TinyTransformer` shipped for tests and examples.

Conventions
-----------
- Layers are the residual stream: after the embedding, after each block (and, with
  ``split="sublayer"`` on a :class:`TinyTransformer`, between attention and MLP), and the logits.
- Positions count as samples for ``G``; ``M`` and the edges sum over output positions (see
  :mod:`modgraph.statistics`). ``positions="last"`` reads the logits of the last position only
  (the answer of modular addition), ``"all"`` keeps every position.
- LayerNorm is a non-linear part of the stage it sits in (pre-LN inside each block, ``ln_final``
  inside the unembedding stage): its Jacobian enters ``M`` and the edges like any other
  non-linearity, and the basis of the residual stream is fitted on LayerNorm's *input*. A
  LayerNorm without a learned gain commutes with rotations of the residual stream that fix the
  all-ones direction; fold learned gains into the next weights (TransformerLens ``fold_ln``) to
  make such rotations exact symmetries.
"""

from __future__ import annotations

from torch import Tensor, nn

from .._validation import check_choice
from ..chain import LayerChain
from ..errors import InputError

__all__ = ["transformer_chain"]


class _Embed(nn.Module):
    def __init__(self, embed: nn.Module, pos_embed: nn.Module):
        super().__init__()
        self.embed, self.pos_embed = embed, pos_embed

    def forward(self, tokens: Tensor) -> Tensor:
        return self.embed(tokens) + self.pos_embed(tokens)


class _Sublayer(nn.Module):
    def __init__(self, block: nn.Module, which: str):
        super().__init__()
        self.block, self.which = block, which

    def forward(self, x: Tensor) -> Tensor:
        return self.block.attn_stage(x) if self.which == "attn" else self.block.mlp_stage(x)


class _Unembed(nn.Module):
    def __init__(self, ln_final: nn.Module, unembed: nn.Module, last: bool):
        super().__init__()
        self.ln_final, self.unembed, self.last = ln_final, unembed, last

    def forward(self, x: Tensor) -> Tensor:
        logits = self.unembed(self.ln_final(x))
        return logits[:, -1] if self.last else logits


def transformer_chain(
    model: nn.Module, *, positions: str = "last", split: str = "block"
) -> LayerChain:
    """The layer chain of a decoder-only transformer (``TinyTransformer`` or ``HookedTransformer``).

    Parameters
    ----------
    model : nn.Module
        Needs ``embed``, ``pos_embed``, ``blocks``, ``ln_final`` and ``unembed``, each callable as
        in TransformerLens (``embed`` and ``pos_embed`` take the token ids).
    positions : {"last", "all"}
        Logits of the last position only, or of every position.
    split : {"block", "sublayer"}
        Residual stream after every block, or also between attention and MLP (``resid_mid``;
        needs blocks with ``attn_stage``/``mlp_stage``, as :class:`TinyTransformer` has).

    Returns
    -------
    LayerChain
        Layer 0 is the embedding output (``embed`` holds the token embedding), then
        ``blocks.{i}.resid_mid`` / ``blocks.{i}.resid_post``, and ``logits``.

    Examples
    --------
    >>> from modgraph.toys import TinyTransformer
    >>> model = TinyTransformer(vocab=8, n_ctx=3, d_model=16, n_heads=2, d_mlp=32)
    >>> transformer_chain(model, split="sublayer").names
    ('embed', 'blocks.0.resid_mid', 'blocks.0.resid_post', 'logits')
    """
    missing = [
        a for a in ("embed", "pos_embed", "blocks", "ln_final", "unembed") if not hasattr(model, a)
    ]
    if missing:
        raise InputError(
            f"model has no {missing}: transformer_chain reads a TinyTransformer or "
            f"a TransformerLens HookedTransformer, got {type(model).__name__}"
        )
    check_choice("transformer_chain", "positions", positions, ("last", "all"))
    check_choice("transformer_chain", "split", split, ("block", "sublayer"))
    stages, names = [], ["embed"]
    for i, block in enumerate(model.blocks):
        if split == "sublayer":
            if not hasattr(block, "attn_stage"):
                raise InputError(
                    "split='sublayer' needs blocks with attn_stage/mlp_stage "
                    f"(TinyTransformer); block {i} is a {type(block).__name__}"
                )
            stages += [_Sublayer(block, "attn"), _Sublayer(block, "mlp")]
            names += [f"blocks.{i}.resid_mid", f"blocks.{i}.resid_post"]
        else:
            stages.append(block)
            names.append(f"blocks.{i}.resid_post")
    stages.append(_Unembed(model.ln_final, model.unembed, positions == "last"))
    names.append("logits")
    return LayerChain(tuple(stages), tuple(names), embed=_Embed(model.embed, model.pos_embed))

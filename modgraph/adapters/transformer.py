"""Transformers as layer chains: the residual stream between blocks is the layer.

:func:`transformer_chain` cuts a decoder-only transformer at its residual stream. It reads

- TransformerLens models, 3.x ``HookedTransformer`` and 4.x ``TransformerBridge``, through their
  hook points (``blocks.{i}.hook_resid_pre/mid/post``; a :class:`~modgraph.HookedChain`);
- Hugging Face GPT-2-style causal LMs (``GPT2LMHeadModel``: ``transformer.drop`` after the
  embeddings, ``transformer.h.{i}``, ``logits``), called with the default position ids and no
  attention mask (every position attends to all earlier ones), the same for every batch;
- any model with the attribute layout ``embed(tokens)``, ``pos_embed(tokens)``, ``blocks``,
  ``ln_final``, ``unembed``, such as the plain-PyTorch :class:`~modgraph.toys.TinyTransformer`
  shipped for tests and examples, cut into stage modules (a :class:`~modgraph.LayerChain`).

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

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .._validation import check_choice
from ..chain import LayerChain
from ..errors import InputError
from ..hooked import HookedChain

__all__ = ["transformer_chain", "is_transformer"]


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


def _last(out: Tensor) -> Tensor:
    return out[:, -1]


def _logits(out) -> Tensor:
    return out.logits if hasattr(out, "logits") else out


def _last_logits(out) -> Tensor:
    return _logits(out)[:, -1]


def _hf_call(model: nn.Module, tokens: Tensor):
    return model(input_ids=tokens, use_cache=False)


def _lens(model: nn.Module) -> bool:
    hooks = getattr(model, "hook_dict", None)
    return isinstance(hooks, Mapping) and "blocks.0.hook_resid_pre" in hooks


def _gpt2(model: nn.Module) -> bool:
    body = getattr(model, "transformer", None)
    return hasattr(model, "lm_head") and all(hasattr(body, a) for a in ("h", "drop", "wte"))


def is_transformer(model) -> bool:
    """Whether :func:`transformer_chain` reads ``model`` through hooks (TransformerLens, HF)."""
    return isinstance(model, nn.Module) and (_lens(model) or _gpt2(model))


def transformer_chain(
    model: nn.Module, *, positions: str = "last", split: str = "block"
) -> LayerChain | HookedChain:
    """The layer chain of a decoder-only transformer (see the module docstring for which).

    Parameters
    ----------
    model : nn.Module
        A TransformerLens ``HookedTransformer`` (3.x) or ``TransformerBridge`` (4.x), a Hugging
        Face GPT-2-style ``...LMHeadModel``, or a model with ``embed``, ``pos_embed``,
        ``blocks``, ``ln_final`` and ``unembed``, each callable as in TransformerLens (``embed``
        and ``pos_embed`` take the token ids). In eval mode.
    positions : {"last", "all"}
        Logits of the last position only, or of every position.
    split : {"block", "sublayer"}
        Residual stream after every block, or also between attention and MLP (``resid_mid``:
        TransformerLens models and blocks with ``attn_stage``/``mlp_stage`` such as
        :class:`TinyTransformer`; a Hugging Face GPT-2 block computes it inline, with no module
        output to read).

    Returns
    -------
    LayerChain or HookedChain
        TransformerLens: ``blocks.0.hook_resid_pre`` (the embeddings), then
        ``blocks.{i}.hook_resid_mid`` / ``blocks.{i}.hook_resid_post``, and ``logits``, named as
        in ``run_with_cache``. Hugging Face: ``transformer.drop`` (the embeddings, as
        ``hidden_states[0]``), ``transformer.h.{i}`` (as ``hidden_states[i + 1]``, except that
        HF applies ``ln_f`` to the last one), ``logits``. Others: ``embed``,
        ``blocks.{i}.resid_mid`` / ``blocks.{i}.resid_post``, ``logits``.

    Examples
    --------
    >>> from modgraph.toys import TinyTransformer
    >>> model = TinyTransformer(vocab=8, n_ctx=3, d_model=16, n_heads=2, d_mlp=32)
    >>> transformer_chain(model, split="sublayer").names
    ('embed', 'blocks.0.resid_mid', 'blocks.0.resid_post', 'logits')
    """
    check_choice("transformer_chain", "positions", positions, ("last", "all"))
    check_choice("transformer_chain", "split", split, ("block", "sublayer"))
    if _lens(model):
        return _lens_chain(model, positions, split)
    if _gpt2(model):
        return _gpt2_chain(model, positions, split)
    missing = [
        a for a in ("embed", "pos_embed", "blocks", "ln_final", "unembed") if not hasattr(model, a)
    ]
    if missing:
        raise InputError(
            f"model has no {missing}: transformer_chain reads TransformerLens models, Hugging "
            "Face GPT-2-style LMs and the TinyTransformer layout, got "
            f"{type(model).__name__}; for another model name its layers as module paths "
            "(HookedChain)"
        )
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


def _lens_chain(model: nn.Module, positions: str, split: str) -> HookedChain:
    """TransformerLens 3.x and 4.x: the residual stream at the hook points (aliases in 4.x)."""
    real = _real_path(model, "blocks.0.hook_resid_mid")
    if split == "sublayer" and real != "blocks.0.hook_resid_mid":
        raise InputError(
            f"split='sublayer': in this {type(model).__name__} 'blocks.0.hook_resid_mid' is an "
            f"alias of {real!r}, the input of the LayerNorm before the MLP; the residual "
            "connection around the MLP reads the stream before that hook, so the hook does not "
            "carry everything the MLP's output is added to (HookedChain.check finds the "
            "bypass). Use split='block', or a TransformerLens 3.x HookedTransformer"
        )
    layers = ["blocks.0.hook_resid_pre"]
    for i in range(len(model.blocks)):
        if split == "sublayer":
            layers.append(f"blocks.{i}.hook_resid_mid")
        layers.append(f"blocks.{i}.hook_resid_post")
    output = _last if positions == "last" else None
    return HookedChain(model, layers, output=output, output_name="logits", include_input=False)


def _real_path(model: nn.Module, alias: str) -> str | None:
    """The module path of the hook point a TransformerLens hook name stands for."""
    hook = model.hook_dict.get(alias)
    return next((n for n, m in model.named_modules() if m is hook), None)


def _gpt2_chain(model: nn.Module, positions: str, split: str) -> HookedChain:
    """Hugging Face GPT-2: embeddings (after dropout), every block's hidden state, logits."""
    if split == "sublayer":
        raise InputError(
            "split='sublayer' reads the residual stream between attention and MLP, which a "
            f"Hugging Face {type(model.transformer.h[0]).__name__} computes inline (no module "
            "returns it); use split='block', or a TransformerLens model"
        )
    # transformers < 5 returns (hidden, present, ...) from a block, >= 5 the hidden state
    outs = []
    handle = model.transformer.h[0].register_forward_hook(lambda m, a, o: outs.append(o))
    try:
        with torch.no_grad():
            _hf_call(model, torch.zeros(1, 1, dtype=torch.long, device=model.lm_head.weight.device))
    finally:
        handle.remove()
    key = "" if isinstance(outs[0], Tensor) else "[0]"
    layers = ["transformer.drop"]
    layers += [f"transformer.h.{i}{key}" for i in range(len(model.transformer.h))]
    output = _last_logits if positions == "last" else _logits
    return HookedChain(
        model, layers, output=output, output_name="logits", call=_hf_call, include_input=False
    )

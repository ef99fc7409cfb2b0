"""Transformers as layer chains: the residual stream between blocks is the layer.

:func:`transformer_chain` cuts a decoder-only transformer into ``embed -> blocks -> unembed``
stages. It reads any model with the attribute layout of TransformerLens' ``HookedTransformer``
(``embed(tokens)``, ``pos_embed(tokens)``, ``blocks``, ``ln_final``, ``unembed``), including
the small plain-PyTorch :class:`TinyTransformer` shipped here for tests and examples, trained in
seconds on modular addition (:func:`train_modular_addition`, the LIB paper's headline case).

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

import math

import torch
from torch import Tensor, nn

from .chain import LayerChain
from .errors import InputError

__all__ = [
    "TinyTransformer",
    "transformer_chain",
    "modular_addition_data",
    "train_modular_addition",
]


# ---------------------------------------------------------------------------- the model
class PosEmbed(nn.Module):
    """Learned positional embedding, ``pos_embed(tokens) -> (batch, positions, d)``."""

    def __init__(self, n_ctx: int, d_model: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model) / math.sqrt(d_model))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.W_pos[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)


class Attention(nn.Module):
    """Causal multi-head self-attention."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise InputError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        B, P, d = x.shape
        q, k, v = self.qkv(x).view(B, P, 3, self.n_heads, d // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, P, d_head)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.n_heads)
        mask = torch.ones(P, P, dtype=torch.bool, device=x.device).triu(1)
        pattern = scores.masked_fill(mask, float("-inf")).softmax(-1)
        return self.out((pattern @ v).transpose(1, 2).reshape(B, P, d))


class Block(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln1(x))``, then ``+ mlp(ln2(x))``."""

    def __init__(self, d_model: int, n_heads: int, d_mlp: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.attn = Attention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_mlp), nn.ReLU(), nn.Linear(d_mlp, d_model))

    def attn_stage(self, x: Tensor) -> Tensor:
        return x + self.attn(self.ln1(x))

    def mlp_stage(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.ln2(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp_stage(self.attn_stage(x))


class TinyTransformer(nn.Module):
    """A small decoder-only transformer with the attribute layout of ``HookedTransformer``.

    LayerNorms have no learned gain (see the module notes). ``forward(tokens)`` returns logits of
    shape (batch, positions, vocab).
    """

    def __init__(
        self,
        vocab: int,
        n_ctx: int,
        *,
        d_model: int = 64,
        n_heads: int = 4,
        d_mlp: int = 256,
        n_layers: int = 1,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos_embed = PosEmbed(n_ctx, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_mlp) for _ in range(n_layers))
        self.ln_final = nn.LayerNorm(d_model, elementwise_affine=False)
        self.unembed = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens) + self.pos_embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))


# ---------------------------------------------------------------------------- the chain
class _Embed(nn.Module):
    def __init__(self, embed: nn.Module, pos_embed: nn.Module):
        super().__init__()
        self.embed, self.pos_embed = embed, pos_embed

    def forward(self, tokens: Tensor) -> Tensor:
        return self.embed(tokens) + self.pos_embed(tokens)


class _Sublayer(nn.Module):
    def __init__(self, block: Block, which: str):
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
    if positions not in ("last", "all"):
        raise InputError(f"positions must be 'last' or 'all', got {positions!r}")
    if split not in ("block", "sublayer"):
        raise InputError(f"split must be 'block' or 'sublayer', got {split!r}")
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


# ---------------------------------------------------------------------------- modular addition
def modular_addition_data(p: int) -> tuple[Tensor, Tensor]:
    """All ``p**2`` inputs ``[a, b, =]`` (token ``p`` is "=") and answers ``(a + b) mod p``."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    tokens = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], 1)
    return tokens, (a.flatten() + b.flatten()) % p


def train_modular_addition(
    p: int = 23,
    *,
    d_model: int = 64,
    n_heads: int = 4,
    d_mlp: int = 256,
    steps: int = 600,
    seed: int = 0,
) -> tuple[TinyTransformer, Tensor, float]:
    """Train a 1-layer :class:`TinyTransformer` on all of modular addition mod ``p`` (seconds).

    Full-batch AdamW on every pair; the model memorises the table (no held-out split: the point
    is a trained transformer to analyse, not grokking). Deterministic given ``seed`` on CPU.

    Returns
    -------
    model, tokens, accuracy
        The model in eval mode, the ``p**2`` inputs of shape (p**2, 3), and its accuracy on them.
    """
    tokens, answers = modular_addition_data(p)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TinyTransformer(p + 1, 3, d_model=d_model, n_heads=n_heads, d_mlp=d_mlp)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(tokens)[:, -1], answers)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(tokens)[:, -1].argmax(-1) == answers).float().mean())
    return model, tokens, accuracy

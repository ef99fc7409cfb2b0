"""A tiny transformer in the HookedTransformer layout, and modular addition to train it on.

:class:`TinyTransformer` is plain PyTorch with TransformerLens' attribute layout (``embed``,
``pos_embed``, ``blocks``, ``ln_final``, ``unembed``), so
:func:`modgraph.adapters.transformer_chain` reads it like a ``HookedTransformer``; trained in
seconds on modular addition (:func:`train_modular_addition`, the LIB paper's headline case). Its
blocks also expose ``attn_stage`` / ``mlp_stage`` for ``split="sublayer"``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import InputError

__all__ = ["TinyTransformer", "modular_addition_data", "train_modular_addition"]


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


def _norm(d_model: int, layer_norm: bool) -> nn.Module:
    return nn.LayerNorm(d_model, elementwise_affine=False) if layer_norm else nn.Identity()


class Block(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln1(x))``, then ``+ mlp(ln2(x))``."""

    def __init__(self, d_model: int, n_heads: int, d_mlp: int, layer_norm: bool = True):
        super().__init__()
        self.ln1 = _norm(d_model, layer_norm)
        self.attn = Attention(d_model, n_heads)
        self.ln2 = _norm(d_model, layer_norm)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_mlp), nn.ReLU(), nn.Linear(d_mlp, d_model))

    def attn_stage(self, x: Tensor) -> Tensor:
        return x + self.attn(self.ln1(x))

    def mlp_stage(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.ln2(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp_stage(self.attn_stage(x))


class TinyTransformer(nn.Module):
    """A small decoder-only transformer with the attribute layout of ``HookedTransformer``.

    LayerNorms have no learned gain (see the module notes); ``layer_norm=False`` leaves them out
    (the layout of Nanda et al.'s grokked modular addition, :mod:`modgraph.toys.grokking`).
    ``forward(tokens)`` returns logits of shape (batch, positions, vocab); ``vocab_out`` (default
    ``vocab``) sets the width of the unembedding.
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
        layer_norm: bool = True,
        vocab_out: int | None = None,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos_embed = PosEmbed(n_ctx, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, d_mlp, layer_norm) for _ in range(n_layers)
        )
        self.ln_final = _norm(d_model, layer_norm)
        self.unembed = nn.Linear(d_model, vocab if vocab_out is None else vocab_out, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens) + self.pos_embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))


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

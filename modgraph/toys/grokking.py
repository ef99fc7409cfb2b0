"""Grokked modular addition: a real network whose mechanism is known.

Nanda et al., "Progress measures for grokking via mechanistic interpretability" (ICLR 2023): a
one-layer transformer trained on ``(a + b) mod p`` from a fraction of the table, with strong
weight decay, first memorises and then *groks*: it generalises to the whole table by computing
``cos``/``sin`` of a few *key frequencies* ``k`` of ``a`` and ``b`` and combining them by
trigonometric identities. Every MLP neuron's activation over the ``(a, b)`` grid is dominated by
one key frequency, and the logits are a sum over the key frequencies of ``cos(k (a + b - c))``.
The LIB paper (sec. 7) and its reference code analyse exactly this network; its modules should be
the key frequencies.

- :func:`train_grokked` trains the layout of Nanda et al. (no LayerNorm, ReLU MLP, ``"a b ="``)
  from scratch until the held-out accuracy is 100%.
- :func:`lib_chain` cuts it as the LIB paper does: the embeddings at all three positions, then
  the last position's residual stream after attention, after the MLP, and the logits.
- :func:`frequency_labels` names each basis direction of an analysis by its dominant frequency
  (the ground truth the modules are compared with), with the share of its power at that
  frequency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .._validation import check_int, check_real, check_seed
from ..chain import LayerChain
from ..errors import InputError
from .transformer import TinyTransformer, modular_addition_data

__all__ = ["Grokked", "train_grokked", "lib_chain", "frequency_labels", "FrequencyLabels"]


@dataclass(frozen=True)
class Grokked:
    """A grokked modular-addition transformer and its data.

    Attributes
    ----------
    model : TinyTransformer
        In eval mode, float64. ``model(tokens)[:, -1]`` are the logits of ``(a + b) mod p``.
    p : int
    tokens : Tensor of int64, shape (p**2, 3)
        Every input ``[a, b, =]``, ``a`` major (row ``a * p + b``).
    answers : Tensor of int64, shape (p**2,)
    train : Tensor of int64
        Row indices of the training split (the data the LIB paper analyses).
    test_accuracy, train_accuracy : float
    steps : int
        Optimiser steps taken.
    """

    model: TinyTransformer
    p: int
    tokens: Tensor
    answers: Tensor
    train: Tensor
    test_accuracy: float
    train_accuracy: float
    steps: int

    @property
    def train_tokens(self) -> Tensor:
        return self.tokens[self.train]


def train_grokked(  # noqa: PLR0913 (the training recipe's knobs, keyword-only)
    p: int = 59,
    *,
    seed: int = 0,
    d_model: int = 128,
    n_heads: int = 4,
    d_mlp: int = 512,
    train_fraction: float = 0.7,
    lr: float = 3e-3,
    weight_decay: float = 1.0,
    max_steps: int = 10000,
    extra_steps: int = 300,
) -> Grokked:
    """Train a one-layer transformer on ``(a + b) mod p`` until it groks.

    Full-batch AdamW (betas 0.9, 0.98) on a random ``train_fraction`` of the table, as in Nanda
    et al. (2023); training stops ``extra_steps`` after the held-out accuracy first reaches 100%
    (the weight decay then cleans up what memorisation left), or after ``max_steps`` in all.
    Trained in float32 on the CPU, returned in float64. Deterministic given ``seed`` on one
    machine.

    Raises InputError if ``p`` is not a prime of at least 5 or the options are out of range;
    a model that has not grokked by ``max_steps`` is returned with its accuracy (check
    ``test_accuracy``).
    """
    where = "train_grokked"
    p = check_int(where, "p", p, low=5)
    if any(p % q == 0 for q in range(2, math.isqrt(p) + 1)):
        raise InputError(
            f"train_grokked: p must be a prime (the Fourier mechanism needs one), got {p}"
        )
    check_seed(where, seed)
    check_real(
        where, "train_fraction", train_fraction, low=0, high=1, low_open=True, high_open=True
    )
    check_int(where, "max_steps", max_steps, low=1)
    check_int(where, "extra_steps", extra_steps, low=0)
    tokens, answers = modular_addition_data(p)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        order = torch.randperm(p * p)
        model = TinyTransformer(
            p + 1, 3, d_model=d_model, n_heads=n_heads, d_mlp=d_mlp, layer_norm=False, vocab_out=p
        )
        with torch.no_grad():  # embeddings of norm ~1, as the positional ones (groks sooner)
            model.embed.weight /= math.sqrt(d_model)
    n_train = max(1, round(train_fraction * p * p))
    train, test = order[:n_train].sort().values, order[n_train:]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    x, y = tokens[train], answers[train]
    steps, grokked_at = 0, None
    while steps < max_steps and (grokked_at is None or steps < grokked_at + extra_steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x)[:, -1], y).backward()
        opt.step()
        steps += 1
        if (
            grokked_at is None
            and steps % 50 == 0
            and _accuracy(model, tokens[test], answers[test]) == 1
        ):
            grokked_at = steps
    model = model.double().eval()
    return Grokked(
        model, p, tokens, answers, train,
        _accuracy(model, tokens[test], answers[test]) if len(test) else 1.0,
        _accuracy(model, x, y), steps,
    )  # fmt: skip


def _accuracy(model: nn.Module, tokens: Tensor, answers: Tensor) -> float:
    with torch.no_grad():
        return float((model(tokens)[:, -1].argmax(-1) == answers).double().mean())


class _Embed(nn.Module):
    def __init__(self, model: TinyTransformer):
        super().__init__()
        self.embed, self.pos_embed = model.embed, model.pos_embed

    def forward(self, tokens: Tensor) -> Tensor:
        return self.embed(tokens) + self.pos_embed(tokens)


class _AttnLast(nn.Module):
    """Embeddings (batch, 3, d) -> the last position's residual stream after attention."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return self.block.attn_stage(x)[:, -1]


class _Mlp(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return self.block.mlp_stage(x)


class _Logits(nn.Module):
    def __init__(self, model: TinyTransformer):
        super().__init__()
        self.ln_final, self.unembed = model.ln_final, model.unembed

    def forward(self, x: Tensor) -> Tensor:
        return self.unembed(self.ln_final(x))


def lib_chain(model: TinyTransformer) -> LayerChain:
    """The LIB paper's cut of a one-layer transformer, for token inputs ``[a, b, =]``.

    Layers: ``embed`` (the three positions, each a sample), ``resid_mid`` and ``resid_post``
    (the last position after attention and after the MLP) and ``logits``.
    """
    if not isinstance(model, TinyTransformer) or len(model.blocks) != 1:
        raise InputError(
            f"lib_chain: model must be a one-layer TinyTransformer, got {type(model).__name__}"
        )
    block = model.blocks[0]
    return LayerChain(
        (_AttnLast(block), _Mlp(block), _Logits(model)),
        ("embed", "blocks.0.resid_mid", "blocks.0.resid_post", "logits"),
        embed=_Embed(model),
    )


@dataclass(frozen=True)
class FrequencyLabels:
    """Each basis direction's dominant frequency over the ``(a, b)`` grid.

    Attributes
    ----------
    frequency : tuple of ndarray of int64
        Per layer, per kept direction: the frequency ``k`` in ``1 .. (p - 1) / 2`` holding the
        most of the direction's power (0: the direction is constant on the grid).
    share : tuple of ndarray of float64
        The fraction of the direction's power (variance over the grid) at that frequency.
    """

    frequency: tuple[np.ndarray, ...]
    share: tuple[np.ndarray, ...]

    def nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """Both arrays in the graph's node order (layer by layer)."""
        return np.concatenate(self.frequency), np.concatenate(self.share)


def frequency_labels(
    analysis, grokked: Grokked, *, chain: LayerChain | None = None
) -> FrequencyLabels:
    """Label every direction of ``analysis`` (of :func:`lib_chain`) by its dominant frequency.

    A direction's response over the grid is its coordinate summed over the positions of its
    layer (the embedding's ``g(a) + g(b)`` at ``a``'s and ``b``'s positions), for every input
    ``a, b``. Its 2-D discrete Fourier power at ``(u, v)`` counts towards frequency ``k`` when
    ``u`` and ``v`` are each ``0`` or ``+-k`` (mod ``p``): the terms of ``cos(k a)``,
    ``cos(k b)``, ``cos(k (a +- b))`` and their products with each other. The power at harmonics
    (``2k``, which a ReLU adds) counts towards ``2k``; the constant term towards none.
    """
    chain = lib_chain(grokked.model) if chain is None else chain
    p = grokked.p
    with torch.no_grad():
        acts = chain.forward(grokked.tokens.to(analysis.layers[0].C.device))
    # folded frequency of each DFT index, and the frequency each (u, v) cell counts towards
    fold = np.minimum(np.arange(p), p - np.arange(p))
    fu, fv = np.meshgrid(fold, fold, indexing="ij")
    cell = np.where((fu == fv) | (fu == 0) | (fv == 0), np.maximum(fu, fv), -1)
    n_freq = (p - 1) // 2
    frequency, share = [], []
    for basis, f in zip(analysis.layers, acts):
        coords = basis.transform(f.to(torch.float64))
        if coords.ndim == 3:  # (samples, positions, k): a direction's response is the sum
            coords = coords.sum(1)
        grid = coords.T.reshape(-1, p, p).cpu().numpy()
        power = np.abs(np.fft.fft2(grid)) ** 2
        total = power.reshape(len(grid), -1).sum(1) - power[:, 0, 0]
        by_freq = np.stack([power[:, cell == k].sum(1) for k in range(1, n_freq + 1)], 1)
        best = by_freq.argmax(1)
        top = by_freq[np.arange(len(grid)), best]
        constant = total <= 1e-12 * max(float(total.max(initial=0.0)), 1e-300)
        frequency.append(np.where(constant, 0, best + 1).astype(np.int64))
        share.append(np.where(constant, 0.0, top / np.where(constant, 1.0, total)))
    return FrequencyLabels(tuple(frequency), tuple(share))

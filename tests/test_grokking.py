"""The grokked modular-addition toy: its cut, and the frequency labels that score modules on it."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import modgraph as mg
from modgraph.toys.grokking import Grokked, frequency_labels, lib_chain, train_grokked
from modgraph.toys.transformer import TinyTransformer, modular_addition_data

P = 13


class _Fourier(nn.Module):
    """Token t -> (2 cos(2 pi k1 t / p), cos(2 pi k2 t / p)); the "=" token (p) -> 0."""

    def __init__(self, p, k1, k2):
        super().__init__()
        self.p, self.k = p, torch.tensor([k1, k2], dtype=torch.float64)

    def forward(self, tokens):
        angle = 2 * math.pi * tokens[..., None].double() * self.k / self.p
        f = torch.cos(angle) * torch.tensor([2.0, 1.0], dtype=torch.float64)
        return torch.where(tokens[..., None] == self.p, 0.0, f)


class _Sum(nn.Module):
    def forward(self, x):  # (batch, 3, 2) -> (batch, 2): a's features + b's
        return x.sum(1)


class _Square(nn.Module):
    def forward(self, x):  # cos(k a) + cos(k b), squared: frequency 2k and the (k, k) terms
        return torch.cat([x, x**2], -1)


def test_frequency_labels_name_each_direction_by_its_frequency():
    k1, k2 = 2, 5
    tokens, answers = modular_addition_data(P)
    chain = mg.LayerChain(
        (_Sum(), _Square(), nn.Linear(4, 3).double()), ("embed", "sum", "square", "out"),
        embed=_Fourier(P, k1, k2),
    )  # fmt: skip
    a = mg.analyze(chain, tokens, basis="pca", progress=False)
    g = Grokked(nn.Identity(), P, tokens, answers, torch.arange(len(tokens)), 1.0, 1.0, 0)
    labels = frequency_labels(a, g, chain=chain)
    # the embedding and the sum: one direction per frequency, all its power there
    for layer in (0, 1):
        assert sorted(labels.frequency[layer].tolist()) == [k1, k2]
        np.testing.assert_allclose(labels.share[layer], 1.0, atol=1e-9)
    # squares hold cos^2 (frequency 2k) and cos(k a) cos(k b) (the (k, k) cells: frequency k)
    assert set(labels.frequency[2].tolist()) <= {k1, k2, 2 * k1, P - 2 * k2}
    freq, share = labels.nodes()
    assert len(freq) == a.graph.n_nodes == len(share)


def test_lib_chain_cuts_a_one_layer_transformer_as_the_paper_does():
    tokens, _ = modular_addition_data(7)
    model = TinyTransformer(8, 3, d_model=16, n_heads=2, d_mlp=32, layer_norm=False, vocab_out=7)
    model = model.double().eval()
    chain = lib_chain(model)
    acts = chain.forward(tokens)
    assert [tuple(f.shape) for f in acts] == [(49, 3, 16), (49, 16), (49, 16), (49, 7)]
    torch.testing.assert_close(acts[-1], model(tokens)[:, -1])
    with pytest.raises(mg.InputError, match="one-layer TinyTransformer"):
        lib_chain(nn.Linear(2, 2))


def test_train_grokked_checks_its_options():
    with pytest.raises(mg.InputError, match="prime"):
        train_grokked(15)
    with pytest.raises(mg.InputError, match="train_fraction"):
        train_grokked(13, train_fraction=1.5)


def test_train_grokked_is_deterministic_and_returns_its_split():
    a = train_grokked(7, d_model=16, d_mlp=32, max_steps=3, seed=1)
    b = train_grokked(7, d_model=16, d_mlp=32, max_steps=3, seed=1)
    assert a.steps == 3 and a.p == 7 and len(a.tokens) == 49
    torch.testing.assert_close(a.train, b.train)
    assert len(a.train) == round(0.7 * 49) and len(torch.unique(a.train)) == len(a.train)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert next(a.model.parameters()).dtype == torch.float64 and not a.model.training

"""Sequence models: the transformer chain, positions as samples, random output probes."""

import copy

import pytest
import torch
from conftest import relative, sample_jacobian
from torch import nn

import modgraph as mg
from modgraph.adapters import transformer_chain
from modgraph.data import Batches
from modgraph.statistics import global_statistics
from modgraph.toys import TinyTransformer


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(d_model=16, n_heads=2, d_mlp=32) | kw
    return TinyTransformer(8, 3, **args).double().eval()


@pytest.mark.parametrize("positions", ["last", "all"])
@pytest.mark.parametrize("split", ["block", "sublayer"])
def test_chain_reproduces_logits_exactly(positions, split):
    model = tiny(n_layers=2)
    tokens = torch.randint(0, 8, (20, 3))
    chain = transformer_chain(model, positions=positions, split=split)
    with torch.no_grad():
        out = chain.forward(tokens)[-1]
        ref = model(tokens)
    assert torch.equal(out, ref[:, -1] if positions == "last" else ref)
    assert len(chain) == (4 if split == "block" else 6)


def _rotation_fixing_ones(d, seed=0):
    """A random orthogonal R with R @ 1 = 1 (it commutes with a gain-free LayerNorm)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(
        torch.cat([torch.ones(d, 1), torch.randn(d, d - 1, generator=g)], 1).double()
    )
    inner, _ = torch.linalg.qr(torch.randn(d - 1, d - 1, generator=g).double())
    return Q @ torch.block_diag(torch.eye(1).double(), inner) @ Q.T


def _rotate_residual_stream(model, R):
    """The same function with the residual stream rotated, x -> x R^T (weights compensated)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.embed.weight.copy_(m.embed.weight @ R.T)
        m.pos_embed.W_pos.copy_(m.pos_embed.W_pos @ R.T)
        for b in m.blocks:
            for reader in (b.attn.qkv, b.mlp[0]):
                reader.weight.copy_(reader.weight @ R.T)
            for writer in (b.attn.out, b.mlp[2]):
                writer.weight.copy_(R @ writer.weight)
                writer.bias.copy_(R @ writer.bias)
        m.unembed.weight.copy_(m.unembed.weight @ R.T)
    return m


@pytest.mark.parametrize(
    "variant, rotation", [("global", "none"), ("local", "none"), ("global", "sparse")]
)
@pytest.mark.integration  # slow: the unit tier stays fast
def test_residual_basis_is_invariant_to_rotating_the_stream(variant, rotation):
    model = tiny(n_layers=2)
    R = _rotation_fixing_ones(16)
    rotated = _rotate_residual_stream(model, R)
    tokens = torch.randint(0, 8, (300, 3), generator=torch.Generator().manual_seed(0))
    chain_a = transformer_chain(model, split="sublayer")
    chain_b = transformer_chain(rotated, split="sublayer")
    with torch.no_grad():
        assert relative(chain_b.forward(tokens)[-1], chain_a.forward(tokens)[-1]) < 1e-12
    a = mg.analyze(chain_a, tokens, variant=variant, rotation=rotation, progress=False)
    b = mg.analyze(chain_b, tokens, variant=variant, rotation=rotation, progress=False)
    if rotation == "sparse":  # attention couples positions; the rotation acts on every layer
        plain = mg.analyze(chain_a, tokens, variant=variant, rotation="none", progress=False)
        assert all(not torch.equal(x.C, y.C) for x, y in zip(a.layers, plain.layers))
    with torch.no_grad():
        acts_a, acts_b = chain_a.forward(tokens), chain_b.forward(tokens)
    for la, lb, fa, fb in zip(a.layers, b.layers, acts_a, acts_b):
        assert la.k == lb.k
        xa, xb = la.transform(fa).reshape(-1, la.k), lb.transform(fb).reshape(-1, lb.k)
        signs = torch.sign((xa * xb).sum(0))
        assert relative(xb * signs, xa) < 1e-7, la.name
    for wa, wb in zip(a.w, b.w):
        assert relative(wb, wa) < 1e-7


def test_positions_count_as_samples_and_M_sums_output_positions():
    model = tiny()
    chain = transformer_chain(model, positions="all")
    tokens = torch.randint(0, 8, (6, 3))
    stats = global_statistics(chain, Batches(tokens, batch_size=4, dtype=torch.float64))
    with torch.no_grad():
        acts = chain.forward(tokens)
    for l, s in enumerate(stats):
        f = acts[l].reshape(-1, acts[l].shape[-1])
        assert s.n == 18
        assert relative(s.G, torch.cov(f.T, correction=0)) < 1e-12
    # brute force: per sample, J = d(all logits)/d(resid at every position)
    M = 0
    for t in tokens:
        f = acts[1][tokens.tolist().index(t.tolist())][None]
        J = sample_jacobian(lambda f: chain.run_from(1, f), f).reshape(3 * 8, 3, 16)
        M = M + torch.einsum("opi,opj->ij", J, J)
    assert relative(stats[1].M, M / 18) < 1e-12


def test_random_output_probes_converge_to_exact_M():
    model = tiny()
    chain = transformer_chain(model, positions="all")  # 24 output rows per sample
    tokens = torch.randint(0, 8, (64, 3))
    batches = Batches(tokens, batch_size=64, dtype=torch.float64)
    exact = global_statistics(chain, batches)
    errors = {}
    for k in (1, 4, 16):
        est = [global_statistics(chain, batches, probes=k, seed=s)[1].M for s in range(4)]
        errors[k] = sum(relative(e, exact[1].M) for e in est) / len(est)
    assert errors[1] > errors[4] > errors[16] > 0
    # ~ 1/sqrt(k): quadrupling k roughly halves the error (loose bounds, 4 seeds)
    assert 1.3 < errors[1] / errors[4] < 3.2 and 1.3 < errors[4] / errors[16] < 3.2
    full = global_statistics(chain, batches, probes=24)  # as many probes as rows: exact
    assert relative(full[1].M, exact[1].M) < 1e-12


def test_analyze_a_trained_modular_addition_model():
    from modgraph.toys import train_modular_addition

    model, tokens, acc = train_modular_addition(7, d_model=32, d_mlp=64, steps=150)
    assert acc > 0.9
    a = mg.analyze(transformer_chain(model), tokens, eps=1e-3, progress=False)
    assert a.layer_names == ["embed", "blocks.0.resid_post", "logits"]
    assert a.n_samples == 49 * 3 and a.layers[-1].d == 8
    assert a.graph.n_edges > 0


def test_low_precision_model_accumulates_in_float64():
    model = tiny().float()
    tokens = torch.randint(0, 8, (40, 3))
    ref = mg.analyze(transformer_chain(model), tokens, progress=False)
    low = mg.analyze(transformer_chain(copy.deepcopy(model).bfloat16()), tokens, progress=False)
    assert low.statistics[1].G.dtype == torch.float64 and low.config["dtype"] == "bfloat16"
    assert relative(low.statistics[1].G, ref.statistics[1].G) < 0.05


def test_integer_tokens_without_an_embedding():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(mg.InputError, match="integer values .* must start with an embedding"):
        mg.analyze(net, torch.randint(0, 5, (10, 3)), progress=False)


def test_sequences_of_different_lengths_in_one_batch():
    chain = transformer_chain(tiny())
    ragged = [[torch.randint(0, 8, (3,)), torch.randint(0, 8, (2,))]]
    with pytest.raises(mg.InputError, match="different lengths"):
        mg.analyze(chain, ragged, progress=False)
    # lengths may differ between batches
    a = mg.analyze(
        chain, [torch.randint(0, 8, (5, 3)), torch.randint(0, 8, (4, 2))], progress=False
    )
    assert a.n_samples == 5 * 3 + 4 * 2


def test_bad_transformer_arguments():
    with pytest.raises(mg.InputError, match="transformer_chain reads"):
        transformer_chain(nn.Linear(2, 2))
    with pytest.raises(mg.InputError, match="'positions' parameter of transformer_chain must be"):
        transformer_chain(tiny(), positions="first")

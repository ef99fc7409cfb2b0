"""Top and bottom activating samples of every direction: exact, for any batch split, saved."""

import pytest
import torch
from conftest import mlp
from test_transformer import tiny

import modgraph as mg
from modgraph.adapters import transformer_chain
from modgraph.chain import LayerChain
from modgraph.exemplars import resolution


def _brute(analysis, acts, k):
    """Per layer: every direction's rows sorted by value on the grid, then by row."""
    out = []
    for basis, stats, f in zip(analysis.layers, analysis.statistics, acts):
        v = basis.transform(f).reshape(-1, basis.k).T  # (k_l, rows), rows in (sample, position)
        grid = torch.round(v / resolution(basis, stats)[:, None])
        P = f.shape[1] if f.ndim == 3 else 1
        sides = []
        for key in (-grid, grid):  # ascending: top first, then bottom
            order = torch.tensor(
                [sorted(range(v.shape[1]), key=lambda r, j=j: (key[j, r], r))[:k]
                 for j in range(v.shape[0])], dtype=torch.int64,
            ).reshape(v.shape[0], -1)  # fmt: skip
            sides.append((v.gather(1, order), order // P, order % P))
        out.append(sides)
    return out


def _check(analysis, acts, k):
    for l, (e, want) in enumerate(zip(analysis.exemplars, _brute(analysis, acts, k))):
        for side, (values, samples, positions) in zip((e.top, e.bottom), want):
            assert torch.equal(side.samples, samples), l
            assert torch.equal(side.positions, positions), l
            torch.testing.assert_close(side.values, values, rtol=1e-12, atol=0)  # BLAS rounding


@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("batch_size", [1, 7, 64, 500])
@pytest.mark.parametrize("basis", ["interaction", "neuron"])
def test_exact_for_any_batch_split_ties_by_sample_order(batch_size, basis):
    net = mlp(5, 16, 9, 3)
    with torch.no_grad():
        net[0].bias.sub_(1.0)  # many ReLUs off: the neuron basis has long runs of exact ties
    x = torch.randn(203, 5, dtype=torch.float64)
    a = mg.analyze(net, x, basis=basis, batch_size=batch_size, n_examples=6, progress=False)
    acts = LayerChain.from_model(net).forward(x)
    assert (acts[1] == 0).sum() > 100  # the ties are there
    _check(a, acts, 6)
    assert [e.top.values.shape for e in a.exemplars] == [(b.k, 6) for b in a.layers]
    assert not any(e.sequence for e in a.exemplars)
    assert all((e.top.values[:, 0] >= e.top.values[:, -1]).all() for e in a.exemplars)


def test_sequences_keep_the_sample_and_the_position():
    chain = transformer_chain(tiny())
    tokens = torch.randint(0, 8, (40, 3))
    a = mg.analyze(chain, tokens, batch_size=9, progress=False)
    _check(a, chain.for_inputs(tokens).forward(tokens), 8)
    assert a.exemplars[0].top.positions.max() > 0
    assert [e.sequence for e in a.exemplars] == [True, True, False]  # logits at the last position


def test_fewer_rows_than_k_keeps_them_all_and_none_is_none():
    net = mlp(3, 4, 2)
    x = torch.randn(5, 3, dtype=torch.float64)
    a = mg.analyze(net, x, n_examples=8, batch_size=2, progress=False)
    assert all(e.top.samples.shape[1] == 5 for e in a.exemplars)
    assert sorted(a.exemplars[0].top.samples[0].tolist()) == [0, 1, 2, 3, 4]
    assert mg.analyze(net, x, n_examples=0, progress=False).exemplars is None
    with pytest.raises(mg.InputError, match="'n_examples' parameter of analyze .* Got -1"):
        mg.analyze(net, x, n_examples=-1, progress=False)


def test_saved_and_loaded(tmp_path):
    net = mlp(4, 6, 2)
    a = mg.analyze(net, torch.randn(50, 4, dtype=torch.float64), progress=False)
    b = mg.load_analysis(a.save(tmp_path / "a"))
    for e1, e2 in zip(a.exemplars, b.exemplars):
        for side in ("top", "bottom"):
            for key in ("values", "samples", "positions"):
                assert torch.equal(getattr(getattr(e1, side), key), getattr(getattr(e2, side), key))
        assert e1.sequence == e2.sequence
    c = mg.load_analysis(mg.analyze(net, torch.randn(50, 4), n_examples=0, progress=False)
                         .save(tmp_path / "c"))  # fmt: skip
    assert c.exemplars is None

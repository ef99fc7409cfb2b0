"""The whole pipeline on planted networks, and persistence of an analysis."""

import numpy as np
import pytest
import torch

import modgraph as mg
from modgraph.toys.planted import planted_mlp


def planted_network(K=3, d_in=3, hidden=8, d_out=2, leak=0.0, seed=0):
    """K independent ReLU MLPs d_in -> hidden -> hidden -> d_out (module k's weights scaled by
    1 + k), hidden by permuting and rescaling the hidden neurons; cross-module weights ``leak``."""
    blocks = [[w] * K for w in (d_in, hidden, hidden, d_out)]
    scales = [[1.0 + k for k in range(K)]] * 3
    return planted_mlp(blocks, scales=scales, leak=leak, seed=seed)


@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("leak", [0.0, 1e-4])
@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_neuron_basis_recovers_planted_modules(method, leak):
    net, owners = planted_network(leak=leak)
    x = torch.randn(2000, 9, dtype=torch.float64)
    eps = 1e-3  # the leaks give interactions far below eps^1/2 ~ 0.03
    a = mg.analyze(net, x, basis="neuron", eps=eps, eps_units="absolute", progress=False)
    g = a.graph
    planted = {n: int(owners[l][i]) for n, l, i in zip(g.nodes, g.node_layer, g.node_index)}
    found = mg.find_modules(g, method=method, n_modules=3 if method == "spectral" else None)
    nodes = [n for n, c in zip(g.nodes, g.connected_nodes) if c]
    truth = np.array([planted[n] for n in nodes])
    assert mg.partition.adjusted_rand_index(truth, found.membership_array[g.connected_nodes]) == 1.0
    assert found.cost <= mg.partition.cross_module_cost(g, planted) + 1e-12


def test_save_and_load_round_trip(tmp_path):
    net, _ = planted_network()
    a = mg.analyze(
        net, torch.randn(300, 9, dtype=torch.float64), eps=1e-3, variant="local", progress=False
    )
    path = a.save(tmp_path / "analysis")
    b = mg.load_analysis(path)
    assert b.eps == a.eps and b.config == a.config and b.layer_names == a.layer_names
    for la, lb in zip(a.layers, b.layers):
        for name in ("C", "C_pinv", "mean", "eigenvalues", "gram_spectrum", "lambda_spectrum"):
            assert torch.equal(getattr(la, name), getattr(lb, name))
        assert la.ties == lb.ties and la.position == lb.position
    for sa, sb in zip(a.statistics, b.statistics):
        assert torch.equal(sa.G, sb.G) and torch.equal(sa.M, sb.M) and sa.n == sb.n
    assert all(torch.equal(wa, wb) for wa, wb in zip(a.w, b.w))
    assert b.graph.nodes == a.graph.nodes and b.graph.n_edges == a.graph.n_edges
    # saving again needs overwrite=True and replaces the old analysis whole
    with pytest.raises(mg.InputError, match="pass overwrite=True"):
        a.with_eps(1e-2).save(path)
    a.with_eps(1e-2).save(path, overwrite=True)
    assert mg.load_analysis(path).eps == 1e-2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis"]  # no temporary left
    (path / "thesis.tex").write_text("mine")  # a user's file: never deleted
    with pytest.raises(mg.InputError, match="thesis.tex"):
        a.save(path, overwrite=True)
    assert (path / "thesis.tex").read_text() == "mine" and mg.load_analysis(path).eps == 1e-2
    (tmp_path / "file").write_text("x")
    with pytest.raises(mg.InputError, match="not a directory"):
        a.save(tmp_path / "file")
    with pytest.raises(mg.InputError, match="not a saved analysis"):
        mg.load_analysis(tmp_path)


def test_with_eps_rebuilds_only_the_graph():
    net, _ = planted_network()
    x = torch.randn(300, 9, dtype=torch.float64)
    a = mg.analyze(net, x, eps=1e-6, eps_units="absolute", progress=False)
    b = a.with_eps(1e-2)
    assert b.layers is a.layers and b.graph.n_edges < a.graph.n_edges
    assert (b.graph.edges.w > 0.1).all()
    with pytest.raises(mg.InputError, match="eps must be a positive finite float"):
        a.with_eps(-1.0)

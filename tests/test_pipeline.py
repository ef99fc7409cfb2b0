"""The whole pipeline on planted networks, and persistence of an analysis."""

import numpy as np
import pytest
import torch
from torch import nn

import modgraph as mg
from modgraph.toys.planted import hide_relu_neurons


def planted_network(K=3, d_in=3, hidden=8, d_out=2, leak=0.0, seed=0):
    """K independent ReLU MLPs side by side, hidden by permuting and positively rescaling the
    hidden neurons; optional cross-module weights of size ``leak``.

    Returns the model and the planted module of every neuron of every layer.
    """
    g = torch.Generator().manual_seed(seed)
    widths = [d_in, hidden, hidden, d_out]
    mods, owners = [], [np.repeat(np.arange(K), d_in)]
    for a, b in zip(widths[:-1], widths[1:]):
        blocks = [torch.randn(b, a, generator=g, dtype=torch.float64) * (1 + k) for k in range(K)]
        W = torch.block_diag(*blocks)
        W = W + leak * (torch.rand(W.shape, generator=g, dtype=torch.float64) * 2 - 1) * (W == 0)
        lin = nn.Linear(K * a, K * b).double()
        with torch.no_grad():
            lin.weight.copy_(W)
            lin.bias.copy_(torch.randn(K * b, generator=g, dtype=torch.float64) * 0.1)
        mods.append(lin)
        owners.append(np.repeat(np.arange(K), b))
        if b != d_out:
            mods.append(nn.ReLU())
    net = nn.Sequential(*mods).eval()
    # hide the blocks: permute and rescale the neurons of every hidden ReLU layer
    with torch.no_grad():
        for i, o in ((0, 1), (2, 2)):
            perm = hide_relu_neurons(net[i], net[i + 2], g)
            owners[o] = owners[o][perm.numpy()]
    return net, owners


@pytest.mark.parametrize("leak", [0.0, 1e-4])
@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_neuron_basis_recovers_planted_modules(method, leak):
    net, owners = planted_network(leak=leak)
    x = torch.randn(2000, 9, dtype=torch.float64)
    eps = 1e-3  # the leaks give interactions far below eps^1/2 ~ 0.03
    a = mg.analyze(net, x, basis="neuron", eps=eps, progress=False)
    g = a.graph
    planted = {n: int(owners[l][i]) for n, l, i in zip(g.nodes, g.node_layer, g.node_index)}
    found = mg.find_modules(g, method=method, n_modules=3 if method == "spectral" else None)
    nodes = [n for n, c in zip(g.nodes, g.connected_nodes) if c]
    truth = np.array([planted[n] for n in nodes])
    assert mg.adjusted_rand_index(truth, found.membership_array[g.connected_nodes]) == 1.0
    assert found.cost <= mg.cross_module_cost(g, planted) + 1e-12


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
    # saving again replaces the old analysis whole; a file in the way is an error
    a.with_eps(1e-2).save(path)
    assert mg.load_analysis(path).eps == 1e-2
    (tmp_path / "file").write_text("x")
    with pytest.raises(mg.InputError, match="not a directory"):
        a.save(tmp_path / "file")
    with pytest.raises(mg.InputError, match="not a saved analysis"):
        mg.load_analysis(tmp_path)


def test_with_eps_rebuilds_only_the_graph():
    net, _ = planted_network()
    a = mg.analyze(net, torch.randn(300, 9, dtype=torch.float64), eps=1e-6, progress=False)
    b = a.with_eps(1e-2)
    assert b.layers is a.layers and b.graph.n_edges < a.graph.n_edges
    assert (b.graph.edges.w > 0.1).all()
    with pytest.raises(mg.InputError, match="eps must be a positive finite float"):
        a.with_eps(-1.0)

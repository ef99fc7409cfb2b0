"""Ablations in a basis: exactness against brute force, planted modules, faithfulness, bad input.

Everything runs in float64; tolerances are stated where used (1e-12 relative for identities that
only reorder float64 arithmetic, 1e-10 absolute for "unchanged" outputs of planted modules).
"""

import itertools
import json

import numpy as np
import pytest
import torch
from conftest import mlp
from torch import nn

import modgraph as mg
from modgraph import circuits as ab
from modgraph.chain import LayerChain
from modgraph.circuits import faithfulness
from modgraph.errors import InputError
from modgraph.toys.planted import planted_mlp

BLOCK_IN = (2, 3, 2)  # input dims of the planted modules
BLOCK_H1 = (4, 5, 3)
BLOCK_H2 = (3, 4, 3)
BLOCK_OUT = (1, 2, 1)
BLOCK_SCALE = (1.0, 2.5, 6.0)  # distinct scales: no eigenvalue ties across modules


def _groups(sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


def planted_net(seed=0):
    """ReLU MLP of 3 independent modules hidden by hidden-neuron permutations and rescalings.

    Returns the net and, per layer of its chain, the planted module of every neuron.
    """
    blocks = [BLOCK_IN, BLOCK_H1, BLOCK_H2, BLOCK_OUT]
    return planted_mlp(blocks, scales=[(1, 1, 1), (1, 1, 1), BLOCK_SCALE], bias=0.3, seed=seed)


def product_data(n_per=8, seed=1):
    """Every combination of per-module samples: the empirical distribution is a product, so
    activations of different modules have exactly zero sample covariance."""
    gen = torch.Generator().manual_seed(seed)
    parts = [torch.randn(n_per, d, generator=gen, dtype=torch.float64) for d in BLOCK_IN]
    return torch.stack([torch.cat(c) for c in itertools.product(*[list(p) for p in parts])])


@pytest.fixture(scope="module")
def planted():
    net, truth = planted_net()
    x = product_data()
    analyses = {
        b: mg.analyze(net, x, basis=b, progress=False, eps=1e-6) for b in ("neuron", "interaction")
    }
    return net, truth, x, analyses


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(3)
    net = mlp(4, 7, 6, 3)
    x = torch.randn(300, 4, dtype=torch.float64)
    return net, x, mg.analyze(net, x, progress=False)


@pytest.fixture(scope="module")
def small_bases(small):
    net, x, a = small
    others = {b: mg.analyze(net, x, basis=b, progress=False) for b in ("pca", "neuron")}
    return {"interaction": a, **others}


# ---------------------------------------------------------------------------- exactness
@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("mode", ab.MODES)
def test_ablating_nothing_reproduces_the_model(small, mode):
    net, x, a = small
    y = ab.run_ablated(net, a, x, [], mode=mode, batch_size=64)
    assert (y - net(x)).abs().max() < 1e-12
    y = ab.run_edge_ablated(net, a, x, [], mode=mode, batch_size=64)
    assert (y - net(x)).abs().max() < 1e-12


def _layer_acts(net, x):
    return LayerChain.from_model(net).forward(x)


def test_ablating_a_whole_layer_runs_the_model_on_its_mean():
    torch.manual_seed(4)
    net = mlp(3, 8, 6, 2, relu_after=[1])  # layer "0" is a rank-3 linear image in 8 dims
    with torch.no_grad():
        net[3].weight[:, 0] = 0  # neuron 0 of layer "2" varies but is never read
    x = torch.randn(400, 3, dtype=torch.float64)
    a = mg.analyze(net, x, progress=False, eps=1e-6)
    chain = LayerChain.from_model(net)
    acts = chain.forward(x)
    for l, basis in enumerate(a.layers):
        nodes = [f"{l}:{i}" for i in range(basis.k)]
        y = ab.run_ablated(net, a, x, nodes, batch_size=128)
        f = acts[l]
        r = (f - basis.mean) - ((f - basis.mean) @ basis.C.T) @ basis.C_pinv.T
        # exact: the ablated run is the model on mean + r, the part the basis dropped
        assert (y - chain.run_from(l, basis.mean + r)).abs().max() < 1e-12
        # the dropped part's effect, against the model run on the plain layer mean
        on_mean = chain.run_from(l, basis.mean.expand_as(f))
        assert mg.loss.behavioral_loss(y, on_mean) < a.eps
        if l == 2:  # the test has teeth: the basis did drop a varying direction here
            assert basis.k < basis.d and r.norm(dim=1).max() > 0.1


def _brute_nodes(net, a, x, nodes, mode):
    """Per-layer loop with the full formula f' = mean + C_pinv f_hat' + r."""
    chain = LayerChain.from_model(net)
    f = x
    for l in range(len(a.layers)):
        if l > 0:
            f = chain.stages[l - 1](f)
        idx = [int(n.split(":")[1]) for n in nodes if int(n.split(":")[0]) == l]
        if not idx:
            continue
        b = a.layers[l]
        f_hat = (f - b.mean) @ b.C.T
        r = (f - b.mean) - f_hat @ b.C_pinv.T
        new = f_hat.clone()
        new[:, idx] = 0.0 if mode == "mean" else ((0 - b.mean) @ b.C.T)[idx]
        f = b.mean + new @ b.C_pinv.T + r
    return f


@pytest.mark.parametrize("basis", ["interaction", "pca", "neuron"])
@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_node_ablation_matches_brute_force(small, small_bases, basis, mode):
    net, x, _ = small
    a = small_bases[basis]
    nodes = ["0:1", "1:0", "1:2", "2:2", "3:1"]  # k = (4, 7, 3, 3): rank of M
    y = ab.run_ablated(net, a, x, nodes, mode=mode, batch_size=100)
    want = _brute_nodes(net, a, x, nodes, mode)
    assert (y - want).abs().max() < 1e-12 * want.abs().max()
    assert (y - net(x)).abs().max() > 1e-3


def test_zero_and_resample_modes_in_the_neuron_basis(small, small_bases):
    net, x, _ = small
    a = small_bases["neuron"]
    chain = LayerChain.from_model(net)
    hidden = [f"2:{i}" for i in range(6)]
    y = ab.run_ablated(net, a, x, hidden, mode="zero")
    assert (y - chain.run_from(2, torch.zeros(len(x), 6, dtype=torch.float64))).abs().max() < 1e-12
    # every input direction resampled = the model on permuted inputs; nobody keeps its own
    inputs = [f"0:{i}" for i in range(4)]
    xs = x[:50]
    y = ab.run_ablated(net, a, xs, inputs, mode="resample", batch_size=50, seed=7)
    perm = torch.cdist(y, net(xs)).argmin(1)
    assert (y - net(xs[perm])).abs().max() < 1e-12
    assert (perm != torch.arange(50)).all() and len(set(perm.tolist())) == 50
    again = ab.run_ablated(net, a, xs, inputs, mode="resample", batch_size=50, seed=7)
    assert torch.equal(y, again)


# ---------------------------------------------------------------------------- edges
def _brute_edges(net, a, x, edges):
    """Target i of layer l+1 recomputed from layer l with its removed sources at the mean."""
    chain = LayerChain.from_model(net)
    f = x
    for l, stage in enumerate(chain.stages):
        src, dst = a.layers[l], a.layers[l + 1]
        nxt = stage(f)
        f_hat_src = (f - src.mean) @ src.C.T
        new_hat = (nxt - dst.mean) @ dst.C.T
        old_hat = new_hat.clone()
        for i in range(dst.k):
            S = [int(s.split(":")[1]) for s, t in edges if t == f"{l + 1}:{i}"]
            if S:
                g = f - f_hat_src[:, S] @ src.C_pinv[:, S].T
                new_hat[:, i] = ((stage(g) - dst.mean) @ dst.C.T)[:, i]
        f = nxt + (new_hat - old_hat) @ dst.C_pinv.T
    return f


def test_edge_ablation_matches_brute_force(small):
    net, x, a = small
    for edges in (
        [("1:2", "2:0")],
        [("1:2", "2:0"), ("1:3", "2:0"), ("1:3", "2:2"), ("0:0", "1:1"), ("2:1", "3:2")],
    ):
        y = ab.run_edge_ablated(net, a, x, edges, batch_size=100)
        want = _brute_edges(net, a, x, edges)
        assert (y - want).abs().max() < 1e-12 * want.abs().max()
        assert (y - net(x)).abs().max() > 1e-4


def test_linear_edge_removal_is_exact_for_linear_stages():
    net = mlp(4, 6, 5, 3, relu_after=[])
    x = torch.randn(200, 4, dtype=torch.float64)
    a = mg.analyze(net, x, progress=False)
    edges = [("0:0", "1:1"), ("0:2", "1:1"), ("1:0", "2:2"), ("2:1", "3:0")]
    exact = ab.run_edge_ablated(net, a, x, edges)
    linear = ab.run_edge_ablated(net, a, x, edges, method="linear")
    assert (exact - linear).abs().max() < 1e-12 * exact.abs().max()


def test_linear_faithfulness_tracks_exact_on_a_relu_net(small):
    """The first-order removal against the exact one: close while few edges are removed."""
    net, x, a = small
    exact = ab.faithfulness_curve(net, a, x, n_points=8)
    linear = ab.faithfulness_curve(net, a, x, n_points=8, method="linear")
    assert np.array_equal(exact.n_edges_kept, linear.n_edges_kept)
    few = exact.n_edges_kept >= exact.n_edges_total // 2  # at most half the edges removed
    rel = np.abs(linear.loss - exact.loss)[few] / np.maximum(exact.loss[few], 1e-30)
    assert np.all(rel[exact.loss[few] > 0] < 1.0), rel  # measured: up to 0.77


# ---------------------------------------------------------------------------- planted modules
def _module_nodes(labels_per_layer, k):
    return [f"{l}:{i}" for l, lab in enumerate(labels_per_layer) for i in np.flatnonzero(lab == k)]


def _direction_modules(a, truth):
    """Planted module of every basis direction (where its weight lies), and its purity."""
    out, purity = [], 1.0
    for basis, lab in zip(a.layers, truth):
        mass = np.stack([basis.C[:, lab == k].square().sum(1).numpy() for k in range(3)], axis=1)
        mass /= mass.sum(1, keepdims=True)
        out.append(mass.argmax(1))
        purity = min(purity, float(mass.max(1).min()))
    return out, purity


@pytest.mark.parametrize("basis", ["neuron", "interaction"])
def test_ablating_a_planted_module_leaves_the_others_unchanged(planted, basis):
    net, truth, x, analyses = planted
    a = analyses[basis]
    if basis == "neuron":
        labels = truth
    else:  # with exact block structure (product data, distinct scales) directions separate
        labels, purity = _direction_modules(a, truth)
        assert purity > 1 - 1e-12
    ref = net(x)
    out_groups = _groups(BLOCK_OUT)
    for k in range(3):
        y = ab.run_ablated(net, a, x, _module_nodes(labels, k))
        others = out_groups != k
        assert (y[:, others] - ref[:, others]).abs().max() < 1e-10
        assert (y[:, ~others] - ref[:, ~others]).abs().max() > 1e-2


def test_module_tools_on_planted_modules(planted, monkeypatch):
    net, truth, x, analyses = planted
    a = analyses["neuron"]
    membership = {f"{l}:{i}": int(m) for l, lab in enumerate(truth) for i, m in enumerate(lab)}
    metric = lambda y: float(y[:, 0].mean())  # noqa: E731
    res = ab.module_ablation(net, a, x, membership, metric=metric)
    assert res.labels == ("0", "1", "2")
    assert np.all(res.loss_removed > 1e-3)
    # independent modules: keeping one alone costs exactly what removing the others does
    for k in range(3):
        assert abs(res.loss_alone[k] - (res.loss_removed.sum() - res.loss_removed[k])) < 1e-10
    assert abs(res.metric_removed[1] - res.metric_full) < 1e-12  # module 1 never writes y_0
    json.dumps(res.to_dict())

    io = ab.module_io(net, a, x, membership)
    for k in range(3):
        assert io.written_by(k) == np.flatnonzero(_groups(BLOCK_OUT) == k).tolist()
        assert io.read_by(k) == np.flatnonzero(_groups(BLOCK_IN) == k).tolist()
        assert np.all(io.writes[k][_groups(BLOCK_OUT) != k] < 1e-20)

    circuit = ab.smallest_circuit(net, a, x, membership, output=[1, 2], eps=1e-8)
    assert circuit.modules == ("1",) and circuit.search == "exhaustive"
    assert circuit.loss < 1e-20
    monkeypatch.setattr(faithfulness, "EXHAUSTIVE_MAX_MODULES", 0)
    greedy = ab.smallest_circuit(net, a, x, membership, output=[1, 2], eps=1e-8)
    assert greedy.modules == ("1",) and greedy.search == "greedy"


# ---------------------------------------------------------------------------- faithfulness
def test_faithfulness_curve_on_planted_modules(planted):
    net, truth, x, analyses = planted
    a = analyses["neuron"]
    curve = ab.faithfulness_curve(net, a, x, n_points=12)
    n_nonzero = sum(int((w > 0).sum()) for w in a.w)
    assert curve.n_edges_kept[0] == curve.n_edges_total == sum(w.numel() for w in a.w)
    assert curve.n_edges_kept[-1] == 0 and curve.loss[0] == 0
    # removing only edges of strength 0 (between planted modules) changes nothing
    free = curve.n_edges_kept >= n_nonzero
    assert free.sum() >= 2 and np.all(curve.loss[free] < 1e-20)
    assert curve.loss[-1] > 1e-2
    d = json.loads(json.dumps(curve.to_dict()))
    assert d["basis"] == "neuron" and len(d["loss"]) == len(curve.n_edges_kept)


def test_plot_faithfulness(planted):
    import matplotlib

    matplotlib.use("Agg")
    net, _, x, analyses = planted
    curves = {b: ab.faithfulness_curve(net, a, x[::4], n_points=3) for b, a in analyses.items()}
    ax = mg.plotting.plot_faithfulness(curves)
    assert ax.get_yscale() == "log" and ax.get_xlabel() and ax.get_ylabel()
    assert len(ax.get_legend().get_texts()) == 2
    with pytest.raises(InputError, match="curves"):
        mg.plotting.plot_faithfulness({})


# ---------------------------------------------------------------------------- bad input
def test_bad_input_is_reported(small):
    net, x, a = small
    for node, match in [
        ("9:0", "nodes: unknown node id '9:0'.*outside 0..3"),
        ("1:99", "nodes: unknown node id '1:99'.*5 basis directions"),
        ("a:b", "nodes must hold node ids.*'a:b'"),
    ]:
        with pytest.raises(InputError, match=match):
            ab.run_ablated(net, a, x, [node])
    with pytest.raises(InputError, match="'nodes' parameter of run_ablated must be a list"):
        ab.run_ablated(net, a, x, "1:0")
    with pytest.raises(InputError, match="edges: .*adjacent layers"):
        ab.run_edge_ablated(net, a, x, [("0:0", "2:0")])
    with pytest.raises(
        InputError, match="'mode' parameter of run_ablated must be one of.*'median'"
    ):
        ab.run_ablated(net, a, x, ["1:0"], mode="median")
    with pytest.raises(InputError, match="mode='resample'.*data batch 0 has 1 sample"):
        ab.run_ablated(net, a, x[:5], ["3:0"], mode="resample", batch_size=1)


def test_mismatched_model_and_analysis(small):
    net, x, a = small
    deeper = nn.Sequential(*net, nn.ReLU(), nn.Linear(3, 3)).double().eval()
    with pytest.raises(InputError, match="model does not match analysis.*layers"):
        ab.run_ablated(deeper, a, x, ["1:0"])
    wider = mlp(4, 9, 6, 3)
    with pytest.raises(InputError, match="model does not match analysis: layer '1' has 9.*on 7"):
        ab.run_ablated(wider, a, x, ["1:0"])
    with pytest.raises(InputError, match="'analysis' parameter of run_ablated must be an Analysis"):
        ab.run_ablated(net, None, x, ["1:0"])

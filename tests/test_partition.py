"""Tests of module finding: planted modules, the paper's cost, significance, input checking."""

import itertools
import json
import math

import networkx as nx
import numpy as np
import pytest

from modgraph.errors import InputError
from modgraph.graph import InteractionGraph
from modgraph.partition import (
    ModuleResult,
    adjusted_rand_index,
    cost_curve,
    cross_module_cost,
    find_modules,
    module_significance,
)
from modgraph.partition.objective import ConnectedGraph
from modgraph.partition.spectral import refine_moves

EPS = 0.01  # sqrt(EPS) = 0.1
THR = 0.1


def planted(
    *,
    n_blocks=3,
    per_block=(5, 7, 4, 6),
    n_isolated=1,
    noise=0.0,
    seed=0,
):
    """Layered graph whose modules are known: block-diagonal ``w`` hidden by permutations.

    Every layer has ``per_block[l]`` directions in each of ``n_blocks`` blocks plus ``n_isolated``
    directions without any edge. Within a block, ``w`` is well above ``eps^1/2`` (strength 1.5 to
    3); between blocks it is at most ``eps^1/2`` (so those edges must vanish), except for a
    fraction ``noise`` of weak kept edges (strength 0.05 to 0.3). Nodes are then shuffled within
    each layer. Returns the graph and the planted labels (``-1`` for isolated nodes).
    """
    rng = np.random.default_rng(seed)
    blocks = []
    for m in per_block:
        b = np.concatenate([np.repeat(np.arange(n_blocks), m), np.full(n_isolated, -1)])
        blocks.append(rng.permutation(b))
    w = []
    for l in range(len(per_block) - 1):
        same = (blocks[l + 1][:, None] == blocks[l][None, :]) & (blocks[l + 1][:, None] >= 0)
        strong = THR * np.exp(rng.uniform(1.5, 3.0, same.shape))
        weak = rng.uniform(0.0, THR, same.shape)
        weak[rng.random(same.shape) < 0.2] = THR  # exactly at the threshold: dropped too
        kept_noise = (rng.random(same.shape) < noise) & ~same
        kept_noise &= (blocks[l + 1][:, None] >= 0) & (blocks[l][None, :] >= 0)
        weak[kept_noise] = THR * np.exp(rng.uniform(0.05, 0.3, int(kept_noise.sum())))
        w.append(np.where(same, strong, weak))
    importance = [rng.random(len(b)) for b in blocks]
    names = tuple(f"layer{l}" for l in range(len(per_block)))
    return InteractionGraph(names, importance, w, eps=EPS), np.concatenate(blocks)


def random_graph(seed=0, sizes=(12, 12, 12, 12)):
    """Dense graph without modules: every entry an independent strength in (0.5, 2)."""
    rng = np.random.default_rng(seed)
    w = [THR * np.exp(rng.uniform(0.5, 2.0, (sizes[l + 1], sizes[l]))) for l in range(3)]
    return InteractionGraph(("a", "b", "c", "d"), [np.ones(k) for k in sizes], w, eps=EPS)


# ---------------------------------------------------------------------------- reference helpers
def ari_pair_counting(a, b):
    """Adjusted Rand index from an explicit loop over all pairs of items."""
    n11 = n10 = n01 = n00 = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        same_a, same_b = a[i] == a[j], b[i] == b[j]
        n11 += same_a and same_b
        n10 += same_a and not same_b
        n01 += same_b and not same_a
        n00 += not same_a and not same_b
    total = n11 + n10 + n01 + n00
    expected = (n11 + n10) * (n11 + n01) / total
    top = ((n11 + n10) + (n11 + n01)) / 2
    return 1.0 if top == expected else (n11 - expected) / (top - expected)


def cost_by_networkx_loop(graph, labels):
    G = graph.to_networkx()
    module = dict(zip(graph.nodes, labels))
    return sum(d["strength"] for a, b, d in G.edges(data=True) if module[a] != module[b])


# ---------------------------------------------------------------------------- ARI and cost
@pytest.mark.parametrize("seed", range(6))
def test_adjusted_rand_index_matches_pair_counting(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    a = rng.integers(0, rng.integers(1, 6), n)
    b = np.where(rng.random(n) < 0.6, a, rng.integers(0, 4, n))
    assert adjusted_rand_index(a, b) == pytest.approx(ari_pair_counting(a, b), abs=1e-12)


def test_adjusted_rand_index_special_cases():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand_index(a, 7 - a) == 1.0  # renaming labels changes nothing
    assert adjusted_rand_index(a, ["x", "x", "y", "y", "z", "z"]) == 1.0
    assert adjusted_rand_index(np.zeros(5), np.zeros(5)) == 1.0
    assert adjusted_rand_index(np.arange(5), np.arange(5)) == 1.0
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) < 0
    with pytest.raises(InputError, match="labels_a and labels_b"):
        adjusted_rand_index([0, 1], [0, 1, 2])


def test_cross_module_cost_matches_networkx_loop():
    g, _ = planted(noise=0.1, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        labels = rng.integers(0, 4, g.n_nodes)
        want = cost_by_networkx_loop(g, labels)
        assert cross_module_cost(g, labels) == pytest.approx(want, rel=1e-12)
        assert cross_module_cost(g, dict(zip(g.nodes, labels.tolist()))) == pytest.approx(want)
    assert cross_module_cost(g, np.zeros(g.n_nodes, int)) == 0.0
    every_edge_cut = cross_module_cost(g, np.arange(g.n_nodes))
    assert every_edge_cut == pytest.approx(g.edges.strength.sum())


def test_cross_module_cost_rejects_bad_memberships():
    g, _ = planted()
    with pytest.raises(InputError, match="missing"):
        cross_module_cost(g, {"0:0": 1})
    with pytest.raises(InputError, match="unknown node ids"):
        cross_module_cost(g, {**dict.fromkeys(g.nodes, 0), "9:9": 0})
    with pytest.raises(InputError, match="one label per node"):
        cross_module_cost(g, [0, 1])


# ---------------------------------------------------------------------------- planted modules
@pytest.mark.parametrize("method", ["leiden", "spectral"])
@pytest.mark.parametrize("noise", [0.0, 0.05])
@pytest.mark.parametrize("seed", [0, 1])
def test_planted_modules_are_recovered(method, noise, seed):
    g, truth = planted(noise=noise, seed=seed)
    r = find_modules(g, method=method)
    labels = r.membership_array
    kept = truth >= 0
    np.testing.assert_array_equal(labels[~kept], -1)  # isolated nodes are unassigned
    assert adjusted_rand_index(labels[kept], truth[kept]) == 1.0
    assert r.n_modules == 3
    assert r.cost <= cross_module_cost(g, truth) + 1e-12
    if noise == 0.0:
        assert r.cost == 0.0 and r.info["n_components"] == 3
    else:
        assert r.cost > 0 and r.info["n_components"] == 1  # noise edges join the blocks


@pytest.mark.parametrize("quality", ["modularity", "cpm"])
def test_leiden_hits_requested_number_of_modules(quality):
    g, truth = planted(noise=0.05, n_blocks=4, seed=2)
    r = find_modules(g, method="leiden", quality=quality, n_modules=4)
    kept = truth >= 0
    assert r.n_modules == 4
    assert adjusted_rand_index(r.membership_array[kept], truth[kept]) == 1.0
    assert r.info["resolution_used"] > 0
    r6 = find_modules(g, method="leiden", quality=quality, n_modules=6)
    assert r6.n_modules == 6 and r6.cost > r.cost


def test_cpm_default_resolution_finds_planted_modules():
    g, truth = planted(noise=0.05, seed=4)
    r = find_modules(g, method="leiden", quality="cpm")
    kept = truth >= 0
    assert adjusted_rand_index(r.membership_array[kept], truth[kept]) == 1.0
    assert r.info["resolution_used"] == pytest.approx(ConnectedGraph(g).density)


def test_spectral_with_more_modules_than_planted_covers_every_node_once():
    g, truth = planted(noise=0.05, seed=1)
    r = find_modules(g, method="spectral", n_modules=5)
    labels = r.membership_array
    assert r.n_modules == 5
    assert sorted(set(labels[truth >= 0].tolist())) == [0, 1, 2, 3, 4]
    assert sorted(n for m in r.modules for n in m) == sorted(np.array(g.nodes)[truth >= 0])
    assert r.unassigned == [n for n, t in zip(g.nodes, truth) if t < 0]
    assert r.cost == pytest.approx(cost_by_networkx_loop(g, labels))


@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_fewer_modules_than_components_merges_components_at_no_cost(method):
    g, truth = planted(noise=0.0, n_blocks=4)
    r = find_modules(g, method=method, n_modules=2)
    assert r.n_modules == 2 and r.cost == 0.0
    kept = truth >= 0
    # Each planted block (a component) lies inside one module.
    for b in range(4):
        assert len(set(r.membership_array[kept & (truth == b)].tolist())) == 1


def test_refinement_reaches_a_local_optimum_without_emptying_modules():
    g, _ = planted(noise=0.2, seed=5)
    sub = ConnectedGraph(g)
    rng = np.random.default_rng(0)
    start = rng.integers(0, 4, sub.n)
    labels, n_moves = refine_moves(sub.A, start)
    assert n_moves > 0 and sub.cost(labels) < sub.cost(start)
    assert np.all(np.bincount(labels, minlength=4) > 0)
    # Brute force: no single move of one node to another module lowers the cost further.
    cost = sub.cost(labels)
    for i in range(sub.n):
        for m in range(4):
            if m != labels[i] and np.sum(labels == labels[i]) > 1:
                trial = labels.copy()
                trial[i] = m
                assert sub.cost(trial) >= cost - 1e-9


@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_same_seed_same_modules(method):
    g = random_graph(seed=3)
    a = find_modules(g, method=method, seed=11)
    b = find_modules(g, method=method, seed=11)
    assert a.membership == b.membership and a.cost == b.cost
    c = find_modules(g, method=method, n_modules=3, seed=5)
    d = find_modules(g, method=method, n_modules=3, seed=5)
    assert c.membership == d.membership


def test_result_repeats_from_params_and_serialises():
    g, _ = planted(noise=0.05)
    r = find_modules(g, method="leiden", quality="cpm", resolution=0.05, seed=3)
    assert isinstance(r, ModuleResult)
    assert find_modules(g, **r.params).membership == r.membership
    d = json.loads(json.dumps(r.to_dict()))
    assert d["membership"] == r.membership and d["n_modules"] == r.n_modules
    assert d["params"]["resolution"] == 0.05 and d["method"] == "leiden"
    with pytest.raises(AttributeError):
        r.cost = 0.0


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"method": "louvain"},
            r"'method' parameter of find_modules must be one of .*Got 'louvain'",
        ),
        (
            {"quality": "surprise"},
            r"'quality' parameter of find_modules must be one of .*Got 'surprise'",
        ),
        (
            {"n_modules": 0},
            r"'n_modules' parameter of find_modules must be an int in \[1, 66\]. Got 0 ",
        ),
        (
            {"n_modules": 73},
            r"'n_modules' parameter of find_modules must be an int in \[1, 66\]. Got 73 ",
        ),
        ({"n_modules": 2.0}, r"'n_modules' parameter of find_modules must be an int.*Got 2.0 "),
        ({"n_modules": True}, r"'n_modules' parameter of find_modules must be an int.*Got True "),
        (
            {"resolution": -1.0},
            r"'resolution' parameter of find_modules must be a positive finite float. Got -1.0 ",
        ),
        (
            {"resolution": math.nan},
            r"'resolution' parameter of find_modules must be a positive finite float. Got nan ",
        ),
        (
            {"resolution": math.inf, "quality": "cpm"},
            r"'resolution' parameter of find_modules must be .*Got inf ",
        ),
        (
            {"method": "spectral", "resolution": 1.0},
            r"'resolution' parameter of find_modules must be None with method='spectral'",
        ),
        (
            {"seed": -1},
            r"'seed' parameter of find_modules must be an int in \[0, 2147483647\]. Got -1 ",
        ),
        ({"seed": None}, r"'seed' parameter of find_modules must be an int.*Got None "),
        (
            {"n_iterations": 0},
            r"'n_iterations' parameter of find_modules must be positive, or negative",
        ),
        (
            {"refine": "yes"},
            r"'refine' parameter of find_modules must be True or False. Got 'yes' ",
        ),
    ],
)
def test_find_modules_rejects_bad_arguments(kwargs, match):
    g, truth = planted()
    assert int((truth >= 0).sum()) == 66  # the bound quoted in the messages
    with pytest.raises(InputError, match=match):
        find_modules(g, **kwargs)


def test_graph_without_edges_is_an_input_error():
    g = InteractionGraph(("a", "b"), (np.ones(3), np.ones(2)), (np.full((2, 3), THR),), eps=EPS)
    assert g.n_edges == 0
    for method in ("leiden", "spectral"):
        with pytest.raises(InputError, match="graph has no edges.*eps"):
            find_modules(g, method=method)
    with pytest.raises(
        InputError, match="'graph' parameter of find_modules must be an InteractionGraph"
    ):
        find_modules(nx.Graph())


# ---------------------------------------------------------------------------- cost curve
def test_spectral_cost_curve():
    g, truth = planted(noise=0.05, seed=6)
    curve = cost_curve(g, method="spectral", ks=range(1, 8))
    np.testing.assert_array_equal(curve.ks, np.arange(1, 8))
    np.testing.assert_array_equal(curve.n_modules, curve.ks)
    assert curve.cost[0] == 0.0
    assert np.all(curve.cost[1:] > 0)
    planted_cost = cross_module_cost(g, truth)
    assert curve.cost[2] <= planted_cost + 1e-12
    assert np.all(curve.cost[3:] > curve.cost[2])  # splitting a planted module costs more
    one = find_modules(g, method="spectral", n_modules=3)
    assert curve.cost[2] == pytest.approx(one.cost)


def test_leiden_cost_curve_spans_one_module_per_component_to_singletons():
    g, _ = planted(noise=0.05, seed=6)
    curve = cost_curve(g, method="leiden", quality="cpm")
    assert np.all(np.diff(curve.resolutions) > 0)
    assert curve.n_modules[0] <= 3
    assert curve.n_modules[-1] == 66 and curve.cost[-1] == pytest.approx(g.edges.strength.sum())
    # More modules never come with a lower cost than the planted 3 here.
    assert np.all(curve.cost[curve.n_modules > 3] > curve.cost[curve.n_modules == 3].min())
    with pytest.raises(
        InputError, match="'ks' parameter of cost_curve must be None with method='leiden'"
    ):
        cost_curve(g, method="leiden", ks=[2])
    with pytest.raises(
        InputError, match=r"'resolutions\[...\]' parameter of cost_curve must be a positive"
    ):
        cost_curve(g, method="leiden", resolutions=[0.1, -1.0])


# ---------------------------------------------------------------------------- significance
@pytest.mark.parametrize(
    "method, refine", [("leiden", True), ("spectral", False), ("spectral", True)]
)
def test_planted_modules_are_significant(method, refine):
    g, _ = planted(noise=0.05, seed=7)
    r = find_modules(g, method=method, refine=refine)
    sig = module_significance(g, r, n_null=20, seed=0)
    assert sig.cost == r.cost and sig.null_costs.shape == (20,)
    assert sig.p_value == 1 / 21  # every null graph costs more
    assert sig.params["refine"] == refine
    if refine and method == "spectral":
        # Refinement erodes null modules to single nodes in some null graphs and not in others:
        # the null costs are bimodal, so only the rank (p_value) is informative.
        assert np.min(sig.null_costs) < 0.1 * np.max(sig.null_costs)
    else:
        assert sig.z < -5


def test_graph_without_modules_is_not_significant():
    g = random_graph(seed=8)
    r = find_modules(g, method="spectral", n_modules=3)
    sig = module_significance(g, r, n_null=20, seed=0)
    assert sig.params["n_modules"] == 3
    assert abs(sig.z) < 3 and sig.p_value > 0.05


def test_significance_rejects_bad_arguments():
    g, _ = planted(noise=0.05)
    r = find_modules(g)
    with pytest.raises(
        InputError, match="'n_null' parameter of module_significance must be an int >= 2. Got 1 "
    ):
        module_significance(g, r, n_null=1)
    with pytest.raises(
        InputError, match="'result' parameter of module_significance must be a ModuleResult"
    ):
        module_significance(g, r.membership)

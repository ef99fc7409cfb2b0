"""Tests of module finding: planted modules, the paper's cost, significance, input checking."""

import dataclasses
import itertools
import json
import math

import networkx as nx
import numpy as np
import pytest
import torch
from conftest import mlp

import modgraph as mg
from modgraph.errors import InputError
from modgraph.graph import InteractionGraph
from modgraph.partition import (
    CostCurve,
    ModuleResult,
    adjusted_rand_index,
    cost_curve,
    cross_module_cost,
    find_modules,
    module_significance,
    normalized_cut,
    shuffled_graph,
)
from modgraph.partition.mapequation import (
    consolidate,
    merge_along_layers,
    merge_by_modularity,
    merge_chains,
)
from modgraph.partition.null import null_graph, null_test
from modgraph.partition.objective import ConnectedGraph, canonical
from modgraph.partition.refine import _State, merge_to, move_gains, refine_ncut
from modgraph.partition.solvers import (
    FINER_KS,
    GROUPING_MAX_MODULES,
    LEIDEN_RESTARTS,
    _search,
    _two_groupings,
    along_layers,
    best_split,
    labels_at_k,
    off_layers,
)
from modgraph.partition.spectral import kmeans

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


def ncut_by_networkx_loop(graph, labels):
    """Normalized cut from networkx's edge list: sum over modules of cut / volume."""
    G = graph.to_networkx()
    module = dict(zip(graph.nodes, labels))
    cut, vol = {}, {}
    for a, b, d in G.edges(data=True):
        for x, y in ((a, b), (b, a)):
            vol[module[x]] = vol.get(module[x], 0.0) + d["strength"]
            if module[x] != module[y]:
                cut[module[x]] = cut.get(module[x], 0.0) + d["strength"]
    return sum(cut.get(m, 0.0) / v for m, v in vol.items())


def set_partitions(n, k):
    """Every partition of range(n) into exactly k non-empty blocks, as label arrays."""

    def rec(i, labels, used):
        if i == n:
            if used == k:
                yield np.array(labels)
            return
        for m in range(min(used + 1, k)):
            yield from rec(i + 1, [*labels, m], max(used, m + 1))

    yield from rec(0, [], 0)


def exact_ncut(sub, k):
    """The lowest normalized cut of ``sub`` over every partition into ``k`` modules (all at once:
    ``cut = vol - inside`` from one-hot labels; the minimiser is checked with ``sub.ncut``); at
    ``k = 2``, as the solvers, over the splits that null graphs do not all cut as much
    (:func:`along_layers`), unless all are."""
    labels = np.array(list(set_partitions(sub.n, k)))
    A = np.zeros((sub.n, sub.n))
    np.add.at(A, (sub.src, sub.dst), sub.strength)
    A = A + A.T
    onehot = (labels[..., None] == np.arange(k)).astype(np.float64)  # (partitions, n, k)
    vol = np.einsum("pnk,n->pk", onehot, A.sum(axis=1))
    inside = np.einsum("pnk,nm,pmk->pk", onehot, A, onehot)
    ncut = np.sum(np.divide(vol - inside, vol, out=np.zeros_like(vol), where=vol > 0), axis=1)
    if k == 2:
        along = np.array([along_layers(sub, z) for z in labels])
        if not along.all():
            ncut[along] = np.inf
    best = int(np.argmin(ncut))
    assert sub.ncut(labels[best]) == pytest.approx(ncut[best], rel=1e-12, abs=1e-15)
    return float(ncut[best])


def small_graph(seed, planted_k=None, sizes=(3, 3, 3, 3)):
    """A layered graph of at most 12 nodes, random or with ``planted_k`` noisy modules."""
    rng = np.random.default_rng(seed)
    lab = [rng.integers(0, planted_k or 1, n) for n in sizes]
    w = []
    for l in range(len(sizes) - 1):
        same = lab[l + 1][:, None] == lab[l][None, :]
        strength = rng.uniform(0.1, 3.0, same.shape) * np.where(same, 1.0, 0.3 if planted_k else 1)
        w.append(THR * np.exp(strength))
    names = tuple(str(l) for l in range(len(sizes)))
    return InteractionGraph(names, [np.ones(n) for n in sizes], w, eps=EPS)


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


# ---------------------------------------------------------------------------- the objective
def test_normalized_cut_matches_networkx_loop():
    g, _ = planted(noise=0.1, seed=3, n_isolated=0)
    rng = np.random.default_rng(0)
    for _ in range(4):
        labels = rng.integers(0, 4, g.n_nodes)
        assert normalized_cut(g, labels) == pytest.approx(ncut_by_networkx_loop(g, labels), 1e-12)
    assert normalized_cut(g, np.zeros(g.n_nodes, int)) == 0.0
    # Each node alone: all of its strength crosses, 1 per node.
    assert normalized_cut(g, np.arange(g.n_nodes)) == pytest.approx(g.n_nodes)


def test_normalized_cut_does_not_reward_cutting_off_weak_nodes():
    # Brute force over every split in two of graphs without modules: the literal cost's optimum
    # is a single node, the normalized cut's never is.
    for seed in range(5):
        sub = ConnectedGraph(small_graph(seed))
        splits = list(set_partitions(sub.n, 2))
        by_cost = min(splits, key=sub.cost)
        by_ncut = min(splits, key=sub.ncut)
        assert np.bincount(by_cost).min() == 1
        assert np.bincount(by_ncut).min() > 1


def test_move_gains_are_exact():
    g, _ = planted(noise=0.2, seed=5, n_isolated=0)
    sub = ConnectedGraph(g)
    labels = np.random.default_rng(1).integers(0, 3, sub.n)
    gain, target = move_gains(sub, labels, 3)
    base = sub.ncut(labels)
    for i in range(sub.n):
        best = np.inf
        for m in range(3):
            if m != labels[i] and np.sum(labels == labels[i]) > 1:
                trial = labels.copy()
                trial[i] = m
                best = min(best, sub.ncut(trial) - base)
        assert gain[i] == pytest.approx(best, abs=1e-12)


def test_refinement_state_follows_batches_of_moves_exactly():
    # the running S, cut, volume and size after batches of moves (including moves between two
    # moved nodes' modules and nodes joined by an edge) equal those recomputed from the graph
    g, _ = planted(noise=0.2, seed=5)
    sub = ConnectedGraph(g)
    rng = np.random.default_rng(3)
    state = _State(sub, rng.integers(0, 4, sub.n), 4)
    for size in (1, 2, 5, sub.n // 2, sub.n):
        nodes = rng.choice(sub.n, size, replace=False)
        to = (state.labels[nodes] + rng.integers(1, 4, size)) % 4
        after = state.moved(nodes, to)
        state.apply(nodes, to, *after)
        fresh = _State(sub, state.labels, 4)
        np.testing.assert_allclose(state.S, fresh.S, rtol=0, atol=1e-12)
        np.testing.assert_allclose(state.cut, fresh.cut, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(state.vol, fresh.vol, rtol=1e-12)
        assert np.array_equal(state.size, fresh.size)
        assert state.value() == pytest.approx(sub.ncut(state.labels), rel=1e-12)


def test_refinement_reaches_a_local_optimum_without_emptying_modules():
    g, _ = planted(noise=0.2, seed=5)
    sub = ConnectedGraph(g)
    start = np.random.default_rng(0).integers(0, 4, sub.n)
    labels, n_moves = refine_ncut(sub, start)
    assert n_moves > 0 and sub.ncut(labels) < sub.ncut(start)
    assert np.all(np.bincount(labels, minlength=4) > 0)
    value = sub.ncut(labels)
    for i in range(sub.n):  # brute force: no single move lowers it further
        for m in range(4):
            if m != labels[i] and np.sum(labels == labels[i]) > 1:
                trial = labels.copy()
                trial[i] = m
                assert sub.ncut(trial) >= value - 1e-9


def test_merge_to_takes_the_best_merge_each_time():
    g, _ = planted(noise=0.2, seed=4, n_isolated=0)
    sub = ConnectedGraph(g)
    labels = np.random.default_rng(2).integers(0, 6, sub.n)
    merged = merge_to(sub, labels, 5)
    best = min(
        sub.ncut(np.where(labels == b, a, labels)) for a, b in itertools.combinations(range(6), 2)
    )
    assert sub.ncut(merged) == pytest.approx(best, abs=1e-12)
    assert merged.max() + 1 == 5
    assert merge_to(sub, labels, 2).max() + 1 == 2


@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_solvers_reach_the_exact_optimum_on_small_graphs(method):
    gaps = []
    for seed in range(8):
        g = small_graph(seed, planted_k=None if seed % 2 else 3)
        sub = ConnectedGraph(g)
        for k in (2, 3):
            exact = exact_ncut(sub, k)
            found = find_modules(g, method=method, n_modules=k, seed=0).ncut
            assert found >= exact - 1e-12
            gaps.append((found - exact) / exact)
    assert np.mean(gaps) <= 0.01, gaps


# ---------------------------------------------------------------------------- planted modules
@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("method", ["leiden", "spectral"])
@pytest.mark.parametrize("noise", [0.0, 0.05])
@pytest.mark.parametrize("seed", [0, 1])
def test_planted_modules_are_recovered_at_automatic_k(method, noise, seed):
    g, truth = planted(noise=noise, seed=seed)
    r = find_modules(g, method=method)
    labels = r.membership_array
    kept = truth >= 0
    np.testing.assert_array_equal(labels[~kept], -1)  # isolated nodes are unassigned
    assert adjusted_rand_index(labels[kept], truth[kept]) == 1.0
    assert r.n_modules == 3 and r.verdict.startswith("3 modules, significant")
    scan = r.info["scan"]
    assert [t["k"] for t in scan] == list(range(2, 11)) and r.info["bonferroni_tests"] == 9
    significant = [t for t in scan if t["p_value"] <= 0.05 / 9]
    free = [t for t in significant if t["ncut"] <= 1e-12]  # split along components: cut 0
    chosen = max(free, key=lambda t: t["k"]) if free else min(significant, key=lambda t: t["z"])
    # the scan's most significant k decides whether (its p is reported); the bisection how many
    assert r.significance.p_value == min(1, 9 * chosen["p_value"])
    assert r.info["modules_from"] == "bisection"
    assert r.cost <= cross_module_cost(g, truth) + 1e-12
    assert r.ncut == pytest.approx(normalized_cut(g, r))
    if noise == 0.0:
        assert r.cost == 0.0 and r.info["n_components"] == 3 and r.significance.p_value < 1e-9
    else:
        assert r.cost > 0 and r.info["n_components"] == 1  # noise edges join the blocks
        assert r.significance.p_value < 1e-3


def one_module_apart(seed):
    """Three planted blocks, block 0 far more separate: no edge to the others, which share weak
    noise edges. A single scan over k sees one split (0 | 1 2) far ahead of the rest."""
    g, truth = planted(noise=0.3, seed=seed)
    offsets = np.concatenate([[0], np.cumsum(g.layer_sizes)])
    w = []
    for l, wl in enumerate(g.w):
        src, dst = truth[offsets[l] : offsets[l + 1]], truth[offsets[l + 1] : offsets[l + 2]]
        apart = (dst[:, None] == 0) != (src[None, :] == 0)
        w.append(np.where(apart, 0.0, wl))
    return InteractionGraph(g.layer_names, g.importance, w, eps=g.eps), truth


@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_a_module_far_apart_does_not_hide_the_others(method):
    # the scan over k alone picks the free split 0 | 1 2; each part is tested on its own
    for seed in range(3):
        g, truth = one_module_apart(seed)
        r = find_modules(g, method=method)
        kept = truth >= 0
        assert 2 in r.info["significant_ks"]
        assert r.n_modules == 3 and r.info["modules_from"] == "bisection"
        assert adjusted_rand_index(r.membership_array[kept], truth[kept]) == 1.0
        tree, g_n = r.info["tree"], int(np.sum(g.connected_nodes))
        assert [t["split"] for t in tree[:2]] == [True, True]
        assert all(t["p_value"] <= t["level"] for t in tree if t["split"])
        # the whole graph is the scan's hypothesis (Bonferroni over k), its halves hierarchical
        scan_p = min(9 * min(t["p_value"] for t in r.info["scan"]), 1.0)
        assert tree[0]["level"] == 0.05 and tree[0]["p_value"] == scan_p
        assert tree[1]["level"] == 0.05 * tree[1]["nodes"] / g_n
        assert "2 significant bisections" in r.verdict


@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_the_whole_graph_is_split_when_the_scan_is_significant_at_any_k(method, monkeypatch):
    # hierarchical testing: the whole graph's hypothesis is the scan's; its split in two needs
    # no test of its own at k = 2 (here made to fail), only its halves are tested
    import modgraph.partition.find as find

    compare = find.compare

    def k2_fails(sub, labels, *args, **kwargs):
        t = compare(sub, labels, *args, **kwargs)
        return dataclasses.replace(t, p_value=0.5) if t.n_modules == 2 else t

    monkeypatch.setattr(find, "compare", k2_fails)
    for seed in range(3):
        g, truth = planted(noise=0.05, seed=seed)
        r = find_modules(g, method=method)
        kept = truth >= 0
        assert 2 not in r.info["significant_ks"] and r.info["significant_ks"]
        tree = r.info["tree"]
        assert tree[0]["split"] and tree[0]["level"] == 0.05 and tree[0]["p_value"] <= 0.05
        assert r.n_modules == 3 and r.info["modules_from"] == "bisection"
        assert adjusted_rand_index(r.membership_array[kept], truth[kept]) == 1.0
    monkeypatch.setattr(find, "compare", lambda *a, **k: dataclasses.replace(
        compare(*a, **k), p_value=0.5))  # fmt: skip
    r = find_modules(planted(noise=0.05, seed=0)[0], method=method)
    assert r.n_modules == 1 and "tree" not in r.info  # no k significant: nothing is split


@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_the_whole_graph_split_is_the_better_of_the_scan_and_a_search(method, monkeypatch):
    # _root_split: the scan's split at k = 2 stands where it cuts less than a search for two,
    # else the search's; one along layers only where both are
    import modgraph.partition.find as find

    g, truth = planted(noise=0.3, seed=2)
    sub, t = ConnectedGraph(g), truth[truth >= 0]
    params = {"method": method, "seed": 0, "n_iterations": 2, "refine": True}
    searched = labels_at_k(sub, method, 2, seed=0)[0]
    halves = t.copy()  # through module 1
    in_1 = np.flatnonzero(t == 1)
    halves[in_1[: len(in_1) // 2]] = 0
    halves[halves == 2] = 1
    assert sub.ncut(halves) > sub.ncut(searched)
    assert np.array_equal(find._root_split(sub, params, halves, None), searched)
    # the scan's stands when the search does worse (here made to return the halves)
    monkeypatch.setattr(find, "labels_at_k", lambda *a, **k: (halves, {}))
    assert np.array_equal(find._root_split(sub, params, searched, None), searched)
    # a split along layers only where the other is too
    sub_w = ConnectedGraph(weak_transition(0)[0])
    along = (sub_w.layer >= 2).astype(np.int64)
    off = labels_at_k(sub_w, method, 2, seed=0)[0]
    assert along_layers(sub_w, along) and not along_layers(sub_w, off)
    assert sub_w.ncut(along) < sub_w.ncut(off)
    monkeypatch.setattr(find, "labels_at_k", lambda *a, **k: (off, {}))
    assert np.array_equal(find._root_split(sub_w, params, along, None), off)
    monkeypatch.setattr(find, "labels_at_k", lambda *a, **k: (along, {}))
    assert np.array_equal(find._root_split(sub_w, params, along, None), along)


@pytest.mark.integration  # slow: the unit tier stays fast
def test_bisection_does_not_split_planted_modules_further():
    # a split of a module that has no structure of its own must fail its test: over 12 graphs
    # and both methods the planted modules come back whole, never split
    for method in ("leiden", "spectral"):
        for seed in range(6):
            g, truth = planted(noise=0.05, seed=10 + seed, per_block=(8, 10, 8, 6))
            r = find_modules(g, method=method, seed=seed)
            kept = truth >= 0
            assert r.n_modules == 3, (method, seed, r.info["tree"])
            assert adjusted_rand_index(r.membership_array[kept], truth[kept]) == 1.0


def two_sparse_blocks(seed, p_in=0.4, p_out=0.06, sizes=(10, 10, 10, 10)):
    """Two planted blocks of random sparse edges (within with probability ``p_in``, across with
    ``p_out``), strengths alike: weak structure, whose null graphs sometimes cut as little."""
    rng = np.random.default_rng(seed)
    blocks = [rng.permutation(np.arange(k) % 2) for k in sizes]
    w = []
    for l in range(len(sizes) - 1):
        same = blocks[l + 1][:, None] == blocks[l][None, :]
        kept = rng.random(same.shape) < np.where(same, p_in, p_out)
        w.append(np.where(kept, THR * np.exp(rng.uniform(0.5, 2.0, same.shape)), 0.0))
    return InteractionGraph(("a", "b", "c", "d"), [np.ones(k) for k in sizes], w, eps=EPS)


@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_a_sequential_test_is_the_whole_test_on_the_null_graphs_it_needs(method):
    # null_test(level, n_max) stops once p <= level is out of reach even with n_max null graphs,
    # and draws more than n_null where the model's p passes but a null graph cut as little
    level, params = 0.05, {"method": method, "seed": 0, "n_iterations": 2, "refine": True}
    graphs = [(planted(noise=0.3, seed=s)[0], s) for s in range(3)]
    graphs += [(random_graph(s), s) for s in range(3)]
    graphs += [(two_sparse_blocks(4), 4), (two_sparse_blocks(6, p_in=0.3), 6)]
    graphs += [(two_sparse_blocks(11, p_in=0.6, p_out=0.15), 11)]  # Leiden: extended, passes
    seen = set()
    for g, seed in graphs:
        sub = ConnectedGraph(g)
        labels = labels_at_k(sub, method, 2, seed=0)[0]

        def test(n, sub=sub, labels=labels, seed=seed, **kw):
            return null_test(sub, labels, params, n_null=n, rng=np.random.default_rng(seed), **kw)

        seq, whole = test(10, level=level, n_max=30), test(30)
        np.testing.assert_array_equal(seq.null_ncut, whole.null_ncut[: seq.n_null])
        if not seq.note:  # the whole test on the first seq.n_null null graphs
            seen.add("extended" if seq.n_null > 10 else "whole")
            same = whole if seq.n_null == 30 else test(seq.n_null)
            assert (seq.p_value, seq.z) == (same.p_value, same.z)
        else:  # stopped: the whole test on 30 cannot pass either
            seen.add("stopped")
            assert "stopped after" in seq.note and level < seq.p_value <= whole.p_value
    # the extension is the solver's null_test, whichever solver; of 240 such graphs none extended
    # with spectral's splits against the null that keeps each node's strongest edges
    want = {"stopped", "whole", "extended"} if method == "leiden" else {"stopped", "whole"}
    assert seen == want, seen


@pytest.mark.integration  # slow: the unit tier stays fast
def test_the_bisection_stopping_early_changes_no_module(monkeypatch):
    import modgraph.partition.find as find

    def full_test(*args, level=None, **kwargs):
        return null_test(*args, **kwargs)

    for seed in range(3):
        g, _ = one_module_apart(seed)
        early = find_modules(g, method="spectral", seed=seed)
        with monkeypatch.context() as m:
            m.setattr(find, "null_test", full_test)
            full = find_modules(g, method="spectral", seed=seed)
        # no test needed more than its 20 null graphs here, so only the stopping differs
        assert max(t["null_graphs"] for t in early.info["tree"]) == 20
        assert early.membership == full.membership
        assert [t["split"] for t in early.info["tree"]] == [t["split"] for t in full.info["tree"]]
        assert any(t["null_graphs"] < 20 for t in early.info["tree"])


def weak_transition(seed):
    """Two planted blocks whose edges between layers 1 and 2 are all barely above eps^1/2: the
    cut between those layers is the cheapest split in two, cheaper than the blocks."""
    g, truth = planted(n_blocks=2, noise=0.3, seed=seed)
    w = [wl.copy() for wl in g.w]
    kept = w[1] > THR
    w[1][kept] = THR * (1 + 0.1 * w[1][kept] / w[1][kept].mean())
    return InteractionGraph(g.layer_names, g.importance, w, eps=g.eps), truth


def test_layer_sides_are_every_node_at_every_layer_pair_it_has_edges_in():
    # brute force over the edges, for layered graphs and one with an edge inside a layer
    within = ConnectedGraph.from_edges([0, 1, 2, 0], [1, 2, 3, 3], [1.0] * 4, [0, 1, 1, 2])
    for sub in [ConnectedGraph(planted(noise=0.3, seed=0)[0]), ConnectedGraph(random_graph(1)),
                ConnectedGraph(weak_transition(1)[0]), within]:  # fmt: skip
        expected = set()
        for i, j in zip(sub.src, sub.dst):
            lo, hi = (i, j) if sub.layer[i] <= sub.layer[j] else (j, i)
            expected |= {(int(lo), 2 * int(sub.layer[lo])), (int(hi), 2 * int(sub.layer[lo]) + 1)}
        node, slot = sub.layer_sides
        assert len(node) == len(expected) == len(set(zip(node.tolist(), slot.tolist())))
        assert set(zip(node.tolist(), slot.tolist())) == expected


def test_groupings_on_the_graph_of_modules_are_those_of_the_nodes():
    # _two_groupings: every grouping's normalized cut and along-layers flag from the graph of
    # modules, as sub.ncut and along_layers give them; more than 12 modules merged down first
    rng = np.random.default_rng(0)
    for g in [planted(n_blocks=3, noise=0.3, seed=1)[0], random_graph(2), weak_transition(0)[0]]:
        sub = ConnectedGraph(g)
        starts = [rng.integers(0, m, sub.n) for m in (3, 5, 7)] + [sub.layer.copy()]
        starts.append(np.where(sub.layer == 0, 0, 1 + rng.integers(0, 3, sub.n)))
        for fine in map(canonical, starts):
            value, is_along, cand = _two_groupings(sub, fine)
            m = int(fine.max()) + 1
            assert len(value) == 2 ** (m - 1) - 1
            for i in range(len(value)):
                labels = cand(i)
                assert labels.max() == 1 and len(np.unique(labels[fine == m - 1])) == 1
                assert value[i] == pytest.approx(sub.ncut(labels), rel=1e-12)
                assert is_along[i] == along_layers(sub, labels)
            if np.array_equal(fine, canonical(sub.layer)):
                assert is_along.all()  # whole layers, grouped: every split along layers
        many = canonical(rng.integers(0, 20, sub.n))
        value, is_along, cand = _two_groupings(sub, many)
        merged = merge_to(sub, many, GROUPING_MAX_MODULES)
        assert len(value) == 2 ** (GROUPING_MAX_MODULES - 1) - 1
        for i in (0, len(value) // 2, len(value) - 1):
            assert value[i] == pytest.approx(sub.ncut(cand(i)), rel=1e-12)
            assert len(np.unique(cand(i)[merged == 3])) == 1  # groups of the merged modules


def test_a_split_along_whole_layers_cuts_the_same_in_every_null_graph():
    # why the solvers leave such splits out: they can never be evidence of modules. The same
    # holds where a layer's nodes are shared out between two whole layers on either side, and
    # for more than two modules; not where both sides of a layer pair are shared out.
    g, _ = weak_transition(0)
    sub = ConnectedGraph(g)
    rng = np.random.default_rng(0)
    nulls = [null_graph(sub, rng) for _ in range(5)]
    shared = np.isin(sub.layer, [0, 1]).astype(np.int64)  # layer 2 between layers 1 and 3
    in_2 = np.flatnonzero(sub.layer == 2)
    shared[in_2[: len(in_2) // 3]] = 1
    three = np.where(sub.layer == 3, 2, shared)  # three modules
    invariant = [np.isin(sub.layer, layers).astype(np.int64)
                 for layers in ([0], [0, 1], [1, 2], [0, 2])] + [shared, three]  # fmt: skip
    for labels in invariant:
        assert along_layers(sub, labels)
        value = sub.ncut(labels)
        # to the null's node strengths, matched to SINKHORN_RTOL = 1e-10
        np.testing.assert_allclose([n.ncut(labels) for n in nulls], value, rtol=1e-9)
    both_sides = shared.copy()
    both_sides[np.flatnonzero(sub.layer == 1)[0]] = 0  # layers 1 and 2 both shared out
    assert not along_layers(sub, both_sides)
    assert np.ptp([n.ncut(both_sides) for n in nulls]) > 1e-3 * sub.ncut(both_sides)


@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_two_modules_never_run_along_whole_layers_when_others_exist(method):
    for seed in (0, 1, 3):
        g, truth = weak_transition(seed)
        sub, kept = ConnectedGraph(g), truth >= 0
        alone = labels_at_k(sub, method, 2, seed=0, regroup=False)[0]  # the solver's own split
        assert along_layers(sub, alone) and sub.ncut(alone) < sub.ncut(truth[kept])
        labels, info = labels_at_k(sub, method, 2, seed=0)
        assert info["split_from"] == "grouped" and not along_layers(sub, labels)
        assert adjusted_rand_index(labels, truth[kept]) == 1.0
        r = find_modules(g, method=method)
        assert r.n_modules == 2
        assert adjusted_rand_index(r.membership_array[kept], truth[kept]) == 1.0


def test_off_layers_is_the_best_single_move_off_a_split_along_layers():
    # brute force over every single-node move of a split along layers whose layer 2 is shared
    # out; from one along whole layers no single move leaves one, and a walk of two does
    for seed in range(3):
        g, _ = weak_transition(seed)
        sub = ConnectedGraph(g)
        whole = np.isin(sub.layer, [0, 1]).astype(np.int64)
        shared = whole.copy()
        shared[np.flatnonzero(sub.layer == 2)[::2]] = 1
        assert along_layers(sub, whole) and along_layers(sub, shared)
        moved = off_layers(sub, shared)
        assert not along_layers(sub, moved) and np.sum(moved != shared) == 1
        values = []
        for i in range(sub.n):
            cand = shared.copy()
            cand[i] = 1 - cand[i]
            if cand.min() == 0 and cand.max() == 1 and not along_layers(sub, cand):
                values.append(sub.ncut(cand))
        np.testing.assert_allclose(sub.ncut(moved), min(values), rtol=1e-12)
        for i in range(sub.n):
            cand = whole.copy()
            cand[i] = 1 - cand[i]
            assert along_layers(sub, cand)
        moved = off_layers(sub, whole)
        assert not along_layers(sub, moved) and np.sum(moved != whole) == 2
        # two modules are never worse than that move off the solver's own split along layers
        for method in ("leiden", "spectral"):
            alone = labels_at_k(sub, method, 2, seed=0, regroup=False)[0]
            if along_layers(sub, alone):
                found = labels_at_k(sub, method, 2, seed=0)[0]
                assert sub.ncut(found) <= sub.ncut(off_layers(sub, alone)) * (1 + 1e-12)


@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_two_modules_are_the_best_of_the_solver_and_the_finer_groupings(method):
    # best_split: the solver's two modules, or the best grouping of finer partitions (those at
    # 3 and 4 modules, and Leiden's own)
    graphs = [planted(n_blocks=b, noise=n, seed=s)[0] for b, n, s in
              [(3, 0.3, 0), (4, 0.5, 5), (4, 0.7, 1), (4, 0.7, 2)]] + [random_graph(0)]  # fmt: skip
    strictly = 0
    for g in graphs:
        sub = ConnectedGraph(g)
        found, native = _search(sub, method, [2, *FINER_KS], 0, 2, True, None)
        assert len(native) == (LEIDEN_RESTARTS if method == "leiden" else 0)
        alone = found[2][0]
        finer = [found[k][0] for k in FINER_KS] + native
        assert max(int(f.max()) + 1 for f in finer) <= GROUPING_MAX_MODULES  # none merged
        labels, came = best_split(sub, alone, finer, refine=True)
        value = sub.ncut(labels)
        assert np.array_equal(labels_at_k(sub, method, 2, seed=0)[0], labels)
        if along_layers(sub, alone):  # replaced by a split null graphs do not all cut alike
            assert came != "solver" and not along_layers(sub, labels)
        else:
            assert value <= sub.ncut(alone) * (1 + 1e-12)
            assert (came != "solver") == (value < sub.ncut(alone) * (1 - 1e-12))
        for fine in finer:  # every grouping into two (brute force)
            k = int(fine.max()) + 1
            for groups in itertools.product([0, 1], repeat=k):
                cand = np.asarray(groups)[fine]
                if 0 < cand.max() and not along_layers(sub, cand):
                    assert value <= sub.ncut(cand) * (1 + 1e-12)
        strictly += value < sub.ncut(alone) * (1 - 1e-9)
    assert strictly >= (method == "spectral")  # Leiden's own split is the best here
    # a split through a module (half of block 1 on each side) is replaced by a grouping
    g, truth = planted(noise=0.3, seed=0)
    sub, kept = ConnectedGraph(g), truth >= 0
    t = truth[kept]
    halves = t.copy()
    in_1 = np.flatnonzero(t == 1)
    halves[in_1[: len(in_1) // 2]] = 0
    halves[halves == 2] = 1
    labels, came = best_split(sub, halves, [t], refine=False)
    assert came == "grouped" and sub.ncut(labels) < sub.ncut(halves)
    assert max(adjusted_rand_index(labels, np.isin(t, grp)) for grp in ([0], [1], [2])) == 1.0


@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_requested_number_of_modules(method):
    g, truth = planted(noise=0.05, n_blocks=4, seed=2)
    r = find_modules(g, method=method, n_modules=4)
    kept = truth >= 0
    assert r.n_modules == 4 and r.significance is None and "requested" in r.verdict
    assert adjusted_rand_index(r.membership_array[kept], truth[kept]) == 1.0
    r6 = find_modules(g, method=method, n_modules=6)
    assert r6.n_modules == 6 and r6.ncut > r.ncut


def test_leiden_at_a_given_resolution():
    g, truth = planted(noise=0.05, seed=4)
    gamma = ConnectedGraph(g).density
    r = find_modules(g, method="leiden", quality="cpm", resolution=gamma)
    kept = truth >= 0
    assert adjusted_rand_index(r.membership_array[kept], truth[kept]) == 1.0
    assert r.info["resolution_used"] == gamma and r.significance is None


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
    assert r.n_modules == 2 and r.cost == 0.0 and r.ncut == 0.0
    kept = truth >= 0
    for b in range(4):  # each planted block (a component) lies inside one module
        assert len(set(r.membership_array[kept & (truth == b)].tolist())) == 1


@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_same_seed_same_modules(method):
    g = random_graph(seed=3)
    a = find_modules(g, method=method, seed=11)
    b = find_modules(g, method=method, seed=11)
    assert a.membership == b.membership and a.cost == b.cost
    assert a.info["scan"] == b.info["scan"]
    c = find_modules(g, method=method, n_modules=3, seed=5)
    d = find_modules(g, method=method, n_modules=3, seed=5)
    assert c.membership == d.membership


@pytest.mark.integration  # slow: the unit tier stays fast
def test_result_repeats_from_params_and_serialises():
    g, _ = planted(noise=0.05)
    r = find_modules(g, method="leiden", seed=3)
    assert isinstance(r, ModuleResult)
    assert find_modules(g, **r.params).membership == r.membership
    d = json.loads(json.dumps(r.to_dict()))
    assert d["membership"] == r.membership and d["n_modules"] == r.n_modules == 3
    assert d["verdict"] == r.verdict and d["significance"]["p_value"] == r.significance.p_value
    assert d["params"]["alpha"] == 0.05 and d["method"] == "leiden"
    with pytest.raises(AttributeError):
        r.cost = 0.0


# ---------------------------------------------------------------------------- null model
def towards(graph, step, weight):
    """Each node's summed ``weight`` (or edge count) towards layer ``l + step``."""
    out = np.zeros(graph.n)
    for s, d in ((graph.src, graph.dst), (graph.dst, graph.src)):
        sel = graph.layer[d] == graph.layer[s] + step
        np.add.at(out, s[sel], graph.strength[sel] if weight else 1.0)
    return out


def test_null_graph_keeps_layers_degrees_and_strengths_per_layer():
    g, _ = planted(noise=0.05, seed=9)
    sub = ConnectedGraph(g)
    null = null_graph(sub, np.random.default_rng(0))
    assert null.n == sub.n
    np.testing.assert_array_equal(null.layer, sub.layer)
    for graph in (sub, null):  # edges only join adjacent layers
        assert np.all(np.abs(graph.layer[graph.src] - graph.layer[graph.dst]) == 1)
    for step in (+1, -1):
        np.testing.assert_allclose(towards(null, step, True), towards(sub, step, True), rtol=1e-9)
        np.testing.assert_array_equal(towards(null, step, False), towards(sub, step, False))
    # who talks to whom is new, beyond every node's strongest edge towards each layer
    key = lambda c: set(zip(c.src.tolist(), c.dst.tolist()))  # noqa: E731
    backbone = set()
    for i in range(sub.n):
        for step in (+1, -1):
            at = ((sub.src == i) & (sub.layer[sub.dst] == sub.layer[i] + step)) | (
                (sub.dst == i) & (sub.layer[sub.src] == sub.layer[i] + step)
            )
            if at.any():
                e = np.flatnonzero(at)[np.argmax(sub.strength[at])]
                backbone.add((int(sub.src[e]), int(sub.dst[e])))
    assert backbone <= key(null)  # kept in place, in every null graph
    assert len(backbone) < len(sub.src)
    others = key(sub) - backbone
    assert len((key(null) - backbone) & others) < 0.6 * len(others)


@pytest.mark.parametrize("keep", [None, 1.3])
def test_null_graphs_of_an_analysed_network_keep_every_strength(keep):
    """Into the output layer the basis makes the transition diagonal: one edge per node, which
    a rewiring can only carry by pairing equal strengths (the null used to give them up, by up
    to 77%). Also with only the strongest ``keep * n`` edges left, where most nodes have one."""
    net = mlp(8, 24, 24, 6)
    g = mg.analyze(net, torch.randn(600, 8, dtype=torch.float64), progress=False).graph
    if keep is not None:
        w = np.sort(np.concatenate([x[x > 0] for x in g.w]))[::-1]
        g = InteractionGraph(g.layer_names, g.importance, g.w, eps=w[int(keep * g.n_nodes)] ** 2)
    sub = ConnectedGraph(g)
    last = sub.layer[sub.dst] == sub.layer.max()
    assert np.all(np.bincount(sub.src[last]) <= 1)  # the diagonal block: a pairing
    rng = np.random.default_rng(0)
    for _ in range(5):
        null = null_graph(sub, rng)
        for step in (+1, -1):
            want = towards(sub, step, True)
            np.testing.assert_allclose(towards(null, step, True), want, rtol=1e-9, atol=1e-12)
            np.testing.assert_array_equal(towards(null, step, False), towards(sub, step, False))


def test_shuffled_graph_is_an_interaction_graph_with_the_same_strengths():
    g, _ = planted(noise=0.0, seed=10)
    s = shuffled_graph(g, np.random.default_rng(3))
    assert s.nodes == g.nodes and s.layer_sizes == g.layer_sizes and s.eps == g.eps
    for a, b in zip(g.w, s.w):
        ka, kb = (
            np.where(a > g.threshold, np.log(a / g.threshold), 0),
            np.log(np.maximum(b, g.threshold) / g.threshold),
        )
        np.testing.assert_allclose(kb.sum(0), ka.sum(0), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(kb.sum(1), ka.sum(1), rtol=1e-8, atol=1e-10)
    assert ConnectedGraph(g).n_components == 3 and ConnectedGraph(s).n_components < 3


# ---------------------------------------------------------------------------- significance
@pytest.mark.parametrize("method", ["leiden", "spectral"])
@pytest.mark.parametrize("k", [2, 3])
def test_planted_modules_are_significant_at_requested_k(method, k):
    g, _ = planted(noise=0.05, seed=7)
    r = find_modules(g, method=method, n_modules=k)
    sig = module_significance(g, r, n_null=20, seed=0)
    assert sig.ncut == pytest.approx(r.ncut) and sig.null_ncut.shape == (20,)
    assert sig.n_modules == k and sig.params["method"] == method
    assert sig.p_empirical == 1 / 21 and sig.p_value < 1e-4 and sig.z < -5


@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_graphs_without_modules_come_back_as_one_module(method):
    fired = []
    for seed in range(8):
        g = random_graph(seed=seed)
        r = find_modules(g, method=method, n_null=10)
        assert r.n_modules == 1 or r.significance.p_value <= 0.05
        fired.append(r.n_modules > 1)
        if r.n_modules == 1:
            assert r.verdict.startswith("no significant modular structure")
    assert sum(fired) <= 1


@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("k", [2, 3, 4])
def test_requested_k_on_graphs_without_modules_is_calibrated(k):
    ps = []
    for seed in range(10):
        g = random_graph(seed=100 + seed)
        r = find_modules(g, method="spectral", n_modules=k)
        ps.append(module_significance(g, r, n_null=10, seed=seed).p_value)
    assert np.mean(np.array(ps) <= 0.05) <= 0.1, ps


def test_one_module_result_is_tested_as_its_best_split():
    g, _ = planted(noise=0.05, seed=7)
    one = find_modules(g, n_modules=1)
    sig = module_significance(g, one, n_null=10)
    assert sig.n_modules == 2 and sig.p_value < 1e-3


def test_a_null_that_cannot_be_drawn_is_stated_not_passed_off():
    # Each layer pair's edges all meet one node: keeping strengths leaves nothing to shuffle.
    w = (np.array([[THR * 3, THR * 5, THR * 4]]), np.array([[THR * 2], [THR * 6]]))
    g = InteractionGraph(("a", "b", "c"), (np.ones(3), np.ones(1), np.ones(2)), w, eps=EPS)
    r = find_modules(g, n_modules=2)
    sig = module_significance(g, r, n_null=5)
    assert math.isnan(sig.p_value) and sig.note.startswith("cannot test")
    auto = find_modules(g)
    assert auto.n_modules == 1 and "cannot test" in auto.verdict


@pytest.mark.integration  # slow: the unit tier stays fast
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
    g2, _ = planted(noise=0.05, seed=1)
    with pytest.raises(InputError, match="found on a different graph"):
        module_significance(g2, r)


# ---------------------------------------------------------------------------- cost curve
@pytest.mark.parametrize("method", ["spectral", "leiden"])
def test_cost_curve_shows_the_objective_against_the_null(method):
    g, truth = planted(noise=0.05, seed=6)
    curve = cost_curve(g, method=method, ks=range(1, 6), n_null=5)
    np.testing.assert_array_equal(curve.ks, np.arange(1, 6))
    np.testing.assert_array_equal(curve.n_modules, curve.ks)
    assert curve.ncut[0] == 0.0 and curve.cost[0] == 0.0 and math.isnan(curve.null_mean[0])
    assert curve.ncut[2] <= normalized_cut(g, truth) + 1e-12
    assert np.all(curve.ncut[1:] < curve.null_mean[1:] - 3 * curve.null_std[1:])
    one = find_modules(g, method=method, n_modules=3)
    assert curve.ncut[2] == pytest.approx(one.ncut) and curve.cost[2] == pytest.approx(one.cost)
    assert math.isnan(cost_curve(g, ks=[2], n_null=0).null_mean[0])
    with pytest.raises(InputError, match="'ks' parameter of cost_curve must be a non-empty"):
        cost_curve(g, ks=[])
    with pytest.raises(InputError, match="'n_null' parameter of cost_curve must be 0 or an int"):
        cost_curve(g, n_null=1)


@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("method", ["leiden", "spectral"])
def test_the_cost_curve_of_a_scan_is_the_scan_that_chose_k(method):
    g, truth = planted(noise=0.05, seed=6)
    r = find_modules(g, method=method)
    curve = CostCurve.from_scan(r)
    scan = r.info["scan"]
    np.testing.assert_array_equal(curve.ks, [1, *(t["k"] for t in scan)])
    assert curve.ncut[0] == curve.cost[0] == 0.0 and math.isnan(curve.null_mean[0])
    np.testing.assert_array_equal(curve.ncut[1:], [t["ncut"] for t in scan])
    np.testing.assert_array_equal(curve.null_mean[1:], [t["null_ncut_mean"] for t in scan])
    chosen = list(curve.ks).index(r.n_modules)
    assert curve.ncut[chosen] == pytest.approx(r.ncut) and curve.cost[chosen] == pytest.approx(
        r.cost
    )
    assert curve.params["n_null"] == r.params["n_null"]
    with pytest.raises(InputError, match="result has no scan to draw"):
        CostCurve.from_scan(find_modules(g, method=method, n_modules=3))


def test_a_significant_verdict_on_a_sparse_graph_says_the_test_is_not_calibrated_there():
    dense, _ = planted(noise=0.05, seed=7)
    r = find_modules(dense, method="spectral")
    sub = ConnectedGraph(dense)
    assert r.info["edges_per_node"] == len(sub.src) / sub.n >= 3
    assert r.n_modules > 1 and "caution" not in r.verdict
    # the same result on a graph of 1.5 edges per node
    thin = dataclasses.replace(r, info={**r.info, "edges_per_node": 1.5})
    assert thin.verdict == r.verdict + (
        "; caution: 1.5 edges per node, and below 3 the test is not calibrated"
    )


def test_kmeans_finds_separated_clusters_and_survives_too_few_distinct_rows():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 5
    truth = np.repeat(np.arange(4), 30)
    X = centres[truth] + 0.1 * rng.standard_normal((120, 4))
    labels = kmeans(X, 4, np.random.default_rng(1))
    assert adjusted_rand_index(labels, truth) == 1.0
    # two distinct rows asked for three clusters: fewer clusters, no error
    two = np.repeat(np.eye(2), 5, axis=0)
    labels = kmeans(two, 3, np.random.default_rng(0))
    assert len(np.unique(labels)) == 2 and adjusted_rand_index(labels, np.repeat([0, 1], 5)) == 1


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"method": "louvain"},
            r"'method' parameter of find_modules must be one of .*Got 'louvain'",
        ),
        (
            {"quality": "cpm"},
            r"'quality' parameter of find_modules must be 'modularity' unless a resolution",
        ),
        ({"alpha": 1.0}, r"'alpha' parameter of find_modules must be a finite float in \(0, 1\)"),
        ({"n_null": 1}, r"'n_null' parameter of find_modules must be an int >= 2. Got 1 "),
        (
            {"n_modules": 3, "resolution": 1.0},
            r"'resolution' parameter of find_modules must be None when n_modules is given",
        ),
        (
            {"quality": "surprise", "resolution": 1.0},
            r"'quality' parameter of find_modules must be one of .*Got 'surprise'",
        ),
        (
            {"n_modules": 0},
            r"'n_modules' parameter of find_modules must be an int >= 1. Got 0 ",
        ),
        (
            {"n_modules": 73},
            r"'n_modules' parameter of find_modules must be at most the 66 nodes with an edge "
            r"above eps\^1/2 \(of the graph's \d+; lower eps for more\). Got 73 ",
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
            {"resolution": math.inf},
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


# ---------------------------------------------------------------------------- the map equation
@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_infomap_recovers_planted_modules_with_their_number(seed):
    g, truth = planted(noise=0.05, seed=seed)
    r = find_modules(g, method="infomap", seed=seed)
    kept = truth >= 0
    assert adjusted_rand_index(r.membership_array[kept], truth[kept]) == 1.0
    assert r.n_modules == 3 and r.verdict.startswith("3 modules, significant")
    assert r.verdict.endswith("the modules from the map equation)")
    # whether is Leiden's scan: the same test, so the same calibration
    leiden = find_modules(g, method="leiden", seed=seed)
    assert r.significance.p_value == leiden.significance.p_value
    assert r.info["modules_from"] == "map equation" and r.method == "infomap"
    assert r.info["codelength"] < r.info["one_level_codelength"]  # the modules compress a walk
    assert r.ncut == pytest.approx(normalized_cut(g, r))


def test_a_module_the_map_equation_cuts_across_its_depth_is_joined():
    """A chain of strong edges traps a walk in its upper and lower halves: two modules that
    split their union along layers are one (every null graph cuts such a split alike)."""
    # one module of 5 layers x 4 nodes, strong within layers 0-2 and within 2-4, one weak link
    rng = np.random.default_rng(0)
    w = [THR * np.exp(rng.uniform(2.0, 3.0, (4, 4))) for _ in range(4)]
    w[1] = np.full((4, 4), THR * np.exp(0.05))
    g = InteractionGraph(tuple("abcde"), [np.ones(4)] * 5, w, eps=EPS)
    sub = ConnectedGraph(g)
    halves = (sub.layer >= 2).astype(np.int64)
    assert along_layers(sub, halves)
    np.testing.assert_array_equal(merge_along_layers(sub, halves), 0)
    two, _ = planted(noise=0.0, seed=0, n_blocks=2, n_isolated=0)
    sub = ConnectedGraph(two)
    blocks = sub.component  # two modules side by side across every layer stay two
    np.testing.assert_array_equal(merge_along_layers(sub, blocks), blocks)


def _module_and_chain(link: bool):
    """4 layers x 4 nodes: nodes 0-2 of each layer a dense module, node 3 a chain of strong edges
    (one node per layer), tied to the module by one weak edge when ``link``."""
    rng = np.random.default_rng(0)
    w = []
    for _ in range(3):
        m = np.zeros((4, 4))
        m[:3, :3] = THR * np.exp(rng.uniform(1.0, 2.0, (3, 3)))
        m[3, 3] = THR * np.exp(3.0)
        w.append(m)
    if link:
        w[1][3, 0] = THR * np.exp(0.5)
    return ConnectedGraph(InteractionGraph(tuple("abcd"), [np.ones(4)] * 4, w, eps=EPS))


def test_a_chain_is_joined_to_the_module_it_is_linked_to():
    """A module with at most one node per layer is a chain, which every null graph keeps (its
    strongest edges are the backbone): never evidence of a module, so it is joined."""
    sub = _module_and_chain(link=True)
    chain = (np.arange(sub.n) % 4 == 3).astype(np.int64)
    assert sub.n == 16 and np.bincount(sub.layer[chain == 1]).max() == 1
    np.testing.assert_array_equal(merge_chains(sub, chain), 0)
    alone = _module_and_chain(link=False)  # a chain that is a component of its own stays
    np.testing.assert_array_equal(merge_chains(alone, chain), chain)
    two, truth = planted(noise=0.0, seed=0, n_blocks=2, n_isolated=0)
    sub = ConnectedGraph(two)  # modules with several nodes per layer are no chains
    np.testing.assert_array_equal(merge_chains(sub, sub.component), sub.component)


def _modularity(sub, labels):
    g = nx.Graph()
    g.add_nodes_from(range(sub.n))
    for a, b, w in zip(sub.src.tolist(), sub.dst.tolist(), sub.weights, strict=True):
        g.add_edge(a, b, weight=w)
    return nx.community.modularity(
        g,
        [set(np.flatnonzero(labels == m).tolist()) for m in range(labels.max() + 1)],
        weight="weight",
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modules_are_joined_while_a_join_raises_the_modularity(seed):
    """Each join raises networkx's modularity, and the result has no join left that would; the
    planted modules themselves are never joined."""
    g, truth = planted(noise=0.05, seed=seed)
    sub = ConnectedGraph(g)
    planted_labels = canonical(truth[sub.idx])
    np.testing.assert_array_equal(merge_by_modularity(sub, planted_labels), planted_labels)
    halves = canonical(planted_labels * 2 + (np.arange(sub.n) % 2))  # each module cut in two
    joined = merge_by_modularity(sub, halves)
    assert adjusted_rand_index(joined, planted_labels) == 1.0
    assert _modularity(sub, joined) > _modularity(sub, halves)
    for a, b in itertools.combinations(range(joined.max() + 1), 2):
        assert _modularity(sub, canonical(np.where(joined == b, a, joined))) <= _modularity(
            sub, joined
        )
    np.testing.assert_array_equal(consolidate(sub, halves), joined)


def test_auto_is_the_map_equation_at_an_automatic_number_and_leiden_at_a_given_one():
    g, truth = planted(noise=0.05, seed=0)
    auto = find_modules(g, n_null=5)
    assert auto.method == auto.params["method"] == "infomap"
    assert auto.info["modules_from"] == "map equation"
    assert adjusted_rand_index(auto.membership_array[truth >= 0], truth[truth >= 0]) == 1.0
    for option in ({"n_modules": 3}, {"resolution": 1.0}):
        assert find_modules(g, **option).method == "leiden"
    with pytest.raises(InputError, match="'method' parameter of find_modules must be one of"):
        find_modules(g, method="Auto")


@pytest.mark.integration  # slow: the unit tier stays fast
def test_infomap_says_no_structure_where_the_scan_finds_none():
    for seed in range(3):
        g = random_graph(seed)
        r, leiden = (find_modules(g, method=m, seed=seed) for m in ("infomap", "leiden"))
        assert r.n_modules == leiden.n_modules == 1
        assert r.significance.p_value == leiden.significance.p_value > 0.05
        assert r.verdict.startswith("no significant modular structure")


@pytest.mark.integration  # slow: the unit tier stays fast
def test_infomap_chooses_k_itself():
    g, _ = planted(noise=0.05, seed=0)
    a, b = (find_modules(g, method="infomap", seed=3) for _ in range(2))
    assert a.membership == b.membership
    json.dumps(a.to_dict())
    for option in ({"n_modules": 3}, {"resolution": 1.0}):
        with pytest.raises(InputError, match=f"'{next(iter(option))}' parameter of find_modules "
                           "must be None with method='infomap'"):  # fmt: skip
            find_modules(g, method="infomap", **option)
    with pytest.raises(InputError, match="'method' parameter of cost_curve"):
        cost_curve(g, method="infomap")
    # a user's own test of an infomap partition cuts the null graphs with Leiden
    assert module_significance(g, a, n_null=5).p_value < 0.05

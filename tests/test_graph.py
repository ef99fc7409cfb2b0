"""Tests of the interaction graph: nodes, edge threshold, exports and input checking."""

import json
import math
import os

import igraph
import networkx as nx
import numpy as np
import pytest

from modgraph.errors import InputError
from modgraph.graph import InteractionGraph

EPS = 0.25  # sqrt(EPS) = 0.5 exactly, so the threshold test compares against an exact float
THR = 0.5


def small_graph(seed=0, sizes=(3, 4, 2), names=("in", "mid", "out")):
    rng = np.random.default_rng(seed)
    importance = [rng.random(k) for k in sizes]
    # Values straddle the threshold so that some edges are dropped and some kept.
    w = [rng.random((sizes[l + 1], sizes[l])) * 2 * THR * 2 for l in range(len(sizes) - 1)]
    return InteractionGraph(names, importance, w, eps=EPS)


def brute_force_edges(g):
    """Edges by an explicit loop over every matrix entry: (src id, dst id, w, strength)."""
    out = []
    for l, wl in enumerate(g.w):
        for i in range(wl.shape[0]):
            for j in range(wl.shape[1]):
                if wl[i, j] > math.sqrt(g.eps):
                    s = math.log(wl[i, j] / math.sqrt(g.eps))
                    out.append((f"{l}:{j}", f"{l + 1}:{i}", wl[i, j], s))
    return out


# ---------------------------------------------------------------------------- nodes and edges
def test_node_ids_and_attributes():
    g = small_graph()
    assert g.nodes == ["0:0", "0:1", "0:2", "1:0", "1:1", "1:2", "1:3", "2:0", "2:1"]
    assert g.n_nodes == 9
    assert g.layer_sizes == (3, 4, 2)
    np.testing.assert_array_equal(g.node_layer, [0, 0, 0, 1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(g.node_index, [0, 1, 2, 0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(g.node_importance, np.concatenate(g.importance))


def test_edges_match_brute_force_loop():
    g = small_graph(seed=3, sizes=(5, 6, 4, 3), names=("a", "b", "c", "d"))
    nodes = g.nodes
    e = g.edges
    got = sorted(
        (nodes[a], nodes[b], w, s)
        for a, b, w, s in zip(e.src.tolist(), e.dst.tolist(), e.w.tolist(), e.strength.tolist())
    )
    want = sorted(brute_force_edges(g))
    assert 0 < len(want) < sum(wl.size for wl in g.w)  # some kept, some dropped
    assert [x[:3] for x in got] == [x[:3] for x in want]
    np.testing.assert_allclose([x[3] for x in got], [x[3] for x in want], rtol=1e-14, atol=0)
    assert g.n_edges == len(want)


def test_edge_threshold_is_strict_at_sqrt_eps():
    above = np.nextafter(THR, 1.0)
    w = np.array([[THR, above], [THR * math.e, 0.0]])
    g = InteractionGraph(("a", "b"), (np.ones(2), np.ones(2)), (w,), eps=EPS)
    e = g.edges
    # w == sqrt(eps) is dropped; the next float up is kept with a strength that is not negative.
    assert sorted(zip(e.src.tolist(), e.dst.tolist())) == [(0, 3), (1, 2)]
    strengths = dict(zip(e.src.tolist(), e.strength.tolist()))
    assert strengths[0] == pytest.approx(1.0, rel=1e-15)
    assert 0.0 <= strengths[1] < 1e-15
    assert np.all(e.strength >= 0)


def test_adjacency_is_symmetric_and_holds_weights():
    g = small_graph(seed=1)
    for weight, vals in (("strength", g.edges.strength), ("w", g.edges.w), (None, None)):
        A = g.adjacency(weight)
        assert A.shape == (g.n_nodes, g.n_nodes)
        assert (A != A.T).nnz == 0
        expected = np.ones(g.n_edges) if vals is None else vals
        np.testing.assert_array_equal(np.asarray(A[g.edges.src, g.edges.dst]).ravel(), expected)
        assert A.nnz == 2 * g.n_edges
    with pytest.raises(InputError, match="weight"):
        g.adjacency("cost")


def test_connected_nodes_mask():
    w = np.array([[0.0, 1.0, 0.1], [0.0, 0.0, 0.0]])  # only 0:1 -> 1:0 is above 0.5
    g = InteractionGraph(("a", "b"), (np.ones(3), np.ones(2)), (w,), eps=EPS)
    np.testing.assert_array_equal(g.connected_nodes, [False, True, False, True, False])


def test_graph_is_immutable_and_copies_its_input():
    w = np.full((2, 2), 3.0)
    g = InteractionGraph(("a", "b"), (np.ones(2), np.ones(2)), (w,), eps=EPS)
    w[0, 0] = 0.0
    assert g.w[0][0, 0] == 3.0
    with pytest.raises(ValueError):
        g.w[0][0, 0] = 1.0
    with pytest.raises(AttributeError):
        g.eps = 1.0


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    w = torch.full((2, 3), 2.0, requires_grad=True) * 1.0
    g = InteractionGraph(["a", "b"], [torch.ones(3), torch.ones(2)], [w], eps=1)
    assert g.w[0].dtype == np.float64 and g.n_edges == 6
    assert isinstance(g.eps, float) and isinstance(g.layer_names, tuple)


# ---------------------------------------------------------------------------- exports
def test_to_networkx():
    g = small_graph(seed=2)
    G = g.to_networkx()
    assert isinstance(G, nx.DiGraph)
    assert list(G.nodes) == g.nodes and G.number_of_edges() == g.n_edges
    assert G.nodes["1:2"] == {
        "layer": 1,
        "layer_name": "mid",
        "index": 2,
        "importance": float(g.importance[1][2]),
    }
    for a, b, w, s in brute_force_edges(g):
        assert G.has_edge(a, b) and not G.has_edge(b, a)  # directed from layer l to l + 1
        assert G.edges[a, b]["w"] == w
        assert G.edges[a, b]["strength"] == pytest.approx(s, rel=1e-14)
        assert type(G.edges[a, b]["w"]) is float
    assert G.graph["eps"] == EPS and G.graph["layer_names"] == ["in", "mid", "out"]


def test_to_igraph_matches_networkx():
    g = small_graph(seed=2)
    h = g.to_igraph()
    G = g.to_networkx()
    assert h.is_directed() and h.vcount() == g.n_nodes and h.ecount() == g.n_edges
    assert h.vs["name"] == g.nodes
    for v in h.vs:
        attrs = v.attributes()
        assert {k: attrs[k] for k in G.nodes[v["name"]]} == G.nodes[v["name"]]
    for e in h.es:
        a, b = h.vs[e.source]["name"], h.vs[e.target]["name"]
        assert G.edges[a, b] == {"w": e["w"], "strength": e["strength"]}
    assert not g.to_igraph(directed=False).is_directed()


def awkward_graph():
    """Floats whose decimal forms need all 17 digits, plus tiny and huge magnitudes.

    Subnormals (e.g. 5e-324) are left out: igraph's GraphML reader rejects them as an overflow.
    """
    rng = np.random.default_rng(7)
    importance = [
        np.array([0.1 + 0.2, 1 / 3, 2.2250738585072014e-308]),
        np.array([1e300, -2.5e-17]),
    ]
    w = [np.array([[0.1 + 0.2, 1 / 3, 1e300], [np.pi, 0.0, 1.0 + 2**-52]]) * 1.0]
    w[0][0, 0] += rng.random() * 1e-9
    return InteractionGraph(("x.0", "y/1"), importance, w, eps=1e-10 / 3)


def test_graphml_round_trip_is_bit_exact(tmp_path):
    g = awkward_graph()
    path = g.to_graphml(tmp_path / "g.graphml")
    text = path.read_text()
    for name in ("importance", "w", "strength", "eps"):
        assert f'attr.name="{name}" attr.type="double"' in text
    assert 'attr.type="float"' not in text

    G = g.to_networkx()
    R = nx.read_graphml(path)
    assert R.number_of_nodes() == g.n_nodes and R.number_of_edges() == g.n_edges
    assert R.graph["eps"] == g.eps
    assert json.loads(R.graph["layer_names"]) == list(g.layer_names)
    for node, attrs in G.nodes(data=True):
        assert R.nodes[node] == attrs  # == on floats: bit-exact
    for a, b, attrs in G.edges(data=True):
        assert R.edges[a, b] == attrs

    h = igraph.Graph.Read_GraphML(str(path))
    assert h.vcount() == g.n_nodes and h.ecount() == g.n_edges
    assert h["eps"] == g.eps
    ids = h.vs["id"]
    assert ids == g.nodes
    assert h.vs["importance"] == g.node_importance.tolist()
    assert (
        h.vs["layer"] == g.node_layer.tolist() and h.vs["layer_name"] == ["x.0"] * 3 + ["y/1"] * 2
    )
    got = {(ids[e.source], ids[e.target]): (e["w"], e["strength"]) for e in h.es}
    assert got == {(a, b): (d["w"], d["strength"]) for a, b, d in G.edges(data=True)}


def test_from_graphml_rebuilds_the_graph(tmp_path):
    g = small_graph(seed=4)
    h = InteractionGraph.from_graphml(g.to_graphml(tmp_path / "g.graphml"))
    assert h.layer_names == g.layer_names and h.eps == g.eps and h.nodes == g.nodes
    for a, b in zip(h.importance, g.importance):
        np.testing.assert_array_equal(a, b)
    for field in ("src", "dst", "w", "strength"):
        np.testing.assert_array_equal(getattr(h.edges, field), getattr(g.edges, field))


def test_graphml_into_a_missing_directory_raises_and_writes_nothing(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(InputError, match="path"):
        small_graph().to_graphml(blocker / "g.graphml")
    with pytest.raises(InputError, match="path"):
        small_graph().to_graphml(tmp_path)  # a directory, not a file name
    assert sorted(os.listdir(tmp_path)) == ["not_a_dir"]


def test_graphml_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "g.graphml"
    path.write_text("previous contents")

    def fail_half_way(G, fh, **kwargs):
        fh.write(b"<?xml version='1.0'?><graphml>")
        raise RuntimeError("disk full")

    monkeypatch.setattr(nx, "write_graphml", fail_half_way)
    with pytest.raises(RuntimeError, match="disk full"):
        small_graph().to_graphml(path)
    assert path.read_text() == "previous contents"
    assert os.listdir(tmp_path) == ["g.graphml"]  # the temporary file is gone too


# ---------------------------------------------------------------------------- memberships
def test_membership_array_from_dict_and_sequence():
    g = small_graph()
    labels = np.arange(g.n_nodes) % 3
    np.testing.assert_array_equal(g.membership_array(dict(zip(g.nodes, labels))), labels)
    np.testing.assert_array_equal(g.membership_array(labels.tolist()), labels)
    np.testing.assert_array_equal(g.membership_array(labels.astype(float)), labels)
    assert g.membership_array(labels).dtype == np.int64


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"0:0": 0}, r"missing 8 of 9 nodes, e.g. \['0:1', '0:2', '1:0'\]"),
        ({**{f"{n}": 0 for n in small_graph().nodes}, "3:0": 1}, r"unknown node ids.*'3:0'"),
        ([0, 1, 2], r"one label per node \(9\)"),
        (np.full(9, 0.5), "integers"),
        (["a"] * 9, "integers"),
    ],
)
def test_membership_array_errors(bad, match):
    with pytest.raises(InputError, match=match):
        small_graph().membership_array(bad)


# ---------------------------------------------------------------------------- bad input
GOOD = {"layer_names": ("a", "b"), "importance": (np.ones(2), np.ones(3)), "w": (np.ones((3, 2)),)}


@pytest.mark.parametrize(
    "change, match",
    [
        ({"layer_names": "ab"}, "layer_names"),
        ({"layer_names": ("a", 1)}, "layer_names"),
        ({"layer_names": ("a", "b", "c")}, r"importance must have one array per layer \(3"),
        ({"importance": (np.ones(2),)}, "importance must have one array per layer"),
        ({"importance": (np.ones((2, 1)), np.ones(3))}, r"importance\[0\] must be 1-d"),
        ({"importance": (np.ones(2), np.array([1, np.nan, 1]))}, r"importance\[1\] must be finite"),
        ({"w": ()}, "w must have one matrix per adjacent layer pair"),
        ({"w": (np.ones((2, 3)),)}, r"w\[0\] must have shape \(k_1, k_0\) = \(3, 2\).*\(2, 3\)"),
        ({"w": (np.full((3, 2), np.inf),)}, r"w\[0\] must be finite"),
        ({"w": (-np.ones((3, 2)),)}, r"w\[0\] must be non-negative.*-1\.0"),
        ({"w": (np.array([["x", "y"]] * 3),)}, r"w\[0\] must be an array of numbers"),
        ({"w": np.ones((1, 3, 2))}, "'w' parameter of InteractionGraph must be a sequence"),
        (
            {"eps": 0.0},
            "'eps' parameter of InteractionGraph must be a positive .* Got 0.0 ",
        ),
        (
            {"eps": -0.1},
            "'eps' parameter of InteractionGraph must be a positive finite float. Got -0.1 ",
        ),
        (
            {"eps": float("nan")},
            "'eps' parameter of InteractionGraph must be a positive finite float. Got nan ",
        ),
        (
            {"eps": "1"},
            "'eps' parameter of InteractionGraph must be a positive finite float. Got '1' ",
        ),
        (
            {"eps": True},
            "'eps' parameter of InteractionGraph must be a positive finite float. Got True ",
        ),
    ],
)
def test_bad_input_names_the_argument(change, match):
    kwargs = {**GOOD, "eps": 0.01, **change}
    with pytest.raises(InputError, match=match):
        InteractionGraph(**kwargs)


def test_single_layer_graph_has_no_edges():
    g = InteractionGraph(("only",), (np.ones(3),), (), eps=1.0)
    assert g.n_nodes == 3 and g.n_edges == 0 and not g.connected_nodes.any()
    assert g.adjacency().nnz == 0


def test_graphml_carries_partitions_as_node_attributes(tmp_path):
    g = InteractionGraph(("a", "b"), (np.ones(2), np.ones(2)), (np.eye(2) * 10,), eps=1.0)
    membership = {"0:0": 0, "0:1": 1, "1:0": 0, "1:1": 1}
    path = g.to_graphml(tmp_path / "g.graphml", modules={"leiden": membership})
    back = nx.read_graphml(path)
    assert {n: d["module_leiden"] for n, d in back.nodes(data=True)} == membership
    assert InteractionGraph.from_graphml(path).n_edges == g.n_edges  # still reads back
    with pytest.raises(InputError, match="'modules' parameter of to_graphml"):
        g.to_graphml(tmp_path / "h.graphml", modules={"not an id": membership})
    assert not (tmp_path / "h.graphml").exists()

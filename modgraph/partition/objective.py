"""What a partition costs, and how two partitions agree.

The paper's cross-module cost (Bushnaq et al. 2024, sec. 5; see :mod:`modgraph.partition`): the
summed strength ``ln(w / eps^1/2)`` of the edges between modules. Nodes without any edge get the
label ``-1`` (unassigned). :class:`ConnectedGraph` is the part of the graph that partitioning
sees; :func:`cut_strength` is the one place the cost is computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .._validation import check_instance
from ..errors import InputError
from ..graph import InteractionGraph

__all__ = [
    "UNASSIGNED",
    "ModuleResult",
    "ConnectedGraph",
    "canonical",
    "check_graph",
    "cross_module_cost",
    "cut_strength",
    "module_cuts",
    "ncut_value",
    "normalized_cut",
    "adjusted_rand_index",
    "jsonable",
    "module_labels",
    "module_interactions",
]

UNASSIGNED = -1


#: Below this many edges per connected node the module test is not calibrated: random networks
#: thresholded to 1.3 / 2 / 3 edges per node were called modular in 72% / 35% / 0% of cases
#: (benchmarks/bench_significance.py, bench_sparse_null.py; the README's "Modules"); the
#: verdict says so.
CALIBRATED_EDGES_PER_NODE = 3.0


def plural(n: int, word: str) -> str:
    """``"1 module"``, ``"3 modules"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class ModuleResult:
    """A partition of an interaction graph into modules.

    Attributes
    ----------
    membership : dict of str to int
        Module of every node id, in node order; ``-1`` for nodes without edges (unassigned).
        Modules are numbered ``0 .. n_modules - 1`` by their first node in node order.
    cost : float
        Cross-module cost: summed strength ``ln(w / eps^1/2)`` of the edges between modules.
    n_modules : int
        Number of modules of connected nodes (unassigned nodes are not a module).
    method : str
        ``"leiden"`` or ``"spectral"``.
    params : dict
        The keyword arguments of :func:`find_modules` that produced this result, so that
        ``find_modules(graph, **result.params)`` repeats it.
    info : dict
        What the method found along the way (Leiden's own number of modules, eigenvalues, the
        tests of every split, ...).
    ncut : float
        The objective: normalized cut in units of ``ln(w / eps^1/2)`` (:func:`normalized_cut`).
    significance : Significance or None
        With an automatic number of modules, the test of the chosen number (or, for one
        module, of the best one), its p-value Bonferroni-adjusted over the numbers scanned;
        None when ``n_modules`` or ``resolution`` was given.
    """

    membership: dict[str, int]
    cost: float
    n_modules: int
    method: str
    params: dict
    info: dict = field(default_factory=dict)
    ncut: float = math.nan
    significance: object = None

    @property
    def verdict(self) -> str:
        """One line in plain words: how many modules, and whether they are significant."""
        sig = self.significance
        if sig is None:
            how = "requested" if self.params.get("n_modules") is not None else "at a resolution"
            return f"{plural(self.n_modules, 'module')} ({how}; not tested)"
        if not sig.testable:
            return f"{self.n_modules} module{'s' * (self.n_modules != 1)}; {sig.note}"
        alpha = self.params.get("alpha", 0.05)
        how = f"alpha = {alpha:g}, Bonferroni over {self.info.get('bonferroni_tests', 1)} k"
        if self.n_modules < 2:
            return (
                f"no significant modular structure (best: k = {sig.n_modules}, "
                f"p = {sig.p_value:.2g}; {how})"
            )
        others = [k for k in self.info.get("significant_ks", []) if k != self.n_modules]
        also = f"; also significant: k = {', '.join(map(str, others))}" if others else ""
        if self.info.get("modules_from") == "bisection":
            n = self.n_modules - 1
            also += f"; the modules from {n} significant bisection{'s' if n > 1 else ''}"
        elif self.info.get("modules_from") == "map equation":
            also += "; the modules from the map equation"
        verdict = (f"{plural(self.n_modules, 'module')}, significant: p = {sig.p_value:.2g} "
                   f"({how}{also})")  # fmt: skip
        per_node = self.info.get("edges_per_node", math.inf)
        if per_node < CALIBRATED_EDGES_PER_NODE:
            verdict += (f"; caution: {per_node:.1f} edges per node, and below "
                        f"{CALIBRATED_EDGES_PER_NODE:g} the test is not calibrated")  # fmt: skip
        return verdict

    @property
    def membership_array(self) -> np.ndarray:
        """Module labels in node order, int64 array of shape (n_nodes,)."""
        return np.fromiter(self.membership.values(), dtype=np.int64, count=len(self.membership))

    @property
    def modules(self) -> list[list[str]]:
        """Node ids of each module ``0 .. n_modules - 1`` (unassigned nodes left out)."""
        out: list[list[str]] = [[] for _ in range(self.n_modules)]
        for node, m in self.membership.items():
            if m != UNASSIGNED:
                out[m].append(node)
        return out

    @property
    def unassigned(self) -> list[str]:
        """Node ids without any edge (label ``-1``)."""
        return [node for node, m in self.membership.items() if m == UNASSIGNED]

    def to_dict(self) -> dict:
        """JSON-ready dict (Python scalars, lists and dicts only)."""
        return {
            "membership": {k: int(v) for k, v in self.membership.items()},
            "cost": float(self.cost),
            "n_modules": int(self.n_modules),
            "method": self.method,
            "params": jsonable(self.params),
            "info": jsonable(self.info),
            "ncut": float(self.ncut),
            "verdict": self.verdict,
            "significance": None if self.significance is None else self.significance.to_dict(),
        }


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, np.floating):
        return float(x)
    return x


def check_graph(graph, where: str, name: str = "graph") -> InteractionGraph:
    """``graph`` must be an :class:`InteractionGraph`."""
    return check_instance(where, name, graph, InteractionGraph, "an InteractionGraph")


def canonical(labels: np.ndarray) -> np.ndarray:
    """Renumber modules ``0, 1, ..`` by first appearance; ``-1`` stays unassigned."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(len(labels), UNASSIGNED, dtype=np.int64)
    mask = labels != UNASSIGNED
    if mask.any():
        _, first, inv = np.unique(labels[mask], return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first)] = np.arange(len(first))
        out[mask] = rank[inv]
    return out


class ConnectedGraph:
    """The subgraph of nodes with at least one edge: all that partitioning ever sees.

    Built from an :class:`InteractionGraph`, or (:meth:`from_edges`) from edge arrays: a null
    graph is partitioned the same way.
    """

    def __init__(self, graph: InteractionGraph):
        idx = np.flatnonzero(graph.connected_nodes)
        pos = np.full(graph.n_nodes, -1, dtype=np.int64)
        pos[idx] = np.arange(len(idx))
        e = graph.edges
        self._setup(pos[e.src], pos[e.dst], e.strength, graph.node_layer[idx])
        self.graph, self.idx = graph, idx

    @classmethod
    def from_edges(cls, src, dst, strength, layer) -> ConnectedGraph:
        """Nodes ``0 .. len(layer) - 1`` of the given layers, each with at least one edge."""
        self = cls.__new__(cls)
        self._setup(src, dst, strength, np.asarray(layer, dtype=np.int64))
        self.graph, self.idx = None, np.arange(self.n)
        return self

    def _setup(self, src, dst, strength, layer):
        self.src, self.dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        self.strength = np.asarray(strength, np.float64)
        self.layer = layer
        self.n = len(layer)
        # Strengths are >= 0 by construction; checked anyway because leidenalg aborts with a
        # BaseException (not an Exception) on a negative weight.
        if not np.all(np.isfinite(self.strength) & (self.strength >= 0)):
            raise InputError("graph edge strengths must be finite and non-negative")
        rows = np.concatenate([self.src, self.dst])
        cols = np.concatenate([self.dst, self.src])
        vals = np.concatenate([self.strength, self.strength])
        self.A = sp.csr_matrix((vals, (rows, cols)), shape=(self.n, self.n))
        #: Summed strength of each node's edges (its volume in the normalized cut).
        self.degree = np.bincount(rows, weights=vals, minlength=self.n)
        structure = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(self.n, self.n))
        self.n_components, comp = connected_components(structure, directed=False)
        self.component = canonical(comp)

    @cached_property
    def igraph(self):
        import igraph

        return igraph.Graph(
            n=self.n, edges=np.column_stack([self.src, self.dst]).tolist(), directed=False
        )

    @cached_property
    def layer_sides(self) -> tuple[np.ndarray, np.ndarray]:
        """Every node at each layer pair it has edges in, as (node, slot): slot ``2 p`` where it
        is in the lower layer of pair ``p`` (edges between layers ``p`` and ``p + 1``), ``2 p +
        1`` the upper (what :func:`~.solvers.along_layers` counts modules in). Read off which
        nodes have an edge up and which down: sorting the edges' (node, pair) keys instead cost
        2 s of the 23 s of a spectral automatic choice on a 147k-edge graph."""
        lo_first = self.layer[self.src] <= self.layer[self.dst]
        lo = np.where(lo_first, self.src, self.dst)
        hi = np.where(lo_first, self.dst, self.src)
        pair = self.layer[lo]  # the lower layer names the pair
        n = self.n
        if np.any(self.layer[hi] != pair + 1):  # an edge within a layer or across several
            key = np.unique(np.concatenate([(2 * pair) * n + lo, (2 * pair + 1) * n + hi]))
            return key % n, key // n
        up = np.flatnonzero(np.bincount(lo, minlength=n))
        down = np.flatnonzero(np.bincount(hi, minlength=n))
        return (
            np.concatenate([up, down]),
            np.concatenate([2 * self.layer[up], 2 * self.layer[down] - 1]),
        )

    @cached_property
    def weights(self) -> list[float]:
        return self.strength.tolist()

    @cached_property
    def density(self) -> float:
        """Total strength per node pair: CPM's default resolution."""
        pairs = self.n * (self.n - 1) / 2
        return float(self.strength.sum() / pairs) if pairs > 0 else 0.0

    def between(self, labels: np.ndarray) -> np.ndarray:
        """(k, k): the summed strength of the edges between each two modules of ``labels``
        (``0 .. k - 1``), symmetric, zero on the diagonal."""
        k = int(labels.max()) + 1
        S = sp.csr_matrix((self.strength, (labels[self.src], labels[self.dst])), shape=(k, k))
        S = (S + S.T).toarray()
        np.fill_diagonal(S, 0.0)
        return S

    def cost(self, labels: np.ndarray) -> float:
        """The cross-module cost of labels of the connected nodes."""
        return cut_strength(self.strength, self.src, self.dst, labels)

    def ncut(self, labels: np.ndarray) -> float:
        """The normalized cut of labels of the connected nodes (see :func:`normalized_cut`)."""
        return ncut_value(self.strength, self.src, self.dst, self.degree, labels)

    def induced(self, nodes: np.ndarray) -> ConnectedGraph:
        """The subgraph on ``nodes`` (indices into this graph) and the edges among them, its
        nodes ``0 .. len(nodes) - 1`` in that order (some may have no edge left)."""
        pos = np.full(self.n, -1)
        pos[nodes] = np.arange(len(nodes))
        keep = (pos[self.src] >= 0) & (pos[self.dst] >= 0)
        return ConnectedGraph.from_edges(
            pos[self.src[keep]], pos[self.dst[keep]], self.strength[keep], self.layer[nodes]
        )

    def merged_components(self, k: int) -> np.ndarray:
        """Group the components into ``k`` modules, balancing node counts (cost 0)."""
        sizes = np.bincount(self.component)
        group_of = np.empty(len(sizes), dtype=np.int64)
        load = np.zeros(k)
        for c in np.argsort(-sizes, kind="stable"):
            g = int(np.argmin(load))  # the lightest group; ties go to the lowest index
            group_of[c] = g
            load[g] += sizes[c]
        return group_of[self.component]


def cross_module_cost(graph: InteractionGraph, membership) -> float:
    """Summed strength of the edges whose ends lie in different modules (Bushnaq et al. sec. 5).

    Parameters
    ----------
    graph : InteractionGraph
    membership : dict, sequence, ndarray or ModuleResult
        Module of every node (see :meth:`InteractionGraph.membership_array`); labels are only
        compared for equality.

    Returns
    -------
    float
        ``sum over edges (a, b) with z_a != z_b of ln(w_ab / eps^1/2)``.

    Examples
    --------
    >>> import numpy as np
    >>> g = InteractionGraph(("a", "b"), (np.ones(2), np.ones(2)),
    ...                      (np.array([[np.e, 0.0], [0.0, 1.0]]),), eps=1.0)
    >>> cross_module_cost(g, {"0:0": 0, "0:1": 1, "1:0": 1, "1:1": 1})
    1.0
    """
    check_graph(graph, "cross_module_cost")
    if isinstance(membership, ModuleResult):
        membership = membership.membership
    e = graph.edges
    return cut_strength(e.strength, e.src, e.dst, graph.membership_array(membership))


def cut_strength(strength: np.ndarray, src: np.ndarray, dst: np.ndarray, labels) -> float:
    """Summed ``strength`` of the edges ``src -> dst`` whose ends have different ``labels``."""
    return float(strength[labels[src] != labels[dst]].sum())


def module_cuts(strength, src, dst, degree, labels) -> tuple[np.ndarray, np.ndarray]:
    """Each module's cut (strength of its edges to other modules) and volume (summed degree)."""
    labels = np.asarray(labels, dtype=np.int64)
    k = int(labels.max()) + 1 if len(labels) else 0
    vol = np.bincount(labels, weights=degree, minlength=k).astype(np.float64)
    a, b = labels[src], labels[dst]
    cross = a != b
    cut = np.bincount(a[cross], weights=strength[cross], minlength=k).astype(np.float64)
    cut += np.bincount(b[cross], weights=strength[cross], minlength=k)
    return cut, vol


def ncut_terms(cut: np.ndarray, vol: np.ndarray) -> np.ndarray:
    """Each module's ``cut / volume``; a module of volume 0 has no edges and so no cut: 0."""
    return np.divide(cut, vol, out=np.zeros_like(cut), where=vol > 0)


def ncut_value(strength, src, dst, degree, labels) -> float:
    """``sum over modules of cut / volume`` for labels ``0 .. k - 1`` of every node."""
    return float(np.sum(ncut_terms(*module_cuts(strength, src, dst, degree, labels))))


def normalized_cut(graph: InteractionGraph, membership) -> float:
    """The objective modgraph's modules minimise: the paper's cost, per unit of module strength.

    .. math::

        \\mathrm{NCut}(z) = \\sum_{m} \\frac{\\mathrm{cut}(m)}{\\mathrm{vol}(m)}, \\quad
        \\mathrm{cut}(m) = \\sum_{a \\in m,\\ b \\notin m} c_{ab}, \\quad
        \\mathrm{vol}(m) = \\sum_{a \\in m} \\sum_b c_{ab},

    with ``c_ab = ln(w_ab / eps^1/2)`` the paper's cost of cutting an edge (Bushnaq et al. 2024,
    sec. 5.2.3). The paper's cost alone, ``sum_m cut(m) / 2`` (:func:`cross_module_cost`), is
    minimised by one module, and at a fixed number of modules by cutting off the most weakly
    connected nodes one by one (a single node costs only its own degree), which no one would call
    a module. Dividing each module's cut by its volume measures instead *the fraction of a
    module's interaction strength that crosses its boundary*: a cut-off single node scores 1
    (all of its strength crosses), a module that only talks to itself scores 0. It is the
    normalized cut of Shi & Malik (2000) on the cost-weighted graph, so spectral clustering on the
    normalized Laplacian is its standard relaxation, and it lies in ``[0, k)`` for ``k`` modules.

    Nodes labelled ``-1`` (no edges) are left out; so are nodes whose label occurs nowhere else.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.kron(np.eye(2), np.full((2, 2), np.e))  # two blocks, every edge costs 1
    >>> g = InteractionGraph(("a", "b"), (np.ones(4), np.ones(4)), (w,), eps=1.0)
    >>> normalized_cut(g, {"0:0": 0, "0:1": 0, "1:0": 0, "1:1": 0, "0:2": 1, "0:3": 1,
    ...                    "1:2": 1, "1:3": 1})
    0.0
    >>> round(normalized_cut(g, [0, 1, 1, 1, 0, 0, 1, 1]), 4)  # 0:1 on the wrong side: 2/6 + 2/10
    0.5333
    """
    check_graph(graph, "normalized_cut")
    if isinstance(membership, ModuleResult):
        membership = membership.membership
    sub = ConnectedGraph(graph)
    labels = graph.membership_array(membership)[sub.idx]
    if np.any(labels == UNASSIGNED):
        raise InputError("normalized_cut: a node with edges is labelled -1 (unassigned)")
    return sub.ncut(canonical(labels))


def module_labels(graph: InteractionGraph, modules, name: str = "modules") -> np.ndarray:
    """Module of every node as an int64 array, checked against ``graph``.

    A :class:`ModuleResult` must also reproduce its own cost on ``graph``: the same node ids with
    different edges (another eps, another model) are caught that way.
    """
    membership = modules.membership if isinstance(modules, ModuleResult) else modules
    if membership is None or isinstance(membership, (str, bytes)):
        raise InputError(
            f"{name} must be a ModuleResult, a dict {{node id: module}} or a sequence of labels, "
            f"got {type(modules).__name__}"
        )
    try:
        labels = graph.membership_array(membership)
    except InputError as err:
        raise InputError(f"{name} does not match the graph ({graph!r}): {err}") from err
    if isinstance(modules, ModuleResult):
        cost = cross_module_cost(graph, labels)
        if not math.isclose(cost, modules.cost, rel_tol=1e-9, abs_tol=1e-9):
            raise InputError(
                f"{name} was found on a different graph: its cost is {modules.cost:.6g} but the "
                f"same partition costs {cost:.6g} on this one (eps={graph.eps:g})"
            )
    if np.any(labels < UNASSIGNED):
        raise InputError(f"{name} labels must be >= -1 (-1 = unassigned), got {labels.min()}")
    return labels


def module_interactions(
    analysis_or_graph, modules
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Summed edge strength between modules of adjacent layers.

    Parameters
    ----------
    analysis_or_graph : Analysis or InteractionGraph
    modules : ModuleResult, dict or sequence of labels

    Returns
    -------
    list of (rows, cols, S), one per adjacent layer pair ``(l, l + 1)``
        ``rows``: the modules with nodes in layer ``l``; ``cols``: those with nodes in layer
        ``l + 1`` (unassigned nodes have no edges and are left out); ``S`` of shape
        ``(len(rows), len(cols))``: ``S[a, b]`` is the summed ``ln(w / eps^1/2)`` of the edges
        between module ``rows[a]`` in layer ``l`` and module ``cols[b]`` in layer ``l + 1``.
    """
    graph = getattr(analysis_or_graph, "graph", analysis_or_graph)  # an Analysis has one
    check_graph(graph, "module_interactions", "analysis_or_graph")
    labels = module_labels(graph, modules)
    e = graph.edges
    out = []
    for l in range(len(graph.layer_sizes) - 1):
        in_l = (graph.node_layer == l) & (labels != UNASSIGNED)
        in_next = (graph.node_layer == l + 1) & (labels != UNASSIGNED)
        rows, cols = np.unique(labels[in_l]), np.unique(labels[in_next])
        sel = graph.node_layer[e.src] == l
        a = np.searchsorted(rows, labels[e.src[sel]])
        b = np.searchsorted(cols, labels[e.dst[sel]])
        S = np.zeros((len(rows), len(cols)))
        np.add.at(S, (a, b), e.strength[sel])
        out.append((rows, cols, S))
    return out


def adjusted_rand_index(labels_a, labels_b) -> float:
    """Adjusted Rand index of two labelings of the same items (Hubert & Arabie 1985).

    Equal to scikit-learn's ``adjusted_rand_score`` to rounding and faster
    (``benchmarks/bench_libraries.py``); kept so that scikit-learn is not a dependency.

    Parameters
    ----------
    labels_a, labels_b : array-like of shape (n_items,)
        Any hashable labels (``-1`` is an ordinary label here; mask unassigned nodes first if
        they should not count).

    Returns
    -------
    float
        1.0 for identical partitions (up to renaming), about 0 for independent ones. When both
        are trivial (one cluster each, or all singletons each) it is 1.0.

    Examples
    --------
    >>> adjusted_rand_index([0, 0, 1, 1], [5, 5, 3, 3])
    1.0
    """
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.ndim != 1 or a.shape != b.shape:
        raise InputError(
            f"labels_a and labels_b must be 1-d of equal length, got {a.shape} and {b.shape}"
        )
    n = len(a)
    if n < 2:
        return 1.0
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = sp.coo_matrix((np.ones(n), (ai.ravel(), bi.ravel()))).tocsr()
    table.sum_duplicates()
    pairs = lambda x: float((x * (x - 1.0) / 2.0).sum())  # noqa: E731
    both = pairs(table.data)
    in_a, in_b = pairs(np.bincount(ai.ravel())), pairs(np.bincount(bi.ravel()))
    expected = in_a * in_b / (n * (n - 1) / 2)
    top = (in_a + in_b) / 2
    if top == expected:
        return 1.0
    return float((both - expected) / (top - expected))

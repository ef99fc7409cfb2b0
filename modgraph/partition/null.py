"""Are the modules real? Graphs without modules that keep everything else, and the test.

The null model keeps what every interaction graph has whether or not it is modular: which
layers talk to which, how strong each node's interactions are in total (its strength towards
each neighbouring layer), and the spread of single edge costs. It forgets only *who talks to
whom*. Per layer pair, the block of edge costs ``c = ln(w / eps^1/2)`` (zeros included) is
shuffled over all its positions, then scaled by rows and columns (Sinkhorn & Knopp 1967) until
every node's summed cost towards that layer is what it is in the real graph.

Why strengths must be kept: a shuffle alone flattens them (coefficient of variation 0.69 real,
0.42 shuffled on random ReLU MLPs), and weakly connected nodes are exactly what is cheapest to
cut off, so a real graph of random weights then looks "modular" next to its shuffles.

The test statistic is the objective itself: the normalized cut of the partition found, against
the normalized cuts the same solver finds, at the same number of modules, on null graphs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import t as student_t

from .._validation import check_instance, check_int, check_seed
from ..errors import InputError
from ..graph import InteractionGraph
from .objective import ConnectedGraph, ModuleResult, canonical, check_graph, module_labels
from .solvers import labels_at_k

__all__ = ["Significance", "shuffled_graph", "module_significance", "null_graph", "null_test"]

#: Sinkhorn scaling stops when every row and column sum is within this relative error.
SINKHORN_RTOL = 1e-10
SINKHORN_MAX_ITER = 2000
#: Smallest spread of the log null normalized cut the test assumes: differences of less than
#: about this fraction of the null's normalized cut are never called structure.
MIN_EFFECT = 0.02
#: Added to normalized cuts before the logarithm of the null model (a cut of exactly 0, between
#: connected components, stays finite).
LOG_FLOOR = 1e-6


@dataclass(frozen=True)
class Significance:
    """How a partition's normalized cut compares with the same search on null graphs.

    Attributes
    ----------
    ncut : float
        Normalized cut of the partition tested (see :func:`normalized_cut`).
    null_ncut : ndarray of float64, shape (n_null,)
        Normalized cut the same solver finds, at the same number of modules, on each null graph.
    z : float
        ``(log ncut - mean(log null_ncut)) / sd``, with ``sd`` the null's standard deviation
        of ``log ncut`` but at least ``MIN_EFFECT = 0.02`` (so a partition 0.1% better than
        null graphs that all agree is not called significant); strongly negative = modular.
    p_value : float
        One-sided, from the normal model of the log null normalized cut (it is positive and
        skewed to the right): ``ncut`` is compared with the null sample
        as a new draw would be, ``P(T_{n-1} <= z / sqrt(1 + 1/n))`` (Student's t prediction
        interval, ``n = n_null``). Decisions use it because the hierarchical test of
        :func:`find_modules` needs levels far below ``1 / (1 + n_null)``, which a rank cannot
        reach. It is never below the share ``#{null_ncut <= ncut} / (1 + n_null)`` of null
        graphs that tie or beat the partition (the normal model cannot weigh null cuts of
        exactly 0, which sparse graphs often have); ``nan`` when the test cannot be made
        (``note`` says why).
    p_empirical : float
        ``(1 + #{null_ncut <= ncut}) / (1 + n_null)``, never below ``1 / (1 + n_null)``.
    n_modules : int
        Number of modules of the partitions compared.
    n_null : int
    params : dict
        How the null graphs were partitioned (method, seed, ...).
    note : str
        Empty, or why the test could not be made.
    """

    ncut: float
    null_ncut: np.ndarray
    z: float
    p_value: float
    p_empirical: float
    n_modules: int
    n_null: int
    params: dict = field(default_factory=dict)
    note: str = ""

    @property
    def testable(self) -> bool:
        return not math.isnan(self.p_value)

    def to_dict(self) -> dict:
        return {
            "ncut": float(self.ncut),
            "null_ncut_mean": float(np.mean(self.null_ncut)) if self.n_null else math.nan,
            "null_ncut_std": float(np.std(self.null_ncut, ddof=1)) if self.n_null > 1 else math.nan,
            "z": float(self.z),
            "p_value": float(self.p_value),
            "p_empirical": float(self.p_empirical),
            "n_modules": int(self.n_modules),
            "n_null": int(self.n_null),
            "note": self.note,
        }


def _sinkhorn(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Scale ``block``'s rows and columns until they sum to ``rows`` and ``cols``."""
    for _ in range(SINKHORN_MAX_ITER):
        r = block.sum(axis=1)
        block *= np.divide(rows, r, out=np.zeros_like(r), where=r > 0)[:, None]
        c = block.sum(axis=0)
        block *= np.divide(cols, c, out=np.zeros_like(c), where=c > 0)[None, :]
        err = np.abs(block.sum(axis=1) - rows)
        if np.all(err <= SINKHORN_RTOL * np.maximum(rows, 1e-300)):
            break
    return block


def null_graph(sub: ConnectedGraph, rng: np.random.Generator) -> ConnectedGraph:
    """A graph like ``sub`` without module structure (see the module docstring).

    Nodes, layers and each node's summed edge cost towards every layer are kept (to
    ``SINKHORN_RTOL``); a node whose row of the shuffled block happens to be all zero gets the
    block's mean cost towards every node its layer may reach, so no node is lost.
    """
    la, lb = sub.layer[sub.src], sub.layer[sub.dst]
    pos = np.empty(sub.n, dtype=np.int64)
    src, dst, val = [], [], []
    for a, b in sorted(set(zip(la.tolist(), lb.tolist(), strict=True))):
        rows_n, cols_n = np.flatnonzero(sub.layer == a), np.flatnonzero(sub.layer == b)
        pos[rows_n], pos[cols_n] = np.arange(len(rows_n)), np.arange(len(cols_n))
        sel = (la == a) & (lb == b)
        block = np.zeros((len(rows_n), len(cols_n)))
        block[pos[sub.src[sel]], pos[sub.dst[sel]]] = sub.strength[sel]
        r, c = block.sum(axis=1), block.sum(axis=0)
        shuffled = rng.permutation(block.ravel()).reshape(block.shape)
        shuffled[r == 0, :] = 0.0
        shuffled[:, c == 0] = 0.0
        fill = float(block[block > 0].mean())
        for axis, target in ((1, r), (0, c)):
            empty = (shuffled.sum(axis=axis) == 0) & (target > 0)
            if empty.any():
                if axis == 1:
                    shuffled[np.ix_(empty, c > 0)] = fill
                else:
                    shuffled[np.ix_(r > 0, empty)] = fill
        shuffled = _sinkhorn(shuffled, r, c)
        i, j = np.nonzero(shuffled)
        src.append(rows_n[i])
        dst.append(cols_n[j])
        val.append(shuffled[i, j])
    return ConnectedGraph.from_edges(
        np.concatenate(src), np.concatenate(dst), np.concatenate(val), sub.layer
    )


def shuffled_graph(graph: InteractionGraph, rng: np.random.Generator) -> InteractionGraph:
    """One null graph of ``graph`` (see :func:`null_graph`), as an :class:`InteractionGraph`.

    Node ids, layers and importances are kept; the edge strengths are those of the null graph
    (``w = eps^1/2 exp(c)``), so every node's summed strength towards each layer is unchanged.
    """
    check_graph(graph, "shuffled_graph")
    sub = ConnectedGraph(graph)
    null = null_graph(sub, rng)
    offsets = np.concatenate([[0], np.cumsum(graph.layer_sizes)])
    node = sub.idx
    w = [np.zeros_like(wl) for wl in graph.w]
    s, d = node[null.src], node[null.dst]
    swap = graph.node_layer[s] > graph.node_layer[d]
    s, d = np.where(swap, d, s), np.where(swap, s, d)
    layer = graph.node_layer[s]
    w_val = graph.threshold * np.exp(null.strength)
    for l in range(len(w)):
        sel = layer == l
        w[l][d[sel] - offsets[l + 1], s[sel] - offsets[l]] = w_val[sel]
    return InteractionGraph(graph.layer_names, graph.importance, tuple(w), eps=graph.eps)


def null_test(
    sub: ConnectedGraph, labels: np.ndarray, params: dict, *, n_null: int,
    rng: np.random.Generator, min_null: int | None = None, decided=None,
) -> Significance:  # fmt: skip
    """Test ``labels`` (a partition of ``sub``) against ``n_null`` null graphs.

    ``params`` says how to partition them (``method``, ``seed``, ``n_iterations``, ``refine``).
    With ``min_null`` and ``decided`` (a function of the running p-value), sampling stops early
    once ``min_null`` graphs have been drawn and ``decided(p)`` is true.
    """
    k = int(labels.max()) + 1
    value = sub.ncut(labels)
    if _fixed_by_strengths(sub):
        return Significance(
            ncut=value, null_ncut=np.zeros(0), z=math.nan, p_value=math.nan,
            p_empirical=math.nan, n_modules=k, n_null=0, params=dict(params),
            note="cannot test: in every layer pair the nodes with edges form a single row or "
            "column, so keeping each node's strength leaves only the graph itself to draw",
        )  # fmt: skip
    null = []
    for t in range(n_null):
        g = null_graph(sub, rng)
        kk = min(k, g.n)
        found, _ = labels_at_k(
            g, params["method"], kk, seed=params["seed"],
            n_iterations=params.get("n_iterations", -1), refine=params.get("refine", True),
        )  # fmt: skip
        null.append(g.ncut(found))
        if min_null is not None and t + 1 >= min_null and decided(_p_normal(value, null)[1]):
            break
    null = np.asarray(null)
    z, p = _p_normal(value, null)
    note = ""
    n_le = int(np.sum(null <= value + 1e-12 * max(value, 1.0)))
    p_emp = (1 + n_le) / (1 + len(null))
    if not math.isnan(p):
        # Null graphs that tie or beat the partition (typically several with a cut of exactly 0,
        # between components) are evidence the normal model cannot weigh: p is at least their
        # share.
        p = max(p, n_le / (1 + len(null)))
    return Significance(
        ncut=value, null_ncut=null, z=z, p_value=p, p_empirical=p_emp, n_modules=k,
        n_null=len(null), params=dict(params), note=note,
    )  # fmt: skip


def _fixed_by_strengths(sub: ConnectedGraph) -> bool:
    """Whether every null graph equals ``sub``: each layer pair's edges meet one node on a side."""
    la, lb = sub.layer[sub.src], sub.layer[sub.dst]
    for a, b in set(zip(la.tolist(), lb.tolist(), strict=True)):
        sel = (la == a) & (lb == b)
        if len(np.unique(sub.src[sel])) > 1 and len(np.unique(sub.dst[sel])) > 1:
            return False
    return True


def _p_normal(value: float, null) -> tuple[float, float]:
    # The normalized cut is positive and skewed to the right (a few null graphs happen to have a
    # cheap cut): its logarithm is far closer to normal, so the model is fitted on the log.
    null = np.log(np.asarray(null, dtype=np.float64) + LOG_FLOOR)
    value = math.log(value + LOG_FLOOR)
    if len(null) < 2:
        return math.nan, math.nan
    # The spread is floored at MIN_EFFECT: when the null graphs all share one best split (often a
    # cut between two layers, whose cost the null keeps exactly) their spread is ~0, and a split
    # 0.1% better would otherwise count as overwhelming evidence of modules.
    mean, sd = float(null.mean()), max(float(null.std(ddof=1)), MIN_EFFECT)
    z = (value - mean) / sd
    n = len(null)
    return float(z), float(student_t.cdf(z / math.sqrt(1 + 1 / n), df=n - 1))


def module_significance(
    graph: InteractionGraph, result: ModuleResult, *, n_null: int = 20, seed: int = 0
) -> Significance:
    """Is the partition's normalized cut lower than on graphs without module structure?

    The partition is compared, at its own number of modules ``k``, with what the method that
    found it (``result.params``) finds at ``k`` on ``n_null`` null graphs (see
    :func:`null_graph`: layers and every node's strength kept, who talks to whom shuffled). A
    one-module result is tested as the best split into two (is there any structure at all?).

    Parameters
    ----------
    graph : InteractionGraph
        The graph ``result`` partitions.
    result : ModuleResult
    n_null : int
        Number of null graphs, at least 2.
    seed : int
        Seed of the null graphs (their partitions use ``result.params["seed"]``).

    Returns
    -------
    Significance
        ``p_value`` (normal approximation) and ``p_empirical`` (rank among the nulls). When all
        null graphs give the same value the test cannot be made: ``p_value`` is ``nan`` and
        ``note`` says so.

    Raises
    ------
    InputError
        A graph without edges; a result that does not partition ``graph``.
    """
    where = "module_significance"
    check_graph(graph, where)
    check_instance(where, "result", result, ModuleResult)
    n_null = check_int(where, "n_null", n_null, low=2)
    check_seed(where, seed)
    if graph.n_edges == 0:
        raise InputError(
            "graph has no edges, so there is nothing to test (every w <= eps^1/2; lower eps)"
        )
    sub = ConnectedGraph(graph)
    labels = canonical(module_labels(graph, result, "result")[sub.idx])
    params = {k: result.params.get(k, v) for k, v in _NULL_DEFAULTS.items()}
    if labels.max() < 1:
        if sub.n < 2:
            raise InputError("graph has a single node with edges: there is no split to test")
        labels, _ = labels_at_k(sub, params["method"], 2, seed=params["seed"])
    return null_test(sub, labels, params, n_null=n_null, rng=np.random.default_rng(seed))


_NULL_DEFAULTS = {"method": "leiden", "seed": 0, "n_iterations": -1, "refine": True}

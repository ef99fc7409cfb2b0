"""Are the modules real? Graphs without modules that keep everything else, and the test.

The null model keeps what every interaction graph has whether or not it is modular: which
layers talk to which, each node's number of edges towards each neighbouring layer and its summed
edge cost ``c = ln(w / eps^1/2)`` there, and the spread of single edge costs. It forgets only
*who talks to whom* beyond each node's strongest partners. Per layer pair, every node's strongest
edge towards that layer (the *backbone*) stays where it is, with its cost; the other edges are
rewired by degree-preserving double-edge swaps (Maslov & Sneppen 2002), their costs shuffled over
the new edges, and the block scaled by rows and columns (Sinkhorn & Knopp 1967) until every
node's summed cost is what it is in the real graph.
Not every rewiring can carry the strengths (into the output layer the transition is diagonal: a
pairing of rows with columns, which admits only pairings of equal strengths), so those are drawn
again, and a block no rewiring fits keeps its own pattern, its costs shuffled and rescaled.

Why strengths must be kept: a shuffle alone flattens them (coefficient of variation 0.69 real,
0.42 shuffled on random ReLU MLPs), and weakly connected nodes are exactly what is cheapest to
cut off, so a real graph of random weights then looks "modular" next to its shuffles. Why edge
counts must be kept: interaction graphs are sparse (1.8 edges per connected node in the demo), and
sparse graphs have cheap cuts for free; a null that redistributes the edges makes them denser
and every sparse graph look modular, or, with a free pattern, sparser and nothing significant.

Why the backbone is kept: the interaction basis makes transitions as diagonal as the network
allows (exactly diagonal for a deep linear network, sec. 6), so every network, random ones
included, has chains of directions each carried by its strongest edge into the next layer. In a
sparse graph (the graphs a task-level eps gives) those chains are most of the graph, and a null
that rewires them is a tangle that no real network resembles, against which most sparse random
networks come out "modular" (``benchmarks/bench_real.py`` measures both). Modules must be more
than chains: groups of directions that talk to each other beyond their strongest
partners and not to the rest.

The test statistic is the objective itself: the normalized cut of the partition found, against
the normalized cuts the same solver finds, at the same number of modules, on null graphs.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import t as student_t

from .._validation import check_instance, check_int, check_seed
from ..errors import InputError
from ..graph import InteractionGraph
from .objective import ConnectedGraph, ModuleResult, canonical, check_graph, module_labels
from .solvers import labels_at_k

__all__ = [
    "Significance",
    "shuffled_graph",
    "module_significance",
    "null_graph",
    "null_test",
    "compare",
]

#: Sinkhorn scaling stops when every row and column sum is within this relative error.
SINKHORN_RTOL = 1e-10
SINKHORN_MAX_ITER = 2000
#: Every this many steps the error must have fallen below ``SINKHORN_STALL`` times its last
#: value, or the pattern is taken to be one that cannot carry the strengths.
SINKHORN_CHECK = 10
SINKHORN_STALL = 0.9
#: Rewirings drawn per layer pair before the block keeps its own pattern.
REWIRE_TRIES = 4
#: Rounds of degree-preserving swaps per layer pair (each pairs every edge with another).
SWAP_ROUNDS = 10
#: Smallest spread of the log null normalized cut the test assumes: differences of less than
#: about this fraction of the null's normalized cut are never called structure.
MIN_EFFECT = 0.02
#: Normalized cuts at most this are 0: splits along connected components.
ZERO_CUT = 1e-12


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
        ``(log ncut - mean) / sd`` over the null graphs' ``log ncut`` above 0, ``sd`` floored at
        ``MIN_EFFECT = 0.02`` (so a partition 0.1% better than null graphs that all agree is not
        called significant); strongly negative = modular.
    p_value : float
        One-sided. The null's normalized cuts above 0 are modelled as log-normal (they are
        positive and skewed to the right) and ``ncut`` is compared with them as a new draw would
        be (Student's t prediction interval); null graphs with a cut of exactly 0 (split along
        components) beat any positive cut. It is never below the share ``n_le / (1 + n_null)``
        of null graphs that tie or beat the partition; for a cut of 0 those are the null graphs
        with a cut of 0 whose smallest module has at least as many nodes (sparse null graphs
        often cut off a few stray nodes for free). Decisions use this p, since the hierarchical
        test of :func:`find_modules` needs levels far below ``1 / (1 + n_null)``, which a rank
        cannot reach. ``nan`` when the test cannot be made (``note`` says why).
    p_empirical : float
        ``(1 + n_le) / (1 + n_null)``, never below ``1 / (1 + n_null)``.
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


def _sinkhorn(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> bool:
    """Scale ``block`` in place by rows and columns towards sums ``rows`` and ``cols``.

    Returns whether every row sum came within ``SINKHORN_RTOL`` (the columns are exact after each
    step). It cannot when no matrix on ``block``'s pattern has those sums: a rewired block whose
    rows and columns all have one edge (a diagonal transition, as into the output layer) admits
    only pairings of equal strengths. The error then stalls, which is checked every
    ``SINKHORN_CHECK`` steps.
    """
    last = math.inf
    floor = SINKHORN_RTOL * np.maximum(rows, 1e-300)
    for step in range(1, SINKHORN_MAX_ITER + 1):
        r = block.sum(axis=1)
        block *= np.divide(rows, r, out=np.zeros_like(r), where=r > 0)[:, None]
        c = block.sum(axis=0)
        block *= np.divide(cols, c, out=np.zeros_like(c), where=c > 0)[None, :]
        err = np.abs(block.sum(axis=1) - rows)
        if np.all(err <= floor):
            return True
        if step % SINKHORN_CHECK == 0:
            now = float(np.max(err / floor))
            if now > SINKHORN_STALL * last:
                return False
            last = now
    return False


def _backbone(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Which edges are some node's strongest in the block (its row's or its column's largest)."""
    return (cols == block.argmax(axis=1)[rows]) | (rows == block.argmax(axis=0)[cols])


def _rewired(rows: np.ndarray, cols: np.ndarray, shape, rng: np.random.Generator, taken=None):
    """The edges ``(rows, cols)`` of a bipartite block after random double-edge swaps.

    A swap turns edges ``(a, b), (c, d)`` into ``(a, d), (c, b)`` when neither exists yet, so
    every node keeps its number of edges (Maslov & Sneppen 2002); ``taken``, a boolean matrix of
    the block, marks other edges no swap may create. Each round pairs all edges at random and
    makes the swaps that stay simple; ``SWAP_ROUNDS`` rounds. Not igraph's ``Graph.rewire``:
    it cannot keep the backbone's edges out of reach (``taken``), and is slower on these blocks
    (``benchmarks/bench_libraries.py``).
    """
    m = len(rows)
    if m < 2 or m == shape[0] * shape[1]:
        return rows, cols  # nothing to swap (a complete block stays complete)
    present = np.zeros(shape, dtype=bool) if taken is None else taken.copy()
    present[rows, cols] = True
    rows, cols = rows.copy(), cols.copy()
    for _ in range(SWAP_ROUNDS):
        order = rng.permutation(m)
        e1, e2 = order[: m // 2], order[m // 2 : 2 * (m // 2)]
        a, b, c, d = rows[e1], cols[e1], rows[e2], cols[e2]
        ok = (a != c) & (b != d) & ~present[a, d] & ~present[c, b]
        # two swaps of one round may create the same edge: keep the first of each
        new = np.concatenate([a * shape[1] + d, c * shape[1] + b])
        ok_both = np.concatenate([ok, ok])
        _, first, counts = np.unique(new[ok_both], return_index=True, return_counts=True)
        dup = np.zeros(len(new), dtype=bool)
        idx = np.flatnonzero(ok_both)
        keep_first = np.zeros(len(idx), dtype=bool)
        keep_first[first[counts == 1]] = True
        dup[idx[~keep_first]] = True
        ok &= ~(dup[: len(ok)] | dup[len(ok) :])
        e1, e2 = e1[ok], e2[ok]
        present[rows[e1], cols[e1]] = present[rows[e2], cols[e2]] = False
        cols[e1], cols[e2] = cols[e2].copy(), cols[e1].copy()
        present[rows[e1], cols[e1]] = present[rows[e2], cols[e2]] = True
    return rows, cols


def _null_block(block, rows, cols, costs, rng: np.random.Generator) -> np.ndarray:
    """One layer pair's block of a null graph: rewired, costs shuffled, scaled to the strengths.

    A rewiring whose pattern cannot carry the strengths (:func:`_sinkhorn` fails) is drawn
    again, up to ``REWIRE_TRIES`` times; then the block keeps its own pattern (which carries them:
    the real costs are a solution) with the costs shuffled, and if even that fails to scale, its
    real costs. Strengths are never given up for randomness.
    """
    target_r, target_c = block.sum(axis=1), block.sum(axis=0)
    fixed = _backbone(block, rows, cols)
    free = ~fixed
    for attempt in range(REWIRE_TRIES + 1):
        out = np.zeros(block.shape)
        out[rows[fixed], cols[fixed]] = costs[fixed]
        if attempt < REWIRE_TRIES:
            r, c = _rewired(rows[free], cols[free], block.shape, rng, out > 0)
        else:
            r, c = rows[free], cols[free]
        out[r, c] = rng.permutation(costs[free])
        if _sinkhorn(out, target_r, target_c):
            return out
    return block.copy()


def null_graph(sub: ConnectedGraph, rng: np.random.Generator) -> ConnectedGraph:
    """A graph like ``sub`` without module structure (see the module docstring).

    Per layer pair, the edges are rewired by degree-preserving swaps (:func:`_rewired`), the
    edge costs shuffled over the new edges, and the block scaled by rows and columns (Sinkhorn)
    until every node's summed cost towards that layer is what it is in ``sub`` (to
    ``SINKHORN_RTOL``; see :func:`_null_block` for blocks whose rewirings cannot carry the
    strengths). Nodes, layers, each node's number of edges towards every layer and its
    strength there are kept; who talks to whom is random.
    """
    la, lb = sub.layer[sub.src], sub.layer[sub.dst]
    pos = np.empty(sub.n, dtype=np.int64)
    src, dst, val = [], [], []
    for a, b in sorted(set(zip(la.tolist(), lb.tolist(), strict=True))):
        rows_n, cols_n = np.flatnonzero(sub.layer == a), np.flatnonzero(sub.layer == b)
        pos[rows_n], pos[cols_n] = np.arange(len(rows_n)), np.arange(len(cols_n))
        sel = (la == a) & (lb == b)
        r_i, c_i = pos[sub.src[sel]], pos[sub.dst[sel]]
        shape = (len(rows_n), len(cols_n))
        block = np.zeros(shape)
        block[r_i, c_i] = sub.strength[sel]
        shuffled = _null_block(block, r_i, c_i, sub.strength[sel], rng)
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


def untestable(params: dict, note: str, value: float = 0.0, k: int = 1) -> Significance:
    """A :class:`Significance` that says why no test could be made (``p_value`` is nan)."""
    return Significance(
        ncut=value, null_ncut=np.zeros(0), z=math.nan, p_value=math.nan, p_empirical=math.nan,
        n_modules=k, n_null=0, params=dict(params), note=note,
    )  # fmt: skip


CANNOT_SHUFFLE = (
    "cannot test: in every layer pair the nodes with edges form a single row or column, so "
    "keeping each node's strength leaves only the graph itself to draw"
)


def compare(sub: ConnectedGraph, labels, nulls, null_labels, params: dict) -> Significance:
    """Test partition ``labels`` of ``sub`` against partitions of null graphs at the same k."""
    k = int(labels.max()) + 1
    value = sub.ncut(labels)
    if not nulls:
        return untestable(params, CANNOT_SHUFFLE, value, k)
    null = [g.ncut(z) for g, z in zip(nulls, null_labels, strict=True)]
    null_smallest = [int(np.bincount(z).min()) for z in null_labels]
    z, p, n_le = _p_value(value, int(np.bincount(labels).min()), null, null_smallest)
    return Significance(
        ncut=value, null_ncut=np.asarray(null), z=z, p_value=p,
        p_empirical=(1 + n_le) / (1 + len(null)), n_modules=k, n_null=len(null),
        params=dict(params),
    )  # fmt: skip


def null_test(
    sub: ConnectedGraph, labels: np.ndarray, params: dict, *, n_null: int,
    rng: np.random.Generator, level: float | None = None, n_max: int | None = None,
) -> Significance:  # fmt: skip
    """Test ``labels`` (a partition of ``sub``) against ``n_null`` null graphs partitioned at
    the same k with ``params`` (``method``, ``seed``, ``n_iterations``, ``refine``).

    With ``level``, a sequential test of ``p <= level`` (the bisection's, whose level is far
    below ``1 / (1 + n_null)``). ``p`` is never below the share ``n_le / (1 + n)`` of ``n`` null
    graphs that tie or beat the partition, so:

    * where, after ``n_null`` null graphs, the model's ``p`` is at most ``level`` but that share
      is above it (with 20 null graphs and the bisection's levels, one of them cut as little),
      ``n_max - n_null`` more are drawn (default ``n_max = n_null``: none) and the test is made
      on all ``n_max``;
    * null graphs are partitioned one at a time, and the test stops as soon as ``p <= level``
      is out of reach even with ``n_max`` of them. ``p_value`` is then that bound and ``note``
      says so.

    A stopped test takes the decision the whole test would; the first ``n_null`` null graphs
    are always drawn, so the tests after one draw the same ones whether it stopped or not (not
    after one that drew more). There is one look, after ``n_null``: a rejection is one of the
    test on ``n_null`` null graphs or one of the test on ``n_max``, so the error rate is at most
    the sum of those two tests' rates.
    """
    k = int(labels.max()) + 1
    if fixed_by_strengths(sub):
        return compare(sub, labels, [], [], params)
    n_max = n_null if n_max is None or level is None else max(n_max, n_null)
    nulls = [null_graph(sub, rng) for _ in range(n_null)]
    kwargs = {"seed": params["seed"], "n_iterations": params.get("n_iterations", 2),
              "refine": params.get("refine", True)}  # fmt: skip
    value, smallest = sub.ncut(labels), int(np.bincount(labels).min())
    null_labels, null_cut, null_smallest, n_le = [], [], [], 0
    while len(null_labels) < len(nulls):
        g = nulls[len(null_labels)]
        z = labels_at_k(g, params["method"], min(k, g.n), **kwargs)[0]
        null_labels.append(z)
        null_cut.append(g.ncut(z))
        null_smallest.append(int(np.bincount(z).min()))
        n_le += int(_ties_or_beats(value, smallest, null_cut[-1], null_smallest[-1]))
        if level is None:
            continue
        if n_le / (1 + n_max) > level:
            break
        if len(null_labels) == n_null < n_max and n_le / (1 + n_null) > level:  # the one look
            if _p_value(value, smallest, null_cut, null_smallest, floor=False)[1] <= level:
                nulls += [null_graph(sub, rng) for _ in range(n_max - n_null)]
    t = compare(sub, labels, nulls[: len(null_labels)], null_labels, params)
    if len(null_labels) == len(nulls):
        return t
    bound = n_le / (1 + n_max)
    return dataclasses.replace(
        t, p_value=bound, p_empirical=(1 + n_le) / (1 + n_max),
        note=f"stopped after {len(null_labels)} null graphs: {n_le} cut as little, so p >= "
        f"{bound:.3g} > {level:.3g} even with {n_max}",
    )  # fmt: skip


def fixed_by_strengths(sub: ConnectedGraph) -> bool:
    """Whether every null graph equals ``sub``: each layer pair's edges meet one node on a side."""
    la, lb = sub.layer[sub.src], sub.layer[sub.dst]
    for a, b in set(zip(la.tolist(), lb.tolist(), strict=True)):
        sel = (la == a) & (lb == b)
        if len(np.unique(sub.src[sel])) > 1 and len(np.unique(sub.dst[sel])) > 1:
            return False
    return True


def _ties_or_beats(value: float, smallest: int, null, null_smallest):
    """Whether each null graph's partition cuts as little as the one tested (bool array)."""
    if value <= ZERO_CUT:
        # A cut of 0 splits along connected components. Null graphs of sparse graphs have
        # components too, mostly a few stray nodes: one ties only if its smallest module is at
        # least as large.
        return (np.asarray(null) <= ZERO_CUT) & (np.asarray(null_smallest) >= smallest)
    return np.asarray(null) <= value * (1 + 1e-12)


def _p_value(
    value: float, smallest: int, null, null_smallest, *, floor: bool = True
) -> tuple[float, float, int]:
    """(z, p, number of null graphs that tie or beat the partition); see :class:`Significance`.
    ``floor=False``: the model's p alone, not raised to the share of null graphs that tie."""
    null, null_smallest = np.asarray(null, dtype=np.float64), np.asarray(null_smallest)
    n = len(null)
    zero = null <= ZERO_CUT
    n_le = int(np.sum(_ties_or_beats(value, smallest, null, null_smallest)))
    pos = null[~zero]
    if len(pos) < 2:
        z, p = (-math.inf, 0.0) if value <= ZERO_CUT or len(pos) == 0 else (math.nan, math.nan)
    else:
        # The normalized cut is positive and skewed to the right (a few null graphs happen to
        # have a cheap cut): its logarithm is far closer to normal, so the model is fitted on
        # the log of the null cuts above 0. The spread is floored at MIN_EFFECT: when the null
        # graphs all share one best split (often a cut between two layers, whose cost the null
        # keeps exactly) it is ~0, and a split 0.1% better would otherwise count as
        # overwhelming evidence.
        logs = np.log(pos)
        mean, sd = float(logs.mean()), max(float(logs.std(ddof=1)), MIN_EFFECT)
        z = (math.log(max(value, ZERO_CUT)) - mean) / sd
        p = float(student_t.cdf(z / math.sqrt(1 + 1 / len(pos)), df=len(pos) - 1))
        # null graphs with a cut of 0 beat any positive cut
        p = (len(pos) * p + (n - len(pos)) * (value > ZERO_CUT)) / n
    # Null graphs that tie or beat the partition are evidence a model cannot outweigh.
    if floor and not math.isnan(p):
        p = max(p, n_le / (1 + n))
    return float(z), float(p), n_le


def module_significance(
    graph: InteractionGraph, result: ModuleResult, *, n_null: int = 20, seed: int = 0
) -> Significance:
    """Is the partition's normalized cut lower than on graphs without module structure?

    The partition is compared, at its own number of modules ``k``, with what the method that
    found it (``result.params``; Leiden for a ``method="infomap"`` result) finds at ``k`` on
    ``n_null`` null graphs (see
    :func:`null_graph`: layers and every node's strength kept, who talks to whom shuffled). A
    one-module result is tested as the best split into two (is there any structure at all?).
    A result with an automatic number of modules already carries its test, adjusted for the
    choice of ``k`` (``result.significance``); this one is not.

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
        null graphs give the same value the test cannot be made: ``p_value`` is ``nan``,
        ``note`` says why, and a warning says so.

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
    if params["method"] not in ("leiden", "spectral"):  # infomap: null graphs cut by Leiden
        params["method"] = "leiden"
    if labels.max() < 1:
        if sub.n < 2:
            raise InputError("graph has a single node with edges: there is no split to test")
        labels, _ = labels_at_k(sub, params["method"], 2, seed=params["seed"])
    sig = null_test(sub, labels, params, n_null=n_null, rng=np.random.default_rng(seed))
    if math.isnan(sig.p_value):  # said, not only stored: a nan p-value read later is silent
        warnings.warn(f"module_significance: p_value is nan, {sig.note}", stacklevel=2)
    return sig


_NULL_DEFAULTS = {"method": "leiden", "seed": 0, "n_iterations": 2, "refine": True}

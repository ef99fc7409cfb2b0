"""Modules of an interaction graph: Leiden and spectral partitions, and the paper's cost.

Bushnaq et al. 2024 (sec. 5) score a split of the network into modules by what it costs to cut the
edges between modules: an edge of strength ``w`` costs ``ln(w / eps^1/2)`` (nothing when
``w <= eps^1/2``, so those edges are not in the graph at all). The best modules minimise

.. math::

    \\mathrm{cost}(z) = \\sum_{(a, b) \\in E,\\ z_a \\neq z_b} \\ln\\left(
        \\frac{w_{ab}}{\\varepsilon^{1/2}}\\right),

which alone is minimised by putting everything in one module, so every method here adds a notion
of module size: Leiden through its quality function (modularity or CPM), spectral clustering
through the normalised Laplacian (a relaxation of the normalised cut) and a fixed number of modules.

Nodes without any edge (every interaction below ``eps^1/2``) carry no information about modules;
they get the label ``-1`` ("unassigned") and are not counted in ``n_modules``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.cluster.vq import ClusterError, kmeans2
from scipy.sparse.csgraph import connected_components, laplacian
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh

from .errors import InputError
from .graph import InteractionGraph

__all__ = [
    "ModuleResult",
    "CostCurve",
    "Significance",
    "find_modules",
    "cross_module_cost",
    "cost_curve",
    "module_significance",
    "adjusted_rand_index",
]

METHODS = ("leiden", "spectral")
QUALITIES = ("modularity", "cpm")
UNASSIGNED = -1

#: Components below this many nodes use a dense eigensolver: it is exact and faster than ARPACK
#: there, and ARPACK needs the number of wanted eigenpairs to be well below the matrix size.
DENSE_EIGEN_MAX_NODES = 500
#: Eigenvalues scanned for the eigengap when the number of modules is not given.
EIGENGAP_MAX_MODULES = 20
#: k-means restarts of the spectral embedding (the best distortion is kept).
KMEANS_RESTARTS = 10
#: Leiden runs allowed when searching a resolution that gives ``n_modules`` modules.
RESOLUTION_SEARCH_RUNS = 40


# ---------------------------------------------------------------------------- results
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
        What the method found along the way (resolution used, Leiden quality, eigenvalues, ...).
    """

    membership: dict[str, int]
    cost: float
    n_modules: int
    method: str
    params: dict
    info: dict = field(default_factory=dict)

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
            "params": _jsonable(self.params),
            "info": _jsonable(self.info),
        }


@dataclass(frozen=True)
class CostCurve:
    """Cross-module cost against the number of modules.

    Attributes
    ----------
    method : str
    n_modules : ndarray of int64, shape (n_points,)
        Number of modules found at each point of the scan.
    cost : ndarray of float64, shape (n_points,)
        Cross-module cost of that partition.
    ks : ndarray of int64 or None
        Requested numbers of modules (spectral scan).
    resolutions : ndarray of float64 or None
        Resolutions scanned (Leiden scan).
    params : dict
    """

    method: str
    n_modules: np.ndarray
    cost: np.ndarray
    ks: np.ndarray | None = None
    resolutions: np.ndarray | None = None
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Significance:
    """How a partition's cost compares with partitions of shuffled graphs.

    Attributes
    ----------
    cost : float
        Cross-module cost of the partition tested.
    null_costs : ndarray of float64, shape (n_null,)
        Cost of the partition found, with the same parameters, on each shuffled graph.
    z : float
        ``(cost - mean(null_costs)) / std(null_costs, ddof=1)``; strongly negative = modular.
    p_value : float
        One-sided, ``(1 + #{null_costs <= cost}) / (1 + n_null)``; never below
        ``1 / (1 + n_null)``.
    n_null : int
    params : dict
        Parameters used to partition the null graphs.
    """

    cost: float
    null_costs: np.ndarray
    z: float
    p_value: float
    n_null: int
    params: dict = field(default_factory=dict)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, np.floating):
        return float(x)
    return x


# ---------------------------------------------------------------------------- helpers
def _check_graph(graph) -> None:
    if not isinstance(graph, InteractionGraph):
        raise InputError(f"graph must be an InteractionGraph, got {type(graph).__name__}")


def _check_int(value, name: str, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise InputError(f"{name} must be {bound}, got {value}")
    return value


def _check_resolution(value, name: str = "resolution") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a positive finite float, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a positive finite float, got {value!r}")
    return value


def _canonical(labels: np.ndarray) -> np.ndarray:
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


class _Connected:
    """The subgraph of nodes with at least one edge: all that partitioning ever sees."""

    def __init__(self, graph: InteractionGraph):
        self.graph = graph
        self.idx = np.flatnonzero(graph.connected_nodes)
        self.n = len(self.idx)
        pos = np.full(graph.n_nodes, -1, dtype=np.int64)
        pos[self.idx] = np.arange(self.n)
        e = graph.edges
        self.src, self.dst = pos[e.src], pos[e.dst]
        self.strength = e.strength
        # Strengths are >= 0 by construction; checked anyway because leidenalg aborts with a
        # BaseException (not an Exception) on a negative weight.
        if not np.all(np.isfinite(self.strength) & (self.strength >= 0)):
            raise InputError("graph edge strengths must be finite and non-negative")
        rows = np.concatenate([self.src, self.dst])
        cols = np.concatenate([self.dst, self.src])
        vals = np.concatenate([self.strength, self.strength])
        self.A = sp.csr_matrix((vals, (rows, cols)), shape=(self.n, self.n))
        structure = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(self.n, self.n))
        self.n_components, comp = connected_components(structure, directed=False)
        self.component = _canonical(comp)

    @cached_property
    def igraph(self):
        import igraph

        return igraph.Graph(
            n=self.n, edges=np.column_stack([self.src, self.dst]).tolist(), directed=False
        )

    @cached_property
    def weights(self) -> list[float]:
        return self.strength.tolist()

    @cached_property
    def density(self) -> float:
        """Total strength per node pair: CPM's default resolution."""
        pairs = self.n * (self.n - 1) / 2
        return float(self.strength.sum() / pairs) if pairs > 0 else 0.0

    def cost(self, labels: np.ndarray) -> float:
        return float(self.strength[labels[self.src] != labels[self.dst]].sum())

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
    _check_graph(graph)
    if isinstance(membership, ModuleResult):
        membership = membership.membership
    labels = graph.membership_array(membership)
    e = graph.edges
    return float(e.strength[labels[e.src] != labels[e.dst]].sum())


# ---------------------------------------------------------------------------- Leiden
def _leiden_once(sub: _Connected, quality: str, resolution, seed: int, n_iterations: int):
    import leidenalg

    kwargs = {"weights": sub.weights, "seed": seed, "n_iterations": n_iterations}
    if quality == "cpm":
        ptype = leidenalg.CPMVertexPartition
        kwargs["resolution_parameter"] = resolution
    elif resolution is None:
        ptype = leidenalg.ModularityVertexPartition
    else:
        ptype = leidenalg.RBConfigurationVertexPartition
        kwargs["resolution_parameter"] = resolution
    part = leidenalg.find_partition(sub.igraph, ptype, **kwargs)
    return _canonical(np.asarray(part.membership, dtype=np.int64)), float(part.quality())


def _leiden(sub, *, n_modules, resolution, quality, seed, n_iterations):
    if n_modules is None:
        if quality == "cpm" and resolution is None:
            resolution = sub.density
        labels, q = _leiden_once(sub, quality, resolution, seed, n_iterations)
        return labels, {"resolution_used": resolution, "quality_value": q}

    # Bisect the resolution on a log scale. The number of modules grows with the resolution but
    # not strictly monotonically, so keep the closest partition seen (ties: lower cost).
    best = None

    def run(gamma):
        nonlocal best
        labels, q = _leiden_once(sub, quality, gamma, seed, n_iterations)
        k = int(labels.max()) + 1
        key = (abs(k - n_modules), sub.cost(labels))
        if best is None or key < best[0]:
            best = (key, labels, gamma, q)
        return k

    lo = hi = resolution if resolution is not None else (sub.density if quality == "cpm" else 1.0)
    runs = 1
    k = run(lo)
    # Bracket the target: widen by factors of 10 until the counts straddle n_modules.
    if k < n_modules:
        while k < n_modules and runs < RESOLUTION_SEARCH_RUNS // 2:
            lo, hi = hi, hi * 10.0
            k, runs = run(hi), runs + 1
    else:
        while k > n_modules and runs < RESOLUTION_SEARCH_RUNS // 2:
            lo, hi = lo / 10.0, lo
            k, runs = run(lo), runs + 1
    while best[0][0] > 0 and runs < RESOLUTION_SEARCH_RUNS and hi / lo > 1 + 1e-9:
        mid = math.sqrt(lo * hi)
        k, runs = run(mid), runs + 1
        if k < n_modules:
            lo = mid
        else:
            hi = mid
    _, labels, gamma, q = best
    return labels, {"resolution_used": gamma, "quality_value": q, "resolution_search_runs": runs}


# ---------------------------------------------------------------------------- spectral
def _component_spectra(sub: _Connected, m: int, seed: int):
    """Smallest ``min(m, n_c)`` eigenpairs of each component's normalised Laplacian."""
    spectra = []
    for c in range(sub.n_components):
        nodes = np.flatnonzero(sub.component == c)
        A = sub.A[nodes][:, nodes]
        L = laplacian(A, normed=True)
        mc = min(m, len(nodes))
        vals = vecs = None
        if len(nodes) >= DENSE_EIGEN_MAX_NODES and mc < len(nodes) - 1:
            # Largest eigenvalues of I - L are the smallest of L; ARPACK converges far better on
            # the top of the spectrum than with which="SA". A fixed v0 keeps the result
            # deterministic (ARPACK starts from a random vector otherwise).
            v0 = np.random.default_rng(seed).standard_normal(len(nodes))
            N = sp.identity(len(nodes), format="csr") - L
            try:
                nv, vecs = eigsh(
                    N, k=mc, which="LA", v0=v0, ncv=min(len(nodes), max(2 * mc + 1, 40))
                )
                vals = 1.0 - nv
            except (ArpackNoConvergence, ArpackError):
                vals = None  # fall through to the dense solver: slower, but it always converges
        if vals is None:
            dense = L.toarray() if sp.issparse(L) else np.asarray(L)
            vals, vecs = scipy.linalg.eigh(dense, subset_by_index=[0, mc - 1])
        order = np.argsort(vals, kind="stable")
        spectra.append((nodes, np.maximum(vals[order], 0.0), vecs[:, order]))
    return spectra


def _choose_k(spectra, n_components: int) -> int:
    """Number of modules at the largest gap among the smallest eigenvalues (at least one per
    component, whose zero eigenvalue comes first)."""
    vals = np.sort(np.concatenate([s[1] for s in spectra]))[:EIGENGAP_MAX_MODULES]
    if len(vals) <= n_components:
        return n_components
    gaps = np.diff(vals)  # gaps[i-1] = vals[i] - vals[i-1]: a cut after the first i eigenvalues
    i = np.arange(1, len(vals))
    # The layered graph is bipartite (edges only join adjacent layers), so its normalised
    # Laplacian spectrum is symmetric about 1 and every gap below 1 reappears mirrored above it:
    # only cuts after an eigenvalue below 1 describe modules.
    gaps[(i < n_components) | (vals[:-1] >= 1.0 - 1e-9)] = -np.inf
    if not np.isfinite(gaps).any():
        return n_components
    # Among (numerically) equal largest gaps take the fewest modules.
    return int(i[np.flatnonzero(gaps >= gaps.max() * (1 - 1e-9))[0]])


def _kmeans(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    best, best_d = None, np.inf
    for _ in range(KMEANS_RESTARTS):
        try:
            centroids, labels = kmeans2(X, k, minit="++", missing="raise", rng=rng)
        except ClusterError:  # an empty cluster: this restart is unusable
            continue
        d = float(((X - centroids[labels]) ** 2).sum())
        if d < best_d:
            best, best_d = labels, d
    if best is None:
        # Every restart left a cluster empty (e.g. fewer distinct embedding rows than k): accept
        # fewer modules rather than fail; the caller reports the achieved number.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, best = kmeans2(X, k, minit="++", missing="warn", rng=rng)
    return best


def _refine(A: sp.csr_matrix, labels: np.ndarray, *, rtol: float = 1e-12, max_passes: int = 10_000):
    """Greedy single-node moves that strictly lower the cross-module cost.

    Each pass computes, for every node, its strength into every neighbouring module, and moves an
    independent set of improving nodes at once (a node moves only if its gain beats every
    improving neighbour's): the ends of no edge both move, so the gains add up exactly and the
    cost falls by their sum. A module never loses its last node.
    """
    labels = labels.copy()
    n = len(labels)
    k = int(labels.max()) + 1
    n_moves = 0
    for _ in range(max_passes):
        Z = sp.csr_matrix((np.ones(n), (np.arange(n), labels)), shape=(n, k))
        S = (A @ Z).tocsr()
        S.sum_duplicates()
        srows = np.repeat(np.arange(n), np.diff(S.indptr))
        is_own = S.indices == labels[srows]
        own = np.zeros(n)
        own[srows[is_own]] = S.data[is_own]
        S.data[is_own] = 0.0
        S.eliminate_zeros()
        best = np.asarray(S.max(axis=1).todense()).ravel()
        target = np.asarray(S.argmax(axis=1)).ravel()
        gain = best - own
        # rtol keeps rounding noise in the two sums from counting as an improvement.
        cand = gain > rtol * np.maximum(best, own)
        if not cand.any():
            break
        order = np.lexsort((np.arange(n), -gain))  # best gain first, ties by node number
        prio = np.zeros(n)
        prio[order] = np.arange(n, 0, -1)
        prio[~cand] = 0.0
        P = sp.csr_matrix((prio[A.indices], A.indices, A.indptr), shape=(n, n))
        nb = np.asarray(P.max(axis=1).todense()).ravel()
        move = cand & (prio > nb)
        size = np.bincount(labels, minlength=k)
        leaving = np.bincount(labels[move], minlength=k)
        for m in np.flatnonzero(leaving >= size):  # rare: keep the least eager leaver home
            members = np.flatnonzero(move & (labels == m))
            move[members[np.argmin(prio[members])]] = False
        if not move.any():
            break
        labels[move] = target[move]
        n_moves += int(move.sum())
    return labels, n_moves


def _spectral(sub: _Connected, *, n_modules, seed, refine=True, spectra=None):
    if spectra is None:
        m = (n_modules if n_modules is not None else EIGENGAP_MAX_MODULES) + 1
        spectra = _component_spectra(sub, m, seed)
    k = _choose_k(spectra, sub.n_components) if n_modules is None else n_modules
    info = {"eigenvalues": np.sort(np.concatenate([s[1] for s in spectra]))[: k + 1].tolist()}
    if k <= sub.n_components:
        return sub.merged_components(k), info

    # The spectrum of the whole graph is the union of the components' spectra: give each
    # component as many modules as it has eigenvalues among the k smallest (at least one, for
    # its zero eigenvalue; the extra k - n_components go to the smallest remaining ones).
    extra_vals = np.concatenate([s[1][1:] for s in spectra])
    extra_comp = np.concatenate([np.full(len(s[1]) - 1, c) for c, s in enumerate(spectra)])
    chosen = extra_comp[np.argsort(extra_vals, kind="stable")[: k - sub.n_components]]
    k_c = 1 + np.bincount(chosen, minlength=sub.n_components)

    rng = np.random.default_rng(seed)
    labels = np.empty(sub.n, dtype=np.int64)
    offset = 0
    for (nodes, _, vecs), kc in zip(spectra, k_c, strict=True):
        local = np.zeros(len(nodes), dtype=np.int64)
        if kc > 1:
            # Ng-Jordan-Weiss: rows of the first kc eigenvectors, normalised to unit length.
            X = vecs[:, :kc]
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-300)
            local = _canonical(_kmeans(X, int(kc), rng))
        labels[nodes] = offset + local
        offset += int(local.max()) + 1
    labels = _canonical(labels)
    if refine:
        cost_before = sub.cost(labels)
        labels, n_moves = _refine(sub.A, labels)
        info.update(cost_before_refinement=cost_before, refinement_moves=n_moves)
    return _canonical(labels), info


# ---------------------------------------------------------------------------- find_modules
def _validate(
    graph, method, n_modules, resolution, quality, seed, n_iterations, refine=True
) -> _Connected:
    _check_graph(graph)
    if not isinstance(refine, (bool, np.bool_)):
        raise InputError(f"refine must be True or False, got {refine!r}")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if quality not in QUALITIES:
        raise InputError(f"quality must be one of {QUALITIES}, got {quality!r}")
    _check_int(seed, "seed", low=0)
    n_iterations = _check_int(n_iterations, "n_iterations", low=-(2**31))
    if n_iterations == 0:
        raise InputError("n_iterations must be positive or negative (until stable), got 0")
    if resolution is not None:
        if method == "spectral":
            raise InputError(
                f"resolution is only used by method='leiden', got resolution={resolution!r} "
                "with method='spectral' (give n_modules instead)"
            )
        _check_resolution(resolution)
    sub = _Connected(graph)
    if sub.n == 0:
        raise InputError(
            f"graph has no edges: every w is <= eps^1/2 = {graph.threshold!r}, so there are no "
            "modules to find (lower eps)"
        )
    if n_modules is not None:
        _check_int(n_modules, "n_modules", low=1, high=sub.n)
    return sub


def _finish(graph, sub, labels, method, params, info) -> ModuleResult:
    full = np.full(graph.n_nodes, UNASSIGNED, dtype=np.int64)
    full[sub.idx] = labels
    full = _canonical(full)
    info = {"n_components": sub.n_components, "n_unassigned": graph.n_nodes - sub.n, **info}
    return ModuleResult(
        membership=dict(zip(graph.nodes, full.tolist(), strict=True)),
        cost=sub.cost(full[sub.idx]),
        n_modules=int(full.max()) + 1,
        method=method,
        params=params,
        info=info,
    )


def _find(
    sub, *, method, n_modules, resolution, quality, seed, n_iterations, refine=True, spectra=None
):
    params = {
        "method": method,
        "n_modules": n_modules,
        "resolution": resolution,
        "quality": quality,
        "seed": seed,
        "n_iterations": n_iterations,
        "refine": bool(refine),
    }
    if n_modules is not None and n_modules <= sub.n_components:
        # Whole components are modules for free (cost 0): no search can do better.
        labels, info = sub.merged_components(n_modules), {"shortcut": "components"}
    elif n_modules is not None and n_modules == sub.n:
        labels, info = np.arange(sub.n), {"shortcut": "singletons"}
    elif method == "leiden":
        labels, info = _leiden(
            sub,
            n_modules=n_modules,
            resolution=resolution,
            quality=quality,
            seed=seed,
            n_iterations=n_iterations,
        )
    else:
        labels, info = _spectral(
            sub, n_modules=n_modules, seed=seed, refine=refine, spectra=spectra
        )
    return _finish(sub.graph, sub, labels, method, params, info)


def find_modules(
    graph: InteractionGraph,
    *,
    method: str = "leiden",
    n_modules: int | None = None,
    resolution: float | None = None,
    quality: str = "modularity",
    seed: int = 0,
    n_iterations: int = -1,
    refine: bool = True,
) -> ModuleResult:
    """Partition the interaction graph into modules.

    Only nodes with at least one edge are partitioned; nodes without edges get module ``-1``
    (unassigned) and are not counted in ``n_modules``. Edge weights are the strengths
    ``ln(w / eps^1/2) >= 0``, on the undirected view of the graph.

    Parameters
    ----------
    graph : InteractionGraph
    method : {"leiden", "spectral"}
        ``"leiden"``: leidenalg on the strength-weighted graph, optimising ``quality``.
        ``"spectral"``: k-means on the row-normalised smallest eigenvectors of the normalised
        Laplacian (per connected component), then greedy single-node moves that strictly lower
        the cross-module cost, never emptying a module.
    n_modules : int, optional
        Number of modules wanted, ``1 <= n_modules <= number of connected nodes``. Spectral:
        the number of clusters (default: the largest gap among the 20 smallest Laplacian
        eigenvalues, and never fewer than the number of connected components). Leiden: the
        resolution is bisected (log scale, at most 40 runs) to get this many modules; best effort,
        ``result.n_modules`` says what was achieved. If it is at most the number of connected
        components, whole components are grouped into modules (cost 0, the optimum).
    resolution : float, optional
        Leiden only (positive). With ``quality="modularity"``, a given resolution switches to
        ``RBConfigurationVertexPartition`` (modularity with a resolution parameter; 1 is plain
        modularity). With ``quality="cpm"`` it is CPM's ``gamma``, default the graph's density
        ``sum(strength) / (n (n - 1) / 2)`` over connected nodes: a module is kept when it is
        denser than the graph as a whole. With ``n_modules`` it is the search's start.
    quality : {"modularity", "cpm"}
        Leiden quality function. CPM maximises ``sum_c (e_c - gamma * n_c (n_c - 1) / 2)``, with
        ``e_c`` the strength inside module ``c``; since ``sum_c e_c`` is the total strength minus
        the cross-module cost, this *minimises the cross-module cost plus gamma times the number
        of node pairs within modules*: the paper's cost plus a size penalty.
    seed : int
        Seed for Leiden, ARPACK's start vector and k-means; equal seeds give equal results (on CPU;
        other BLAS builds can round eigenvectors differently).
    n_iterations : int
        Leiden iterations; negative (default) iterates until the partition is stable.
    refine : bool
        Spectral only: after k-means, move single nodes while a move strictly lowers the
        cross-module cost (never emptying a module). This fixes nodes k-means put on the wrong
        side of a real module boundary. On graphs *without* module structure it erodes modules,
        often down to single weakly connected nodes, because a node's strength into a module
        grows with the module's size; the cost is then low but the split trivial. Check
        ``result.modules`` sizes, or compare with ``refine=False`` (the plain normalised-cut
        partition; ``info["cost_before_refinement"]`` holds its cost).

    Returns
    -------
    ModuleResult

    Raises
    ------
    InputError
        Unknown ``method`` or ``quality``; ``n_modules`` out of range; ``resolution`` not
        positive and finite, or given with ``method="spectral"``; a graph without edges.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.kron(np.eye(2), np.full((2, 2), 10.0))  # two blocks of 2 x 2 strong edges
    >>> g = InteractionGraph(("a", "b"), (np.ones(4), np.ones(4)), (w,), eps=1.0)
    >>> r = find_modules(g, method="spectral")
    >>> r.n_modules, r.cost, r.modules[0]
    (2, 0.0, ['0:0', '0:1', '1:0', '1:1'])
    """
    sub = _validate(graph, method, n_modules, resolution, quality, seed, n_iterations, refine)
    return _find(
        sub,
        method=method,
        n_modules=n_modules,
        resolution=resolution,
        quality=quality,
        seed=seed,
        n_iterations=n_iterations,
        refine=refine,
    )


# ---------------------------------------------------------------------------- cost curve
def cost_curve(
    graph: InteractionGraph,
    *,
    method: str = "spectral",
    ks=None,
    resolutions=None,
    quality: str = "cpm",
    seed: int = 0,
    n_iterations: int = -1,
    refine: bool = True,
) -> CostCurve:
    """Cross-module cost against the number of modules.

    Parameters
    ----------
    graph : InteractionGraph
    method : {"spectral", "leiden"}
        Spectral scans the number of modules ``ks``; Leiden scans ``resolutions``.
    ks : sequence of int, optional
        Spectral only; default ``1 .. min(20, number of connected nodes)``.
    resolutions : sequence of float, optional
        Leiden only; default 24 log-spaced values from ``density / 100`` to the largest edge
        strength for CPM (past which every node is its own module), ``0.01 .. 100`` for
        modularity.
    quality : {"cpm", "modularity"}
        Leiden quality (see :func:`find_modules`).
    seed, n_iterations : int
        As in :func:`find_modules`.
    refine : bool
        Spectral only, as in :func:`find_modules`.

    Returns
    -------
    CostCurve
        One point per ``k`` or resolution; the partition at ``k`` is the one
        ``find_modules(graph, method="spectral", n_modules=k)`` returns (up to eigensolver
        rounding, as the spectrum is computed once for the whole scan).
    """
    sub = _validate(graph, method, None, None, quality, seed, n_iterations, refine)
    n_mod, costs = [], []
    if method == "spectral":
        if resolutions is not None:
            raise InputError("resolutions is only used by method='leiden', got method='spectral'")
        ks = np.arange(1, min(EIGENGAP_MAX_MODULES, sub.n) + 1) if ks is None else ks
        ks = np.array([_check_int(k, "ks[...]", low=1, high=sub.n) for k in ks], dtype=np.int64)
        spectra = _component_spectra(sub, int(ks.max()) + 1, seed) if len(ks) else None
        for k in ks.tolist():
            r = _find(
                sub,
                method=method,
                n_modules=k,
                resolution=None,
                quality=quality,
                seed=seed,
                n_iterations=n_iterations,
                refine=refine,
                spectra=spectra,
            )
            n_mod.append(r.n_modules)
            costs.append(r.cost)
        res = None
    else:
        if ks is not None:
            raise InputError("ks is only used by method='spectral', got method='leiden'")
        if resolutions is None:
            if quality == "cpm":
                top = float(sub.strength.max())
                resolutions = np.geomspace(min(sub.density / 100, top / 1e4), top, 24)
            else:
                resolutions = np.geomspace(1e-2, 1e2, 24)
        res = np.array([_check_resolution(r, "resolutions[...]") for r in resolutions])
        for gamma in res.tolist():
            r = _find(
                sub,
                method=method,
                n_modules=None,
                resolution=gamma,
                quality=quality,
                seed=seed,
                n_iterations=n_iterations,
            )
            n_mod.append(r.n_modules)
            costs.append(r.cost)
        ks = None
    return CostCurve(
        method=method,
        n_modules=np.array(n_mod, dtype=np.int64),
        cost=np.array(costs, dtype=np.float64),
        ks=ks,
        resolutions=res,
        params={"quality": quality, "seed": seed, "n_iterations": n_iterations, "refine": refine},
    )


# ---------------------------------------------------------------------------- significance
def shuffled_graph(graph: InteractionGraph, rng: np.random.Generator) -> InteractionGraph:
    """The null model: each ``w[l]``'s entries permuted over all positions of that matrix.

    Layer sizes, importances and the number of edges between each pair of layers (and their
    strengths) are kept; only which directions they join is randomised.
    """
    w = tuple(rng.permutation(wl.ravel()).reshape(wl.shape) for wl in graph.w)
    return InteractionGraph(graph.layer_names, graph.importance, w, eps=graph.eps)


def module_significance(
    graph: InteractionGraph, result: ModuleResult, *, n_null: int = 20, seed: int = 0
) -> Significance:
    """Is the partition's cross-module cost lower than on graphs without module structure?

    Each null graph is ``graph`` with the entries of every ``w[l]`` shuffled (see
    :func:`shuffled_graph`), partitioned with ``result.params``. For ``method="spectral"`` the
    null partitions get ``n_modules = result.n_modules``, so like is compared with like (the cost
    grows with the number of modules); Leiden keeps its parameters and finds its own number.

    The null costs of spectral partitions with ``refine=True`` are spread widely: on a graph
    without modules the refinement sometimes erodes modules to single nodes (low cost) and
    sometimes not, so read ``p_value`` rather than ``z`` there, or test a ``refine=False`` result.

    Parameters
    ----------
    graph : InteractionGraph
        The graph ``result`` partitions.
    result : ModuleResult
    n_null : int
        Number of shuffled graphs, at least 2.
    seed : int
        Seed of the shuffles (the partitions use ``result.params["seed"]``).

    Returns
    -------
    Significance
        ``z`` strongly negative and ``p_value`` near ``1 / (1 + n_null)`` mean significant
        modularity. With zero spread in the null costs, ``z`` is 0 if ``cost`` equals them and
        +-inf otherwise.
    """
    _check_graph(graph)
    if not isinstance(result, ModuleResult):
        raise InputError(f"result must be a ModuleResult, got {type(result).__name__}")
    n_null = _check_int(n_null, "n_null", low=2)
    _check_int(seed, "seed", low=0)
    cost = cross_module_cost(graph, result.membership)
    params = dict(result.params)
    if params.get("method") == "spectral":
        params["n_modules"] = result.n_modules
    rng = np.random.default_rng(seed)
    null_costs = np.empty(n_null)
    for t in range(n_null):
        null = shuffled_graph(graph, rng)
        sub = _Connected(null)
        p = dict(params)
        if p.get("n_modules") is not None:
            p["n_modules"] = min(p["n_modules"], sub.n)  # shuffling can strand nodes
        null_costs[t] = _find(sub, **p).cost
    mean, sd = float(null_costs.mean()), float(null_costs.std(ddof=1))
    if sd > 0:
        z = (cost - mean) / sd
    else:
        z = 0.0 if cost == mean else math.copysign(math.inf, cost - mean)
    p_value = (1 + int(np.sum(null_costs <= cost))) / (1 + n_null)
    return Significance(
        cost=cost, null_costs=null_costs, z=float(z), p_value=p_value, n_null=n_null, params=params
    )


# ---------------------------------------------------------------------------- comparison
def adjusted_rand_index(labels_a, labels_b) -> float:
    """Adjusted Rand index of two labelings of the same items (Hubert & Arabie 1985).

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

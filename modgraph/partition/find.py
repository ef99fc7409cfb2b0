"""``find_modules`` and ``cost_curve``: the solvers behind one entry point."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validation import check_bool, check_choice, check_int, check_real, check_seed, invalid
from ..errors import InputError
from ..graph import InteractionGraph
from .leiden import leiden_labels
from .objective import UNASSIGNED, ConnectedGraph, ModuleResult, canonical, check_graph
from .spectral import EIGENGAP_MAX_MODULES, component_spectra, spectral_labels

__all__ = ["METHODS", "QUALITIES", "CostCurve", "find_modules", "cost_curve", "solve"]

METHODS = ("leiden", "spectral")
QUALITIES = ("modularity", "cpm")
#: The options of find_modules, in order: a ModuleResult's ``params``.
_PARAMS = ("method", "n_modules", "resolution", "quality", "seed", "n_iterations", "refine")


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


def _validate(where: str, graph, params: dict) -> ConnectedGraph:
    """Check the options of ``where`` (find_modules or cost_curve); the graph's connected part."""
    check_graph(graph, where)
    method, n_modules, resolution = params["method"], params["n_modules"], params["resolution"]
    quality, seed, n_iterations = params["quality"], params["seed"], params["n_iterations"]
    refine = params["refine"]
    check_bool(where, "refine", refine)
    check_choice(where, "method", method, METHODS)
    check_choice(where, "quality", quality, QUALITIES)
    check_seed(where, seed)
    n_iterations = check_int(where, "n_iterations", n_iterations, low=-(2**31), high=2**31 - 1)
    if n_iterations == 0:
        raise invalid(where, "n_iterations", "positive, or negative (until stable)", 0)
    if resolution is not None:
        if method == "spectral":
            raise invalid(
                where, "resolution", "None with method='spectral' (give n_modules)", resolution
            )
        check_real(where, "resolution", resolution, low=0, low_open=True)
    sub = ConnectedGraph(graph)
    if sub.n == 0:
        raise InputError(
            f"graph has no edges: every w is <= eps^1/2 = {graph.threshold!r}, so there are no "
            "modules to find (lower eps)"
        )
    if n_modules is not None:
        check_int(where, "n_modules", n_modules, low=1, high=sub.n)
    return sub


def _finish(sub: ConnectedGraph, labels, params: dict, info: dict) -> ModuleResult:
    graph = sub.graph
    full = np.full(graph.n_nodes, UNASSIGNED, dtype=np.int64)
    full[sub.idx] = labels
    full = canonical(full)
    info = {"n_components": sub.n_components, "n_unassigned": graph.n_nodes - sub.n, **info}
    return ModuleResult(
        membership=dict(zip(graph.nodes, full.tolist(), strict=True)),
        cost=sub.cost(full[sub.idx]),
        n_modules=int(full.max()) + 1,
        method=params["method"],
        params=params,
        info=info,
    )


def solve(sub: ConnectedGraph, params: dict, *, spectra=None) -> ModuleResult:
    """Partition the connected part ``sub`` with checked :func:`find_modules` ``params``.

    ``spectra`` (spectral only) reuses eigenpairs already computed for a scan over ``k``.
    """
    params = {**params, "refine": bool(params.get("refine", True))}
    n_modules = params["n_modules"]
    if n_modules is not None and n_modules <= sub.n_components:
        # Whole components are modules for free (cost 0): no search can do better.
        labels, info = sub.merged_components(n_modules), {"shortcut": "components"}
    elif n_modules is not None and n_modules == sub.n:
        labels, info = np.arange(sub.n), {"shortcut": "singletons"}
    elif params["method"] == "leiden":
        labels, info = leiden_labels(
            sub,
            n_modules=n_modules,
            resolution=params["resolution"],
            quality=params["quality"],
            seed=params["seed"],
            n_iterations=params["n_iterations"],
        )
    else:
        labels, info = spectral_labels(
            sub, n_modules=n_modules, seed=params["seed"], refine=params["refine"], spectra=spectra
        )
    return _finish(sub, labels, params, info)


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
        ``"leiden"``: leidenalg on the strength-weighted graph, optimizing ``quality``.
        ``"spectral"``: k-means on the row-normalized smallest eigenvectors of the normalized
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
        ``result.modules`` sizes, or compare with ``refine=False`` (the plain normalized-cut
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
    options = (method, n_modules, resolution, quality, seed, n_iterations, refine)
    params = dict(zip(_PARAMS, options, strict=True))
    return solve(_validate("find_modules", graph, params), params)


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
    where = "cost_curve"
    base = dict(zip(_PARAMS, (method, None, None, quality, seed, n_iterations, refine)))
    sub = _validate(where, graph, base)
    n_mod, costs = [], []
    if method == "spectral":
        if resolutions is not None:
            raise invalid(where, "resolutions", "None with method='spectral'", resolutions)
        ks = np.arange(1, min(EIGENGAP_MAX_MODULES, sub.n) + 1) if ks is None else ks
        ks = np.array([check_int(where, "ks[...]", k, low=1, high=sub.n) for k in ks], np.int64)
        spectra = component_spectra(sub, int(ks.max()) + 1, seed) if len(ks) else None
        for k in ks.tolist():
            r = solve(sub, {**base, "n_modules": k}, spectra=spectra)
            n_mod.append(r.n_modules)
            costs.append(r.cost)
        res = None
    else:
        if ks is not None:
            raise invalid(where, "ks", "None with method='leiden'", ks)
        if resolutions is None:
            if quality == "cpm":
                top = float(sub.strength.max())
                resolutions = np.geomspace(min(sub.density / 100, top / 1e4), top, 24)
            else:
                resolutions = np.geomspace(1e-2, 1e2, 24)
        res = np.array(
            [check_real(where, "resolutions[...]", r, low=0, low_open=True) for r in resolutions]
        )
        for gamma in res.tolist():
            r = solve(sub, {**base, "resolution": gamma, "refine": True})
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

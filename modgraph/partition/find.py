"""``find_modules`` and ``cost_curve``: one objective, two solvers, and the number of modules.

(The default for an automatic number, ``method="infomap"``, takes the scan's verdict below and
the modules and their number from the map equation instead of the bisection: :mod:`.mapequation`.)

The number of modules comes from the null model (:mod:`.null`), as in the gap statistic of
Tibshirani, Walther & Hastie (2001) with a significance test on top. For every ``k = 2 .. 10``
the graph is partitioned into ``k`` modules, and so is each of ``n_null`` null graphs (drawn
once, shared by all ``k``); each ``k`` gets a one-sided test of "the graph's normalized cut is no
lower than its null graphs'". A ``k`` counts only if its p-value is at most ``alpha / m``
(Bonferroni over the ``m`` values of ``k`` scanned, so a graph without modules passes with
probability at most ``alpha`` whatever the dependence between the tests). Among those, the
``k`` with the largest gap between the graph and its null graphs (most negative ``z``, in log
normalized cut) is chosen, except that a significant partition along connected components
(cut 0) beats any that cuts edges, the finest of them first; with none, the graph is one module
and the verdict says "no significant modular structure".

That scan decides *whether* the graph is modular. *How many* modules comes from recursive
bisection (:func:`_bisection`): each part is split in two and the split kept only if it is
significant against null graphs of that part alone. A single scan of the whole graph stops early
when one module is much more separate than the others (its own split then has the largest gap,
and the other splits look small next to it); the bisection tests the rest on its own. Multiple
testing: the whole graph's hypothesis ("no modular structure") is the scan's, tested at
``alpha`` (Bonferroni over ``k``); once the scan rejects it, the whole graph is split in two
(the scan's split at ``k = 2``, whether or not that ``k`` is the significant one), and each later
split of a part of ``m`` of the ``n`` nodes is tested at ``alpha m / n`` (hierarchical testing),
only inside a part that an earlier split made.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from .._validation import check_bool, check_choice, check_int, check_real, check_seed, invalid
from ..errors import InputError
from ..graph import InteractionGraph
from .leiden import leiden_labels
from .mapequation import consolidate, map_equation
from .null import ZERO_CUT, compare, fixed_by_strengths, null_graph, null_test, untestable
from .objective import UNASSIGNED, ConnectedGraph, ModuleResult, canonical, check_graph
from .refine import merge_to, refine_ncut
from .solvers import (
    FINER_KS,
    along_layers,
    best_split,
    from_start,
    labels_at_k,
    leiden_fine,
    refined,
)
from .spectral import component_spectra

__all__ = [
    "AUTO", "METHODS", "QUALITIES", "CostCurve", "find_modules", "cost_curve", "resolve_method",
    "solve",
]  # fmt: skip

METHODS = ("leiden", "spectral", "infomap")
#: ``method="auto"``: the map equation where the number of modules is chosen, else Leiden.
AUTO = "auto"
QUALITIES = ("modularity", "cpm")
#: The options of find_modules, in order: a ModuleResult's ``params``.
_PARAMS = (
    "method", "n_modules", "resolution", "quality", "seed", "n_iterations", "refine", "alpha",
    "n_null",
)  # fmt: skip
#: Largest number of modules the automatic choice considers.
AUTO_MAX_MODULES = 10
#: A split of the bisection whose model p passes but that a null graph cuts as little is tested
#: again on this many times ``n_null`` null graphs (see :func:`~.null.null_test`).
BISECTION_NULL_FACTOR = 10
#: Largest number of modules a cost curve scans by default.
CURVE_MAX_MODULES = 10


@dataclass(frozen=True)
class CostCurve:
    """The objective against the number of modules, with the null model's band.

    Attributes
    ----------
    method : str
    ks : ndarray of int64, shape (n_points,)
        Requested numbers of modules.
    n_modules : ndarray of int64, shape (n_points,)
        Number of modules found at each ``k`` (fewer when the solver could not make ``k``).
    ncut : ndarray of float64, shape (n_points,)
        Normalized cut of the partition at each ``k`` (the objective; lower is more modular).
    cost : ndarray of float64, shape (n_points,)
        The paper's cross-module cost of the same partitions.
    null_mean, null_std : ndarray of float64, shape (n_points,)
        Mean and standard deviation of the normalized cut the same solver finds at ``k`` on
        ``n_null`` null graphs (``nan`` at ``k = 1``, where every partition scores 0).
    params : dict
    """

    method: str
    ks: np.ndarray
    n_modules: np.ndarray
    ncut: np.ndarray
    cost: np.ndarray
    null_mean: np.ndarray
    null_std: np.ndarray
    params: dict = field(default_factory=dict)

    @classmethod
    def from_scan(cls, result: ModuleResult) -> CostCurve:
        """The curve of the scan that chose ``result``'s number of modules (no new partitions).

        The partitions and null graphs at each ``k`` are those the automatic choice compared;
        ``k = 1`` scores 0. Raises InputError when ``result`` did not come from a scan (a
        requested ``k`` or resolution, or a graph too small or too fragmented to test).
        """
        scan = result.info.get("scan")
        if not scan:
            raise InputError(
                "result has no scan to draw (its number of modules was requested, or its graph "
                "could not be tested): use cost_curve(graph, ...)"
            )
        one = {"k": 1, "n_modules": 1, "ncut": 0.0, "cost": 0.0,
               "null_ncut_mean": math.nan, "null_ncut_std": math.nan}  # fmt: skip
        rows = [one, *scan]

        def col(key, dtype=np.float64):
            return np.array([t[key] for t in rows], dtype=dtype)

        return cls(
            method=result.method, ks=col("k", np.int64), n_modules=col("n_modules", np.int64),
            ncut=col("ncut"), cost=col("cost"), null_mean=col("null_ncut_mean"),
            null_std=col("null_ncut_std"),
            params={k: result.params[k] for k in ("seed", "n_null", "n_iterations", "refine")},
        )  # fmt: skip


def resolve_method(method: str, n_modules, resolution=None) -> str:
    """``method``, with ``"auto"`` made ``"infomap"`` where the number of modules is chosen
    automatically (no ``n_modules`` or ``resolution``) and ``"leiden"`` otherwise."""
    if method != AUTO:
        return method
    return "infomap" if n_modules is None and resolution is None else "leiden"


def _validate(where: str, graph, params: dict) -> ConnectedGraph:
    """Check the options of ``where`` (find_modules or cost_curve); the graph's connected part."""
    check_graph(graph, where)
    method, n_modules, resolution = params["method"], params["n_modules"], params["resolution"]
    check_bool(where, "refine", params["refine"])
    check_choice(where, "method", method, METHODS)
    check_choice(where, "quality", params["quality"], QUALITIES)
    check_seed(where, params["seed"])
    n_iterations = params["n_iterations"]
    n_iterations = check_int(where, "n_iterations", n_iterations, low=-(2**31), high=2**31 - 1)
    if n_iterations == 0:
        raise invalid(where, "n_iterations", "positive, or negative (until stable)", 0)
    check_real(where, "alpha", params["alpha"], low=0, high=1, low_open=True, high_open=True)
    check_int(where, "n_null", params["n_null"], low=2)
    if resolution is None and params["quality"] != "modularity":
        raise invalid(
            where, "quality", "'modularity' unless a resolution is given", params["quality"]
        )
    if method == "infomap" and (n_modules is not None or resolution is not None):
        name, value = (
            ("n_modules", n_modules) if n_modules is not None else ("resolution", resolution)
        )
        raise invalid(
            where, name, "None with method='infomap', which chooses the number of modules "
            "itself (give method='leiden' or 'spectral' for a number of your own)", value,
        )  # fmt: skip
    if resolution is not None:
        if method == "spectral":
            raise invalid(
                where, "resolution", "None with method='spectral' (give n_modules)", resolution
            )
        if n_modules is not None:
            raise invalid(where, "resolution", "None when n_modules is given", resolution)
        check_real(where, "resolution", resolution, low=0, low_open=True)
    sub = ConnectedGraph(graph)
    if sub.n == 0:
        raise InputError(
            f"graph has no edges: every w is <= eps^1/2 = {graph.threshold!r}, so there are no "
            "modules to find (lower eps)"
        )
    if n_modules is not None:
        check_int(where, "n_modules", n_modules, low=1)
        if n_modules > sub.n:
            raise invalid(
                where, "n_modules",
                f"at most the {sub.n} nodes with an edge above eps^1/2 (of the graph's "
                f"{graph.n_nodes}; lower eps for more)", n_modules,
            )  # fmt: skip
    return sub


def _finish(
    sub: ConnectedGraph, labels, params: dict, info: dict, significance=None
) -> ModuleResult:
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
        ncut=sub.ncut(full[sub.idx]),
        significance=significance,
    )


def _scan(sub: ConnectedGraph, params: dict, ks: np.ndarray, n_null: int, spectra=None):
    """For each ``k``: the partition found, and the same search on ``n_null`` null graphs.

    The null graphs are drawn once and partitioned at every ``k``. Returns (partitions,
    tests) with ``tests[i]`` the :class:`Significance` of ``partitions[i]``.
    """
    method, seed = params["method"], params["seed"]
    # two modules are regrouped below, from the partitions at 3 and 4 the scan makes anyway
    kwargs = {"seed": seed, "n_iterations": params["n_iterations"], "refine": params["refine"],
              "regroup": False}  # fmt: skip
    rng = np.random.default_rng(seed)
    nulls = [null_graph(sub, rng) for _ in range(n_null)] if not fixed_by_strengths(sub) else []
    kmax = int(ks.max())
    if method == "spectral":
        spectra = [spectra, *(component_spectra(g, kmax + 1, seed) for g in nulls)]
    by_k = []  # each graph's partition at every k
    for i, g in enumerate([sub, *nulls]):
        native = []  # Leiden's own partition, whose groupings are candidates for k = 2 too
        if method == "spectral":
            merged = {
                k: labels_at_k(g, method, min(k, g.n), spectra=spectra[i], **kwargs)[0]
                for k in ks.tolist()
            }
        else:  # one Leiden run per graph, merged down one k at a time (see leiden_fine)
            merged, cur = {}, leiden_fine(g, kmax, seed, params["n_iterations"])
            native = [cur]
            for k in sorted(ks.tolist(), reverse=True):
                cur = merge_to(g, cur, min(k, g.n))
                merged[k] = from_start(g, cur, min(k, g.n), params["refine"])
        if 2 in merged:  # two modules as labels_at_k finds them
            finer = [merged[j] for j in FINER_KS if j in merged] + native
            merged[2] = best_split(g, merged[2], finer, params["refine"])[0]
        by_k.append(merged)
    found = [by_k[0][k] for k in ks.tolist()]
    tests = [compare(sub, by_k[0][k], nulls, [m[k] for m in by_k[1:]], params) for k in ks.tolist()]
    return found, tests


def _bisection(sub: ConnectedGraph, params: dict, root) -> tuple[np.ndarray, list[dict]]:
    """Modules by recursive bisection, each split tested on its own part (a module tree).

    Starting from the whole graph, a part is split in two by the solver and the split is kept
    if it is significant against null graphs of that part alone (:func:`~.null.null_graph` of
    the induced subgraph, so the null keeps the part's own degrees and strengths); the halves
    are then tried in turn, breadth first, up to ``AUTO_MAX_MODULES`` modules. Unlike one scan
    over ``k`` of the whole graph, a module much more separate than the others does not hide
    the others: they are split on their own. ``root``: the whole graph's split in two
    (:func:`_root_split`) and the record of the scan's test, which made it.

    Multiple testing (Meinshausen 2008, hierarchical testing): the whole graph is the scan's
    hypothesis, at ``alpha``; a part of ``m`` of its ``n`` nodes is tested at ``alpha m / n``, and
    only once the split that made it was kept. A wrong split needs a first wrong one: the whole
    graph's, when it has no structure (the scan errs, at most ``alpha``), or one on a part
    without structure whose parent split was right; such parts are disjoint, so their levels sum
    to at most ``alpha``. A test is
    sequential (:func:`~.null.null_test`): it stops once ``p <= level`` is out of reach, and
    draws ``BISECTION_NULL_FACTOR`` times ``n_null`` null graphs where ``n_null`` cannot show a
    ``p`` that small (``p`` is never below the share of null graphs that cut as little); that
    one look can at most double a split's error rate (two tests, each at ``level``), so the
    bound on a wrong split is ``2 alpha`` at worst. Returns the leaves' labels and one record
    per split tried.
    """
    rng = np.random.default_rng(params["seed"])
    kwargs = {"seed": params["seed"], "n_iterations": params["n_iterations"],
              "refine": params["refine"]}  # fmt: skip
    leaves, queue, tree = [], [np.arange(sub.n)], []
    while queue:
        nodes = queue.pop(0)
        part = sub.induced(nodes)
        if len(leaves) + len(queue) + 1 >= AUTO_MAX_MODULES or part.n < 4:
            leaves.append(nodes)
            continue
        if root is not None:  # the whole graph: the scan rejected "no modular structure"
            (labels, record), root = root, None
            split = labels.max() == 1
        else:
            level = params["alpha"] * part.n / sub.n
            labels = labels_at_k(part, params["method"], 2, **kwargs)[0]
            t = null_test(part, labels, params, n_null=params["n_null"], rng=rng, level=level,
                          n_max=BISECTION_NULL_FACTOR * params["n_null"])  # fmt: skip
            split = t.testable and t.p_value <= level and labels.max() == 1
            record = {"p_value": float(t.p_value), "level": level, "null_graphs": int(t.n_null)}
        tree.append({"nodes": int(part.n), **record, "split": bool(split)})
        if split:
            queue += [nodes[labels == 0], nodes[labels == 1]]
        else:
            leaves.append(nodes)
    out = np.zeros(sub.n, dtype=np.int64)
    for i, nodes in enumerate(leaves):
        out[nodes] = i
    return canonical(out), tree


def _root_split(sub: ConnectedGraph, params: dict, scanned: np.ndarray, spectra) -> np.ndarray:
    """The whole graph's split in two: the lower normalized cut of the scan's at ``k = 2`` and
    the search every part of the bisection gets (:func:`labels_at_k`), one not along layers
    (:func:`along_layers`) first.

    The scan partitions the graph and each null graph with one search over its ``k``'s (for
    Leiden one run at the largest ``k``, merged down), so that all are alike; the split itself
    is not tested (the scan's test stands for it), so it may as well be the best found. A
    merged-down Leiden split can cut through two modules where a search for two finds the
    modules (a network of 5 planted modules: normalized cut 0.208 searched, the scan's split
    through two modules, after which the part holding them was not significant).
    """
    searched = labels_at_k(sub, params["method"], 2, seed=params["seed"],
                           n_iterations=params["n_iterations"], refine=params["refine"],
                           spectra=spectra)[0]  # fmt: skip
    return min((scanned, searched), key=lambda z: (along_layers(sub, z), sub.ncut(z)))


def _automatic(sub: ConnectedGraph, params: dict, *, bisect: bool = True) -> ModuleResult:
    """The scan decides whether the graph is modular; ``bisect``: how many modules from the
    recursive bisection (else the scan's chosen ``k``, for a caller that chooses them itself)."""
    ks = np.arange(2, min(AUTO_MAX_MODULES, sub.n - 1) + 1)
    if len(ks) == 0 or sub.n_components >= AUTO_MAX_MODULES:
        # Too few nodes to test, or more components than k's scanned: components are modules.
        labels, info = labels_at_k(sub, params["method"], max(sub.n_components, 1),
                                   seed=params["seed"])  # fmt: skip
        note = (
            "cannot test: fewer than 3 connected nodes"
            if len(ks) == 0
            else (f"cannot test: {sub.n_components} connected components, each a module at no cost")
        )
        return _finish(sub, labels, params, info, significance=untestable(params, note))
    spectra = None
    if params["method"] == "spectral":
        spectra = component_spectra(sub, int(ks.max()) + 1, params["seed"])
    found, tests = _scan(sub, params, ks, params["n_null"], spectra=spectra)
    m = len(ks)
    level = params["alpha"] / m
    scan = [{"k": int(k), **t.to_dict(), "cost": sub.cost(z)}
            for k, t, z in zip(ks, tests, found, strict=True)]  # fmt: skip
    info = {"alpha": params["alpha"], "bonferroni_tests": m, "scan": scan,
            "edges_per_node": len(sub.src) / sub.n}  # fmt: skip
    testable = [i for i, t in enumerate(tests) if t.testable]
    if not testable:
        labels = np.zeros(sub.n, dtype=np.int64)
        return _finish(sub, labels, params, info, significance=tests[0])
    significant = [i for i in testable if tests[i].p_value <= level]
    info["significant_ks"] = [int(ks[i]) for i in significant]
    if significant:
        # the largest gap between the graph and its null graphs (in log normalized cut); a
        # partition along connected components cuts nothing, and of those the finest is chosen
        free = [i for i in significant if tests[i].ncut <= ZERO_CUT]
        best = max(free) if free else min(significant, key=lambda i: (tests[i].z, ks[i]))
        labels, info["modules_from"] = found[best], "scan"
        if bisect:  # how many: the significant recursive bisection, from the whole graph's split
            scan_test = {"p_value": min(1.0, m * min(tests[i].p_value for i in testable)),
                         "level": params["alpha"], "null_graphs": params["n_null"]}  # fmt: skip
            root = _root_split(sub, params, found[0], spectra)
            tree_labels, info["tree"] = _bisection(sub, params, (root, scan_test))
            if tree_labels.max() > 0:
                labels = refine_ncut(sub, tree_labels)[0] if params["refine"] else tree_labels
                info["modules_from"] = "bisection"
    else:
        best = min(testable, key=lambda i: (tests[i].p_value, ks[i]))
        labels = np.zeros(sub.n, dtype=np.int64)
    t = tests[best]
    sig = dataclasses.replace(
        t, p_value=min(1.0, m * t.p_value),
        note=f"Bonferroni-adjusted over k = 2..{int(ks.max())}; raw p = {t.p_value:.3g}",
    )  # fmt: skip
    return _finish(sub, labels, params, info, significance=sig)


def _map_equation(sub: ConnectedGraph, params: dict) -> ModuleResult:
    """``method="infomap"``: whether the graph is modular from the scan of the normalized cut
    (Leiden's automatic choice, the same test and calibration); which modules and how many from
    the map equation (:mod:`.mapequation`), joined where its split is no evidence of two modules
    (:func:`~.mapequation.consolidate`). Where
    the scan finds no structure the graph is one module, and where it cannot test (too few
    nodes, 10 or more components) or the map equation finds one module, the scan's modules (its
    chosen ``k``) stand."""
    scan = _automatic(sub, {**params, "method": "leiden"}, bisect=False)  # no bisection to discard
    info = dict(scan.info)
    if scan.n_modules < 2 or not scan.significance.testable:  # no structure, or no test
        return _finish(sub, scan.membership_array[sub.idx], params, info, scan.significance)
    found, codelength, one_level = map_equation(sub, params["seed"])
    labels = consolidate(sub, found)
    info.update({"codelength": codelength, "one_level_codelength": one_level,
                 "map_equation_modules": int(found.max()) + 1})  # fmt: skip
    if labels.max() == 0:
        labels = scan.membership_array[sub.idx]
    else:
        info["modules_from"] = "map equation"
    return _finish(sub, labels, params, info, scan.significance)


def solve(sub: ConnectedGraph, params: dict, *, spectra=None) -> ModuleResult:
    """Partition the connected part ``sub`` with checked :func:`find_modules` ``params``."""
    k = params["n_modules"]
    if params["method"] == "infomap":
        return _map_equation(sub, params)
    if k is None and params["resolution"] is None:
        return _automatic(sub, params)
    if k is not None:
        labels, info = labels_at_k(
            sub, params["method"], k, seed=params["seed"], n_iterations=params["n_iterations"],
            refine=params["refine"], spectra=spectra,
        )  # fmt: skip
        return _finish(sub, labels, params, info)
    labels, info = leiden_labels(
        sub, n_modules=None, resolution=params["resolution"], quality=params["quality"],
        seed=params["seed"], n_iterations=params["n_iterations"],
    )  # fmt: skip
    if params["refine"]:
        labels = refined(sub, labels, info)
    return _finish(sub, labels, params, info)


def find_modules(  # noqa: PLR0913 (keyword-only options of one entry point)
    graph: InteractionGraph,
    *,
    method: str = AUTO,
    n_modules: int | None = None,
    resolution: float | None = None,
    quality: str = "modularity",
    seed: int = 0,
    n_iterations: int = 2,
    refine: bool = True,
    alpha: float = 0.05,
    n_null: int = 20,
) -> ModuleResult:
    """Partition the interaction graph into modules, and test them against graphs without.

    The objective is the paper's cross-module cost made relative to module size, the
    normalized cut in units of ``ln(w / eps^1/2)`` (see :func:`normalized_cut` for why the bare
    cost cannot be used): Leiden and spectral search for its lowest value, and the test of
    whether the graph is modular compares it with null graphs'. At an automatic number of
    modules the default takes the modules from the map equation instead (``method``). Only
    nodes with at least one edge are partitioned; nodes without edges get module ``-1``
    (unassigned) and are not counted in ``n_modules``.

    Parameters
    ----------
    graph : InteractionGraph
    method : {"auto", "infomap", "leiden", "spectral"}
        ``"auto"`` (default): ``"infomap"`` when the number of modules is chosen automatically,
        ``"leiden"`` when ``n_modules`` or ``resolution`` is given (``result.method`` says
        which). Otherwise, how the search starts. ``"leiden"``: leidenalg (modularity) on the
        cost-weighted graph, then modules merged pairwise (the merge that lowers the normalized
        cut most) down to the number wanted. ``"spectral"``: k-means on the row-normalized
        smallest eigenvectors of the normalized Laplacian (the normalized cut's relaxation), per
        connected component. Either way single nodes are then moved while that lowers the
        normalized cut.
        ``"infomap"``: whether the graph is modular as with ``"leiden"`` (the same scan and
        test, so the same ``result.significance``), and then the modules and their number from
        the map equation (:mod:`modgraph.partition.mapequation`, minimum description length)
        instead of the bisection (``info["modules_from"]``). No ``n_modules`` or
        ``resolution``.
    n_modules : int, optional
        Number of modules wanted, ``1 <= n_modules <= number of connected nodes``. By default it
        is chosen (see :mod:`modgraph.partition.find`): a scan over ``k = 1 .. 10`` against the
        null model decides whether the graph is modular (``result.significance``, the
        Bonferroni-adjusted p; ``result.info["scan"]``, the test at every ``k``); then the map
        equation (``"infomap"``) or a recursive bisection (``"leiden"``, ``"spectral"``; each
        split in ``result.info["tree"]``: its part's ``nodes``, ``p_value``, ``level``, ``split``
        and the ``null_graphs`` its sequential test used, the first the whole graph) gives the
        modules; ``info["modules_from"]`` says which (``"scan"`` where the graph is too small
        to bisect). A graph without significant structure comes back as one module
        (``result.verdict`` says so). A graph of 10 or more connected components gets one
        module per component (cost 0), untested.
    resolution : float, optional
        Leiden only, instead of ``n_modules``: one plain Leiden run at this resolution (CPM's
        ``gamma`` with ``quality="cpm"``, else modularity's resolution), then refined. No test.
    quality : {"modularity", "cpm"}
        Leiden quality for a given ``resolution``.
    seed : int
        Seed for Leiden, ARPACK's start vector, k-means and the null graphs; equal seeds give
        equal results (on CPU; other BLAS builds can round eigenvectors differently).
    n_iterations : int
        Leiden iterations (2, leidenalg's default; the refinement on the normalized cut follows
        anyway); negative iterates until the partition is stable, which took about 10
        iterations per run on the null graphs of ``benchmarks/bench_partition.py``.
    refine : bool
        Move single nodes while that strictly lowers the normalized cut (default). ``False``
        keeps the solver's own partition.
    alpha : float
        Family-wise error rate of the automatic number of modules, in (0, 1).
    n_null : int
        Null graphs of the automatic number of modules (each partitioned at every ``k``), at
        least 2.

    Returns
    -------
    ModuleResult
        ``cost`` is the paper's cross-module cost, ``ncut`` the objective.

    Raises
    ------
    InputError
        Unknown ``method`` or ``quality``; ``n_modules`` out of range; ``resolution`` not
        positive and finite, or given with ``method="spectral"`` or with ``n_modules``;
        ``alpha`` outside (0, 1); a graph without edges.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.kron(np.eye(2), np.full((2, 2), 10.0))  # two blocks of 2 x 2 strong edges
    >>> g = InteractionGraph(("a", "b"), (np.ones(4), np.ones(4)), (w,), eps=1.0)
    >>> r = find_modules(g, method="spectral", n_modules=2)
    >>> r.n_modules, r.cost, r.modules[0]
    (2, 0.0, ['0:0', '0:1', '1:0', '1:1'])
    """
    check_choice("find_modules", "method", method, (AUTO, *METHODS))
    method = resolve_method(method, n_modules, resolution)
    options = (method, n_modules, resolution, quality, seed, n_iterations, refine, alpha, n_null)
    params = dict(zip(_PARAMS, options, strict=True))
    return solve(_validate("find_modules", graph, params), params)


# ---------------------------------------------------------------------------- cost curve
def cost_curve(  # noqa: PLR0913 (keyword-only options of one entry point)
    graph: InteractionGraph,
    *,
    method: str = "spectral",
    ks=None,
    n_null: int = 10,
    seed: int = 0,
    n_iterations: int = 2,
    refine: bool = True,
) -> CostCurve:
    """The objective (normalized cut) against the number of modules, with the null's band.

    Parameters
    ----------
    graph : InteractionGraph
    method : {"spectral", "leiden"}
    ks : sequence of int, optional
        Numbers of modules; default ``1 .. min(10, number of connected nodes)``.
    n_null : int
        Null graphs per ``k`` (at least 2; 0 for no band).
    seed, n_iterations, refine
        As in :func:`find_modules`.

    Returns
    -------
    CostCurve
        The partition at ``k`` is the one ``find_modules(graph, method=method, n_modules=k)``
        returns (up to eigensolver rounding, as the spectrum is computed once for the scan).
    """
    where = "cost_curve"
    check_graph(graph, where)
    n_null = check_int(where, "n_null", n_null, low=0)
    if n_null == 1:
        raise invalid(where, "n_null", "0 or an int >= 2", n_null)
    base = dict(zip(_PARAMS, (method, None, None, "modularity", seed, n_iterations, refine,
                              0.05, max(n_null, 2))))  # fmt: skip
    if method == "infomap":
        raise invalid(where, "method", "'leiden' or 'spectral' (the map equation has no k to "
                      "scan)", method)  # fmt: skip
    sub = _validate(where, graph, base)
    ks = np.arange(1, min(CURVE_MAX_MODULES, sub.n) + 1) if ks is None else ks
    ks = np.array([check_int(where, "ks[...]", k, low=1, high=sub.n) for k in ks], np.int64)
    if len(ks) == 0:
        raise invalid(where, "ks", "a non-empty sequence of ints", [])
    spectra = None
    if method == "spectral":
        spectra = component_spectra(sub, int(ks.max()) + 1, seed)
    rng = np.random.default_rng(seed)
    nulls = [null_graph(sub, rng) for _ in range(n_null)]
    # each null graph's spectrum once for the whole scan, as the graph's own
    null_spectra = [
        component_spectra(g, int(ks.max()) + 1, seed) if method == "spectral" else None
        for g in nulls
    ]
    kwargs = {"seed": seed, "n_iterations": n_iterations, "refine": refine}
    rows = []
    for k in ks.tolist():
        r = solve(sub, {**base, "n_modules": k}, spectra=spectra)
        null = [
            g.ncut(labels_at_k(g, method, min(k, g.n), spectra=sp_, **kwargs)[0])
            for g, sp_ in zip(nulls, null_spectra, strict=True)
            if k > 1
        ]
        mean = float(np.mean(null)) if null else math.nan
        sd = float(np.std(null, ddof=1)) if len(null) > 1 else math.nan
        rows.append((r.n_modules, r.ncut, r.cost, mean, sd))
    n_mod, ncut, cost, mean, sd = (np.array(c) for c in zip(*rows, strict=True))
    return CostCurve(
        method=method,
        ks=ks,
        n_modules=n_mod.astype(np.int64),
        ncut=ncut.astype(np.float64),
        cost=cost.astype(np.float64),
        null_mean=mean.astype(np.float64),
        null_std=sd.astype(np.float64),
        params={"seed": seed, "n_null": n_null, "n_iterations": n_iterations, "refine": refine},
    )

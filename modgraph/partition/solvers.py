"""Two solvers of one objective: ``k`` modules of lowest normalized cut.

Leiden and spectral clustering give different starting partitions; both are then refined by
single-node moves on the exact normalized cut (:mod:`.refine`), so whatever the method, the
result is a local optimum of :func:`~modgraph.partition.objective.normalized_cut`. Two modules,
the split every test of the bisection makes, are the best of the solver's and the groupings of
its partitions at 3 and 4 modules (and of Leiden's own), never one that every null graph cuts
as much (along layers, :func:`along_layers`) where another split exists (:func:`best_split`).
"""

from __future__ import annotations

import numpy as np

from .leiden import leiden_labels, leiden_once
from .objective import ConnectedGraph, canonical
from .refine import merge_to, move_gains, refine_ncut
from .spectral import component_spectra, has_pairs, spectral_labels

__all__ = [
    "labels_at_k",
    "leiden_fine",
    "from_start",
    "refined",
    "along_layers",
    "off_layers",
    "best_split",
]

#: Leiden seeds tried on graphs of at most RESTARTS_MAX_NODES connected nodes.
LEIDEN_RESTARTS = 4
RESTARTS_MAX_NODES = 500
#: Largest graph on which Leiden, when no resolution gives k modules, falls back to merging
#: single nodes (each merge costs O(k^2) with k modules left).
AGGLOMERATE_MAX_NODES = 2000
#: Leiden runs at rising resolution (x4 each) that leiden_fine may add to find enough modules.
FINE_SEARCH_RUNS = 6
#: Numbers of modules whose partitions, grouped into two, are candidates for two modules
#: (:func:`best_split`).
FINER_KS = (3, 4)
#: Most modules of a finer partition whose groupings into two are all tried (``2^(m-1) - 1``
#: of them, on the graph of modules); one with more is merged down to this many first.
GROUPING_MAX_MODULES = 12
#: Moves :func:`off_layers` tries, best first, for one that leaves a split not along layers.
OFF_LAYERS_TRIES = 64
#: Moves :func:`off_layers` makes at most.
OFF_LAYERS_STEPS = 4


def _leiden_start(sub: ConnectedGraph, k: int, seed: int, n_iterations: int, first=None):
    """Leiden (modularity) once (or its result ``first``); merged down to ``k`` modules on the
    normalized cut, or, when it finds fewer, its resolution raised until it finds ``k``."""
    labels, q = leiden_once(sub, "modularity", None, seed, n_iterations) if first is None else first
    info = {"leiden_modules": int(labels.max()) + 1, "quality_value": q}
    if labels.max() + 1 < k:
        labels, more = leiden_labels(
            sub, n_modules=k, resolution=None, quality="modularity", seed=seed,
            n_iterations=n_iterations,
        )  # fmt: skip
        info.update(more)
    if labels.max() + 1 < k and sub.n <= AGGLOMERATE_MAX_NODES:
        # no resolution gave k modules: merge up from single nodes instead
        labels, info["start"] = np.arange(sub.n), "single nodes merged"
    return merge_to(sub, labels, k), info


def refined(sub: ConnectedGraph, labels: np.ndarray, info: dict) -> np.ndarray:
    """``labels`` after :func:`refine_ncut`; records the objective before and the moves in
    ``info``."""
    labels = canonical(labels)
    info["ncut_before_refinement"] = sub.ncut(labels)
    labels, info["refinement_moves"] = refine_ncut(sub, labels)
    return labels


def labels_at_k(
    sub: ConnectedGraph, method: str, k: int, *, seed: int, n_iterations: int = 2,
    refine: bool = True, spectra=None, regroup: bool = True,
) -> tuple[np.ndarray, dict]:  # fmt: skip
    """``k`` modules of the connected graph ``sub`` (labels ``0 .. k - 1``) and what was found.

    Whole connected components are modules for free (normalized cut 0, the optimum) when there
    are at least ``k`` of them. Two modules are the best of the solver's and the groupings of
    its partitions at ``FINER_KS`` modules and of Leiden's own partitions, never one that every
    null graph cuts as much (along layers) where another is found (:func:`best_split`);
    ``regroup=False`` keeps the solver's two modules as they are (the scan regroups them
    itself, from the partitions it has anyway).
    """
    if k <= sub.n_components:
        return sub.merged_components(k), {"shortcut": "components"}
    if k == sub.n:
        return np.arange(sub.n), {"shortcut": "singletons"}
    regroup = regroup and k == 2
    ks = [k, *(j for j in FINER_KS if j < sub.n)] if regroup else [k]
    found, native = _search(sub, method, ks, seed, n_iterations, refine, spectra)
    labels, info = found[k]
    if regroup:
        finer = [found[j][0] for j in ks[1:]] + native
        labels, info["split_from"] = best_split(sub, labels, finer, refine)
    return labels, info


def _search(sub, method, ks, seed, n_iterations, refine, spectra) -> tuple[dict, list]:
    """The solver's partition at each ``k`` of ``ks``: {k: (labels, info)}, and Leiden's own
    partitions (modularity, one per seed; none for spectral). One spectrum, or one Leiden run
    per seed, serves every ``k``."""
    found = {}
    if method == "spectral":
        if len(ks) > 1 and not has_pairs(spectra, max(ks) + 1):
            spectra = component_spectra(sub, max(ks) + 1, seed)
        for k in ks:
            labels, info = spectral_labels(sub, k, seed, spectra=spectra)
            found[k] = (refined(sub, labels, info) if refine else canonical(labels)), info
        return found, []
    # Leiden's partition depends on its seed more than k-means' does on its restarts: on small
    # graphs, where a run costs little, keep the best of a few seeds (each merged and refined).
    native = []
    for s in range(seed, seed + (LEIDEN_RESTARTS if sub.n <= RESTARTS_MAX_NODES else 1)):
        first, fine = leiden_once(sub, "modularity", None, s, n_iterations), None
        native.append(first[0])
        for k in ks:
            if k == ks[0]:
                labels, info = _leiden_start(sub, k, s, n_iterations, first)
            else:  # the finer candidates of best_split: a few resolutions, not a search
                fine = leiden_fine(sub, max(ks), s, n_iterations, first) if fine is None else fine
                labels, info = merge_to(sub, fine, k), {"start": "leiden_fine"}
            labels = refined(sub, labels, info) if refine else canonical(labels)
            value = sub.ncut(labels)
            if k not in found or value < found[k][0] - 1e-12:
                found[k] = (value, canonical(labels), {**info, "leiden_seed": s})
    return {k: (labels, info) for k, (_, labels, info) in found.items()}, native


def leiden_fine(
    sub: ConnectedGraph, kmax: int, seed: int, n_iterations: int = 2, first=None
) -> np.ndarray:
    """A Leiden partition with at least ``kmax`` modules where it can find one (modularity, its
    resolution raised when needed; ``first``: the run at resolution 1 where it was made): every
    coarser partition of a scan over ``k`` is merged from it (:func:`from_start`), so Leiden
    runs once per graph rather than once per ``k``."""
    labels = (
        leiden_once(sub, "modularity", None, seed, n_iterations)[0] if first is None else first[0]
    )
    gamma = 1.0
    for _ in range(FINE_SEARCH_RUNS):  # raise the resolution in big steps: a few runs, not 40
        if labels.max() + 1 >= kmax:
            break
        gamma *= 4.0
        labels, _ = leiden_once(sub, "modularity", gamma, seed, n_iterations)
    return labels


def from_start(sub: ConnectedGraph, start: np.ndarray, k: int, refine: bool) -> np.ndarray:
    """``k`` modules merged from the finer partition ``start``, then refined."""
    if k <= sub.n_components:
        return sub.merged_components(k)
    labels = merge_to(sub, start, k)
    if refine:
        labels, _ = refine_ncut(sub, labels)
    return canonical(labels)


def along_layers(sub: ConnectedGraph, labels: np.ndarray) -> bool:
    """Whether every null graph cuts ``labels`` exactly as much: in each layer pair, the nodes
    of at least one of its two layers that have edges there are all in one module.

    A null graph (:func:`~.null.null_graph`) keeps each node's summed cost towards each
    neighbouring layer. Where one side of a layer pair is in one module, the pair's edges cut
    by a module are those of the nodes on the other side that are not in it, a sum of those
    nodes' costs towards that layer, and the volumes are sums of node strengths: the
    normalized cut is the same in every null graph, so such a partition can never be evidence
    of modules. Splits along whole layers are the plain case (in a layered network the weakest
    layer transition often is the cheapest split in two); so are those that also share out the
    nodes of a layer between two whole ones, each node's edges on either side cut or kept.
    """
    labels = np.asarray(labels)
    node, slot = sub.layer_sides
    counts = _side_counts(node, slot, labels, int(labels.max()) + 1)
    return bool(np.all(_single_side(counts)))


def _side_counts(node: np.ndarray, slot: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(slots, k): how many of each slot's nodes are in each module (a slot of every pair
    side, even empty)."""
    n_slots = 2 * (int(slot.max()) // 2 + 1)
    flat = np.bincount(slot * k + labels[node], minlength=n_slots * k)
    return flat.reshape(n_slots, k)


def _single_side(counts: np.ndarray) -> np.ndarray:
    """Per layer pair, whether one of its sides has its nodes in at most one module."""
    single = (counts > 0).sum(axis=1) <= 1
    return single[0::2] | single[1::2]


def off_layers(sub: ConnectedGraph, labels: np.ndarray) -> np.ndarray | None:
    """A split not along layers (:func:`along_layers`) a few node moves from ``labels`` (a
    split along layers), which is: the best single move that leaves one, or, where none of the
    ``OFF_LAYERS_TRIES`` best moves does, the best move and then the same again, at most
    ``OFF_LAYERS_STEPS`` moves (``None`` after that).

    The cheapest split that null graphs do not all cut alike is often a move or two from the
    cheapest split along layers: where the partitions at 3 and 4 modules have nothing better, a
    local search from them reaches a split along layers, and single-node moves (:mod:`.refine`)
    lead back to it. From a split along whole layers no single move leaves one (a moved node's
    neighbouring layers are still whole), so a walk of moves is needed; a node moves once.
    Which moves leave is read from each layer side's module counts, for all nodes at once (a
    full :func:`along_layers` per trial move: 0.33 s a call from whole layers of a 147k-edge
    graph, 0.006 s this way, the same result).
    """
    node, slot = sub.layer_sides
    cur, moved = labels.copy(), np.zeros(len(labels), dtype=bool)
    for _ in range(OFF_LAYERS_STEPS):
        delta, target = move_gains(sub, cur, 2)
        delta[moved] = np.inf
        order = np.argsort(delta, kind="stable")[:OFF_LAYERS_TRIES]
        order = order[np.isfinite(delta[order])]
        if len(order) == 0:
            return None
        counts = _side_counts(node, slot, cur, 2)
        modules = (counts > 0).sum(axis=1)
        a, b = cur[node], target[node]
        # moving the node: its side's modules after, and the other side of its pair as it is
        after = modules[slot] - (counts[slot, a] == 1) + (counts[slot, b] == 0)
        leaves = (after >= 2) & (modules[slot ^ 1] >= 2)
        leaving = np.bincount(node, weights=leaves, minlength=sub.n) > 0
        hits = order[leaving[order]]
        if len(hits):
            cand = cur.copy()
            cand[hits[0]] = target[hits[0]]
            return cand
        cur[order[0]], moved[order[0]] = target[order[0]], True
    return None


def best_split(
    sub: ConnectedGraph, labels: np.ndarray, finer, refine: bool
) -> tuple[np.ndarray, str]:
    """The two-module partition of lowest normalized cut among ``labels`` (the solver's) and
    every grouping into two of the modules of each ``finer`` partition, leaving out those along
    layers, which every null graph cuts as much (:func:`along_layers`), unless nothing else is
    left; (labels, where they came from: ``"solver"``, ``"grouped"`` or ``"off layers"``).

    A search for two modules often splits one module in half to balance the two volumes: in a
    layered network, a module's own weakest layer transition is a cheap cut. The partition at
    3 or 4 modules then usually has that module whole, and one of its groupings (3 of 3 modules,
    7 of 4) cuts less; so may one of Leiden's own partition, whose modules its merges to 3 or 4
    can mix (:func:`_two_groupings`). Groupings are compared unrefined and only the best is
    refined. A split along layers (the solver's, or the best grouping once refined) is also
    tried with one node moved off them (:func:`off_layers`). A graph of several components
    keeps its split along them (cut 0).
    """
    if sub.n_components > 1:
        return labels, "solver"
    best, along = None, []

    def consider(cand, came):
        nonlocal best
        value = sub.ncut(cand)
        if best is None or value < best[0]:
            best = (value, cand, came)

    for fine in finer:
        value, is_along, cands = _two_groupings(sub, fine)
        if not np.all(is_along):
            consider(cands(np.flatnonzero(~is_along)[np.argmin(value[~is_along])]), "grouped")
    if best is not None and refine:
        cand = refine_ncut(sub, best[1])[0]
        if not along_layers(sub, cand):
            best = (sub.ncut(cand), cand, "grouped")
        else:
            along.append(cand)
    solver_along = along_layers(sub, labels)
    if solver_along:
        along.append(labels)
    for start in along:
        cand = off_layers(sub, start)
        if cand is not None:
            consider(cand, "off layers")
    if best is not None and (solver_along or best[0] < sub.ncut(labels) * (1 - 1e-12)):
        return canonical(best[1]), best[2]
    return labels, "solver"


def _two_groupings(sub: ConnectedGraph, fine: np.ndarray):
    """Every grouping into two of the modules of ``fine`` (merged down to at most
    ``GROUPING_MAX_MODULES`` first, :func:`merge_to`): (normalized cuts, whether each is along
    layers, ``i -> labels`` of grouping ``i``), all from the graph of modules.

    Two groups cut what runs between them, ``g^T S (1 - g)`` with ``S`` the strengths between
    modules, and each group's volume is a sum of module volumes; a group is present on a side
    of a layer pair where one of its modules is. That is ``O(m^2)`` a grouping rather than a
    pass over the edges and an along-layers check each (the 127 groupings of 8 modules of a
    147k-edge graph: 1.31 s by passes, 0.011 s here, the values equal to 8e-15).
    """
    fine = merge_to(sub, fine, GROUPING_MAX_MODULES)
    m = int(fine.max()) + 1
    S = sub.between(fine)
    vol = np.bincount(fine, weights=sub.degree, minlength=m)
    # module m - 1 stays in group 0: each grouping once
    G = ((np.arange(1, 2 ** (m - 1))[:, None] >> np.arange(m)) & 1).astype(np.float64)
    cut = np.einsum("gi,ij,gj->g", G, S, 1.0 - G)
    v1 = G @ vol
    value = cut / v1 + cut / (vol.sum() - v1)
    node, slot = sub.layer_sides
    present = _side_counts(node, slot, fine, m) > 0  # (slots, m)
    both = (present @ G.T > 0) & (present @ (1.0 - G).T > 0)  # (slots, groupings)
    is_along = np.all(~both[0::2] | ~both[1::2], axis=0)
    return value, is_along, lambda i: G[i].astype(np.int64)[fine]

"""Two solvers of one objective: ``k`` modules of lowest normalized cut.

Leiden and spectral clustering give different starting partitions; both are then refined by
single-node moves on the exact normalized cut (:mod:`.refine`), so whatever the method, the
result is a local optimum of :func:`~modgraph.partition.objective.normalized_cut`.
"""

from __future__ import annotations

import numpy as np

from .leiden import leiden_labels, leiden_once
from .objective import ConnectedGraph, canonical
from .refine import merge_to, refine_ncut
from .spectral import spectral_labels

__all__ = ["labels_at_k", "leiden_fine", "from_start", "refined"]

#: Leiden seeds tried on graphs of at most RESTARTS_MAX_NODES connected nodes.
LEIDEN_RESTARTS = 4
RESTARTS_MAX_NODES = 500
#: Largest graph on which Leiden, when no resolution gives k modules, falls back to merging
#: single nodes (each merge costs O(k^2) with k modules left).
AGGLOMERATE_MAX_NODES = 2000
#: Leiden runs at rising resolution (x4 each) that leiden_fine may add to find enough modules.
FINE_SEARCH_RUNS = 6


def _leiden_start(sub: ConnectedGraph, k: int, seed: int, n_iterations: int):
    """Leiden (modularity) once; merged down to ``k`` modules on the normalized cut, or, when it
    finds fewer, its resolution raised until it finds ``k``."""
    labels, q = leiden_once(sub, "modularity", None, seed, n_iterations)
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
    refine: bool = True, spectra=None,
) -> tuple[np.ndarray, dict]:  # fmt: skip
    """``k`` modules of the connected graph ``sub`` (labels ``0 .. k - 1``) and what was found.

    Whole connected components are modules for free (normalized cut 0, the optimum) when there
    are at least ``k`` of them.
    """
    if k <= sub.n_components:
        return sub.merged_components(k), {"shortcut": "components"}
    if k == sub.n:
        return np.arange(sub.n), {"shortcut": "singletons"}
    if method == "spectral":
        labels, info = spectral_labels(sub, k, seed, spectra=spectra)
        return (refined(sub, labels, info) if refine else canonical(labels)), info
    # Leiden's partition depends on its seed more than k-means' does on its restarts: on small
    # graphs, where a run costs little, keep the best of a few seeds (each merged and refined).
    best = None
    for s in range(seed, seed + (LEIDEN_RESTARTS if sub.n <= RESTARTS_MAX_NODES else 1)):
        labels, info = _leiden_start(sub, k, s, n_iterations)
        labels = refined(sub, labels, info) if refine else canonical(labels)
        value = sub.ncut(labels)
        if best is None or value < best[0] - 1e-12:
            best = (value, canonical(labels), {**info, "leiden_seed": s})
    return best[1], best[2]


def leiden_fine(sub: ConnectedGraph, kmax: int, seed: int, n_iterations: int = 2) -> np.ndarray:
    """A Leiden partition with at least ``kmax`` modules where it can find one (modularity, its
    resolution raised when needed): every coarser partition of a scan over ``k`` is merged from
    it (:func:`from_start`), so Leiden runs once per graph rather than once per ``k``."""
    labels, _ = leiden_once(sub, "modularity", None, seed, n_iterations)
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

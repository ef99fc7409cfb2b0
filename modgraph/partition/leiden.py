"""Leiden partitions (leidenalg), at a given resolution or bisected to a number of modules."""

from __future__ import annotations

import math

import numpy as np

from .objective import ConnectedGraph, canonical

__all__ = ["leiden_labels", "leiden_once", "RESOLUTION_SEARCH_RUNS"]

#: Leiden runs allowed when searching a resolution that gives ``n_modules`` modules.
RESOLUTION_SEARCH_RUNS = 40


def leiden_once(sub: ConnectedGraph, quality: str, resolution, seed: int, n_iterations: int):
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
    return canonical(np.asarray(part.membership, dtype=np.int64)), float(part.quality())


def leiden_labels(sub, *, n_modules, resolution, quality, seed, n_iterations):
    if n_modules is None:
        if quality == "cpm" and resolution is None:
            resolution = sub.density
        labels, q = leiden_once(sub, quality, resolution, seed, n_iterations)
        return labels, {"resolution_used": resolution, "quality_value": q}

    # Bisect the resolution on a log scale. The number of modules grows with the resolution but
    # not strictly monotonically, so keep the closest partition seen (ties: lower cost).
    best = None

    def run(gamma):
        nonlocal best
        labels, q = leiden_once(sub, quality, gamma, seed, n_iterations)
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

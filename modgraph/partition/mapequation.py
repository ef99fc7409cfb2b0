"""Modules and their number by the map equation (Infomap), tested against the null model.

The map equation (Rosvall & Bergstrom 2008, PNAS 105:1118) is a description length: the bits
per step needed to describe a random walk on the graph, with one codebook per module and an
index codebook for moves between modules. A partition whose modules trap the walk compresses
it; one module is the graph without structure (the one-level codelength). Minimizing it chooses
the modules *and their number* in one principle (minimum description length), without a scan
over ``k``. The walk here moves along edges in proportion to their cost ``ln(w / eps^1/2)``,
undirected, as the normalized cut weighs them. The search is the maintained ``infomap`` package
(two-level, ``N_TRIALS`` restarts, the shortest kept).

A walk on a sparse layered graph is trapped by chains of strong edges whatever the network, so
the map equation splits random networks too (on 40 random MLPs cut at 1.5 edges per node, every
one). Whether the modules are real is therefore tested as the normalized cut is (:mod:`.null`):
the codelength the search finds on the graph against the codelengths it finds on null graphs
that keep each node's strengths, edge counts and strongest partners, with the same model of the
null's spread (log-normal, spread floored at ``MIN_EFFECT``: modules must compress the walk
about 2% more than the null graphs' before the null's own spread counts) and the same floor on
``p`` from null graphs that compress as well. Strengths are kept, so the one-level codelength
is the same on every null graph and the codelengths compare directly.
"""

from __future__ import annotations

import numpy as np

from .null import CANNOT_SHUFFLE, Significance, fixed_by_strengths, null_graph, null_p_value
from .objective import ConnectedGraph, canonical

__all__ = ["N_TRIALS", "map_equation", "map_equation_test"]

#: Infomap restarts per graph (its ``num_trials``); the partition of shortest codelength is kept.
N_TRIALS = 10


def map_equation(sub: ConnectedGraph, seed: int) -> tuple[np.ndarray, float, float]:
    """Infomap's two-level partition of ``sub``: (labels, codelength, one-level codelength), the
    codelengths in bits per step of the walk."""
    import infomap

    # infomap's seeds start at 1; any int seed of find_modules maps to one
    im = infomap.Infomap(two_level=True, silent=True, num_trials=N_TRIALS,
                         seed=1 + seed % (2**31 - 1))  # fmt: skip
    im.add_nodes(range(sub.n))
    im.add_links(zip(sub.src.tolist(), sub.dst.tolist(), sub.weights, strict=True))
    result = im.run()
    labels = np.zeros(sub.n, dtype=np.int64)
    for node, module in result.modules().items():
        labels[node] = module
    return canonical(labels), float(result.codelength), float(result.one_level_codelength)


def map_equation_test(
    sub: ConnectedGraph, labels: np.ndarray, codelength: float, params: dict
) -> Significance:
    """Test the codelength of ``labels`` against the map equation on ``params["n_null"]`` null
    graphs drawn with ``params["seed"]``; ``Significance.ncut`` / ``null_ncut`` hold codelengths
    (``statistic="codelength"``)."""
    k = int(labels.max()) + 1
    common = {"n_modules": k, "params": dict(params), "statistic": "codelength"}
    if fixed_by_strengths(sub):
        return Significance(ncut=codelength, null_ncut=np.zeros(0), z=np.nan, p_value=np.nan,
                            p_empirical=np.nan, n_null=0, note=CANNOT_SHUFFLE,
                            **common)  # fmt: skip
    rng = np.random.default_rng(params["seed"])
    nulls = [null_graph(sub, rng) for _ in range(params["n_null"])]
    null = np.array([map_equation(g, params["seed"])[1] for g in nulls])
    smallest = int(np.bincount(labels).min())
    z, p, n_le = null_p_value(codelength, smallest, null, np.full(len(null), smallest))
    return Significance(ncut=codelength, null_ncut=null, z=z, p_value=p,
                        p_empirical=(1 + n_le) / (1 + len(null)), n_null=len(null),
                        **common)  # fmt: skip

"""Modules and their number by the map equation (Infomap).

The map equation (Rosvall & Bergstrom 2008, PNAS 105:1118) is a description length: the bits
per step needed to describe a random walk on the graph, with one codebook per module and an
index codebook for moves between modules. A partition whose modules trap the walk compresses
it; one module is the graph without structure (the one-level codelength). Minimizing it chooses
the modules *and their number* in one principle (minimum description length), without a scan
over ``k``. The walk here moves along edges in proportion to their cost ``ln(w / eps^1/2)``,
undirected, as the normalized cut weighs them. The search is the maintained ``infomap`` package
(two-level, ``N_TRIALS`` restarts, the shortest kept).

A walk on a sparse layered graph is trapped by chains of strong edges whatever the network, so
the map equation alone splits random networks too. Whether a graph is modular is therefore not
the map equation's to say: with ``find_modules(method="infomap")`` it is the scan of the
normalized cut against null graphs (:mod:`.find`, :mod:`.null`), and the map equation says only
which modules and how many once the scan has rejected "no modular structure" (the results page
of the docs has what each choice measured on grokked, planted and random networks).
"""

from __future__ import annotations

import numpy as np

from .objective import ConnectedGraph, canonical
from .solvers import along_layers

__all__ = [
    "N_TRIALS",
    "map_equation",
    "merge_along_layers",
    "merge_chains",
    "merge_by_modularity",
    "consolidate",
]

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


def merge_along_layers(sub: ConnectedGraph, labels: np.ndarray) -> np.ndarray:
    """Join every two linked modules that split their union along layers, until none do.

    A walk along a long chain of strong edges is trapped in its upper and lower halves as well
    as in the whole, so the map equation can cut one module across its depth (a planted module
    of layers 0-4 came back as layers 0-1 and 2-4). Such a split is one every null graph cuts
    exactly as much (:func:`~.solvers.along_layers`), so it is never evidence of two modules:
    the two are joined, the linked pair whose union is most strongly linked first.
    """
    labels = canonical(labels)
    while labels.max() > 0:
        between = sub.between(labels)
        pairs = np.argwhere(np.triu(between) > 0)
        pairs = pairs[np.argsort(-between[pairs[:, 0], pairs[:, 1]], kind="stable")]
        for a, b in pairs:
            nodes = np.flatnonzero((labels == a) | (labels == b))
            if along_layers(sub.induced(nodes), (labels[nodes] == b).astype(np.int64)):
                labels = canonical(np.where(labels == b, a, labels))
                break
        else:
            return labels
    return labels


def merge_chains(sub: ConnectedGraph, labels: np.ndarray) -> np.ndarray:
    """Join every module that is a chain (at most one node in each layer) to the module it is
    most strongly linked to, the smallest chain first, until none is linked.

    The interaction basis makes transitions as diagonal as the network allows, so every network,
    random ones included, has chains of directions each carried by its strongest edge into the
    next layer; the null model keeps those edges where they are (the backbone, :mod:`.null`), so
    a chain is in every null graph and never evidence of a module. A walk is trapped along one
    all the same (the map equation cuts short chains off planted modules). A chain with no link
    to another module stays (a component of its own).
    """
    labels = canonical(labels)
    n_layers = int(sub.layer.max()) + 1
    while labels.max() > 0:
        k = int(labels.max()) + 1
        per_layer = np.bincount(labels * n_layers + sub.layer, minlength=k * n_layers)
        between = sub.between(labels)
        chains = np.flatnonzero((per_layer.reshape(k, n_layers).max(1) <= 1)
                                & (between.max(1) > 0))  # fmt: skip
        if len(chains) == 0:
            return labels
        m = chains[np.argmin(np.bincount(labels)[chains])]
        labels = canonical(np.where(labels == m, int(np.argmax(between[m])), labels))
    return labels


def merge_by_modularity(sub: ConnectedGraph, labels: np.ndarray) -> np.ndarray:
    """Join linked modules while a join raises the modularity ``Q`` (Newman 2004), the pair of
    largest gain first: modules ``a, b`` are joined when the strength between them is more than
    their volumes predict, ``S_ab * 2m > vol_a * vol_b`` (``2m`` the total volume), i.e. when they
    are more linked to each other than chance. The map equation can keep apart two parts of one
    module that a few strong edges join, far more strongly than the modules are joined."""
    labels = canonical(labels)
    while labels.max() > 0:
        vol = np.bincount(labels, weights=sub.degree)
        gain = sub.between(labels) * vol.sum() - np.outer(vol, vol)
        np.fill_diagonal(gain, -np.inf)
        a, b = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if gain[a, b] <= 0:
            return labels
        labels = canonical(np.where(labels == b, a, labels))
    return labels


def consolidate(sub: ConnectedGraph, labels: np.ndarray) -> np.ndarray:
    """The map equation's modules, joined where they are not evidence of separate modules:
    splits along layers (:func:`merge_along_layers`), chains (:func:`merge_chains`, then along
    layers again, as a chain joined can leave such a split) and pairs more linked than chance
    (:func:`merge_by_modularity`)."""
    labels = merge_along_layers(sub, merge_chains(sub, merge_along_layers(sub, labels)))
    return merge_by_modularity(sub, labels)

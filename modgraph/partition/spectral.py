"""Spectral partitions: k-means on the normalized Laplacian's eigenvectors, then refinement."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.cluster.vq import ClusterError, kmeans2
from scipy.sparse.csgraph import laplacian
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh

from .objective import ConnectedGraph, canonical

__all__ = ["spectral_labels", "component_spectra", "refine_moves", "EIGENGAP_MAX_MODULES"]

#: Components below this many nodes use a dense eigensolver: it is exact and faster than ARPACK
#: there, and ARPACK needs the number of wanted eigenpairs to be well below the matrix size.
DENSE_EIGEN_MAX_NODES = 500
#: Eigenvalues scanned for the eigengap when the number of modules is not given.
EIGENGAP_MAX_MODULES = 20
#: k-means restarts of the spectral embedding (the best distortion is kept).
KMEANS_RESTARTS = 10


def component_spectra(sub: ConnectedGraph, m: int, seed: int):
    """Smallest ``min(m, n_c)`` eigenpairs of each component's normalized Laplacian."""
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


def choose_k(spectra, n_components: int) -> int:
    """Number of modules at the largest gap among the smallest eigenvalues (at least one per
    component, whose zero eigenvalue comes first)."""
    vals = np.sort(np.concatenate([s[1] for s in spectra]))[:EIGENGAP_MAX_MODULES]
    if len(vals) <= n_components:
        return n_components
    gaps = np.diff(vals)  # gaps[i-1] = vals[i] - vals[i-1]: a cut after the first i eigenvalues
    i = np.arange(1, len(vals))
    # The layered graph is bipartite (edges only join adjacent layers), so its normalized
    # Laplacian spectrum is symmetric about 1 and every gap below 1 reappears mirrored above it:
    # only cuts after an eigenvalue below 1 describe modules.
    gaps[(i < n_components) | (vals[:-1] >= 1.0 - 1e-9)] = -np.inf
    if not np.isfinite(gaps).any():
        return n_components
    # Among (numerically) equal largest gaps take the fewest modules.
    return int(i[np.flatnonzero(gaps >= gaps.max() * (1 - 1e-9))[0]])


def kmeans(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
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


def refine_moves(
    A: sp.csr_matrix, labels: np.ndarray, *, rtol: float = 1e-12, max_passes: int = 10_000
):
    """Greedy single-node moves that strictly lower the cross-module cost.

    Each pass computes, for every node, its strength into every neighboring module, and moves an
    independent set of improving nodes at once (a node moves only if its gain beats every
    improving neighbor's): the ends of no edge both move, so the gains add up exactly and the
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


def spectral_labels(sub: ConnectedGraph, *, n_modules, seed, refine=True, spectra=None):
    if spectra is None:
        m = (n_modules if n_modules is not None else EIGENGAP_MAX_MODULES) + 1
        spectra = component_spectra(sub, m, seed)
    k = choose_k(spectra, sub.n_components) if n_modules is None else n_modules
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
            # Ng-Jordan-Weiss: rows of the first kc eigenvectors, normalized to unit length.
            X = vecs[:, :kc]
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-300)
            local = canonical(kmeans(X, int(kc), rng))
        labels[nodes] = offset + local
        offset += int(local.max()) + 1
    labels = canonical(labels)
    if refine:
        cost_before = sub.cost(labels)
        labels, n_moves = refine_moves(sub.A, labels)
        info.update(cost_before_refinement=cost_before, refinement_moves=n_moves)
    return canonical(labels), info

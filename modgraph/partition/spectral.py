"""Spectral partitions: k-means on the normalized Laplacian's eigenvectors.

The normalized Laplacian's smallest eigenvectors are the standard relaxation of the normalized
cut (Shi & Malik 2000), the objective every partition is then refined on.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.cluster.vq import ClusterError, kmeans2
from scipy.sparse.csgraph import laplacian
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh

from .objective import ConnectedGraph, canonical

__all__ = ["spectral_labels", "component_spectra"]

#: Components below this many nodes use a dense eigensolver: it is exact and faster than ARPACK
#: there, and ARPACK needs the number of wanted eigenpairs to be well below the matrix size.
DENSE_EIGEN_MAX_NODES = 500
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


def spectral_labels(sub: ConnectedGraph, k: int, seed: int, spectra=None):
    """``k`` modules by k-means on the normalized Laplacian's eigenvectors (Ng, Jordan & Weiss).

    ``spectra`` reuses eigenpairs from :func:`component_spectra` (at least ``k + 1`` of them).
    """
    if spectra is None:
        spectra = component_spectra(sub, k + 1, seed)
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
            X = vecs[:, :kc]  # rows of the first kc eigenvectors, normalized to unit length
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-300)
            local = canonical(kmeans(X, int(kc), rng))
        labels[nodes] = offset + local
        offset += int(local.max()) + 1
    return canonical(labels), info

"""Spectral partitions: k-means on the normalized Laplacian's eigenvectors.

The normalized Laplacian's smallest eigenvectors are the standard relaxation of the normalized
cut (Shi & Malik 2000), the objective every partition is then refined on.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.csgraph import laplacian
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh

from .objective import ConnectedGraph, canonical

__all__ = ["spectral_labels", "component_spectra"]

#: Components below this many nodes use a dense eigensolver: it is exact and faster than ARPACK
#: there, and ARPACK needs the number of wanted eigenpairs to be well below the matrix size.
DENSE_EIGEN_MAX_NODES = 500
#: k-means restarts of the spectral embedding (the best distortion is kept).
KMEANS_RESTARTS = 10
#: Lloyd's iterations per k-means run at most (runs stop once no label changes).
KMEANS_MAX_ITER = 100


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


def has_pairs(spectra, m: int) -> bool:
    """Whether :func:`component_spectra` output ``spectra`` holds ``m`` eigenpairs per component
    (or all of a smaller one's)."""
    return spectra is not None and all(len(v) >= min(m, len(n)) for n, v, _ in spectra)


def kmeans(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Labels of the lowest-distortion run of ``KMEANS_RESTARTS`` k-means runs (k-means++ starts).

    Kept rather than scikit-learn's ``KMeans(n_init=10)`` (not a dependency): on the embeddings
    the scans make it reaches the same distortion and is faster below about a thousand rows,
    slower above (``benchmarks/bench_libraries.py`` prints both).

    Lloyd's iterations on all restarts at once, in one set of array operations with batched
    ``matmul`` (BLAS), rather than ``scipy.cluster.vq.kmeans2`` once per restart, whose input
    checks dominate on the small embeddings the scans make at every k on every null graph. A run
    that ends with an empty cluster is only kept when every run does: the caller then reports
    the fewer modules.
    """
    n, r = len(X), KMEANS_RESTARTS
    k = min(k, n)
    sq = (X**2).sum(axis=1)

    def distances(C):  # squared distance of every row to every centre, per run: (r, n, k)
        d = sq[None, :, None] - 2 * (X @ C.transpose(0, 2, 1)) + (C**2).sum(-1)[:, None, :]
        return np.maximum(d, 0.0)

    # k-means++ (Arthur & Vassilvitskii 2007): each next centre drawn with probability ~ d^2
    C = np.empty((r, k, X.shape[1]))
    C[:, 0] = X[rng.integers(n, size=r)]
    d2 = distances(C[:, :1])[..., 0]
    for j in range(1, k):
        total = d2.sum(axis=1, keepdims=True)
        prob = np.where(total > 0, d2 / np.where(total > 0, total, 1.0), 1.0 / n)
        pick = (np.cumsum(prob, axis=1) < rng.random((r, 1))).sum(axis=1).clip(max=n - 1)
        C[:, j] = X[pick]
        d2 = np.minimum(d2, distances(C[:, j : j + 1])[..., 0])
    labels = None
    for _ in range(KMEANS_MAX_ITER):
        new = distances(C).argmin(axis=-1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        member = labels[..., None] == np.arange(k)  # (r, n, k)
        counts = member.sum(axis=1)
        sums = member.astype(X.dtype).transpose(0, 2, 1) @ X
        C = np.where(counts[..., None] > 0, sums / np.maximum(counts, 1)[..., None], C)
    distortion = np.take_along_axis(distances(C), labels[..., None], axis=-1)[..., 0].sum(axis=1)
    full = (labels[..., None] == np.arange(k)).any(axis=1).all(axis=1)
    if full.any():
        distortion = np.where(full, distortion, np.inf)
    return labels[int(np.argmin(distortion))]


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

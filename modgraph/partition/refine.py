"""Local search on the normalized cut: single-node moves that strictly lower it.

Both solvers end here, so a Leiden or spectral partition is always a local optimum of the one
objective (:func:`modgraph.partition.objective.normalized_cut`) under moving any one node.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .objective import ConnectedGraph, canonical, module_cuts, ncut_terms

__all__ = ["refine_ncut", "merge_to"]

#: Passes of :func:`refine_ncut` between recomputing its running sums from the graph.
REFRESH_PASSES = 32


class _State:
    """A partition with what its moves need, kept up to date as nodes move: ``S[i, m]``, node
    ``i``'s strength into module ``m``, and every module's cut, volume and size.

    A batch of moves is scored from ``S`` and the moved nodes' own edges, never from the whole
    graph: each trial of :func:`refine_ncut` and each update costs O(edges at the moved nodes
    x k), where recomputing the normalized cut and ``S`` costs O(all edges) (a pass moving a few
    nodes of a 147k-edge graph then cost three full passes over the edges). The cut is updated
    by its own change, not as ``vol - inner``, whose cancellation would leave rounding noise of
    the size of the volume in a small cut.
    """

    def __init__(self, sub: ConnectedGraph, labels: np.ndarray, k: int):
        self.sub, self.k, self.labels = sub, k, labels.copy()
        n = sub.n
        Z = sp.csr_matrix((np.ones(n), (np.arange(n), labels)), shape=(n, k))
        self.S = (sub.A @ Z).toarray()
        self.cut, self.vol = module_cuts(sub.strength, sub.src, sub.dst, sub.degree, labels)
        self.size = np.bincount(labels, minlength=k)

    def value(self, cut=None, vol=None) -> float:
        """The normalized cut, or that of the modules' ``cut`` and ``vol`` after a move."""
        cut, vol = (self.cut, self.vol) if cut is None else (cut, vol)
        return float(np.sum(ncut_terms(cut, vol)))

    def gains(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact change of the normalized cut when one node moves, for every node and module.

        Moving node ``i`` (degree ``d``, strength ``s_a`` into its module ``a`` and ``s_b`` into
        ``b``) changes only two terms: ``cut_a -> cut_a - d + 2 s_a``, ``vol_a -> vol_a - d``,
        ``cut_b -> cut_b + d - 2 s_b``, ``vol_b -> vol_b + d``. Returns (delta, target): the
        best change for each node and the module it goes to (``inf`` where no move is allowed).
        """
        d, S, labels, cut, vol = self.sub.degree, self.S, self.labels, self.cut, self.vol
        rows = np.arange(len(labels))
        own = S[rows, labels]
        term = ncut_terms(cut, vol)
        vol_a = vol[labels] - d
        left = np.divide(cut[labels] - d + 2 * own, vol_a, out=np.zeros(len(d)), where=vol_a > 0)
        delta = (left - term[labels])[:, None]
        delta = delta + (cut[None, :] + d[:, None] - 2 * S) / (vol[None, :] + d[:, None]) - term
        delta[rows, labels] = np.inf
        delta[self.size[labels] <= 1] = np.inf  # a module never loses its last node
        target = np.argmin(delta, axis=1)
        return delta[rows, target], target

    def moved(self, nodes: np.ndarray, to: np.ndarray):
        """Cut, volume and size of every module once ``nodes`` move to modules ``to``, and the
        moved nodes' edges (for :meth:`apply`).

        With ``D = Z' - Z`` (rows only at the moved nodes: +1 at ``to``, -1 at the module left)
        the strength inside the modules, ``diag(Z^T A Z)``, changes by ``2 diag(D^T S) +
        diag(D^T A D)``; both are sums over the moved nodes and the edges among them.
        """
        k, frm, d = self.k, self.labels[nodes], self.sub.degree[nodes]

        def per_module(at, weights):
            # float even when empty (bincount then returns ints)
            return np.bincount(at, weights=weights, minlength=k).astype(np.float64, copy=False)

        edges = self._edges(nodes)
        row, col, val = edges
        pos = np.full(self.sub.n, -1)
        pos[nodes] = np.arange(len(nodes))
        among = pos[col] >= 0  # edges between two moved nodes
        i, j, v = row[among], pos[col[among]], val[among]
        inner = (  # diag(D^T A D): the four sign combinations of D's two entries per row
            per_module(to[i], v * (to[i] == to[j])) - per_module(to[i], v * (to[i] == frm[j]))
            - per_module(frm[i], v * (frm[i] == to[j])) + per_module(frm[i], v * (frm[i] == frm[j]))
        )  # fmt: skip
        inner += 2 * (per_module(to, self.S[nodes, to]) - per_module(frm, self.S[nodes, frm]))
        dvol = per_module(to, d) - per_module(frm, d)
        size = self.size - np.bincount(frm, minlength=k) + np.bincount(to, minlength=k)
        return self.cut + dvol - inner, self.vol + dvol, size, edges

    def _edges(self, nodes: np.ndarray):
        """The edges at ``nodes``, as (position in ``nodes``, other end, strength), read from
        the CSR arrays: scipy's row indexing costs ~0.2 ms a call in checks, which for the
        one- or two-node batches of late passes was most of the refinement."""
        A = self.sub.A
        start, count = A.indptr[nodes], np.diff(A.indptr)[nodes]
        row = np.repeat(np.arange(len(nodes)), count)
        at = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + start[row]
        return row, A.indices[at], A.data[at]

    def apply(self, nodes: np.ndarray, to: np.ndarray, cut, vol, size, edges) -> None:
        row, col, val = edges
        n, k, frm = self.sub.n, self.k, self.labels[nodes]
        # S += A D (A symmetric: the moved nodes' columns are their rows)
        gained = np.bincount(col * k + to[row], weights=val, minlength=n * k)
        lost = np.bincount(col * k + frm[row], weights=val, minlength=n * k)
        self.S += (gained - lost).reshape(n, k)
        self.labels[nodes] = to
        self.cut, self.vol, self.size = cut, vol, size


def move_gains(sub: ConnectedGraph, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`_State.gains` of the partition ``labels`` (``k`` modules)."""
    return _State(sub, np.asarray(labels, dtype=np.int64), k).gains()


def refine_ncut(
    sub: ConnectedGraph, labels: np.ndarray, *, rtol: float = 1e-12, max_passes: int = 10_000
) -> tuple[np.ndarray, int]:
    """Move single nodes while that strictly lowers the normalized cut; (labels, moves made).

    Each pass computes every node's exact gain (:meth:`_State.gains`) and applies the improving
    moves best first, as many at once as still lower the objective (moves interact through the
    module volumes, so a batch is checked and halved until it helps; the single best move always
    does). ``rtol`` keeps rounding noise from counting as an improvement. The state is updated
    by each batch and recomputed from the graph every ``REFRESH_PASSES`` passes, so rounding
    cannot accumulate.
    """
    labels = canonical(labels)
    k = int(labels.max()) + 1 if sub.n else 0
    if k < 2:
        return labels, 0
    state, n_moves = _State(sub, labels, k), 0
    current = state.value()
    for n_pass in range(1, max_passes + 1):
        gain, target = state.gains()
        tol = rtol * max(current, 1.0)
        cand = np.flatnonzero(gain < -tol)
        if len(cand) == 0:
            break
        order = cand[np.argsort(gain[cand], kind="stable")]
        m, moved = len(order), False
        while m >= 1:
            nodes = order[:m]
            after = state.moved(nodes, target[nodes])
            if after[2].min() > 0:
                value = state.value(*after[:2])
                if value < current - tol:
                    state.apply(nodes, target[nodes], *after)
                    current, n_moves, moved = value, n_moves + m, True
                    break
            m //= 2
        if not moved:
            break
        if n_pass % REFRESH_PASSES == 0:
            state = _State(sub, state.labels, k)
            current = state.value()
    return canonical(state.labels), n_moves


def merge_to(sub: ConnectedGraph, labels: np.ndarray, k: int) -> np.ndarray:
    """Merge modules pairwise, always the pair whose merge lowers the normalized cut most,
    until ``k`` are left (merging ``a`` and ``b`` replaces their two terms by
    ``(cut_a + cut_b - 2 S_ab) / (vol_a + vol_b)``)."""
    labels = canonical(labels)
    k0 = int(labels.max()) + 1
    if k0 <= k:
        return labels
    S = sub.between(labels)
    cut, vol = module_cuts(sub.strength, sub.src, sub.dst, sub.degree, labels)
    group = np.arange(k0)
    alive = np.ones(k0, dtype=bool)
    for _ in range(k0 - k):
        idx = np.flatnonzero(alive)
        c, v = cut[idx], vol[idx]
        merged = (c[:, None] + c[None, :] - 2 * S[np.ix_(idx, idx)]) / (v[:, None] + v[None, :])
        change = merged - (c / v)[:, None] - (c / v)[None, :]
        change[np.tril_indices(len(idx))] = np.inf
        i, j = np.unravel_index(np.argmin(change), change.shape)
        a, b = idx[i], idx[j]
        cut[a] = cut[a] + cut[b] - 2 * S[a, b]
        vol[a] += vol[b]
        S[a] += S[b]
        S[:, a] += S[:, b]
        S[a, a] = 0.0
        alive[b] = False
        group[group == b] = a
    return canonical(group[labels])

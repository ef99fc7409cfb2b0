"""Circuits: the smallest set of modules that keeps the behavior, and faithfulness curves.

Everything is measured with the behavioral loss of eq. 6 against the unablated model.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .._validation import check_int, check_real, invalid
from ..analysis import Analysis
from ..chain import LayerSelector
from ..loss import behavioral_loss
from .ablation import AblationPlan, Ablator, as_list
from .modules import module_groups

__all__ = ["Circuit", "smallest_circuit", "FaithfulnessCurve", "faithfulness_curve"]

#: Up to this many modules :func:`smallest_circuit` tries every subset (2^n runs at most).
EXHAUSTIVE_MAX_MODULES = 12


@dataclass(frozen=True)
class Circuit:
    """The smallest set of modules that keeps the behavioral loss on chosen outputs below eps.

    Attributes
    ----------
    modules : tuple of str
        Labels of the kept modules (every other assigned direction is ablated).
    nodes : tuple of str
        Their node ids.
    loss : float
        Behavioral loss on ``output`` with only ``modules`` kept.
    eps : float
    output : tuple of int
        Flattened output dimensions the loss was measured on.
    search : str
        ``"exhaustive"`` (every subset, by size) or ``"greedy"``.
    n_evaluated : int
        Ablated runs of the model the search took.
    """

    modules: tuple[str, ...]
    nodes: tuple[str, ...]
    loss: float
    eps: float
    output: tuple[int, ...]
    search: str
    n_evaluated: int

    def to_dict(self) -> dict:
        return {
            "modules": list(self.modules),
            "nodes": list(self.nodes),
            "loss": self.loss,
            "eps": self.eps,
            "output": list(self.output),
            "search": self.search,
            "n_evaluated": self.n_evaluated,
        }


def smallest_circuit(  # noqa: PLR0913 (public; the ablation options of module_ablation)
    model,
    analysis: Analysis,
    data,
    modules,
    *,
    output: int | Sequence[int] | None = None,
    eps: float | None = None,
    mode: str = "mean",
    layers: LayerSelector = None,
    batch_size: int = 256,
    seed: int = 0,
) -> Circuit:
    """Fewest modules that, kept alone, hold the behavioral loss on ``output`` below ``eps``.

    With at most ``EXHAUSTIVE_MAX_MODULES`` (12) modules every subset is tried in order of size
    (then of module label), and among the subsets of the first size that succeeds the one with the
    lowest loss is returned: a true minimum. With more modules the search is greedy: start from no
    module and keep adding the one that lowers the loss most, until it is below ``eps`` (not
    guaranteed minimal). Keeping every module ablates nothing, so a circuit always exists.

    Parameters
    ----------
    output : int, list of int, or None
        Flattened output dimensions the loss is measured on (all by default).
    eps : float, optional
        Loss threshold; the analysis's ``eps`` by default.
    """
    where = "smallest_circuit"
    options = dict(mode=mode, layers=layers, batch_size=batch_size, seed=seed)
    runner = Ablator(where, model, analysis, data, options)
    eps = analysis.eps if eps is None else check_real(where, "eps", eps, low=0, low_open=True)
    labels, groups = module_groups(where, modules)
    for g in groups:
        runner.plan(g)
    ref = runner.reference.reshape(len(runner.reference), -1)
    dims = list(range(ref.shape[1])) if output is None else _as_dims(where, output, ref.shape[1])
    cache: dict[frozenset, float] = {}

    def loss(kept: frozenset) -> float:
        if kept not in cache:
            ablate = [n for m, g in enumerate(groups) if m not in kept for n in g]
            out = runner.run(runner.plan(ablate)).reshape(len(ref), -1)
            cache[kept] = behavioral_loss(out[:, dims], ref[:, dims])
        return cache[kept]

    n = len(groups)
    search = "exhaustive" if n <= EXHAUSTIVE_MAX_MODULES else "greedy"
    best = (_exhaustive if search == "exhaustive" else _greedy)(loss, n, eps)
    kept = sorted(best)
    return Circuit(
        modules=tuple(labels[m] for m in kept),
        nodes=tuple(n for m in kept for n in groups[m]),
        loss=loss(best),
        eps=float(eps),
        output=tuple(dims),
        search=search,
        n_evaluated=len(cache),
    )


def _exhaustive(loss: Callable[[frozenset], float], n: int, eps: float) -> frozenset:
    """The lowest-loss subset among the smallest ones with a loss below ``eps``."""
    for size in range(n + 1):
        ok = [(loss(frozenset(s)), s) for s in itertools.combinations(range(n), size)]
        ok = [(v, s) for v, s in ok if v < eps]
        if ok:
            return frozenset(min(ok)[1])
    return frozenset(range(n))  # unreachable: keeping every module ablates nothing (loss 0)


def _greedy(loss: Callable[[frozenset], float], n: int, eps: float) -> frozenset:
    """Add the module that lowers the loss most until it is below ``eps``."""
    best: frozenset = frozenset()
    while loss(best) >= eps and len(best) < n:
        best = min(
            (best | {m} for m in range(n) if m not in best), key=lambda s: (loss(s), sorted(s))
        )
    return best


def _as_dims(where: str, output, d_out: int) -> list[int]:
    dims = [output] if isinstance(output, (int, np.integer)) else as_list(where, "output", output)
    constraint = f"None, an output dimension in [0, {d_out - 1}] or a non-empty list of them"
    for v in dims:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < d_out:
            raise invalid(where, "output", constraint, output)
    if not dims:
        raise invalid(where, "output", constraint, output)
    return [int(v) for v in dims]


@dataclass(frozen=True)
class FaithfulnessCurve:
    """Behavioral loss as the weakest edges are removed.

    Attributes
    ----------
    n_edges_kept : ndarray of int64, shape (n_points,)
        Decreasing from every candidate edge (all pairs of adjacent-layer directions) to 0.
    loss : ndarray of float64, shape (n_points,)
        Behavioral loss (eq. 6) with all but the ``n_edges_kept`` strongest edges removed.
    w_removed_max : ndarray of float64, shape (n_points,)
        Strength ``w`` of the strongest removed edge (0 when none is removed).
    n_edges_total : int
        Candidate edges: ``sum_l k_l k_{l+1}``.
    n_edges_graph : int
        Edges of the analysis's graph (``w > eps^1/2``).
    basis, mode, method : str
    eps : float
    """

    n_edges_kept: np.ndarray
    loss: np.ndarray
    w_removed_max: np.ndarray
    n_edges_total: int
    n_edges_graph: int
    basis: str
    mode: str
    method: str
    eps: float

    def to_dict(self) -> dict:
        return {
            "n_edges_kept": self.n_edges_kept.tolist(),
            "loss": self.loss.tolist(),
            "w_removed_max": self.w_removed_max.tolist(),
            "n_edges_total": self.n_edges_total,
            "n_edges_graph": self.n_edges_graph,
            "basis": self.basis,
            "mode": self.mode,
            "method": self.method,
            "eps": self.eps,
        }


def _kept_counts(total: int, n_points: int) -> np.ndarray:
    """About ``n_points`` counts from ``total`` down to 0, geometrically spaced from both ends
    (dense where few edges are kept and where few are removed)."""
    if total == 0:
        return np.zeros(1, dtype=np.int64)
    g = np.round(np.geomspace(1, total, max((n_points - 2) // 2, 1))).astype(np.int64)
    return np.unique(np.concatenate([[0, total], g, total - g]))[::-1].copy()


def faithfulness_curve(  # noqa: PLR0913 (public; the ablation options)
    model,
    analysis: Analysis,
    data,
    *,
    n_points: int = 20,
    mode: str = "mean",
    method: str = "exact",
    layers: LayerSelector = None,
    batch_size: int = 256,
    seed: int = 0,
) -> FaithfulnessCurve:
    """Behavioral loss with all but the strongest ``n`` edges removed, for about ``n_points`` n.

    Every pair of directions of adjacent layers is a candidate edge, ranked by ``w`` over all layer
    pairs (ties broken by layer pair, then target, then source). Edges are removed weakest first,
    jointly and exactly (see the module docstring): each point is one pass over the data costing at
    most ``k_{l+1}`` extra forwards of stage ``l``. ``method="linear"`` gives the first-order
    approximation instead.

    A basis in which the model is sparse keeps a low loss down to few edges: compare analyses of
    one model in the ``"interaction"``, ``"pca"`` and ``"neuron"`` bases.

    Returns
    -------
    FaithfulnessCurve
    """
    where = "faithfulness_curve"
    check_int(where, "n_points", n_points, low=2)
    options = dict(mode=mode, layers=layers, batch_size=batch_size, seed=seed, method=method)
    runner = Ablator(where, model, analysis, data, options)
    ws, ls, ts, ss = [], [], [], []
    for l, w in enumerate(analysis.w):
        i, j = np.meshgrid(np.arange(w.shape[0]), np.arange(w.shape[1]), indexing="ij")
        ws.append(w.detach().cpu().numpy().ravel())
        ls.append(np.full(w.numel(), l))
        ts.append(i.ravel())
        ss.append(j.ravel())
    w_all, l_all, t_all, s_all = (np.concatenate(v) for v in (ws, ls, ts, ss))
    order = np.lexsort((s_all, t_all, l_all, w_all))  # weakest first
    total = len(order)
    ref = runner.reference
    kept_counts = _kept_counts(total, n_points)
    losses, w_max = [], []
    for n_kept in kept_counts:
        gone = order[: total - n_kept]
        edges = {}
        for e in gone:
            edges.setdefault(int(l_all[e]), {}).setdefault(int(t_all[e]), []).append(int(s_all[e]))
        plan = AblationPlan({}, {l: {i: sorted(s) for i, s in t.items()} for l, t in edges.items()})
        losses.append(0.0 if plan.empty else behavioral_loss(runner.run(plan), ref))
        w_max.append(float(w_all[gone].max()) if len(gone) else 0.0)
    return FaithfulnessCurve(
        n_edges_kept=kept_counts,
        loss=np.array(losses),
        w_removed_max=np.array(w_max),
        n_edges_total=total,
        n_edges_graph=analysis.graph.n_edges,
        basis=str(analysis.config.get("basis", "?")),
        mode=mode,
        method=method,
        eps=analysis.eps,
    )

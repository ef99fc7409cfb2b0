"""eps from the task: the largest noise scale whose left-out edges the task does not notice.

The graph leaves out every edge of strength ``w <= eps^1/2``. :func:`choose_eps` removes exactly
those edges from the model (:mod:`~modgraph.circuits.ablation`, all of them jointly) and measures
a task metric (accuracy, cross-entropy, or the behavioral loss) on the data; the chosen ``eps``
is the largest for which the metric stays within ``tolerance`` of the unablated model's. The
reference code of the LIB paper sets its edge threshold by the same bisection.

The metric only changes where ``eps^1/2`` crosses an edge's strength, so the search runs over the
sorted strengths themselves: bisection over the number of weakest edges removed (about
``log2(n_edges)`` ablated runs). It assumes that removing more edges never brings the metric
back within the tolerance once it has left it; :class:`EpsChoice` records every evaluation, so a
non-monotone curve shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._validation import check_choice, check_real, invalid
from ..analysis import Analysis
from ..errors import InputError
from ..loss import behavioral_loss
from .ablation import Ablator

__all__ = ["METRICS", "EpsChoice", "EdgesNeeded", "choose_eps", "edges_needed"]

#: Built-in task metrics (``labels`` needed for the first two).
METRICS = ("accuracy", "cross_entropy", "behavioral")


@dataclass(frozen=True)
class EpsChoice:
    """The eps :func:`choose_eps` chose, and why.

    Attributes
    ----------
    eps : float
        Absolute noise scale (``Analysis.eps`` units): pass it to ``analysis.with_eps``.
    eps_relative : float
        The same as a fraction of the output variance (``analyze``'s default units).
    metric : str
    reference : float
        The metric of the unablated model.
    value : float
        The metric with every edge of strength ``w <= eps^1/2`` removed.
    tolerance : float
        Largest allowed ``|value - reference|``.
    edges_removed, edges_total : int
        Edges at or below ``eps^1/2``, and edges of positive strength in all.
    evaluations : tuple of (int, float)
        Every ablated run of the search: (edges removed, metric).
    """

    eps: float
    eps_relative: float
    metric: str
    reference: float
    value: float
    tolerance: float
    edges_removed: int
    edges_total: int
    evaluations: tuple[tuple[int, float], ...]

    @property
    def reason(self) -> str:
        """One line for a report: what was chosen and why."""
        return (
            f"eps = {self.eps:.4g} ({self.eps_relative:.3g} of the output variance): the largest "
            f"whose {self.edges_removed} of {self.edges_total} edges at or below eps^1/2, "
            f"removed together, keep {self.metric} within {self.tolerance:g} of the model's "
            f"({self.value:.6g} against {self.reference:.6g})"
        )

    def to_dict(self) -> dict:
        return {
            "eps": self.eps, "eps_relative": self.eps_relative, "metric": self.metric,
            "reference": self.reference, "value": self.value, "tolerance": self.tolerance,
            "evaluations": len(self.evaluations), "reason": self.reason,
        }  # fmt: skip


def _metric_fn(metric, labels, where: str) -> tuple[str, Callable[[Tensor, Tensor], float]]:
    """``(name, f(outputs, reference_outputs) -> float)``."""
    if callable(metric):
        return getattr(metric, "__name__", "metric"), lambda out, ref: float(metric(out))
    check_choice(where, "metric", metric, METRICS)
    if metric == "behavioral":
        return metric, behavioral_loss
    if labels is None:
        raise InputError(f"{where}: metric={metric!r} needs labels (the task's targets)")
    y = torch.as_tensor(labels)
    if y.is_floating_point() or y.ndim != 1:
        raise invalid(
            where, "labels", "a 1-d integer tensor of class indices, one per sample",
            labels, shown=f"dtype {y.dtype}, shape {tuple(y.shape)}",
        )  # fmt: skip

    def score(out: Tensor, ref: Tensor) -> float:
        logits = out.reshape(len(out), -1).double()
        if len(logits) != len(y):
            raise InputError(
                f"{where}: labels has {len(y)} entries but the data has {len(logits)} samples"
            )
        target = y.to(logits.device)
        if metric == "accuracy":
            return float((logits.argmax(-1) == target).double().mean())
        return float(torch.nn.functional.cross_entropy(logits, target))

    return metric, score


def choose_eps(  # noqa: PLR0913 (public; the ablation options)
    model,
    analysis: Analysis,
    data,
    metric="accuracy",
    *,
    labels=None,
    tolerance: float = 1e-3,
    mode: str = "mean",
    layers=None,
    batch_size: int = 256,
) -> EpsChoice:
    """The largest eps whose left-out edges, removed from the model, keep a metric within tolerance.

    Parameters
    ----------
    model : nn.Module, list of nn.Module, LayerChain or HookedChain
        The model ``analysis`` was computed on (cut the same way).
    analysis : Analysis
    data : tensor, array, or re-iterable of batches
        Inputs, in the order of ``labels``.
    metric : {"accuracy", "cross_entropy", "behavioral"} or callable
        ``"accuracy"`` / ``"cross_entropy"`` of the outputs (flattened per sample, as logits)
        against ``labels``; ``"behavioral"``: the behavioral loss against the unablated outputs
        (eq. 6); a callable ``metric(outputs) -> float`` of the whole output tensor.
    labels : 1-d integer tensor, optional
        Class index of every sample, for ``"accuracy"`` and ``"cross_entropy"``.
    tolerance : float
        Largest allowed change of the metric (absolute; 1e-3: an accuracy within 0.1%).
    mode, layers, batch_size
        As for :func:`run_ablated` (``mode`` replaces a removed source's coordinate).

    Returns
    -------
    EpsChoice
        ``analysis.with_eps(choice.eps)`` is the analysis at the chosen eps. Where even the
        weakest edge cannot be removed, ``eps`` is just below its strength squared; where every
        edge can, it is the strongest edge's strength squared (and the graph is empty).
    """
    run = _Task("choose_eps", model, analysis, data, metric, labels, tolerance,
                dict(mode=mode, layers=layers, batch_size=batch_size))  # fmt: skip
    entries = _edges(analysis, range(len(analysis.w)))
    if not entries:
        raise InputError("choose_eps: the analysis has no edge of positive strength")
    lo, lo_value = run.removable(entries)
    strengths = np.array([e[0] for e in entries])
    # the eps that leaves out exactly the lo weakest edges: their largest strength squared, or
    # (none removable) just below the weakest's
    eps = strengths[lo - 1] ** 2 if lo else float(np.nextafter(strengths[0] ** 2, 0.0))
    eps = max(eps, float(np.finfo(np.float64).tiny))
    return EpsChoice(
        eps=float(eps), eps_relative=float(eps / analysis.output_variance), metric=run.name,
        reference=run.reference, value=lo_value, tolerance=float(tolerance),
        edges_removed=lo,
        edges_total=len(entries), evaluations=tuple(run.evaluations),
    )  # fmt: skip


@dataclass(frozen=True)
class EdgesNeeded:
    """The edges each layer pair needs for a task (:func:`edges_needed`).

    Attributes
    ----------
    pairs : tuple of str
        ``"layer -> next layer"``, one per pair.
    needed, total : tuple of int
        Per pair, the edges that must stay (the strongest) so that removing the rest of that
        pair's edges keeps the metric within tolerance, and the edges of positive strength.
    metric : str
    reference : float
    tolerance : float
    evaluations : int
        Ablated runs in all.
    """

    pairs: tuple[str, ...]
    needed: tuple[int, ...]
    total: tuple[int, ...]
    metric: str
    reference: float
    tolerance: float
    evaluations: int

    @property
    def n_needed(self) -> int:
        return sum(self.needed)


def edges_needed(  # noqa: PLR0913 (public; the ablation options)
    model,
    analysis: Analysis,
    data,
    metric="accuracy",
    *,
    labels=None,
    tolerance: float = 1e-3,
    mode: str = "mean",
    layers=None,
    batch_size: int = 256,
) -> EdgesNeeded:
    """The LIB paper's sparsity count: per layer pair, the strongest edges that must stay.

    For each pair of adjacent layers on its own, the weakest edges of that pair are removed
    (the other pairs intact) as long as ``metric`` stays within ``tolerance`` of the model's: a
    bisection over the pair's sorted strengths, as the paper's reference code sets its threshold
    per pair. ``needed`` is what remains. Compare bases by calling it on analyses of the same
    model in each (``basis="pca"``, ``"neuron"``); ``analyze(output_basis="raw")`` counts the
    edges into the raw outputs, as the paper does.

    Parameters are those of :func:`choose_eps`.

    Examples
    --------
    >>> import torch, modgraph as mg
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).double().eval()
    >>> x = torch.randn(200, 4, dtype=torch.float64)
    >>> a = mg.analyze(net, x, rotation="none", progress=False)
    >>> count = mg.edges_needed(net, a, x, "behavioral", tolerance=1e-3)
    >>> len(count.needed) == len(a.w), count.n_needed <= sum(count.total)
    (True, True)
    """
    run = _Task("edges_needed", model, analysis, data, metric, labels, tolerance,
                dict(mode=mode, layers=layers, batch_size=batch_size))  # fmt: skip
    names = analysis.layer_names
    needed, total = [], []
    for l in range(len(analysis.w)):
        entries = _edges(analysis, [l])
        removable = run.removable(entries)[0] if entries else 0
        needed.append(len(entries) - removable)
        total.append(len(entries))
    return EdgesNeeded(
        pairs=tuple(f"{names[l]} -> {names[l + 1]}" for l in range(len(analysis.w))),
        needed=tuple(needed), total=tuple(total), metric=run.name, reference=run.reference,
        tolerance=float(tolerance), evaluations=len(run.evaluations),
    )  # fmt: skip


def _edges(analysis: Analysis, pairs) -> list[tuple[float, int, int, int]]:
    """Every edge of positive strength of the layer ``pairs``, weakest first:
    ``(w, layer, source, target)``."""
    entries = []
    for l in pairs:
        w = analysis.w[l].detach().cpu().double().numpy()
        i, j = np.nonzero(w > 0)
        entries += [(float(w[a, b]), l, int(b), int(a)) for a, b in zip(i, j)]
    return sorted(entries)


class _Task:
    """A metric of the model's outputs with chosen edges removed (exact ablation)."""

    def __init__(self, where, model, analysis, data, metric, labels, tolerance, options):
        self.tolerance = check_real(where, "tolerance", tolerance, low=0)
        self.name, self.score = _metric_fn(metric, labels, where)
        self.runner = Ablator(where, model, analysis, data, {**options, "method": "exact"})
        self.out = self.runner.reference
        self.reference = self.score(self.out, self.out)
        if not math.isfinite(self.reference):
            raise InputError(f"{where}: the metric of the unablated model is {self.reference}")
        self.evaluations: list[tuple[int, float]] = []

    def value(self, entries, n_removed: int) -> float:
        edges = [(f"{l}:{j}", f"{l + 1}:{i}") for _, l, j, i in entries[:n_removed]]
        v = self.score(self.runner.run(self.runner.plan(edges=edges)), self.out)
        self.evaluations.append((n_removed, v))
        return v

    def ok(self, v: float) -> bool:
        return math.isfinite(v) and abs(v - self.reference) <= self.tolerance

    def removable(self, entries) -> tuple[int, float]:
        """The most of the weakest ``entries`` removable within tolerance (bisection: it
        assumes that removing more never brings the metric back), and the metric then."""
        lo, hi, lo_value = 0, len(entries), self.reference
        top = self.value(entries, hi)
        if self.ok(top):
            return hi, top
        while hi - lo > 1:
            mid = (lo + hi) // 2
            v = self.value(entries, mid)
            if self.ok(v):
                lo, lo_value = mid, v
            else:
                hi = mid
        return lo, lo_value

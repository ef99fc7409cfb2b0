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

__all__ = ["METRICS", "EpsChoice", "choose_eps"]

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


def _metric_fn(metric, labels) -> tuple[str, Callable[[Tensor, Tensor], float]]:
    """``(name, f(outputs, reference_outputs) -> float)``."""
    if callable(metric):
        return getattr(metric, "__name__", "metric"), lambda out, ref: float(metric(out))
    check_choice("choose_eps", "metric", metric, METRICS)
    if metric == "behavioral":
        return metric, behavioral_loss
    if labels is None:
        raise InputError(f"choose_eps: metric={metric!r} needs labels (the task's targets)")
    y = torch.as_tensor(labels)
    if y.is_floating_point() or y.ndim != 1:
        raise invalid(
            "choose_eps", "labels", "a 1-d integer tensor of class indices, one per sample",
            labels, shown=f"dtype {y.dtype}, shape {tuple(y.shape)}",
        )  # fmt: skip

    def score(out: Tensor, ref: Tensor) -> float:
        logits = out.reshape(len(out), -1).double()
        if len(logits) != len(y):
            raise InputError(
                f"choose_eps: labels has {len(y)} entries but the data has {len(logits)} samples"
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
    check_real("choose_eps", "tolerance", tolerance, low=0)
    name, score = _metric_fn(metric, labels)
    options = dict(mode=mode, layers=layers, batch_size=batch_size, method="exact")
    runner = Ablator("choose_eps", model, analysis, data, options)
    reference_out = runner.reference
    reference = score(reference_out, reference_out)
    if not math.isfinite(reference):
        raise InputError(f"choose_eps: the metric of the unablated model is {reference}")
    # every edge of positive strength, weakest first
    entries = []
    for l, w in enumerate(analysis.w):
        w = w.detach().cpu().double().numpy()
        i, j = np.nonzero(w > 0)
        entries += [(float(w[a, b]), l, int(b), int(a)) for a, b in zip(i, j)]
    if not entries:
        raise InputError("choose_eps: the analysis has no edge of positive strength")
    entries.sort()
    strengths = np.array([e[0] for e in entries])
    evaluations: list[tuple[int, float]] = []

    def value(n_removed: int) -> float:
        edges = [(f"{l}:{j}", f"{l + 1}:{i}") for _, l, j, i in entries[:n_removed]]
        v = score(runner.run(runner.plan(edges=edges)), reference_out)
        evaluations.append((n_removed, v))
        return v

    def ok(v: float) -> bool:
        return math.isfinite(v) and abs(v - reference) <= tolerance

    # bisection on the number removed: lo keeps the tolerance, hi does not
    lo, hi = 0, len(entries)
    lo_value = reference
    top = value(hi)
    if ok(top):
        lo, lo_value = hi, top
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            v = value(mid)
            if ok(v):
                lo, lo_value = mid, v
            else:
                hi = mid
    # the eps that leaves out exactly the lo weakest edges: their largest strength squared, or
    # (none removable) just below the weakest's
    eps = strengths[lo - 1] ** 2 if lo else float(np.nextafter(strengths[0] ** 2, 0.0))
    eps = max(eps, float(np.finfo(np.float64).tiny))
    return EpsChoice(
        eps=float(eps), eps_relative=float(eps / analysis.output_variance), metric=name,
        reference=reference, value=lo_value, tolerance=float(tolerance),
        edges_removed=lo,
        edges_total=len(entries), evaluations=tuple(evaluations),
    )  # fmt: skip

"""Modules put to the test: each removed, each kept alone, and what each reads and writes.

Everything is measured with the behavioral loss of eq. 6 against the unablated model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._validation import invalid
from ..analysis import Analysis
from ..chain import LayerSelector
from ..errors import InputError
from ..loss import behavioral_loss
from ..partition import UNASSIGNED, ModuleResult
from .ablation import Ablator, as_list

__all__ = ["module_groups", "ModuleAblation", "module_ablation", "ModuleIO", "module_io"]


def module_groups(where: str, modules) -> tuple[list[str], list[list[str]]]:
    """Labels and node lists of modules given as a ModuleResult, a membership dict, or lists."""
    if isinstance(modules, ModuleResult):
        groups = modules.modules
        return [str(m) for m in range(len(groups))], groups
    if isinstance(modules, Mapping):
        by: dict[int, list[str]] = {}
        for node, m in modules.items():
            if m != UNASSIGNED:
                by.setdefault(int(m), []).append(node)
        labels = sorted(by)
        return [str(m) for m in labels], [by[m] for m in labels]
    groups = [as_list(where, "modules", g) for g in as_list(where, "modules", modules)]
    if not groups:
        raise InputError("modules is empty; pass a ModuleResult, a membership dict or node lists")
    return [str(m) for m in range(len(groups))], groups


@dataclass(frozen=True)
class ModuleAblation:
    """Behavioral loss (eq. 6) of the model with each module removed, and with it kept alone.

    Attributes
    ----------
    labels : tuple of str
        Module labels.
    n_nodes : ndarray of int, shape (n_modules,)
    loss_removed : ndarray of float64, shape (n_modules,)
        The module's directions ablated, everything else intact.
    loss_alone : ndarray of float64, shape (n_modules,)
        Every *other* assigned direction ablated (unassigned directions are left intact).
    metric_full : float or None
        ``metric`` on the unablated outputs.
    metric_removed, metric_alone : ndarray of float64 or None
    mode : str
    """

    labels: tuple[str, ...]
    n_nodes: np.ndarray
    loss_removed: np.ndarray
    loss_alone: np.ndarray
    metric_full: float | None
    metric_removed: np.ndarray | None
    metric_alone: np.ndarray | None
    mode: str

    def to_dict(self) -> dict:
        def lst(a):
            return None if a is None else [float(v) for v in a]

        return {
            "labels": list(self.labels),
            "n_nodes": [int(v) for v in self.n_nodes],
            "loss_removed": lst(self.loss_removed),
            "loss_alone": lst(self.loss_alone),
            "metric_full": self.metric_full,
            "metric_removed": lst(self.metric_removed),
            "metric_alone": lst(self.metric_alone),
            "mode": self.mode,
        }


def module_ablation(  # noqa: PLR0913 (public; the ablation options)
    model,
    analysis: Analysis,
    data,
    modules,
    *,
    mode: str = "mean",
    metric: Callable[[Tensor], float] | None = None,
    layers: LayerSelector = None,
    batch_size: int = 256,
    seed: int = 0,
) -> ModuleAblation:
    """Remove each module, and keep each module alone; measure the behavioral loss (eq. 6).

    Parameters
    ----------
    modules : ModuleResult, dict of node id -> int, or list of lists of node ids
        ``-1`` in a membership dict marks unassigned nodes, which are never ablated.
    metric : callable, optional
        ``metric(outputs) -> float`` (e.g. task accuracy), evaluated on every ablated run.

    Returns
    -------
    ModuleAblation
    """
    where = "module_ablation"
    if metric is not None and not callable(metric):
        raise invalid(where, "metric", "None or a callable outputs -> float", metric)
    options = dict(mode=mode, layers=layers, batch_size=batch_size, seed=seed)
    runner = Ablator(where, model, analysis, data, options)
    labels, groups = module_groups(runner.where, modules)
    plans = [runner.plan(g) for g in groups]  # checks every node id up front
    assigned = [n for g in groups for n in g]
    ref = runner.reference
    removed, alone, m_removed, m_alone = [], [], [], []
    for m, g in enumerate(groups):
        out_r = runner.run(plans[m])
        own = set(g)
        out_a = runner.run(runner.plan([n for n in assigned if n not in own]))
        removed.append(behavioral_loss(out_r, ref))
        alone.append(behavioral_loss(out_a, ref))
        if metric is not None:
            m_removed.append(float(metric(out_r)))
            m_alone.append(float(metric(out_a)))
    return ModuleAblation(
        labels=tuple(labels),
        n_nodes=np.array([len(set(g)) for g in groups]),
        loss_removed=np.array(removed),
        loss_alone=np.array(alone),
        metric_full=None if metric is None else float(metric(ref)),
        metric_removed=None if metric is None else np.array(m_removed),
        metric_alone=None if metric is None else np.array(m_alone),
        mode=mode,
    )


@dataclass(frozen=True)
class ModuleIO:
    """Which output dimensions each module writes and which input dimensions it reads.

    Attributes
    ----------
    labels : tuple of str
    writes : ndarray of float64, shape (n_modules, d_out)
        Mean squared change of each (flattened) output dimension when the module is ablated.
    reads : ndarray of float64, shape (n_modules, d_in)
        Mean squared change of each (flattened) input dimension when the module's input-layer
        directions are ablated: ``diag(C_pinv_S C_S G C_S^T C_pinv_S^T)`` with the input's
        centered Gram ``G`` (exact for ``mode="mean"``; 0 for a module without input nodes).
    output_variance : ndarray of float64, shape (d_out,)
    input_variance : ndarray of float64, shape (d_in,)
        For scale: a module that fully writes (reads) a dimension changes it by about its variance.
    """

    labels: tuple[str, ...]
    writes: np.ndarray
    reads: np.ndarray
    output_variance: np.ndarray
    input_variance: np.ndarray

    def written_by(self, module: int, *, rtol: float = 0.01) -> list[int]:
        """Output dimensions whose mean squared change exceeds ``rtol`` times their variance."""
        return np.flatnonzero(self.writes[module] > rtol * self.output_variance).tolist()

    def read_by(self, module: int, *, rtol: float = 0.01) -> list[int]:
        """Input dimensions whose mean squared change exceeds ``rtol`` times their variance."""
        return np.flatnonzero(self.reads[module] > rtol * self.input_variance).tolist()

    def to_dict(self) -> dict:
        return {
            "labels": list(self.labels),
            "writes": self.writes.tolist(),
            "reads": self.reads.tolist(),
            "output_variance": self.output_variance.tolist(),
            "input_variance": self.input_variance.tolist(),
        }


def module_io(
    model,
    analysis: Analysis,
    data,
    modules,
    *,
    layers: LayerSelector = None,
    batch_size: int = 256,
) -> ModuleIO:
    """Attribute output dimensions to the modules that write them and input dimensions to readers.

    Outputs: each module is mean-ablated and the mean squared change of every output dimension is
    recorded. Inputs: the module's input-layer directions, mapped back through ``C_pinv`` of layer
    0 (see :class:`ModuleIO`).
    """
    options = dict(mode="mean", layers=layers, batch_size=batch_size, seed=0)
    runner = Ablator("module_io", model, analysis, data, options)
    labels, groups = module_groups(runner.where, modules)
    plans = [runner.plan(g) for g in groups]
    ref = runner.reference
    ref_flat = ref.reshape(len(ref), -1).to(torch.float64)
    writes = []
    for plan in plans:
        out = runner.run(plan).reshape(len(ref), -1).to(torch.float64)
        writes.append((out - ref_flat).square().mean(0).cpu().numpy())
    b0 = runner.bases[0]
    G = analysis.statistics[0].G.to(b0.C)
    reads = []
    for plan in plans:
        idx = plan.nodes.get(0, [])
        P = b0.C_pinv[:, idx] @ b0.C[idx]  # the map f - mean -> its part in those directions
        reads.append((P @ G @ P.T).diagonal().cpu().numpy())
    return ModuleIO(
        labels=tuple(labels),
        writes=np.array(writes),
        reads=np.array(reads),
        output_variance=(ref_flat - ref_flat.mean(0)).square().mean(0).cpu().numpy(),
        input_variance=G.diagonal().cpu().numpy(),
    )

"""Circuit finding: ablations in the interaction basis, module tests and faithfulness curves.

A direction ``j`` of layer ``l`` (graph node ``"l:j"``) is *ablated* by replacing its basis
coordinate ``f_hat_j = [C (f - mean)]_j`` and mapping back with ``C_pinv``, keeping the part ``r``
of the activation that the basis dropped:

.. math::

    f' = \\mu + C^+ \\hat f' + r, \\qquad r = (f - \\mu) - C^+ C (f - \\mu)
    \\quad\\Longleftrightarrow\\quad f' = f + C^+_{:,S} (\\hat f'_S - \\hat f_S)

The replacement ``f_hat'_j`` is, by ``mode``:

- ``"mean"``: ``0``, the data mean of ``f_hat_j`` (``f_hat`` is centered);
- ``"zero"``: ``[C (0 - mean)]_j``, the coordinate of the all-zero activation;
- ``"resample"``: ``f_hat_j`` of the *unablated* model on another input of the same batch (one
  seeded derangement per batch, the same at every layer).

The chain is run stage by stage and each edited layer feeds the next stages, so an ablation at layer
``l`` propagates to the output.

An *edge* ``(l:j, l+1:i)`` is removed exactly: ``f_hat_{l+1,i}`` is recomputed from the layer-``l``
activation with direction ``j`` replaced, while every other direction of layer ``l + 1`` sees the
unablated layer ``l``. A set of edges is removed jointly the same way: target ``i`` sees layer ``l``
with *all* of its removed sources ``S_i`` replaced. Targets with the same ``S_i`` share one forward
of the stage, so removing any set of edges costs at most ``k_{l+1}`` stage forwards per layer pair
(the same count of passes as computing ``w`` itself), batched into one call.
``method="linear"`` instead subtracts the first-order attribution
``sum_{j in S_i} (f_hat_j - f_hat'_j) d f_hat_{l+1,i} / d f_hat_j`` (gradient at the current
activation); it is exact for linear stages and is kept for comparison with the linear-response view
of sec. 5.

Everything is measured with the behavioural loss of eq. 6 against the unablated model.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.func import vjp, vmap

from .basis import LayerBasis
from .chain import Batches, LayerChain, LayerSelector
from .errors import InputError
from .partition import UNASSIGNED, ModuleResult
from .pipeline import Analysis, _model_device_dtype
from .statistics import DEFAULT_JACOBIAN_BUDGET, _readout_rows

__all__ = [
    "MODES",
    "EDGE_METHODS",
    "behavioural_loss",
    "run_ablated",
    "run_edge_ablated",
    "ModuleAblation",
    "module_ablation",
    "ModuleIO",
    "module_io",
    "Circuit",
    "smallest_circuit",
    "FaithfulnessCurve",
    "faithfulness_curve",
    "plot_faithfulness",
]

MODES = ("mean", "zero", "resample")
EDGE_METHODS = ("exact", "linear")
#: Up to this many modules :func:`smallest_circuit` tries every subset (2^n runs at most).
EXHAUSTIVE_MAX_MODULES = 12
#: Okabe-Ito colours (colour-blind safe) and line styles for :func:`plot_faithfulness`.
_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000")
_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P")
#: :func:`plot_faithfulness` shows losses down to this factor times eps.
Y_DECADES_BELOW_EPS = 1e-6


# ---------------------------------------------------------------------------- loss
def behavioural_loss(model_outputs: Tensor, reference_outputs: Tensor) -> float:
    """The behavioural loss of eq. 6: mean over samples of the summed squared output error.

    .. math::

        L_B = \\frac{1}{n} \\sum_x \\lVert f(x) - f^*(x) \\rVert^2

    (no factor 1/2, as in :mod:`modgraph.degeneracy`). Computed in float64.

    Parameters
    ----------
    model_outputs, reference_outputs : Tensor of shape (n_samples, ...)

    Examples
    --------
    >>> import torch
    >>> behavioural_loss(torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.zeros(2, 2))
    2.5
    """
    a, b = torch.as_tensor(model_outputs), torch.as_tensor(reference_outputs)
    if a.shape != b.shape:
        raise InputError(
            f"model_outputs has shape {tuple(a.shape)} but reference_outputs has {tuple(b.shape)}"
        )
    if a.ndim == 0 or len(a) == 0:
        raise InputError(f"model_outputs must hold at least one sample, got shape {tuple(a.shape)}")
    a, b = a.detach().to(torch.float64), b.detach().to(a.device, torch.float64)
    d = (a - b).reshape(len(a), -1)
    return float(d.square().sum(1).mean())


# ---------------------------------------------------------------------------- checking
def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {choices}, got {value!r}")


def _chain_for(model, analysis: Analysis, layers: LayerSelector) -> LayerChain:
    """The model's chain, cut where the analysis was cut, checked against the analysis."""
    if not isinstance(analysis, Analysis):
        raise InputError(f"analysis must be an Analysis, got {type(analysis).__name__}")
    names = list(analysis.layer_names)
    if isinstance(model, LayerChain) or layers is not None:
        chain = LayerChain.from_model(model, layers)
    else:
        try:  # the boundaries the analysis used, by name, so layers= need not be repeated
            chain = LayerChain.from_model(model, names[1:])
        except InputError as err:
            raise InputError(
                f"model does not match analysis: the analysis has layers {names}, and {err}"
            ) from err
    if list(chain.names) != names:
        raise InputError(
            f"model does not match analysis: the model's layers are {list(chain.names)} but the "
            f"analysis was fitted on {names} (pass the analysed model, and layers= as given to "
            "analyze)"
        )
    return chain


def _flat(f: Tensor) -> Tensor:
    return f.reshape(f.shape[0], -1)


def _check_width(f: Tensor, basis: LayerBasis, batch: int) -> None:
    if f.ndim == 3:
        raise InputError(
            f"layer {basis.name!r} has activations of shape {tuple(f.shape)} (positions); "
            "ablations read (batch, d) layers only so far"
        )
    width = _flat(f).shape[1]
    if width != basis.d:
        raise InputError(
            f"model does not match analysis: layer {basis.name!r} has {width} features in data "
            f"batch {batch} but the analysis basis was fitted on {basis.d}"
        )


def _parse_node(node, bases: Sequence[LayerBasis], arg: str) -> tuple[int, int]:
    L = len(bases) - 1
    try:
        if isinstance(node, str):
            ls, _, js = node.partition(":")
            l, j = int(ls), int(js)
        elif isinstance(node, tuple) and len(node) == 2:
            l, j = (int(v) for v in node)
        else:
            raise ValueError
    except ValueError:
        raise InputError(
            f"{arg} must hold node ids 'l:i' (layer position, direction index), got {node!r}"
        ) from None
    if not 0 <= l <= L:
        raise InputError(f"{arg}: unknown node id {node!r}: layer position {l} is outside 0..{L}")
    if not 0 <= j < bases[l].k:
        raise InputError(
            f"{arg}: unknown node id {node!r}: layer {l} ({bases[l].name!r}) has "
            f"{bases[l].k} basis directions, 0..{bases[l].k - 1}"
        )
    return l, j


@dataclass(frozen=True)
class _Plan:
    """What to ablate: direction indices per layer and removed sources per target per layer pair."""

    nodes: dict[int, list[int]] = field(default_factory=dict)
    edges: dict[int, dict[int, list[int]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.nodes and not self.edges


def _plan(bases, nodes: Iterable | None, edges: Iterable | None) -> _Plan:
    by_layer: dict[int, set[int]] = {}
    for node in [] if nodes is None else _as_list(nodes, "nodes"):
        l, j = _parse_node(node, bases, "nodes")
        by_layer.setdefault(l, set()).add(j)
    pairs: dict[int, dict[int, set[int]]] = {}
    for edge in [] if edges is None else _as_list(edges, "edges"):
        if isinstance(edge, str) or not isinstance(edge, Sequence) or len(edge) != 2:
            raise InputError(f"edges must hold (source, target) node id pairs, got {edge!r}")
        (ls, j), (lt, i) = (_parse_node(n, bases, "edges") for n in edge)
        if lt != ls + 1:
            raise InputError(
                f"edges: {edge!r} does not join adjacent layers; an edge goes from a node of "
                f"layer l to a node of layer l + 1, got layers {ls} and {lt}"
            )
        pairs.setdefault(ls, {}).setdefault(i, set()).add(j)
    return _Plan(
        {l: sorted(s) for l, s in sorted(by_layer.items())},
        {l: {i: sorted(s) for i, s in sorted(t.items())} for l, t in sorted(pairs.items())},
    )


def _as_list(x, name: str) -> list:
    if isinstance(x, str) or not isinstance(x, Iterable):
        raise InputError(f"{name} must be a list, got {x!r}")
    return list(x)


# ---------------------------------------------------------------------------- the engine
class _Runner:
    """Runs one model, cut as one analysis was, with ablations; the data is read once per run."""

    def __init__(self, model, analysis, data, *, layers, batch_size, mode, seed, method="exact"):
        _check_choice("mode", mode, MODES)
        _check_choice("method", method, EDGE_METHODS)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InputError(f"seed must be an int, got {seed!r}")
        self.chain = _chain_for(model, analysis, layers)
        self.analysis = analysis
        device, dtype = _model_device_dtype(self.chain, None)
        self.bases = [
            LayerBasis(
                b.name,
                b.position,
                b.C.to(device, torch.float64),
                b.C_pinv.to(device, torch.float64),
                b.mean.to(device, torch.float64),
                b.eigenvalues,
                b.gram_spectrum,
                b.lambda_spectrum,
                b.ties,
            )
            for b in analysis.layers
        ]
        self.batches = Batches(data, batch_size=batch_size, device=device, dtype=dtype)
        self.mode, self.seed, self.method = mode, seed, method
        self._reference: Tensor | None = None

    def plan(self, nodes=None, edges=None) -> _Plan:
        return _plan(self.bases, nodes, edges)

    @property
    def reference(self) -> Tensor:
        """The unablated model's outputs on the data."""
        if self._reference is None:
            self._reference = self.run(_Plan())
        return self._reference

    @torch.no_grad()
    def run(self, plan: _Plan) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        outs = []
        for b, x in enumerate(self.batches):
            perm = None
            if self.mode == "resample" and not plan.empty:
                if len(x) < 2:
                    raise InputError(
                        f"mode='resample' takes values from another input of the batch, but data "
                        f"batch {b} has {len(x)} sample; use batches of at least 2"
                    )
                p = torch.randperm(len(x), generator=gen).to(x.device)
                perm = torch.empty_like(p)
                perm[p] = p.roll(-1)  # one cycle through all samples: nobody keeps its own value
            outs.append(self._run_batch(x, b, plan, perm))
        if not outs:
            raise InputError("data is empty: it yielded no samples")
        return torch.cat(outs)

    def _run_batch(self, x: Tensor, b: int, plan: _Plan, perm: Tensor | None) -> Tensor:
        clean = None
        if perm is not None:  # resampled values come from the unablated model
            clean = self.chain.forward(x)
        a = self._edit_nodes(x, 0, plan, b, perm, clean)
        for l, stage in enumerate(self.chain.stages):
            _check_width(a, self.bases[l], b)
            try:
                nxt = stage(a)
            except RuntimeError as err:
                raise InputError(
                    f"data batch {b} of shape {tuple(x.shape)} does not fit the model at stage "
                    f"{l} ({self.chain.names[l]!r} -> {self.chain.names[l + 1]!r}): {err}"
                ) from err
            _check_width(nxt, self.bases[l + 1], b)
            if l in plan.edges:
                nxt = self._edit_edges(stage, a, nxt, l, plan.edges[l], perm, clean)
            a = self._edit_nodes(nxt, l + 1, plan, b, perm, clean)
        return a

    def _replacement(self, l: int, idx: list[int], n: int, perm, clean) -> Tensor:
        """New basis coordinates ``f_hat'`` for directions ``idx`` of layer ``l``, shape (n, s)."""
        basis = self.bases[l]
        C = basis.C[idx]
        if self.mode == "mean":
            return C.new_zeros(n, len(idx))
        if self.mode == "zero":
            return (-basis.mean @ C.T).expand(n, len(idx))
        f = _flat(clean[l]).to(torch.float64)[perm]
        return (f - basis.mean) @ C.T

    def _edit_nodes(self, a: Tensor, l: int, plan: _Plan, b: int, perm, clean) -> Tensor:
        idx = plan.nodes.get(l)
        if not idx:
            return a
        _check_width(a, self.bases[l], b)
        basis = self.bases[l]
        f = _flat(a).to(torch.float64)
        f_hat = (f - basis.mean) @ basis.C[idx].T
        new = self._replacement(l, idx, len(a), perm, clean)
        f = f + (new - f_hat) @ basis.C_pinv[:, idx].T
        return f.to(a.dtype).reshape(a.shape)

    def _edit_edges(self, stage, a, nxt, l, targets: dict[int, list[int]], perm, clean) -> Tensor:
        src, dst = self.bases[l], self.bases[l + 1]
        f = _flat(a).to(torch.float64)
        sources = sorted({j for s in targets.values() for j in s})
        f_hat = (f - src.mean) @ src.C[sources].T
        delta_src = self._replacement(l, sources, len(a), perm, clean) - f_hat  # (B, s)
        col = {j: c for c, j in enumerate(sources)}
        tgt = sorted(targets)
        out = _flat(nxt).to(torch.float64)
        old = (out - dst.mean) @ dst.C[tgt].T  # (B, t)
        if self.method == "exact":
            new = self._exact_targets(stage, a, f, delta_src, col, targets, tgt, l)
        else:
            new = old + self._linear_targets(stage, a, delta_src, col, targets, tgt, l)
        out = out + (new - old) @ dst.C_pinv[:, tgt].T
        return out.to(nxt.dtype).reshape(nxt.shape)

    def _exact_targets(self, stage, a, f, delta_src, col, targets, tgt, l) -> Tensor:
        src, dst = self.bases[l], self.bases[l + 1]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in tgt:
            groups.setdefault(tuple(targets[i]), []).append(i)
        new = f.new_empty(len(a), len(tgt))
        pos = {i: c for c, i in enumerate(tgt)}
        keys = list(groups)
        per = max(1, DEFAULT_JACOBIAN_BUDGET // max(1, f.numel()))
        for start in range(0, len(keys), per):  # several source sets per stage call
            chunk = keys[start : start + per]
            variants = torch.stack(
                [f + delta_src[:, [col[j] for j in S]] @ src.C_pinv[:, list(S)].T for S in chunk]
            )  # (g, B, d_l)
            inp = variants.to(a.dtype).reshape(len(chunk) * len(a), *a.shape[1:])
            y = _flat(stage(inp)).to(torch.float64).reshape(len(chunk), len(a), -1)
            for g, S in enumerate(chunk):
                ts = groups[S]
                new[:, [pos[i] for i in ts]] = (y[g] - dst.mean) @ dst.C[ts].T
        return new

    def _linear_targets(self, stage, a, delta_src, col, targets, tgt, l) -> Tensor:
        src, dst = self.bases[l], self.bases[l + 1]
        mask = delta_src.new_zeros(len(tgt), delta_src.shape[1])
        for r, i in enumerate(tgt):
            mask[r, [col[j] for j in targets[i]]] = 1.0
        sources = sorted(col, key=col.get)
        out, pullback = vjp(stage, a)
        rows = dst.C[tgt].to(a.dtype)
        g = vmap(pullback)(_readout_rows(rows, out, 0, len(tgt))[1])[0]
        g = g.reshape(len(tgt), len(a), -1)
        J = g.to(torch.float64) @ src.C_pinv[:, sources]  # (t, B, s): d f_hat_{l+1,i}/d f_hat_j
        return (J * delta_src[None] * mask[:, None, :]).sum(-1).T  # (B, t)


# ---------------------------------------------------------------------------- ablated runs
def run_ablated(
    model,
    analysis: Analysis,
    data,
    nodes: Iterable = (),
    *,
    edges: Iterable | None = None,
    mode: str = "mean",
    layers: LayerSelector = None,
    batch_size: int = 256,
    seed: int = 0,
    method: str = "exact",
) -> Tensor:
    """The model's outputs with basis directions (and edges) ablated.

    Parameters
    ----------
    model : nn.Sequential, list of nn.Module, or LayerChain
        The model ``analysis`` was computed on.
    analysis : Analysis
    data : tensor, array, or re-iterable of batches
    nodes : list of str
        Graph node ids ``"l:i"`` to ablate (see the module docstring); output-layer nodes too.
    edges : list of (str, str), optional
        ``(source "l:j", target "l+1:i")`` interactions to remove (see the module docstring).
    mode : {"mean", "zero", "resample"}
        Replacement value of an ablated basis coordinate.
    layers : None, str, list of str, or callable
        Layer boundaries as given to ``analyze``; by default the analysis's layer names are looked
        up in the model.
    batch_size : int
    seed : int
        Seeds the per-batch derangement of ``mode="resample"``.
    method : {"exact", "linear"}
        How edges are removed.

    Returns
    -------
    Tensor of shape (n_samples, *output_shape)
        In the model's dtype, concatenated over batches. Deterministic given ``seed`` on CPU.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from modgraph import analyze
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    >>> x = torch.randn(64, 3, dtype=torch.float64)
    >>> a = analyze(net, x, progress=False)
    >>> bool((run_ablated(net, a, x) == net(x)).all())
    True
    >>> y = run_ablated(net, a, x, ["2:0", "2:1"])  # every output direction -> the output mean
    >>> torch.allclose(y, net(x).mean(0).expand(64, 2))
    True
    """
    runner = _Runner(
        model, analysis, data, layers=layers, batch_size=batch_size, mode=mode, seed=seed,
        method=method,
    )  # fmt: skip
    return runner.run(runner.plan(nodes, edges))


def run_edge_ablated(model, analysis: Analysis, data, edges: Iterable, **kwargs) -> Tensor:
    """:func:`run_ablated` with only ``edges`` removed (same keyword options)."""
    return run_ablated(model, analysis, data, (), edges=edges, **kwargs)


# ---------------------------------------------------------------------------- modules
def _modules(modules, analysis: Analysis) -> tuple[list[str], list[list[str]]]:
    """Labels and node lists of the modules given as a ModuleResult, a membership dict, or lists."""
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
    groups = [_as_list(g, "modules") for g in _as_list(modules, "modules")]
    if not groups:
        raise InputError("modules is empty; pass a ModuleResult, a membership dict or node lists")
    return [str(m) for m in range(len(groups))], groups


def _check_metric(metric):
    if metric is not None and not callable(metric):
        raise InputError(f"metric must be a callable outputs -> float, got {metric!r}")


@dataclass(frozen=True)
class ModuleAblation:
    """Behavioural loss (eq. 6) of the model with each module removed, and with it kept alone.

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


def module_ablation(
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
    """Remove each module, and keep each module alone; measure the behavioural loss (eq. 6).

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
    _check_metric(metric)
    runner = _Runner(
        model, analysis, data, layers=layers, batch_size=batch_size, mode=mode, seed=seed
    )
    labels, groups = _modules(modules, analysis)
    plans = [runner.plan(g) for g in groups]  # checks every node id up front
    assigned = [n for g in groups for n in g]
    ref = runner.reference
    removed, alone, m_removed, m_alone = [], [], [], []
    for m, g in enumerate(groups):
        out_r = runner.run(plans[m])
        own = set(g)
        out_a = runner.run(runner.plan([n for n in assigned if n not in own]))
        removed.append(behavioural_loss(out_r, ref))
        alone.append(behavioural_loss(out_a, ref))
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
    runner = _Runner(
        model, analysis, data, layers=layers, batch_size=batch_size, mode="mean", seed=0
    )
    labels, groups = _modules(modules, analysis)
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


@dataclass(frozen=True)
class Circuit:
    """The smallest set of modules that keeps the behavioural loss on chosen outputs below eps.

    Attributes
    ----------
    modules : tuple of str
        Labels of the kept modules (every other assigned direction is ablated).
    nodes : tuple of str
        Their node ids.
    loss : float
        Behavioural loss on ``output`` with only ``modules`` kept.
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


def smallest_circuit(
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
    """Fewest modules that, kept alone, hold the behavioural loss on ``output`` below ``eps``.

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
    eps = analysis.eps if eps is None else eps
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise InputError(f"eps must be a positive float, got {eps!r}")
    runner = _Runner(
        model, analysis, data, layers=layers, batch_size=batch_size, mode=mode, seed=seed
    )
    labels, groups = _modules(modules, analysis)
    for g in groups:
        runner.plan(g)
    ref = runner.reference.reshape(len(runner.reference), -1)
    d_out = ref.shape[1]
    dims = list(range(d_out)) if output is None else _as_dims(output, d_out)
    cache: dict[frozenset, float] = {}

    def loss(kept: frozenset) -> float:
        if kept not in cache:
            ablate = [n for m, g in enumerate(groups) if m not in kept for n in g]
            out = runner.run(runner.plan(ablate)).reshape(len(ref), -1)
            cache[kept] = behavioural_loss(out[:, dims], ref[:, dims])
        return cache[kept]

    n = len(groups)
    best: frozenset | None = None
    if n <= EXHAUSTIVE_MAX_MODULES:
        search = "exhaustive"
        for size in range(n + 1):
            ok = [(loss(frozenset(s)), s) for s in itertools.combinations(range(n), size)]
            ok = [(v, s) for v, s in ok if v < eps]
            if ok:
                best = frozenset(min(ok)[1])
                break
    else:
        search = "greedy"
        best = frozenset()
        while loss(best) >= eps and len(best) < n:
            best = min(
                (best | {m} for m in range(n) if m not in best), key=lambda s: (loss(s), sorted(s))
            )
    assert best is not None  # keeping all modules ablates nothing: loss 0 < eps
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


def _as_dims(output, d_out: int) -> list[int]:
    dims = [output] if isinstance(output, (int, np.integer)) else _as_list(output, "output")
    for v in dims:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < d_out:
            raise InputError(f"output must be output dimensions in 0..{d_out - 1}, got {output!r}")
    if not dims:
        raise InputError("output is empty; name at least one output dimension")
    return [int(v) for v in dims]


# ---------------------------------------------------------------------------- faithfulness
@dataclass(frozen=True)
class FaithfulnessCurve:
    """Behavioural loss as the weakest edges are removed.

    Attributes
    ----------
    n_edges_kept : ndarray of int64, shape (n_points,)
        Decreasing from every candidate edge (all pairs of adjacent-layer directions) to 0.
    loss : ndarray of float64, shape (n_points,)
        Behavioural loss (eq. 6) with all but the ``n_edges_kept`` strongest edges removed.
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


def faithfulness_curve(
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
    """Behavioural loss with all but the strongest ``n`` edges removed, for about ``n_points`` n.

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
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 2:
        raise InputError(f"n_points must be an int >= 2, got {n_points!r}")
    runner = _Runner(
        model, analysis, data, layers=layers, batch_size=batch_size, mode=mode, seed=seed,
        method=method,
    )  # fmt: skip
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
        plan = _Plan({}, {l: {i: sorted(s) for i, s in t.items()} for l, t in edges.items()})
        losses.append(0.0 if plan.empty else behavioural_loss(runner.run(plan), ref))
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


def plot_faithfulness(curves: Mapping[str, FaithfulnessCurve], *, ax=None):
    """Faithfulness curves of several bases on one log-log plot.

    Parameters
    ----------
    curves : dict of str to FaithfulnessCurve
        Label of each curve (e.g. the basis) -> curve.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
        Edges kept (log x, 0 drawn at 0.5) against behavioural loss (log y; points with a loss of
        exactly 0, such as "every edge kept", are left out; the axis starts ``1e-6 * eps`` at the
        lowest), with ``eps`` as a dotted line.
    """
    import matplotlib.pyplot as plt

    if not isinstance(curves, Mapping) or not curves:
        raise InputError("curves must be a non-empty dict of label -> FaithfulnessCurve")
    for k, c in curves.items():
        if not isinstance(c, FaithfulnessCurve):
            raise InputError(f"curves[{k!r}] must be a FaithfulnessCurve, got {type(c).__name__}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    else:
        fig = ax.figure
    for n, (label, c) in enumerate(curves.items()):
        shown = c.loss > 0  # a loss of exactly 0 (nothing removed) has no place on a log axis
        ax.plot(
            np.maximum(c.n_edges_kept[shown], 0.5),  # 0 edges kept drawn at x = 0.5
            c.loss[shown],
            color=_COLOURS[n % len(_COLOURS)],
            linestyle=_STYLES[n % len(_STYLES)],
            marker=_MARKERS[n % len(_MARKERS)],
            markersize=4,
            label=f"{label}: {c.n_edges_graph} of {c.n_edges_total} edges above eps$^{{1/2}}$",
        )
    for e in sorted({c.eps for c in curves.values()}):
        ax.axhline(e, color="0.4", linestyle=":", linewidth=1)
        ax.annotate(
            f"eps = {e:g}", (0.01, e), xycoords=("axes fraction", "data"), ha="left",
            va="bottom", fontsize=8, color="0.3",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    # losses far below eps are round-off of removing edges of strength ~0: do not let them set
    # the scale (the values stay in the curves)
    low = min(c.eps for c in curves.values()) * Y_DECADES_BELOW_EPS
    bottom, top = ax.get_ylim()
    if bottom < low < top:
        ax.set_ylim(low, top)
    ax.set_xlabel("edges kept, strongest first (0 kept drawn at 0.5)")
    ax.set_ylabel("behavioural loss $L_B$ (eq. 6)")
    ax.set_title("Faithfulness: loss as the weakest interactions are removed")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig

"""The ablation engine: basis directions and edges removed in the interaction basis.

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

Everything is measured with the behavioral loss of eq. 6 against the unablated model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.func import jvp

from .._validation import check_choice, check_instance, check_int, check_seed, invalid
from ..analysis import Analysis
from ..basis import LayerBasis
from ..chain import Chain, LayerSelector, device_and_dtype
from ..data import Batches
from ..errors import InputError, NonFiniteError
from ..hooked import as_chain, chain_for_analysis
from ..statistics import DEFAULT_JACOBIAN_BUDGET, rows

__all__ = [
    "MODES",
    "EDGE_METHODS",
    "Ablator",
    "AblationPlan",
    "plan_ablation",
    "as_list",
    "run_ablated",
    "run_edge_ablated",
]

MODES = ("mean", "zero", "resample")
EDGE_METHODS = ("exact", "linear")


# ---------------------------------------------------------------------------- checking
def _check_width(f: Tensor, basis: LayerBasis, batch: int) -> None:
    if f.shape[-1] != basis.d:
        raise InputError(
            f"model does not match analysis: layer {basis.name!r} has {f.shape[-1]} features in "
            f"data batch {batch} but the analysis basis was fitted on {basis.d}"
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
class AblationPlan:
    """What to ablate: direction indices per layer and removed sources per target per layer pair."""

    nodes: dict[int, list[int]] = field(default_factory=dict)
    edges: dict[int, dict[int, list[int]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.nodes and not self.edges


def plan_ablation(
    where: str, bases, nodes: Iterable | None, edges: Iterable | None
) -> AblationPlan:
    by_layer: dict[int, set[int]] = {}
    for node in [] if nodes is None else as_list(where, "nodes", nodes):
        l, j = _parse_node(node, bases, "nodes")
        by_layer.setdefault(l, set()).add(j)
    pairs: dict[int, dict[int, set[int]]] = {}
    for edge in [] if edges is None else as_list(where, "edges", edges):
        if isinstance(edge, str) or not isinstance(edge, Sequence) or len(edge) != 2:
            raise InputError(f"edges must hold (source, target) node id pairs, got {edge!r}")
        (ls, j), (lt, i) = (_parse_node(n, bases, "edges") for n in edge)
        if lt != ls + 1:
            raise InputError(
                f"edges: {edge!r} does not join adjacent layers; an edge goes from a node of "
                f"layer l to a node of layer l + 1, got layers {ls} and {lt}"
            )
        pairs.setdefault(ls, {}).setdefault(i, set()).add(j)
    return AblationPlan(
        {l: sorted(s) for l, s in sorted(by_layer.items())},
        {l: {i: sorted(s) for i, s in sorted(t.items())} for l, t in sorted(pairs.items())},
    )


def as_list(where: str, name: str, x) -> list:
    """``x`` (a list, tuple or other iterable, not a str) as a list."""
    if isinstance(x, str) or not isinstance(x, Iterable):
        raise invalid(where, name, "a list", x)
    return list(x)


# ---------------------------------------------------------------------------- the engine
class Ablator:
    """Runs one model, cut as one analysis was, with ablations; the data is read once per run.

    ``options`` holds the ablation options of the public function ``where`` (``mode``,
    ``method``, ``layers``, ``batch_size``, ``seed``), checked here in that function's name.
    """

    def __init__(self, where: str, model, analysis, data, options: dict):
        mode = check_choice(where, "mode", options.get("mode", "mean"), MODES)
        method = check_choice(where, "method", options.get("method", "exact"), EDGE_METHODS)
        seed = check_seed(where, options.get("seed", 0))
        batch_size = check_int(where, "batch_size", options.get("batch_size", 256), low=1)
        check_instance(where, "analysis", analysis, Analysis)
        layers = None if isinstance(model, Chain) else options.get("layers")  # checked below
        device, dtype = device_and_dtype(as_chain(model, layers))
        self.batches = Batches(data, batch_size=batch_size, device=device, dtype=dtype, where=where)
        first = self.batches.first()
        if first is None:
            raise InputError("data is empty: it yielded no samples")
        self.chain = chain_for_analysis(
            model, analysis.layer_names, first, layers=options.get("layers"),
            feature_maps=analysis.config.get("feature_maps", "positions"),
        )  # fmt: skip
        self.analysis = analysis
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
        self.mode, self.seed, self.method, self.where = mode, seed, method, where
        self._reference: Tensor | None = None

    def plan(self, nodes=None, edges=None) -> AblationPlan:
        return plan_ablation(self.where, self.bases, nodes, edges)

    @property
    def reference(self) -> Tensor:
        """The unablated model's outputs on the data."""
        if self._reference is None:
            self._reference = self.run(AblationPlan())
        return self._reference

    @torch.no_grad()
    def run(self, plan: AblationPlan) -> Tensor:
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
            out = self._run_batch(x, b, plan, perm)
            if out.is_floating_point() and not torch.isfinite(out).all():
                raise NonFiniteError(
                    f"the model's outputs are not finite on data batch {b}"
                    + (" with the ablation applied" if not plan.empty else "")
                )
            outs.append(out)
        if not outs:
            raise InputError("data is empty: it yielded no samples")
        return torch.cat(outs)

    def _run_batch(self, x: Tensor, b: int, plan: AblationPlan, perm: Tensor | None) -> Tensor:
        clean = None
        if perm is not None:  # resampled values come from the unablated model
            clean = self.chain.forward(x)
        a = self.chain.forward(x, upto=0)[0]  # layer 0: the embedding's output for tokens
        a = self._edit_nodes(a, 0, plan, b, perm, clean)
        for l in range(len(self.chain) - 1):
            stage = self.chain.stage(l, x)
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
        """New basis coordinates ``f_hat'`` for directions ``idx`` of layer ``l``, shape (n, s)
        with ``n`` rows (samples, or (sample, position) pairs of sequences)."""
        basis = self.bases[l]
        C = basis.C[idx]
        if self.mode == "mean":
            return C.new_zeros(n, len(idx))
        if self.mode == "zero":
            return (-basis.mean @ C.T).expand(n, len(idx))
        f = rows(clean[l][perm]).to(torch.float64)
        return (f - basis.mean) @ C.T

    def _edit_nodes(self, a: Tensor, l: int, plan: AblationPlan, b: int, perm, clean) -> Tensor:
        idx = plan.nodes.get(l)
        if not idx:
            return a
        _check_width(a, self.bases[l], b)
        basis = self.bases[l]
        f = rows(a).to(torch.float64)
        f_hat = (f - basis.mean) @ basis.C[idx].T
        new = self._replacement(l, idx, len(f), perm, clean)
        f = f + (new - f_hat) @ basis.C_pinv[:, idx].T
        return f.to(a.dtype).reshape(a.shape)

    def _edit_edges(self, stage, a, nxt, l, targets: dict[int, list[int]], perm, clean) -> Tensor:
        src, dst = self.bases[l], self.bases[l + 1]
        f = rows(a).to(torch.float64)
        sources = sorted({j for s in targets.values() for j in s})
        f_hat = (f - src.mean) @ src.C[sources].T
        delta_src = self._replacement(l, sources, len(f), perm, clean) - f_hat  # (rows_l, s)
        col = {j: c for c, j in enumerate(sources)}
        tgt = sorted(targets)
        out = rows(nxt).to(torch.float64)
        old = (out - dst.mean) @ dst.C[tgt].T  # (rows_{l+1}, t)
        groups: dict[tuple[int, ...], list[int]] = {}  # targets that see the same sources
        for i in tgt:
            groups.setdefault(tuple(targets[i]), []).append(i)
        # the change of layer l's activation that removing each source set makes
        shifts = {S: delta_src[:, [col[j] for j in S]] @ src.C_pinv[:, list(S)].T for S in groups}
        if self.method == "exact":
            moved = self._exact_outputs(stage, a, f, shifts)
        else:
            moved = self._linear_outputs(stage, a, out, shifts)
        new = old.clone()
        pos = {i: c for c, i in enumerate(tgt)}
        for S, ts in groups.items():
            new[:, [pos[i] for i in ts]] = (moved[S] - dst.mean) @ dst.C[ts].T
        out = out + (new - old) @ dst.C_pinv[:, tgt].T
        return out.to(nxt.dtype).reshape(nxt.shape)

    def _exact_outputs(self, stage, a, f, shifts) -> dict:
        """Layer ``l + 1`` (rows, float64) computed from layer ``l`` with each shift applied."""
        keys, moved = list(shifts), {}
        per = max(1, DEFAULT_JACOBIAN_BUDGET // max(1, f.numel()))
        for start in range(0, len(keys), per):  # several source sets per stage call
            chunk = keys[start : start + per]
            variants = torch.stack([f + shifts[S] for S in chunk])  # (g, rows_l, d_l)
            inp = variants.to(a.dtype).reshape(len(chunk) * len(a), *a.shape[1:])
            y = stage(inp)
            y = y.to(torch.float64).reshape(len(chunk), -1, y.shape[-1])
            moved.update(zip(chunk, y))
        return moved

    def _linear_outputs(self, stage, a, out, shifts) -> dict:
        """Layer ``l + 1`` moved to first order along each shift (one jvp per source set)."""
        return {
            S: out + rows(jvp(stage, (a,), (shift.to(a.dtype).reshape(a.shape),))[1]).double()
            for S, shift in shifts.items()
        }


# ---------------------------------------------------------------------------- ablated runs
def run_ablated(  # noqa: PLR0913 (public; the ablation options)
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
    options = dict(mode=mode, layers=layers, batch_size=batch_size, seed=seed, method=method)
    runner = Ablator("run_ablated", model, analysis, data, options)
    return runner.run(runner.plan(nodes, edges))


def run_edge_ablated(model, analysis: Analysis, data, edges: Iterable, **kwargs) -> Tensor:
    """:func:`run_ablated` with only ``edges`` removed (same keyword options)."""
    return run_ablated(model, analysis, data, (), edges=edges, **kwargs)

"""``analyze``: model + data -> layer chain -> statistics -> basis -> edges -> graph.

The whole flow of the library on one screen; every step lives in its own module.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import platform
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor, nn

from . import distributed
from .atomic import atomic_path
from .basis import BASES, SCALES, LayerBasis, fit_basis
from .chain import Batches, LayerChain, LayerSelector
from .edges import ATTRIBUTIONS, interaction_strengths
from .errors import InputError
from .graph import InteractionGraph
from .rotation import ROTATIONS, sparse_rotation
from .statistics import (
    DEFAULT_JACOBIAN_BUDGET,
    LayerStatistics,
    activation_statistics,
    global_statistics,
    jacobian_gram,
)

__all__ = ["Analysis", "analyze", "load_analysis", "VARIANTS"]

VARIANTS = ("global", "local")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Analysis:
    """A model seen in a basis: per-layer bases, interaction strengths and the graph.

    Attributes
    ----------
    layers : tuple of LayerBasis
        One per layer boundary, the input first and the final output last.
    w : tuple of Tensor
        ``w[l]`` of shape (k_{l+1}, k_l): RMS interaction strength between directions of layers
        ``l`` and ``l + 1`` (see :mod:`modgraph.edges`).
    statistics : tuple of LayerStatistics
        Per-layer mean, activation Gram ``G`` and Jacobian Gram ``M`` (``M`` is None for the
        ``pca`` and ``neuron`` baselines, which do not need it).
    eps : float
        Behavioural-loss noise scale; edges with ``w <= eps**0.5`` are left out of the graph.
    config : dict
        The options ``analyze`` was called with (variant, scale, basis, rtol, ...).
    timings : dict
        Seconds spent per stage.
    versions : dict
        Versions of modgraph, torch and Python that produced the analysis.
    """

    layers: tuple[LayerBasis, ...]
    w: tuple[Tensor, ...]
    statistics: tuple[LayerStatistics, ...]
    eps: float
    config: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return self.statistics[0].n

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @cached_property
    def graph(self) -> InteractionGraph:
        """The interaction graph: nodes are basis directions, edges ``w > eps**0.5``."""
        return InteractionGraph(
            layer_names=tuple(self.layer_names),
            importance=tuple(layer.eigenvalues.cpu().numpy() for layer in self.layers),
            w=tuple(w.cpu().numpy() for w in self.w),
            eps=self.eps,
        )

    def with_eps(self, eps: float) -> Analysis:
        """The same analysis with another noise scale (no recomputation; a new graph)."""
        return replace(self, eps=_check_eps(eps))

    def summary(self) -> str:
        """A few lines: the layers, their widths and kept directions, and the graph size."""
        lines = [
            f"{self.config.get('basis', '?')} basis, variant={self.config.get('variant')}, "
            f"eps={self.eps:g}, {self.n_samples} samples"
        ]
        for layer in self.layers:
            lines.append(
                f"  {layer.position:>2} {layer.name:<16} d={layer.d:<5} kept={layer.k}"
                + (f"  ties={len(layer.ties)}" if layer.ties else "")
            )
        g = self.graph
        lines.append(f"graph: {g.n_nodes} nodes, {g.n_edges} edges above eps^1/2")
        return "\n".join(lines)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the analysis to a directory: ``tensors.pt`` plus ``meta.json``.

        The directory is written under a temporary name and renamed into place, so a failure
        never leaves a half-written analysis; an existing analysis at ``path`` is replaced.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"path {str(path)!r} exists and is not a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "layers": [
                {k: getattr(layer, k).cpu() for k in _LAYER_TENSORS} for layer in self.layers
            ],
            "w": [w.cpu() for w in self.w],
            "statistics": [
                {"mean": s.mean.cpu(), "G": s.G.cpu(), "M": None if s.M is None else s.M.cpu()}
                for s in self.statistics
            ],
        }
        meta = {
            "format_version": FORMAT_VERSION,
            "eps": self.eps,
            "n_samples": self.n_samples,
            "layers": [
                {
                    "name": layer.name,
                    "position": layer.position,
                    "ties": [list(t) for t in layer.ties],
                }
                for layer in self.layers
            ],
            "config": self.config,
            "timings": self.timings,
            "versions": self.versions,
        }
        with atomic_path(path, directory=True) as tmp:
            torch.save(tensors, tmp / "tensors.pt")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        return path


_LAYER_TENSORS = ("C", "C_pinv", "mean", "eigenvalues", "gram_spectrum", "lambda_spectrum")


def load_analysis(path: str | os.PathLike) -> Analysis:
    """Read an analysis written by :meth:`Analysis.save`."""
    path = Path(path)
    if not (path / "meta.json").is_file() or not (path / "tensors.pt").is_file():
        raise InputError(f"path {str(path)!r} is not a saved analysis (no meta.json/tensors.pt)")
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"unsupported analysis format {meta.get('format_version')!r} at {path}")
    t = torch.load(path / "tensors.pt", weights_only=True)
    layers = tuple(
        LayerBasis(m["name"], m["position"], **lt, ties=tuple(tuple(g) for g in m["ties"]))
        for m, lt in zip(meta["layers"], t["layers"])
    )
    stats = tuple(LayerStatistics(meta["n_samples"], **s) for s in t["statistics"])
    return Analysis(
        layers, tuple(t["w"]), stats, meta["eps"], meta["config"], meta["timings"], meta["versions"]
    )


def _check_eps(eps) -> float:
    if (
        isinstance(eps, bool)
        or not isinstance(eps, numbers.Real)
        or not math.isfinite(eps)
        or eps <= 0
    ):
        raise InputError(f"eps must be a positive finite float, got {eps!r}")
    return float(eps)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {choices}, got {value!r}")


def _model_device_dtype(chain: LayerChain, device) -> tuple[torch.device, torch.dtype]:
    params = list(chain.parameters())
    dtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)
    if device is None:
        device = params[0].device if params else torch.device("cpu")
    return torch.device(device), dtype


def _first_batch(batches: Batches) -> Tensor:
    """The first batch on this rank (a probe for the input type); every rank must have one."""
    first, error = None, None
    try:
        first = next(iter(batches), None)
        if first is None:
            raise InputError("data is empty: it yielded no samples")
    except Exception as err:  # every rank must learn of it before the next collective
        error = err
    distributed.settle(error)
    return first


def versions() -> dict:
    from . import __version__

    return {
        "modgraph": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def analyze(
    model: nn.Module | list | LayerChain,
    data,
    *,
    eps: float = 1e-3,
    variant: str = "global",
    scale: str = "importance",
    basis: str = "interaction",
    rotation: str = "sparse",
    layers: LayerSelector = None,
    batch_size: int = 256,
    device=None,
    progress: bool = True,
    rtol: float = 1e-10,
    tie_rtol: float = 1e-3,
    attribution: str = "gradient",
    n_steps: int = 8,
    rule: str = "gauss-legendre",
    output_probes: int | None = None,
    seed: int = 0,
    jacobian_budget: int = DEFAULT_JACOBIAN_BUDGET,
) -> Analysis:
    """Convert a model to the interaction basis and build its interaction graph.

    Parameters
    ----------
    model : nn.Sequential, list of nn.Module, or LayerChain
        The model, in eval mode (see :meth:`LayerChain.from_model`).
    data : tensor, array, or re-iterable of batches
        Inputs only (a DataLoader's labels are ignored): everything is defined by the model's own
        behaviour. Read once (global variant, baselines) or once per layer (local variant), plus
        once for the edges.
    eps : float
        Behavioural-loss noise scale (sec. 2, 5): interactions of strength ``w <= eps**0.5`` are
        indistinguishable from noise at that scale and are left out of the graph.
    variant : {"global", "local"}
        ``J = d(final output)/d f_l`` (sec. 6) or ``J = d(next layer's basis coords)/d f_l``
        (appendix A; computed from the output backwards).
    scale : {"importance", "whitened"}
        ``S = Lambda^{1/2}`` (appendix A, default) or ``(Lambda^{1/2})^+`` (sec. 6 text).
    basis : {"interaction", "pca", "neuron"}
        The paper's basis, or a baseline.
    rotation : {"sparse", "none"}
        Interaction basis with ``scale="importance"`` only. ``"sparse"`` (default): pairs of
        directions whose rotation the data leaves undetermined (angle standard error above 0.1
        rad, from the sampling error of ``G`` and ``M``) are rotated, within 3 standard errors,
        to make the interactions sparse; this keeps modules apart where their ``Lambda`` values
        are close (the hidden-modules benchmark, :mod:`modgraph.benchmarks`), at the price of
        ``C^+T M C^+ = I`` holding only to within that sampling error on rotated pairs (see
        :mod:`modgraph.rotation`). Where every pair is determined the basis is the plain one, bit
        for bit. ``"none"``: the paper's plain basis.
    layers : None, str, list of str, or callable
        Layer boundaries (see :meth:`LayerChain.from_model`).
    batch_size : int
        Batch size used to cut a tensor of inputs.
    device : torch device, optional
        Where to run; defaults to the model's device. Statistics accumulate in float64 there.
    progress : bool
        Show progress bars.
    rtol : float
        Eigenvalues of ``G`` and of the whitened ``M`` below ``rtol`` times the largest are zero.
    tie_rtol : float
        Relative gap under which neighbouring eigenvalues are reported as tied.
    attribution : {"gradient", "integrated"}
        Edge attribution (see :mod:`modgraph.edges`); the latter with ``n_steps`` quadrature
        points of ``rule`` ("gauss-legendre" or "trapezoid").
    output_probes : int, optional
        Estimate ``M`` from this many random (Rademacher) probes of the output per sample and
        position instead of one backward pass per output dimension: unbiased, relative error
        ~ 1/sqrt(output_probes); for large outputs such as a vocabulary. ``None`` (default):
        exact. Seeded by ``seed``.
    jacobian_budget : int
        Most Jacobian-row elements held at once; bounds memory.

    Returns
    -------
    Analysis

    Notes
    -----
    *Sequences*: activations of shape (batch, positions, d) count each position as a sample;
    Jacobians couple positions, so ``M`` and the edges sum over output positions (see
    :mod:`modgraph.statistics`). Integer inputs (token ids) start the analysis at the output
    of the model's first stage, the embedding (:meth:`LayerChain.for_inputs`).

    *Distributed*: when a ``torch.distributed`` process group is initialised, each rank passes
    its own shard of the data; the statistics and edges are combined over ranks and every rank
    returns what one process would return for all shards together. Ranks must pass the same
    model and options (checked: a mismatch raises on every rank instead of hanging).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> a = analyze(net, torch.randn(500, 4), progress=False)
    >>> [layer.name for layer in a.layers], [layer.k for layer in a.layers]
    (['input', '1', '2'], [4, 2, 2])
    """
    eps = _check_eps(eps)
    _check_choice("variant", variant, VARIANTS)
    _check_choice("scale", scale, SCALES)
    _check_choice("basis", basis, BASES)
    _check_choice("rotation", rotation, ROTATIONS)
    _check_choice("attribution", attribution, ATTRIBUTIONS)
    chain = LayerChain.from_model(model, layers)
    device, dtype = _model_device_dtype(chain, device)
    for stage in (chain.embed, *chain.stages):
        if stage is not None:
            stage.to(device)
    batches = Batches(data, batch_size=batch_size, device=device, dtype=dtype, progress=progress)
    chain = chain.for_inputs(_first_batch(batches))
    config = dict(
        variant=variant,
        scale=scale,
        basis=basis,
        rotation=rotation,
        rtol=rtol,
        tie_rtol=tie_rtol,
        attribution=attribution,
        n_steps=n_steps,
        rule=rule,
        output_probes=output_probes,
        seed=seed,
        batch_size=batch_size,
        world_size=distributed.world_size(),
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
    )
    if distributed.active():  # the fingerprint reads every parameter: only when it matters
        same = {k: v for k, v in config.items() if k != "device"}  # cuda:0, cuda:1, ...
        distributed.check_same("model and options", (chain.fingerprint(), eps, same))
    L = len(chain.stages)
    fit = dict(basis=basis, scale=scale, rtol=rtol, tie_rtol=tie_rtol)
    timings = {}

    t0 = time.perf_counter()
    if basis == "interaction" and variant == "global":
        stats = global_statistics(
            chain,
            batches.labelled("statistics (G, M)"),
            jacobian_budget=jacobian_budget,
            probes=output_probes,
            seed=seed,
        )
    else:
        accs = activation_statistics(chain, batches.labelled("statistics (G)"))
        stats = [LayerStatistics(a.n, a.mean, a.gram()) for a in accs]
    timings["statistics"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if basis == "interaction" and variant == "local":  # the output's Jacobian is the identity
        d_out = stats[L].G.shape[0]
        stats[L] = replace(stats[L], M=torch.eye(d_out, dtype=torch.float64, device=device))
    bases: list[LayerBasis | None] = [None] * (L + 1)
    bases[L] = fit_basis(stats[L], name=chain.names[L], position=L, is_output=True, **fit)
    for l in reversed(range(L)):
        if basis == "interaction" and variant == "local":
            M = jacobian_gram(
                chain,
                l,
                bases[l + 1].C,
                batches.labelled(f"M local {l}/{L}"),
                jacobian_budget=jacobian_budget,
                probes=output_probes,
                seed=seed,
            )
            stats[l] = replace(stats[l], M=M)
        bases[l] = fit_basis(stats[l], name=chain.names[l], position=l, **fit)
    timings["basis"] = time.perf_counter() - t0

    if basis == "interaction" and rotation == "sparse":  # see modgraph.rotation
        t0 = time.perf_counter()
        bases = sparse_rotation(
            chain,
            bases,
            batches.labelled("rotation"),
            n=stats[0].n,
            variant=variant,
            scale=scale,
            tie_rtol=tie_rtol,
            jacobian_budget=jacobian_budget,
        )
        timings["rotation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    w = interaction_strengths(
        chain,
        bases,
        batches.labelled("edges"),
        attribution=attribution,
        n_steps=n_steps,
        rule=rule,
        jacobian_budget=jacobian_budget,
    )
    timings["edges"] = time.perf_counter() - t0
    return Analysis(tuple(bases), tuple(w), tuple(stats), eps, config, timings, versions())

"""The result of :func:`modgraph.analyze`: per-layer bases, interaction strengths, the graph.

:class:`Analysis` is frozen; :meth:`Analysis.save` writes it to a directory and
:func:`load_analysis` reads it back.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

from ._validation import check_bool, check_choice, check_real
from ._version import __version__
from .atomic import atomic_directory
from .basis import LayerBasis
from .errors import InputError
from .exemplars import Extremes, LayerExemplars
from .graph import InteractionGraph
from .statistics import LayerStatistics

__all__ = [
    "Analysis",
    "load_analysis",
    "versions",
    "FORMAT_VERSION",
    "EPS_UNITS",
]

FORMAT_VERSION = 1
#: What ``eps`` is measured in: a fraction of the output's variance, or its squared units.
EPS_UNITS = ("relative", "absolute")


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
        Behavioral-loss noise scale in the output's squared units (absolute, whatever
        ``analyze``'s ``eps_units``); edges with ``w <= eps**0.5`` are left out of the graph.
        :attr:`eps_relative` is the same as a fraction of :attr:`output_variance`.
    config : dict
        The options ``analyze`` was called with (variant, scale, basis, rtol, ...).
    timings : dict
        Seconds spent per stage.
    versions : dict
        Versions of modgraph, torch and Python that produced the analysis.
    exemplars : tuple of LayerExemplars, optional
        Per layer, the top and bottom activating samples of every direction
        (:mod:`modgraph.exemplars`); None when ``analyze`` ran with ``n_examples=0``.
    """

    layers: tuple[LayerBasis, ...]
    w: tuple[Tensor, ...]
    statistics: tuple[LayerStatistics, ...]
    eps: float
    config: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    exemplars: tuple[LayerExemplars, ...] | None = None

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

    @property
    def output_variance(self) -> float:
        """The output's total variance: mean squared distance of the output from its mean
        (per position for sequences), the unit of a relative ``eps``."""
        return output_variance(self.statistics[-1])

    @property
    def eps_relative(self) -> float:
        """``eps`` as a fraction of :attr:`output_variance`."""
        return self.eps / self.output_variance

    def with_eps(self, eps: float, *, units: str = "absolute") -> Analysis:
        """The same analysis with another noise scale (no recomputation; a new graph).

        ``units="relative"`` reads ``eps`` as a fraction of :attr:`output_variance`, as
        ``analyze`` does by default.
        """
        eps = check_real("Analysis.with_eps", "eps", eps, low=0, low_open=True)
        units = check_choice("Analysis.with_eps", "units", units, EPS_UNITS)
        if units == "relative":
            eps *= self.output_variance
        return replace(self, eps=eps)

    def summary(self) -> str:
        """A few lines: the layers, their widths and kept directions, and the graph size."""
        lines = [
            f"{self.config.get('basis', '?')} basis, variant={self.config.get('variant')}, "
            f"eps={self.eps:.4g} ({self.eps_relative:.3g} of the output variance), "
            f"{self.n_samples} samples"
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
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the analysis to a directory: ``tensors.pt`` plus ``meta.json``.

        The directory is written under a temporary name and renamed into place, so a failure
        never leaves a half-written analysis. ``path`` must not exist, be an empty directory,
        or, with ``overwrite=True``, hold an earlier saved analysis and nothing else (every file
        listed, unchanged, in the manifest modgraph writes beside it), which is then replaced so
        that one complete copy exists at every instant. A directory holding anything else is
        refused: modgraph never deletes what it did not write.
        """
        check_bool("Analysis.save", "overwrite", overwrite)
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
        if self.exemplars is not None:
            tensors["exemplars"] = [
                {
                    f"{side}_{k}": getattr(getattr(e, side), k).cpu()
                    for side in _SIDES
                    for k in _EXTREMES
                }
                | {"sequence": torch.tensor(e.sequence)}
                for e in self.exemplars
            ]
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
        with atomic_directory(path, overwrite=overwrite, what="path") as tmp:
            torch.save(tensors, tmp / "tensors.pt")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        return Path(path)


_SIDES, _EXTREMES = ("top", "bottom"), ("values", "samples", "positions")
_LAYER_TENSORS = ("C", "C_pinv", "mean", "eigenvalues", "gram_spectrum", "lambda_spectrum")


def load_analysis(path: str | os.PathLike) -> Analysis:
    """Read an analysis written by :meth:`Analysis.save`."""
    path = Path(path)
    meta_file, tensor_file = path / "meta.json", path / "tensors.pt"
    if not meta_file.is_file() or not tensor_file.is_file():
        raise InputError(f"path {str(path)!r} is not a saved analysis (no meta.json/tensors.pt)")
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{str(meta_file)!r} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise InputError(
            f"{str(meta_file)!r} has analysis format {version!r}; this modgraph reads "
            f"format {FORMAT_VERSION}"
        )
    _check_meta(meta, meta_file)
    try:
        t = torch.load(tensor_file, weights_only=True)
    except Exception as err:  # torch raises several types for a damaged zip or pickle
        raise InputError(
            f"{str(tensor_file)!r} cannot be read ({type(err).__name__}: {err})"
        ) from None
    try:
        if not len(meta["layers"]) == len(t["layers"]) == len(t["statistics"]) == len(t["w"]) + 1:
            raise ValueError(
                f"{len(meta['layers'])} layers in meta.json, {len(t['layers'])} bases, "
                f"{len(t['statistics'])} statistics and {len(t['w'])} weight matrices"
            )
        layers = tuple(
            LayerBasis(m["name"], m["position"], **lt, ties=tuple(tuple(g) for g in m["ties"]))
            for m, lt in zip(meta["layers"], t["layers"], strict=True)
        )
        stats = tuple(LayerStatistics(meta["n_samples"], **s) for s in t["statistics"])
        keys = ("eps", "config", "timings", "versions")
        eps, config, timings, versions_ = (meta[k] for k in keys)
        exemplars = None
        if "exemplars" in t:  # saved with n_examples=0, or by 0.1, there are none
            exemplars = tuple(
                LayerExemplars(
                    *(Extremes(*(e[f"{s}_{k}"] for k in _EXTREMES)) for s in _SIDES),
                    sequence=bool(e["sequence"]),
                )
                for e in t["exemplars"]
            )
            if len(exemplars) != len(layers):
                raise ValueError(f"{len(exemplars)} exemplar sets for {len(layers)} layers")
        for l, w in enumerate(t["w"]):
            shape = (layers[l + 1].k, layers[l].k)
            if not isinstance(w, torch.Tensor) or tuple(w.shape) != shape:
                raise ValueError(f"w[{l}] is {getattr(w, 'shape', w)}, not of shape {shape}")
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError(f"w[{l}] holds values that are not finite and >= 0")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputError(
            f"{str(path)!r} is not a consistent saved analysis (meta.json and tensors.pt do not "
            f"match: {type(err).__name__} {err})"
        ) from None
    return Analysis(layers, tuple(t["w"]), stats, eps, config, timings, versions_, exemplars)


def _check_meta(meta: dict, meta_file: Path) -> None:
    """Every field of meta.json of the type and range :meth:`Analysis.save` writes."""
    where = f"{str(meta_file)!r}: "

    def bad(key: str, wanted: str) -> InputError:
        return InputError(f"{where}{key} must be {wanted}, got {str(meta.get(key))[:80]!r}")

    n, eps = meta.get("n_samples"), meta.get("eps")
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise bad("n_samples", "an int >= 2")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < math.inf:
        raise bad("eps", "a finite number > 0")
    for key in ("config", "timings", "versions"):
        if not isinstance(meta.get(key), dict):
            raise bad(key, "an object")
    layers = meta.get("layers")
    if not isinstance(layers, list) or len(layers) < 2:
        raise bad("layers", "a list of 2 or more layers")
    for i, m in enumerate(layers):
        ok = (
            isinstance(m, dict) and isinstance(m.get("name"), str) and m.get("position") == i
            and isinstance(m.get("ties"), list)
            and all(isinstance(g, list) and all(isinstance(j, int) for j in g) for g in m["ties"])
        )  # fmt: skip
        if not ok:
            raise InputError(f"{where}layers[{i}] must have a name (str), position {i} and ties "
                             f"(lists of ints), got {str(m)[:120]!r}")  # fmt: skip
    names = [m["name"] for m in layers]
    if len(set(names)) != len(names):
        raise InputError(f"{where}layer names must be distinct, got {names}")


def output_variance(stats: LayerStatistics) -> float:
    """Total variance ``tr G`` of a layer's activations (the output's: the unit of eps)."""
    return float(stats.G.trace())


def versions() -> dict:
    """Versions of modgraph, torch and Python, recorded with every analysis."""
    return {
        "modgraph": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }

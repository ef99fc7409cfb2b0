"""``write_report``: analysis -> modules -> significance -> figures -> files, callable from the API.

The second half of what ``modgraph analyze`` / ``modgraph demo`` do (the first half is
:func:`modgraph.analyze`): find modules with Leiden and spectral partitioning, test them against
the shuffled-graph null, scan the cost curve, draw the report figures and write everything, plus
the graph as GraphML, the analysis and ``summary.json``, into one directory. The files are written
under a temporary name and moved into place at the end, so a failure never leaves a half-written
output.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import plotting
from ._validation import (
    check_bool,
    check_choice,
    check_instance,
    check_int,
    check_real,
    check_seed,
    invalid,
)
from .analysis import Analysis
from .atomic import MANIFEST, atomic_directory, check_replaceable
from .chain import device_and_dtype
from .circuits.eps import EpsChoice
from .data import Batches, iter_batches
from .edges import output_attribution
from .errors import InputError
from .hooked import chain_for_analysis
from .partition import (
    CostCurve,
    ModuleResult,
    adjusted_rand_index,
    cost_curve,
    cross_module_cost,
    find_modules,
    normalized_cut,
)
from .partition.find import AUTO, METHODS, resolve_method

__all__ = ["write_report", "SUMMARY_SCHEMA", "SUMMARY_VERSION"]

#: Version of the layout of ``summary.json`` (raised when a key changes meaning or goes).
SUMMARY_VERSION = 1
#: The JSON Schema of ``summary.json``: every key, what it means, -1 for a node without edges.
SUMMARY_SCHEMA = Path(__file__).with_name("summary.schema.json")

_log = logging.getLogger("modgraph")


def write_report(  # noqa: PLR0913 (what a report is made of, keyword-only)
    analysis: Analysis,
    out: str | os.PathLike,
    *,
    baselines: Mapping[str, Analysis] | None = None,
    seed: int = 0,
    n_null: int = 20,
    truth: Callable[[Analysis], dict[str, int]] | None = None,
    extra: dict | None = None,
    overwrite: bool = False,
    data=None,
    model=None,
    decode: Callable[[int], str] | None = None,
    eps_choice: EpsChoice | None = None,
    n_modules: int | None = None,
    alpha: float = 0.05,
    sample_shape: tuple[int, ...] | None = None,
    method: str = "auto",
) -> dict:
    """Find and test the modules of ``analysis`` and write the report into the directory ``out``.

    Parameters
    ----------
    analysis : Analysis
        An interaction-basis analysis (:func:`modgraph.analyze`).
    out : str or path
        Output directory. It must not exist, be empty, or, with ``overwrite=True``, hold an
        earlier report and nothing else (every file listed, unchanged, in the manifest modgraph
        writes there), which is then replaced whole; a directory holding anything else is
        refused (modgraph never deletes what it did not write). The report is written to a
        temporary directory and renamed into place once.
    baselines : dict {label: Analysis}, optional
        The same model in other bases (``{"neuron": ..., "pca": ...}``), compared in
        ``basis_comparison.png`` and in the summary's ``bases``.
    seed : int
        Seed of every partition and of the null model.
    n_null : int
        Null graphs per split test of the automatic number of modules (at least 2; see
        :func:`modgraph.find_modules`).
    n_modules : int, optional
        The number of modules, for Leiden and spectral (default: chosen and tested
        automatically).
    alpha : float
        Significance level of the automatic number of modules' tests.
    truth : callable, optional
        Maps ``analysis`` to the planted module of each node; when given, the summary scores the
        found modules against it (adjusted Rand index).
    extra : dict, optional
        Added to ``summary.json`` (e.g. training losses of the demo model); an entry
        ``"timings"`` is merged into the summary's timings and counted in their total.
    overwrite : bool
        Replace an earlier report at ``out``.
    data : tensor, array or re-iterable of batches, optional
        The data ``analysis`` was computed on, in the same order: ``report.html`` then shows
        each direction's top and bottom samples (images as thumbnails, token ids as text,
        other inputs as their largest entries); without it, as sample numbers.
    model : nn.Module or chain, optional
        The model as passed to ``analyze`` (cut where the analysis was, by its layer names, so
        ``layers=`` need not be repeated), or its chain: with ``data``,
        ``report.html`` lists the outputs each direction drives
        (:func:`modgraph.edges.output_attribution`, one more pass; skipped for outputs of more
        than ``MAX_OUTPUTS`` dimensions).
    decode : callable, optional
        Token id -> string, to show token inputs as text.
    method : {"auto", "infomap", "leiden", "spectral"}
        The partition the figures draw and ``report.html`` shows first, as in
        :func:`modgraph.find_modules` (``"auto"``: the map equation's modules, or Leiden's where
        ``n_modules`` is given). Leiden's and spectral modules are always found, tested and
        written to ``summary.json``; the map equation's when it is the method.
    sample_shape : tuple of int, optional
        The shape to show each input sample in, e.g. ``(8, 8)`` or ``(3, 32, 32)`` for images
        stored flat: ``report.html`` then shows them as thumbnails.
    eps_choice : EpsChoice, optional
        An eps chosen from a task metric (:func:`modgraph.choose_eps`): the analysis and the
        baselines are reported at ``eps_choice.eps``, and the summary's ``eps_choice`` says why.
        Progress goes to the ``"modgraph"`` logger at level INFO.

    Returns
    -------
    dict
        The summary written to ``summary.json`` (every key is described in
        :data:`SUMMARY_SCHEMA`, ``modgraph/summary.schema.json``); ``summary["files"]`` lists
        what was written.
    """
    where = "write_report"
    check_instance(where, "analysis", analysis, Analysis)
    check_seed(where, seed)
    n_null = check_int(where, "n_null", n_null, low=2)
    baselines = dict(baselines or {})
    for label, b in baselines.items():
        check_instance(where, f"baselines[{label!r}]", b, Analysis)
    check_bool(where, "overwrite", overwrite)
    check_choice(where, "method", method, (AUTO, *METHODS))
    if n_modules is not None:
        check_int(where, "n_modules", n_modules, low=1)
        if method == "infomap":
            raise invalid(where, "n_modules", "None with method='infomap', which chooses the "
                          "number of modules itself", n_modules)  # fmt: skip
    method = resolve_method(method, n_modules)
    check_real(where, "alpha", alpha, low=0, high=1, low_open=True, high_open=True)
    if sample_shape is not None and not (
        isinstance(sample_shape, (tuple, list)) and sample_shape
        and all(isinstance(n, int) and n > 0 for n in sample_shape)
    ):  # fmt: skip
        raise invalid(where, "sample_shape", "a tuple of positive ints such as (8, 8)",
                      sample_shape)  # fmt: skip
    if eps_choice is not None:
        check_instance(where, "eps_choice", eps_choice, EpsChoice)
        analysis = analysis.with_eps(eps_choice.eps)
        baselines = {label: b.with_eps(eps_choice.eps) for label, b in baselines.items()}
    out = Path(out)
    check_replaceable(out, overwrite=overwrite, what="out")
    t_start = time.perf_counter()
    extra = dict(extra or {})
    earlier = extra.pop("timings", {})
    graph = analysis.graph
    if graph.n_edges == 0:
        raise InputError(
            f"no interaction is stronger than eps^1/2 = {analysis.eps**0.5:g}: lower eps "
            f"(got {analysis.eps:g})"
        )

    _log.info(f"finding modules in {graph.n_nodes} nodes, {graph.n_edges} edges ...")
    t0 = time.perf_counter()
    options = dict(seed=seed, n_null=n_null, n_modules=n_modules, alpha=alpha)
    found = {**_modules(analysis, baselines, options, method), "primary": method}
    t_modules = time.perf_counter() - t0
    summary = _summary(analysis, baselines, found, n_null)
    if eps_choice is not None:
        summary["eps_choice"] = eps_choice.to_dict()
    if truth is not None:
        summary["planted"] = _planted(graph, truth(analysis), found, seed)
    summary.update(extra)

    t0 = time.perf_counter()
    page = _page(analysis, found, data=data, model=model, decode=decode, shape=sample_shape)
    t_page = time.perf_counter() - t0
    with atomic_directory(out, overwrite=overwrite, what="out") as tmp:
        plotting.save_html(page, tmp / "report.html")
        _log.info("drawing figures ...")
        t0 = time.perf_counter()
        written = []
        for name, fig in _figures(analysis, baselines, found):  # each saved, then dropped
            written += plotting.save_figure(fig, tmp / name)
        t_figures = time.perf_counter() - t0
        partitions = {m: found[m].membership for m in _methods(found)}
        graph.to_graphml(tmp / "interaction_graph.graphml", modules=partitions)
        analysis.save(tmp / "analysis")
        summary["timings"] = {
            **earlier,
            **{f"analyze_{k}": v for k, v in analysis.timings.items()},
            "modules": t_modules,
            "figures": t_figures,
            "report_html": t_page,
            "total": sum(earlier.values()) + time.perf_counter() - t_start,
        }
        summary["versions"] = analysis.versions
        summary["files"] = sorted(
            [p.name for p in written]
            + ["interaction_graph.graphml", "analysis", "summary.json", "report.html", MANIFEST]
        )
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


#: The figures of a report, by file name without suffix.
FIGURES = ("graph", "spectra", "cost_curve", "module_heatmap", "basis_comparison")
#: Output attribution (``report.html``'s "drives outputs") is skipped above this many outputs.
MAX_OUTPUTS = 512


def _page(analysis: Analysis, found: dict, *, data, model, decode, shape):
    """The interactive page: partitions, every direction's examples and outputs."""
    partitions = {m: found[m] for m in _methods(found)}
    inputs = outputs = None
    if data is not None and analysis.exemplars is not None:
        wanted = set()
        for e in analysis.exemplars:
            for side in (e.top, e.bottom):
                wanted.update(side.samples.reshape(-1).tolist())
        inputs = _samples(data, wanted)
        if shape is not None:
            inputs = {i: _reshaped(x, shape) for i, x in inputs.items()}
    if data is not None and model is not None:
        outputs = _output_attribution(analysis, model, data)
    details, modules, samples = plotting.example_details(
        analysis, partitions, inputs, decode=decode, outputs=outputs
    )
    return plotting.interactive_report(
        analysis, partitions, node_details=details, module_details=modules, samples=samples
    )


def _reshaped(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if int(np.prod(shape)) != x.size:
        raise InputError(
            f"sample_shape {tuple(shape)} holds {int(np.prod(shape))} values but each sample "
            f"has {x.size} (shape {x.shape})"
        )
    return x.reshape(shape)


def _samples(data, wanted: set[int]) -> dict[int, np.ndarray]:
    """The samples numbered ``wanted`` (in the order ``analyze`` read them), as arrays."""
    out, start = {}, 0
    batches = iter_batches(data, batch_size=256, device=torch.device("cpu"),
                           dtype=torch.float64, where="write_report")  # fmt: skip
    for b in batches:
        for i in sorted(w - start for w in wanted if start <= w < start + len(b)):
            out[start + i] = b[i].detach().cpu().numpy()
        start += len(b)
    missing = sorted(wanted - set(out))
    if missing:
        raise InputError(
            f"data has {start} samples but the analysis names sample {missing[0]}: pass the "
            "data the analysis was computed on"
        )
    return out


def _output_attribution(analysis: Analysis, model, data) -> list[np.ndarray] | None:
    """``A[l]`` of every layer, or None for outputs of more than MAX_OUTPUTS dimensions."""
    if analysis.layers[-1].d > MAX_OUTPUTS:
        _log.info(f"report.html: outputs of {analysis.layers[-1].d} dimensions, more than "
                  f"{MAX_OUTPUTS}: the outputs each direction drives are left out")  # fmt: skip
        return None
    maps = analysis.config.get("feature_maps", "positions")
    holder = torch.nn.ModuleList(model) if isinstance(model, (list, tuple)) else model
    device, dtype = device_and_dtype(holder)  # anything with .parameters()
    batches = Batches(data, batch_size=analysis.config.get("batch_size", 256), device=device,
                      dtype=dtype, where="write_report")  # fmt: skip
    chain = chain_for_analysis(model, analysis.layer_names, batches.first(), feature_maps=maps)
    bases = [replace(b, C=b.C.to(device), C_pinv=b.C_pinv.to(device), mean=b.mean.to(device))
             for b in analysis.layers]  # fmt: skip
    _log.info("report.html: the outputs each direction drives ...")
    return [a.cpu().numpy() for a in output_attribution(chain, bases, batches)]


def _methods(found: dict) -> list[str]:
    """The methods whose modules were found, the primary first."""
    first = found["primary"]
    return [first, *(m for m in METHODS if m in found and m != first)]


def _modules(analysis: Analysis, baselines: dict, options: dict, primary: str) -> dict:
    """Leiden and spectral modules (automatic number, tested, unless ``options`` give
    ``n_modules``) and the ``primary`` method's, cost curves, baselines' modules."""
    graph = analysis.graph
    seed, n_null = options["seed"], options["n_null"]
    methods = ("leiden", "spectral", *(("infomap",) if primary == "infomap" else ()))
    found = {m: find_modules(graph, method=m, **options) for m in methods}
    return {
        **found,
        # the scans that chose k, drawn as they were; a graph that could not be scanned gets
        # a curve of its own
        "curves": [
            CostCurve.from_scan(r)
            if r.info.get("scan")
            else cost_curve(graph, method=m, seed=seed, n_null=min(n_null, CURVE_NULLS))
            for m, r in found.items()
            if m != "infomap"  # its scan is Leiden's
        ],  # fmt: skip
        "baselines": {
            b: find_modules(x.graph, method="leiden", **{**options, "n_modules": None})
            for b, x in baselines.items()
            if x.graph.n_edges
        },
    }


#: Null graphs per number of modules in the cost curve of a graph that could not be scanned.
CURVE_NULLS = 10


def _summary(analysis: Analysis, baselines: dict, found: dict, n_null: int) -> dict:
    graph = analysis.graph
    bases = {"interaction": analysis, **baselines}
    base_modules = {"interaction": found["leiden"], **found["baselines"]}
    leiden, spectral = found["leiden"], found["spectral"]
    return {
        "format_version": SUMMARY_VERSION,
        "layers": [
            {"name": l.name, "width": l.d, "kept": l.k, "ties": len(l.ties)}
            for l in analysis.layers
        ],
        "eps": analysis.eps,
        "eps_relative": analysis.eps_relative,
        "output_variance": analysis.output_variance,
        "config": analysis.config,
        "graph": {
            "nodes": graph.n_nodes,
            "edges": graph.n_edges,
            "connected_nodes": int(graph.connected_nodes.sum()),
        },
        "modules": {
            "verdict": found[found["primary"]].verdict,
            "primary": found["primary"],
            **{m: _modules_json(found[m]) for m in _methods(found)},
            "same_partition": adjusted_rand_index(
                leiden.membership_array, spectral.membership_array
            )
            == 1.0,
            "n_null": n_null,
        },
        "bases": {
            b: {
                "edges": x.graph.n_edges,
                "total_strength": float(x.graph.edges.strength.sum()),
                "kept": [l.k for l in x.layers],
                "leiden_cost": base_modules[b].cost if b in base_modules else None,
                "leiden_ncut": base_modules[b].ncut if b in base_modules else None,
                "leiden_modules": base_modules[b].n_modules if b in base_modules else None,
            }
            for b, x in bases.items()
        },
    }


def _finite(x):
    return float(x) if x is not None and np.isfinite(x) else None


def _modules_json(r: ModuleResult) -> dict:
    sizes = sorted((len(m) for m in r.modules), reverse=True)
    sig = r.significance
    return {
        "n_modules": r.n_modules,
        "verdict": r.verdict,
        "cost": r.cost,
        "ncut": r.ncut,
        "sizes": sizes,
        "p_value": _finite(sig.p_value) if sig is not None else None,
        "z": _finite(sig.z) if sig is not None else None,
        "scan": [
            {k: _finite(v) if isinstance(v, float) else v for k, v in test.items()}
            for test in r.info.get("scan", [])
        ],
        "membership": r.membership,
    }


def _planted(graph, planted: dict[str, int], found: dict, seed: int) -> dict:
    """Scores of the found partitions against planted modules (over the nodes with edges)."""
    connected = [n for n, c in zip(graph.nodes, graph.connected_nodes) if c]
    n_planted = len(set(planted.values()))

    def ari(membership: dict[str, int]) -> float:
        truth = [planted[n] for n in connected]
        return float(adjusted_rand_index(truth, [membership[n] for n in connected]))

    # the automatic choice of the number of modules is the hard part; also score the partitions
    # at the planted number, which isolates how well the graph encodes the tasks
    at_k = {
        m: find_modules(graph, method=m, n_modules=n_planted, seed=seed)
        for m in ("leiden", "spectral")
    }
    return {
        "n_planted": n_planted,
        "planted_cost": cross_module_cost(graph, planted),
        "adjusted_rand_index": {
            **{m: ari(found[m].membership) for m in _methods(found)},
            **{f"{m}_k={n_planted}": ari(r.membership) for m, r in at_k.items()},
        },
        "cost_at_planted_k": {m: r.cost for m, r in at_k.items()},
        "ncut_at_planted_k": {m: r.ncut for m, r in at_k.items()},
        "planted_ncut": normalized_cut(graph, planted),
    }


def _figures(analysis: Analysis, baselines: dict, found: dict):
    """The report figures, as (file name, Figure), drawn one at a time."""
    leiden, spectral, primary = found["leiden"], found["spectral"], found[found["primary"]]
    yield "graph", plotting.plot_graph(analysis, primary).figure
    yield "spectra", plotting.plot_spectra(analysis)
    curves = dict(zip(("Leiden", "spectral"), found["curves"], strict=True))
    yield "cost_curve", plotting.plot_cost_curve(curves, chosen=[leiden, spectral]).figure
    yield "module_heatmap", plotting.plot_module_heatmap(analysis, primary)
    compared = {"neuron": "neuron", "PCA": "pca"}  # figure label -> baseline key
    shown = {label: b for label, b in compared.items() if b in baselines}
    if not shown:  # nothing to compare with (--no-baselines)
        return
    yield (
        "basis_comparison",
        plotting.plot_basis_comparison(
            {**{label: baselines[b] for label, b in shown.items()}, "interaction": analysis},
            modules={
                **{label: found["baselines"].get(b) for label, b in shown.items()},
                "interaction": primary,
            },
        ),
    )

"""Report figures: the interaction graph, the spectra behind the basis, module costs.

Every function returns a :class:`matplotlib.figure.Figure` built with the Figure API (no pyplot,
so nothing global is touched, nothing needs closing and nothing is ever shown); pass ``ax`` to draw
into your own axes instead. matplotlib is imported inside the functions that need it.

Colours follow Okabe & Ito (colour-blind safe): modules cycle through its eight colours, and from
the ninth module on the node marker changes as well, so no two modules share colour and marker.
Heatmaps use ``cividis`` (perceptually uniform, colour-blind safe). Strengths are the graph's edge
strengths ``ln(w / eps^1/2)`` (Bushnaq et al. 2024, sec. 5).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError
from .graph import InteractionGraph
from .partition import UNASSIGNED, CostCurve, ModuleResult, Significance
from .pipeline import Analysis

__all__ = [
    "plot_graph",
    "plot_spectra",
    "plot_cost_curve",
    "plot_module_heatmap",
    "plot_basis_comparison",
    "module_interactions",
    "save_figure",
    "MODULE_COLOURS",
]

#: Okabe-Ito colours, ordered so the first few modules get the most distinct ones (yellow late).
MODULE_COLOURS = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#56B4E9",  # sky blue
    "#CC79A7",  # reddish purple
    "#F0E442",  # yellow
    "#000000",  # black
)
#: Node markers, one per round of the colour cycle (module m uses ``MARKERS[m // 8]``).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Bar hatches, one per round of the colour cycle.
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--")
UNASSIGNED_COLOUR = "#BBBBBB"
CROSS_EDGE_COLOUR = "#444444"
HEATMAP_CMAP = "cividis"
#: Most module entries a legend lists; the rest are summarised in one line.
MAX_LEGEND_MODULES = 12
#: Heatmaps write the value in each cell when no side of the matrix is longer than this.
MAX_ANNOTATED_SIDE = 6
PNG_DPI = 150
STRENGTH_UNITS = "summed ln(w/eps$^{1/2}$)"


def module_style(m: int) -> tuple[str, str, str]:
    """Colour, marker and hatch of module ``m`` (``-1``, unassigned, is grey)."""
    if m == UNASSIGNED:
        return UNASSIGNED_COLOUR, "o", ""
    n = len(MODULE_COLOURS)
    return MODULE_COLOURS[m % n], MARKERS[(m // n) % len(MARKERS)], HATCHES[(m // n) % len(HATCHES)]


# ---------------------------------------------------------------------------- input checks
def _as_graph(x, name: str = "analysis_or_graph") -> InteractionGraph:
    if isinstance(x, Analysis):
        return x.graph
    if isinstance(x, InteractionGraph):
        return x
    raise InputError(f"{name} must be an Analysis or an InteractionGraph, got {type(x).__name__}")


def _check_analysis(x, name: str = "analysis") -> Analysis:
    if not isinstance(x, Analysis):
        raise InputError(f"{name} must be an Analysis, got {type(x).__name__}")
    return x


def _labels(graph: InteractionGraph, modules, name: str = "modules") -> np.ndarray:
    """Module of every node as an int64 array, checked against ``graph``.

    A :class:`ModuleResult` must also reproduce its own cost on ``graph``: the same node ids with
    different edges (another eps, another model) are caught that way.
    """
    membership = modules.membership if isinstance(modules, ModuleResult) else modules
    if membership is None or isinstance(membership, (str, bytes)):
        raise InputError(
            f"{name} must be a ModuleResult, a dict {{node id: module}} or a sequence of labels, "
            f"got {type(modules).__name__}"
        )
    try:
        labels = graph.membership_array(membership)
    except InputError as err:
        raise InputError(f"{name} does not match the graph ({graph!r}): {err}") from err
    if isinstance(modules, ModuleResult):
        e = graph.edges
        cost = float(e.strength[labels[e.src] != labels[e.dst]].sum())
        if not math.isclose(cost, modules.cost, rel_tol=1e-9, abs_tol=1e-9):
            raise InputError(
                f"{name} was found on a different graph: its cost is {modules.cost:.6g} but the "
                f"same partition costs {cost:.6g} on this one (eps={graph.eps:g})"
            )
    if np.any(labels < UNASSIGNED):
        raise InputError(f"{name} labels must be >= -1 (-1 = unassigned), got {labels.min()}")
    return labels


def _check_ax(ax, n_panels: int, name: str = "ax") -> list:
    """``ax`` as a list of ``n_panels`` Axes (one Axes is accepted when one panel is needed)."""
    from matplotlib.axes import Axes

    axes = [ax] if isinstance(ax, Axes) else ax
    if isinstance(axes, np.ndarray):
        axes = list(axes.ravel())
    if (
        not isinstance(axes, Sequence)
        or len(axes) != n_panels
        or not all(isinstance(a, Axes) for a in axes)
    ):
        raise InputError(
            f"{name} must be {'an Axes or ' if n_panels == 1 else ''}a sequence of "
            f"{n_panels} Axes (one per panel), got {type(ax).__name__}"
            + (f" of length {len(axes)}" if isinstance(axes, Sequence) else "")
        )
    return axes


def _panels(ax, n_panels: int, *, ncols: int, panel_size: tuple[float, float], max_width=11.0):
    """A new constrained-layout figure with a grid of ``n_panels`` axes, or the caller's axes."""
    if ax is not None:
        axes = _check_ax(ax, n_panels)
        return axes[0].figure, axes, False
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    width = min(max_width, max(7.0, panel_size[0] * ncols))
    fig = Figure(figsize=(width, panel_size[1] * nrows), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for extra in grid[n_panels:]:
        fig.delaxes(extra)
    return fig, list(grid[:n_panels]), True


def _module_legend_handles(present: np.ndarray, counts: dict[int, int], kind: str = "marker"):
    """Legend handles for the modules in ``present`` (capped), plus unassigned last."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    mods = [int(m) for m in present if m != UNASSIGNED]
    handles = []
    for m in mods[:MAX_LEGEND_MODULES]:
        colour, marker, hatch = module_style(m)
        label = f"module {m} ({counts[m]} node{'s' if counts[m] != 1 else ''})"
        if kind == "marker":
            handles.append(
                Line2D([], [], ls="", marker=marker, mfc=colour, mec="0.2", ms=7, label=label)
            )
        else:
            handles.append(Patch(fc=colour, ec="0.2", hatch=hatch, label=label))
    if len(mods) > MAX_LEGEND_MODULES:
        rest = sum(counts[m] for m in mods[MAX_LEGEND_MODULES:])
        handles.append(
            Line2D([], [], ls="", label=f"+ {len(mods) - MAX_LEGEND_MODULES} more ({rest} nodes)")
        )
    if UNASSIGNED in present:
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                mfc=UNASSIGNED_COLOUR,
                mec="0.2",
                ms=7,
                label=f"no edge / unassigned ({counts[UNASSIGNED]})",
            )
        )
    return handles


# ---------------------------------------------------------------------------- 1. the graph
def _layout(graph: InteractionGraph, labels: np.ndarray) -> np.ndarray:
    """y of every node in [0, 1]: within a layer by module (unassigned last), then importance."""
    y = np.empty(graph.n_nodes)
    offsets = np.concatenate([[0], np.cumsum(graph.layer_sizes)])
    imp = graph.node_importance
    for l, k in enumerate(graph.layer_sizes):
        idx = np.arange(offsets[l], offsets[l + 1])
        mod = labels[idx]
        mod_key = np.where(mod == UNASSIGNED, np.iinfo(np.int64).max, mod)
        order = idx[np.lexsort((-imp[idx], mod_key))]  # last key is the primary one
        y[order] = 1.0 - (np.arange(k) + 0.5) / k  # top to bottom, each layer spans [0, 1]
    return y


def plot_graph(
    analysis_or_graph: Analysis | InteractionGraph,
    modules: ModuleResult | Mapping | Sequence | None = None,
    *,
    ax=None,
    max_edges: int = 2000,
):
    """Draw the interaction graph layer by layer, nodes coloured by module.

    Parameters
    ----------
    analysis_or_graph : Analysis or InteractionGraph
    modules : ModuleResult, dict {node id: module} or sequence of labels, optional
        Colours the nodes (Okabe-Ito; from the ninth module on the marker changes too) and orders
        them within each layer by module, then by importance, descending. Without it nodes are
        ordered by importance. Nodes without any edge are grey either way.
    ax : matplotlib Axes, optional
        Draw here instead of on a new figure.
    max_edges : int
        Only the strongest ``max_edges`` edges are drawn (the title says how many of how many).

    Returns
    -------
    matplotlib.figure.Figure
        x is the layer (ticks name it), y the node's place within its layer (each layer spans the
        full height). Node area grows with log importance; edge width and opacity with strength.
        Edges inside a module take its colour, edges between modules are dark grey.

    Examples
    --------
    >>> import numpy as np
    >>> g = InteractionGraph(("a", "b"), (np.ones(2), np.ones(2)), (np.eye(2) * 10,), eps=1.0)
    >>> fig = plot_graph(g)
    >>> fig.axes[0].get_xlabel()
    'layer'
    """
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    graph = _as_graph(analysis_or_graph)
    if isinstance(max_edges, bool) or not isinstance(max_edges, (int, np.integer)) or max_edges < 0:
        raise InputError(f"max_edges must be a non-negative int, got {max_edges!r}")
    connected = graph.connected_nodes
    if modules is None:
        labels = np.where(connected, 0, UNASSIGNED)
    else:
        labels = _labels(graph, modules)
        labels = np.where(connected, labels, UNASSIGNED)  # a node without edges has no module
    n_layers = len(graph.layer_sizes)
    if ax is None:
        width = min(11.0, max(7.0, 1.7 * n_layers + 2.5))
        height = min(9.0, max(4.5, 0.09 * max(graph.layer_sizes) + 2.5))
        fig = Figure(figsize=(width, height), layout="constrained")
        ax = fig.subplots()
    else:
        ax = _check_ax(ax, 1)[0]
        fig = ax.figure

    x = graph.node_layer.astype(np.float64)
    y = _layout(graph, labels)

    # Edges: the strongest max_edges, drawn weakest first so strong ones lie on top.
    e = graph.edges
    n_total = len(e)
    keep = np.argsort(-e.strength, kind="stable")[:max_edges][::-1]
    s_max = float(e.strength.max()) if n_total else 1.0
    rel = e.strength[keep] / s_max if s_max > 0 else np.ones(len(keep))
    src, dst = e.src[keep], e.dst[keep]
    same = (labels[src] == labels[dst]) & (labels[src] != UNASSIGNED)
    colours = np.array(
        [
            to_rgba(module_style(int(labels[a]))[0] if s else CROSS_EDGE_COLOUR)
            for a, s in zip(src, same)
        ]
    ).reshape(-1, 4)
    colours[:, 3] = 0.12 + 0.6 * rel
    segments = np.stack([np.column_stack([x[src], y[src]]), np.column_stack([x[dst], y[dst]])], 1)
    ax.add_collection(
        LineCollection(segments, colors=colours, linewidths=0.3 + 2.7 * rel, zorder=1)
    )

    # Nodes: area from log importance, scaled so the densest layer's markers do not overlap.
    imp = graph.node_importance
    pos = imp[imp > 0]
    if len(pos):
        lo, hi = np.log10(pos.min()), np.log10(pos.max())
        t = np.where(imp > 0, (np.log10(np.maximum(imp, pos.min())) - lo) / max(hi - lo, 1e-12), 0)
    else:
        t = np.zeros(graph.n_nodes)
    ax_h_pt = ax.get_position().height * fig.get_figheight() * 72
    max_d = float(np.clip(0.9 * ax_h_pt / max(max(graph.layer_sizes), 1), 3.0, 14.0))
    sizes = (0.3 * max_d + 0.7 * max_d * t) ** 2  # marker area in points^2
    present = np.unique(labels)
    for m in present:  # one scatter per module: marker shapes differ beyond eight modules
        sel = labels == m
        colour, marker, _ = module_style(int(m))
        ax.scatter(
            x[sel],
            y[sel],
            s=sizes[sel],
            c=colour,
            marker=marker,
            edgecolors="0.2",
            linewidths=0.4,
            zorder=3,
        )

    ax.set_xticks(range(n_layers), graph.layer_names, rotation=30 if n_layers > 6 else 0)
    ax.set_xlim(-0.4, n_layers - 0.6)
    ax.set_ylim(-0.02, 1.02)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("layer")
    order = "module, importance" if modules is not None else "importance"
    ax.set_ylabel(f"basis direction (sorted by {order})")
    shown = "all" if len(keep) == n_total else f"strongest {len(keep)} of"
    title = (
        f"Interaction graph, eps={graph.eps:g}: {graph.n_nodes} directions, "
        f"{shown} {n_total} edges drawn"
    )
    if modules is not None:
        cut = float(e.strength[labels[e.src] != labels[e.dst]].sum())
        n_mod = len(np.unique(labels[labels != UNASSIGNED]))
        how = f" ({modules.method})" if isinstance(modules, ModuleResult) else ""
        title += f"\n{n_mod} modules{how}, cross-module cost {cut:.3g}"
        title += f" of {float(e.strength.sum()):.3g} total strength"
    ax.set_title(title, fontsize=10)
    counts = {int(m): int(np.sum(labels == m)) for m in present}
    handles = _module_legend_handles(present, counts) if modules is not None else []
    if modules is None and UNASSIGNED in present:
        handles = _module_legend_handles(present[present == UNASSIGNED], counts)
    if n_total:
        for frac in (1.0, 0.5):
            handles.append(
                Line2D(
                    [],
                    [],
                    color=CROSS_EDGE_COLOUR,
                    lw=0.3 + 2.7 * frac,
                    alpha=0.12 + 0.6 * frac,
                    label=f"edge strength {frac * s_max:.2g}" + (" (max)" if frac == 1 else ""),
                )
            )
    handles.append(Line2D([], [], ls="", label="node area ~ log importance"))
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9
    )
    return fig


# ---------------------------------------------------------------------------- 2. spectra
def _n_kept(vals: np.ndarray, rtol: float) -> int:
    """Directions above ``rtol`` times the largest, as :func:`modgraph.basis.fit_basis` keeps."""
    if len(vals) == 0 or vals[0] <= 0:
        return 0
    return int(np.sum(vals > rtol * vals[0]))


def plot_spectra(analysis: Analysis, *, ax=None):
    """Eigenvalues of ``G`` and of the whitened ``M`` per layer: what the basis kept and dropped.

    Parameters
    ----------
    analysis : Analysis
    ax : Axes or sequence of Axes, optional
        One per layer.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per layer, eigenvalue against rank (log y). Filled markers are kept directions,
        hollow ones dropped; dashed lines are the truncation thresholds ``rtol * max``
        (``rtol`` from ``analysis.config``), the dotted black line is ``eps`` on the Lambda
        spectrum (a direction with ``Lambda < eps`` moves the loss by less than the noise scale).
        Zero eigenvalues (clamped there by :func:`~modgraph.basis.fit_basis`) would vanish on a
        log axis: they are drawn as down-triangles on a floor below every other value, named in
        each panel.
    """
    from matplotlib.lines import Line2D

    analysis = _check_analysis(analysis)
    rtol = float(analysis.config.get("rtol", 1e-10))
    basis = analysis.config.get("basis", "interaction")
    layers = analysis.layers
    ncols = min(4, math.ceil(math.sqrt(len(layers))))
    fig, axes, new = _panels(ax, len(layers), ncols=ncols, panel_size=(4.0, 3.0))
    g_style = dict(color=MODULE_COLOURS[0], marker="o")
    l_style = dict(color=MODULE_COLOURS[3], marker="s")
    has_lambda = has_zero = False
    truncates = basis != "neuron"
    for ax_, layer in zip(axes, layers):
        dG = layer.gram_spectrum.detach().cpu().numpy().astype(np.float64)
        lam = layer.lambda_spectrum.detach().cpu().numpy().astype(np.float64)
        kG = len(dG) if basis == "neuron" else _n_kept(dG, rtol)
        kL = layer.k if len(lam) else 0
        series = [(dG, kG, g_style)] + ([(lam, kL, l_style)] if len(lam) else [])
        thresholds = [rtol * v[0] for v, _, _ in series if truncates and len(v) and v[0] > 0]
        positive = np.concatenate([v[v > 0] for v, _, _ in series] + [np.array(thresholds)])
        if len(lam):
            positive = np.append(positive, analysis.eps)
        floor = 10.0 ** (math.floor(math.log10(positive.min())) - 1) if len(positive) else 1e-300
        n_zero = 0
        for vals, k, style in series:
            r = np.arange(1, len(vals) + 1)
            kept = np.arange(len(vals)) < k
            zero = vals <= 0
            n_zero += int(zero.sum())
            c, mk = style["color"], style["marker"]
            for sel, filled in ((kept & ~zero, True), (~kept & ~zero, False)):
                ax_.plot(
                    r[sel],
                    vals[sel],
                    ls="",
                    marker=mk,
                    ms=4.5,
                    mec=c,
                    mew=1.0,
                    mfc=c if filled else "none",
                )
            ax_.plot(
                r[zero], np.full(zero.sum(), floor), ls="", marker="v", ms=5, mec=c, mfc="none"
            )
            ax_.plot(r, np.maximum(vals, floor), color=c, lw=0.6, alpha=0.5)
            if len(vals) and vals[0] > 0 and truncates:  # the neuron basis keeps every neuron
                ax_.axhline(rtol * vals[0], color=c, ls="--", lw=1.0)
        if len(lam):
            ax_.axhline(analysis.eps, color="black", ls=":", lw=1.2)
        ax_.set_yscale("log")
        ax_.set_ylim(bottom=floor / 3)
        ax_.set_xlabel("rank index")
        ax_.set_ylabel("eigenvalue (log scale)")
        title = f"{layer.name}: d={layer.d}, kept {layer.k}"
        if kG < len(dG):
            title += f", {len(dG) - kG} of G dropped"
        if n_zero:
            title += f"\n{n_zero} zero eigenvalue{'s' if n_zero > 1 else ''} drawn at {floor:.0e}"
        ax_.set_title(title, fontsize=10)
        has_lambda = has_lambda or bool(len(lam))
        has_zero = has_zero or bool(n_zero)
        ax_.xaxis.get_major_locator().set_params(integer=True)
    handles = [
        Line2D(
            [], [], ls="-", lw=0.6, mfc=g_style["color"], **g_style, label="G (activation variance)"
        ),
        Line2D(
            [], [], ls="-", lw=0.6, mfc=l_style["color"], **l_style, label="Lambda (whitened M)"
        ),
        Line2D([], [], ls="", marker="o", mec="0.3", mfc="0.3", label="kept direction"),
        Line2D([], [], ls="", marker="o", mec="0.3", mfc="none", label="dropped direction"),
        Line2D([], [], ls="", marker="v", mec="0.3", mfc="none", label="zero (drawn at a floor)"),
        Line2D([], [], ls="--", color="0.3", label=f"truncation: rtol x max (rtol={rtol:g})"),
        Line2D([], [], ls=":", color="black", lw=1.2, label=f"eps = {analysis.eps:g} (on Lambda)"),
    ]
    wanted = [True, has_lambda, True, truncates, has_zero, truncates, has_lambda]
    handles = [h for h, keep in zip(handles, wanted) if keep]
    if new:
        fig.suptitle(
            f"Spectra per layer ({basis} basis): G in activation units$^2$"
            + (", Lambda in loss units" if has_lambda else ""),
            fontsize=11,
        )
        ncol = 4 if fig.get_figwidth() >= 10 else 3
        fig.legend(
            handles=handles, loc="outside lower center", ncol=ncol, frameon=False, fontsize=9
        )
    else:
        axes[0].legend(handles=handles, fontsize=9, frameon=False)
    return fig


# ---------------------------------------------------------------------------- 3. cost curve
def _as_list(x, types, name: str, *, allow_empty=False) -> list:
    if isinstance(x, types):
        return [x]
    if isinstance(x, Mapping):
        x = list(x.values())
    if not isinstance(x, Sequence) or isinstance(x, str):
        raise InputError(
            f"{name} must be a {types[0].__name__} or a sequence of them, got {type(x).__name__}"
        )
    if not x and not allow_empty:
        raise InputError(f"{name} must not be empty")
    for item in x:
        if not isinstance(item, types):
            raise InputError(
                f"{name} must hold {types[0].__name__} objects, got {type(item).__name__}"
            )
    return list(x)


def _curve_label(c: CostCurve) -> str:
    if c.method == "spectral":
        return (
            f"spectral, k = {int(c.ks.min())}..{int(c.ks.max())}"
            if c.ks is not None
            else "spectral"
        )
    q = c.params.get("quality", "")
    return f"Leiden ({q}) resolution scan" if q else "Leiden resolution scan"


def plot_cost_curve(
    curves: CostCurve | Sequence[CostCurve] | Mapping[str, CostCurve],
    *,
    chosen: ModuleResult | Sequence[ModuleResult] | None = None,
    significance: Significance | Sequence[Significance] | None = None,
    ax=None,
):
    """Cross-module cost against the number of modules, with the chosen partitions marked.

    Parameters
    ----------
    curves : CostCurve, sequence of CostCurve, or dict {label: CostCurve}
        From :func:`modgraph.partition.cost_curve`. Every scan point is a marker; the line joins
        the lowest cost found at each number of modules.
    chosen : ModuleResult or sequence of ModuleResult, optional
        Partitions to mark (stars).
    significance : Significance or sequence of Significance, optional
        One per ``chosen`` partition, from :func:`modgraph.partition.module_significance`: the
        shuffle null's mean +- 2 sd at that number of modules is drawn as a band, its costs as
        grey dots, and ``z`` and ``p`` are written beside it.
    ax : Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    labels = list(curves.keys()) if isinstance(curves, Mapping) else None
    curves = _as_list(curves, (CostCurve,), "curves")
    chosen = [] if chosen is None else _as_list(chosen, (ModuleResult,), "chosen")
    sigs = [] if significance is None else _as_list(significance, (Significance,), "significance")
    if sigs and len(sigs) != len(chosen):
        raise InputError(
            f"significance must have one entry per chosen partition ({len(chosen)}), "
            f"got {len(sigs)}"
        )
    for r, s in zip(chosen, sigs):
        if not math.isclose(r.cost, s.cost, rel_tol=1e-9, abs_tol=1e-9):
            raise InputError(
                f"significance (cost {s.cost:.6g}) does not test the chosen partition "
                f"(cost {r.cost:.6g})"
            )
    if ax is None:
        fig = Figure(figsize=(7.5, 4.8), layout="constrained")
        ax = fig.subplots()
    else:
        ax = _check_ax(ax, 1)[0]
        fig = ax.figure
    styles = [("o", MODULE_COLOURS[0]), ("s", MODULE_COLOURS[3]), ("^", MODULE_COLOURS[2])]
    for i, c in enumerate(curves):
        marker, colour = styles[i % len(styles)]
        colour = MODULE_COLOURS[(2 * i) % len(MODULE_COLOURS)] if i >= len(styles) else colour
        n, cost = np.asarray(c.n_modules), np.asarray(c.cost)
        label = labels[i] if labels else _curve_label(c)
        ax.plot(n, cost, ls="", marker=marker, mfc="none", mec=colour, ms=6, alpha=0.8)
        xs = np.unique(n)
        best = np.array([cost[n == k].min() for k in xs])
        ax.plot(xs, best, color=colour, marker=marker, ms=6, lw=1.5, label=label)
    # Width of the null band in x (module counts): visible however long the scan is.
    span = max([float(np.max(c.n_modules)) for c in curves if len(c.n_modules)] + [1.0])
    band = max(0.6, span / 40)
    for j, r in enumerate(chosen):
        ax.plot(
            [r.n_modules],
            [r.cost],
            ls="",
            marker="*",
            ms=14,
            mfc=MODULE_COLOURS[1],
            mec="black",
            zorder=5,
            label=f"chosen: {r.method}, {r.n_modules} modules, cost {r.cost:.3g}",
        )
        if j < len(sigs):
            s = sigs[j]
            null = np.asarray(s.null_costs, dtype=np.float64)
            mean, sd = float(null.mean()), float(null.std(ddof=1)) if len(null) > 1 else 0.0
            x0, half = r.n_modules, 0.5 * band  # behind the star, wider than it
            ax.fill_between(
                [x0 - half, x0 + half],
                mean - 2 * sd,
                mean + 2 * sd,
                color="0.7",
                alpha=0.7,
                lw=0,
                zorder=0,
                label="shuffle null: mean $\\pm$ 2 sd" if j == 0 else None,
            )
            ax.plot([x0 - half, x0 + half], [mean, mean], color="0.2", lw=1.5, zorder=1)
            jitter = np.linspace(-0.6, 0.6, len(null)) * half if len(null) > 1 else null * 0
            ax.plot(
                x0 + jitter,
                null,
                ls="",
                marker=".",
                color="0.25",
                ms=4,
                zorder=2,
                label=f"null costs ({s.n_null} shuffled graphs)" if j == 0 else None,
            )
            ax.annotate(
                f"z = {s.z:.2g}, p = {s.p_value:.2g}",
                (x0, mean + 2 * sd),
                xytext=(0, 4),
                textcoords="offset points",
                fontsize=9,
                ha="center",
                va="bottom",
                zorder=6,
                bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.6", lw=0.5, alpha=0.9),
            )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("number of modules")
    ax.set_ylabel(f"cross-module cost ({STRENGTH_UNITS})")
    ax.set_title("Cost of cutting the graph into modules (lower line: best found per count)")
    ax.grid(True, color="0.9", lw=0.6)
    handles, _ = ax.get_legend_handles_labels()
    if any(isinstance(h, Line2D) for h in handles):
        ax.legend(fontsize=9, frameon=False, loc="best")
    return fig


# ---------------------------------------------------------------------------- 4. module heatmap
def module_interactions(
    analysis_or_graph, modules
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Summed edge strength between modules of adjacent layers.

    Parameters
    ----------
    analysis_or_graph : Analysis or InteractionGraph
    modules : ModuleResult, dict or sequence of labels

    Returns
    -------
    list of (rows, cols, S), one per adjacent layer pair ``(l, l + 1)``
        ``rows``: the modules with nodes in layer ``l``; ``cols``: those with nodes in layer
        ``l + 1`` (unassigned nodes have no edges and are left out); ``S`` of shape
        ``(len(rows), len(cols))``: ``S[a, b]`` is the summed ``ln(w / eps^1/2)`` of the edges
        between module ``rows[a]`` in layer ``l`` and module ``cols[b]`` in layer ``l + 1``.
    """
    graph = _as_graph(analysis_or_graph)
    labels = _labels(graph, modules)
    e = graph.edges
    out = []
    for l in range(len(graph.layer_sizes) - 1):
        in_l = (graph.node_layer == l) & (labels != UNASSIGNED)
        in_next = (graph.node_layer == l + 1) & (labels != UNASSIGNED)
        rows, cols = np.unique(labels[in_l]), np.unique(labels[in_next])
        sel = graph.node_layer[e.src] == l
        a = np.searchsorted(rows, labels[e.src[sel]])
        b = np.searchsorted(cols, labels[e.dst[sel]])
        S = np.zeros((len(rows), len(cols)))
        np.add.at(S, (a, b), e.strength[sel])
        out.append((rows, cols, S))
    return out


def _short(v: float) -> str:
    """A cell value in at most four characters or so."""
    if v == 0:
        return "0"
    return f"{v:.0f}" if abs(v) >= 10 else f"{v:.2g}"


def plot_module_heatmap(analysis_or_graph, modules, *, ax=None):
    """Module-by-module interaction between adjacent layers, one heatmap per layer pair.

    Parameters
    ----------
    analysis_or_graph : Analysis or InteractionGraph
    modules : ModuleResult, dict or sequence of labels
    ax : Axes or sequence of Axes, optional
        One per adjacent layer pair.

    Returns
    -------
    matplotlib.figure.Figure
        Cell ``(a, b)`` of the panel for layers ``l -> l + 1`` is the summed strength between
        module ``a`` at layer ``l`` (rows) and module ``b`` at layer ``l + 1`` (columns), as
        :func:`module_interactions` computes it; all panels share one colour scale. Cells joining a
        module to itself are outlined: everything else is cut by the partition. Values are written
        in the cells when a matrix is small.
    """
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    graph = _as_graph(analysis_or_graph)
    blocks = module_interactions(graph, modules)
    if not blocks:
        raise InputError(f"analysis_or_graph has a single layer, so no layer pairs: {graph!r}")
    names = graph.layer_names
    n_mod = max((max(len(r), len(c)) for r, c, _ in blocks), default=1)
    side = float(np.clip(0.45 * n_mod + 1.4, 2.8, 5.5))
    fig, axes, new = _panels(
        ax, len(blocks), ncols=4 if side < 3.5 else 3, panel_size=(side, side + 0.9)
    )
    vmax = max((float(S.max()) for _, _, S in blocks if S.size), default=0.0) or 1.0
    norm = Normalize(0.0, vmax)
    image = None
    for l, (ax_, (rows, cols, S)) in enumerate(zip(axes, blocks)):
        image = ax_.imshow(S, cmap=HEATMAP_CMAP, norm=norm, interpolation="nearest")
        ax_.set_xticks(range(len(cols)), [str(c) for c in cols], fontsize=9)
        ax_.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=9)
        for a, r in enumerate(rows):
            for b, c in enumerate(cols):
                if r == c:
                    ax_.add_patch(
                        Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, ec="#D55E00", lw=2)
                    )
        if 0 < max(S.shape, default=0) <= MAX_ANNOTATED_SIDE:
            for (a, b), v in np.ndenumerate(S):
                ax_.text(
                    b,
                    a,
                    _short(v),
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="black" if norm(v) > 0.6 else "white",
                )
        ax_.set_xlabel(f"module in layer {names[l + 1]}")
        ax_.set_ylabel(f"module in layer {names[l]}")
        cut = S.sum() - sum(
            S[a, b] for a, r in enumerate(rows) for b, c in enumerate(cols) if r == c
        )
        ax_.set_title(f"{names[l]} -> {names[l + 1]} (cut {cut:.3g})", fontsize=10)
    if image is not None:
        cbar = fig.colorbar(image, ax=axes, shrink=0.9)
        cbar.set_label(f"interaction ({STRENGTH_UNITS})")
    if new:
        fig.suptitle(
            "Interaction between modules of adjacent layers (outlined: within a module)",
            fontsize=11,
        )
    return fig


# ---------------------------------------------------------------------------- 5. basis comparison
def plot_basis_comparison(
    analyses: Mapping[str, Analysis],
    *,
    modules: Mapping[str, ModuleResult] | None = None,
    ax=None,
):
    """The same network in several bases: how many edges, how much strength, what cutting costs.

    Parameters
    ----------
    analyses : dict {label: Analysis}
        For example ``{"neuron": a_neuron, "PCA": a_pca, "interaction": a_int}``; bars appear in
        this order.
    modules : dict {label: ModuleResult}, optional
        Partitions of (some of) the same analyses' graphs: adds a panel of cross-module cost.
    ax : sequence of Axes, optional
        Two (three with ``modules``).

    Returns
    -------
    matplotlib.figure.Figure
        Bars of the number of edges above ``eps^1/2`` (of the possible ``sum_l k_l k_{l+1}``), of
        the total strength ``sum ln(w / eps^1/2)`` and, with ``modules``, of the cross-module cost
        of each partition (with its share of the total). Fewer, weaker edges and a cheaper cut mean
        a sparser, more modular description of the same computation (Bushnaq et al., sec. 5).
    """
    if not isinstance(analyses, Mapping):
        raise InputError(
            f"analyses must be a dict {{label: Analysis}}, got {type(analyses).__name__}"
        )
    if not analyses:
        raise InputError("analyses must not be empty")
    for k, a in analyses.items():
        _check_analysis(a, f"analyses[{k!r}]")
    if modules is not None:
        if not isinstance(modules, Mapping) or not modules:
            raise InputError(
                f"modules must be a non-empty dict {{label: ModuleResult}}, got {modules!r:.80}"
            )
        unknown = [k for k in modules if k not in analyses]
        if unknown:
            raise InputError(
                f"modules has labels {unknown!r} that are not in analyses {list(analyses)!r}"
            )
        for k, r in modules.items():
            if not isinstance(r, ModuleResult):
                raise InputError(f"modules[{k!r}] must be a ModuleResult, got {type(r).__name__}")
            _labels(analyses[k].graph, r, f"modules[{k!r}]")
    keys = list(analyses)
    graphs = [analyses[k].graph for k in keys]
    n_edges = np.array([g.n_edges for g in graphs], dtype=np.float64)
    possible = [sum(w.size for w in g.w) for g in graphs]
    total = np.array([float(g.edges.strength.sum()) for g in graphs])
    epss = {g.eps for g in graphs}
    panels = [
        (
            "edges above eps$^{1/2}$",
            "number of edges",
            n_edges,
            [f"{int(v)}\nof {p}" for v, p in zip(n_edges, possible)],
        ),
        (
            "total edge strength",
            f"total strength ({STRENGTH_UNITS})",
            total,
            [f"{v:.3g}" for v in total],
        ),
    ]
    if modules is not None:
        cost = np.array([modules[k].cost if k in modules else np.nan for k in keys])
        text = [
            f"{modules[k].cost:.3g}\n({modules[k].n_modules} mod., "
            f"{100 * modules[k].cost / t:.0f}%)"
            if k in modules and t > 0
            else (f"{modules[k].cost:.3g}" if k in modules else "n/a")
            for k, t in zip(keys, total)
        ]
        panels.append(
            ("cross-module cost of the partition", f"cost ({STRENGTH_UNITS})", cost, text)
        )
    fig, axes, new = _panels(ax, len(panels), ncols=3, panel_size=(3.5, 4.2))
    x = np.arange(len(keys))
    xt = [k if len(epss) == 1 else f"{k}\neps={g.eps:g}" for k, g in zip(keys, graphs)]
    for ax_, (title, ylabel, vals, text) in zip(axes, panels):
        for i, v in enumerate(vals):
            colour, _, hatch = module_style(i)
            ax_.bar(i, 0 if np.isnan(v) else v, 0.65, color=colour, hatch=hatch, ec="0.2", lw=0.6)
        top = np.nanmax(vals) if np.any(np.isfinite(vals)) else 1.0
        top = top if top > 0 else 1.0
        for i, (v, t) in enumerate(zip(vals, text)):
            ax_.text(
                i, (0 if np.isnan(v) else v) + 0.02 * top, t, ha="center", va="bottom", fontsize=9
            )
        ax_.set_ylim(0, 1.25 * top)
        ax_.set_xticks(x, xt, rotation=20 if len(keys) > 3 else 0)
        ax_.set_xlabel("basis")
        ax_.set_ylabel(ylabel)
        ax_.set_title(title, fontsize=10)
    if new:
        eps_txt = f"eps = {epss.pop():g}" if len(epss) == 1 else "eps differs between bases"
        fig.suptitle(f"The same network in {len(keys)} bases ({eps_txt})", fontsize=11)
    return fig


# ---------------------------------------------------------------------------- saving
def save_figure(fig, path_without_suffix: str | os.PathLike, formats=("png", "svg")) -> list[Path]:
    """Write ``fig`` once per format, each atomically (temporary file, then rename).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path_without_suffix : str or path
        ``figures/graph`` writes ``figures/graph.png`` and ``figures/graph.svg``; the folder is
        created if missing. A suffix already there is kept (``graph.v2`` gives ``graph.v2.png``).
    formats : sequence of str
        Any format matplotlib writes; PNGs are written at 150 dpi.

    Returns
    -------
    list of pathlib.Path
        The files written, in the order of ``formats``.
    """
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise InputError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if isinstance(formats, str):
        formats = (formats,)
    supported = fig.canvas.get_supported_filetypes()
    if not formats or not all(isinstance(f, str) and f.lower() in supported for f in formats):
        raise InputError(
            f"formats must be a non-empty sequence of {sorted(supported)}, got {formats!r}"
        )
    base = Path(path_without_suffix)
    if base.name in ("", ".", ".."):
        raise InputError(f"path_without_suffix must name a file, got {str(path_without_suffix)!r}")
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in (f.lower() for f in formats):
        path = base.parent / f"{base.name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI)
        paths.append(path)
    return paths

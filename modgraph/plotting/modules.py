"""Module figures: the cost curve against the number of modules, and module heatmaps."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..partition import CostCurve, ModuleResult, Significance
from ..partition.objective import module_interactions
from .style import (
    HEATMAP_CMAP,
    MAX_ANNOTATED_SIDE,
    MODULE_COLORS,
    STRENGTH_UNITS,
    as_graph,
    as_list,
    panel_grid,
    single_axes,
)

__all__ = ["plot_cost_curve", "plot_module_heatmap"]


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
    matplotlib.axes.Axes
    """
    from matplotlib.lines import Line2D

    labels = list(curves.keys()) if isinstance(curves, Mapping) else None
    where = "plot_cost_curve"
    curves = as_list(where, "curves", curves, CostCurve)
    chosen = [] if chosen is None else as_list(where, "chosen", chosen, ModuleResult)
    sigs = (
        [] if significance is None else as_list(where, "significance", significance, Significance)
    )
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
    ax = single_axes("plot_cost_curve", ax, (7.5, 4.8))
    styles = [("o", MODULE_COLORS[0]), ("s", MODULE_COLORS[3]), ("^", MODULE_COLORS[2])]
    for i, c in enumerate(curves):
        marker, color = styles[i % len(styles)]
        color = MODULE_COLORS[(2 * i) % len(MODULE_COLORS)] if i >= len(styles) else color
        n, cost = np.asarray(c.n_modules), np.asarray(c.cost)
        label = labels[i] if labels else _curve_label(c)
        ax.plot(n, cost, ls="", marker=marker, mfc="none", mec=color, ms=6, alpha=0.8)
        xs = np.unique(n)
        best = np.array([cost[n == k].min() for k in xs])
        ax.plot(xs, best, color=color, marker=marker, ms=6, lw=1.5, label=label)
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
            mfc=MODULE_COLORS[1],
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
    return ax


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
        :func:`module_interactions` computes it; all panels share one color scale. Cells joining a
        module to itself are outlined: everything else is cut by the partition. Values are written
        in the cells when a matrix is small.
    """
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    graph = as_graph("plot_module_heatmap", analysis_or_graph)
    blocks = module_interactions(graph, modules)
    if not blocks:
        raise InputError(f"analysis_or_graph has a single layer, so no layer pairs: {graph!r}")
    names = graph.layer_names
    n_mod = max((max(len(r), len(c)) for r, c, _ in blocks), default=1)
    side = float(np.clip(0.45 * n_mod + 1.4, 2.8, 5.5))
    fig, axes, new = panel_grid(
        "plot_module_heatmap",
        ax,
        len(blocks),
        ncols=4 if side < 3.5 else 3,
        panel_size=(side, side + 0.9),
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
        # the cut is summed directly (not total minus within), so it is never a rounding residue
        cut = sum(S[a, b] for a, r in enumerate(rows) for b, c in enumerate(cols) if r != c)
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

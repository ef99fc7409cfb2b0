"""Module figures: the cost curve against the number of modules, and module heatmaps."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..partition import CostCurve, ModuleResult
from ..partition.objective import module_interactions, plural
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


def plot_cost_curve(
    curves: CostCurve | Sequence[CostCurve] | Mapping[str, CostCurve],
    *,
    chosen: ModuleResult | Sequence[ModuleResult] | None = None,
    ax=None,
):
    """The objective against the number of modules, against the null model, with the choice.

    Parameters
    ----------
    curves : CostCurve, sequence of CostCurve, or dict {label: CostCurve}
        From :func:`modgraph.partition.cost_curve`: the normalized cut of the partition found
        at each ``k`` (line), and the band ``mean +- 2 sd`` of what the same solver finds at
        ``k`` on null graphs (shaded). Modules are real where the line runs below the band.
    chosen : ModuleResult or sequence of ModuleResult, optional
        Partitions to mark (stars), e.g. the automatic choice; the legend gives its verdict.
    ax : Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    labels = list(curves.keys()) if isinstance(curves, Mapping) else None
    where = "plot_cost_curve"
    curves = as_list(where, "curves", curves, CostCurve)
    chosen = [] if chosen is None else as_list(where, "chosen", chosen, ModuleResult)
    ax = single_axes(where, ax, (7.5, 6.4))
    styles = [("o", MODULE_COLORS[0]), ("s", MODULE_COLORS[3]), ("^", MODULE_COLORS[2])]
    hatches = ["////", "\\\\\\\\", "...."]  # overlapping bands stay apart
    drawn = False
    for i, c in enumerate(curves):
        marker, color = styles[i % len(styles)]
        label = labels[i] if labels else c.method
        ks, ncut = np.asarray(c.ks), np.asarray(c.ncut)
        pos = ncut > 0  # k = 1 (and splits along components) score 0: off a log axis
        ax.plot(ks[pos], ncut[pos], color=color, marker=marker, ms=6, lw=1.5,
                label=f"{label}: found")  # fmt: skip
        band = np.isfinite(c.null_mean) & (c.null_mean > 0)
        drawn |= bool(pos.any() or band.any())
        if band.any():
            sd = np.nan_to_num(c.null_std)
            lo = np.maximum(c.null_mean - 2 * sd, 0.25 * c.null_mean)
            ax.fill_between(
                ks[band], lo[band], (c.null_mean + 2 * sd)[band], facecolor=color, alpha=0.25,
                edgecolor=color, hatch=hatches[i % len(hatches)], lw=0,
                label=f"{label}: null graphs, mean $\\pm$ 2 sd ({c.params.get('n_null')} per k)",
            )  # fmt: skip
            ax.plot(ks[band], c.null_mean[band], color=color, lw=1, ls="--")
    verdicts: dict[str, list[str]] = {}  # each verdict once, with the methods that gave it
    for r in chosen:
        verdicts.setdefault(r.verdict, []).append(r.method)
        on_axis = r.ncut > 0  # one module (or components): nothing to draw on the log axis
        ax.plot(
            [r.n_modules] if on_axis else [], [r.ncut] if on_axis else [], ls="", marker="*",
            ms=15, mfc=MODULE_COLORS[1] if on_axis else "white", mec="black", zorder=5,
            label=f"{r.method}: chosen, {plural(r.n_modules, 'module')}",
        )  # fmt: skip
    all_ks = [k for c in curves for k in c.ks]
    if all_ks:
        ax.set_xlim(min(all_ks) - 0.5, max(all_ks) + 0.5)
    if drawn:
        for v, m in verdicts.items():
            ax.plot([], [], ls="", label=_wrapped(f"{' and '.join(m)}: {v}"))
    else:
        why = "nothing to draw" + (": " + "; ".join(verdicts) if verdicts else "")
        ax.text(0.5, 0.5, _wrapped(why, 60), transform=ax.transAxes, ha="center", va="center",
                fontsize=10, color="0.3")  # fmt: skip
    ax.xaxis.get_major_locator().set_params(integer=True)
    if drawn:
        ax.set_yscale("log")
    else:
        ax.set_yticks([])
    ax.set_xlabel("number of modules k")
    ax.set_ylabel(f"normalized cut (cut / volume, {STRENGTH_UNITS})")
    ax.set_title(
        "Modules against graphs without modules (below the band: structure)\n"
        "the test compares log normalized cuts; the lower band edge is clipped at 1/4 of the mean",
        fontsize=10,
    )
    ax.grid(True, color="0.9", lw=0.6, which="both")
    # below the axes: verdicts run to several lines and would cover the curves
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
    return ax


def _wrapped(text: str, width: int = 90) -> str:
    """A legend entry broken into lines of at most ``width`` characters."""
    return "\n".join(textwrap.wrap(text, width))


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

"""The one style of every modgraph figure: palette, markers, panels, legends, saving.

Colors follow Okabe & Ito (color-blind safe): modules cycle through its eight colors, and from
the ninth module on the node marker changes as well, so no two modules share color and marker.
Heatmaps use ``cividis`` (perceptually uniform, color-blind safe). Strengths are the graph's edge
strengths ``ln(w / eps^1/2)`` (Bushnaq et al. 2024, sec. 5).

Every plot function takes ``ax=None``: without it the figure is new (the Figure API, no pyplot, so
nothing global is touched and nothing is shown); with it the plot draws into the caller's axes.
Single-panel plots return their Axes, multi-panel plots their Figure. matplotlib is imported
inside the functions that need it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .._validation import a_or_an, check_instance, invalid
from ..analysis import Analysis
from ..atomic import atomic_path
from ..graph import InteractionGraph
from ..partition.objective import UNASSIGNED

__all__ = [
    "MODULE_COLORS",
    "LINE_COLORS",
    "LINE_STYLES",
    "MARKERS",
    "module_style",
    "as_graph",
    "check_analysis",
    "check_ax",
    "single_axes",
    "panel_grid",
    "module_legend_handles",
    "as_list",
    "save_figure",
]

#: Okabe-Ito colors, ordered so the first few modules get the most distinct ones (yellow late).
MODULE_COLORS = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#56B4E9",  # sky blue
    "#CC79A7",  # reddish purple
    "#F0E442",  # yellow
    "#000000",  # black
)
#: Node markers, one per round of the color cycle (module m uses ``MARKERS[m // 8]``).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Bar hatches, one per round of the color cycle.
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--")
UNASSIGNED_COLOR = "#BBBBBB"
CROSS_EDGE_COLOR = "#444444"
HEATMAP_CMAP = "cividis"
#: Most module entries a legend lists; the rest are summarized in one line.
MAX_LEGEND_MODULES = 12
#: Heatmaps write the value in each cell when no side of the matrix is longer than this.
MAX_ANNOTATED_SIDE = 6
PNG_DPI = 150
STRENGTH_UNITS = "summed ln(w/eps$^{1/2}$)"
#: Colors of line series (yellow, too faint for thin lines, left out).
LINE_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000")
#: Line styles of line series, cycled together with LINE_COLORS.
LINE_STYLES = ("-", "--", "-.", ":")


def module_style(m: int) -> tuple[str, str, str]:
    """Color, marker and hatch of module ``m`` (``-1``, unassigned, is grey)."""
    if m == UNASSIGNED:
        return UNASSIGNED_COLOR, "o", ""
    n = len(MODULE_COLORS)
    return MODULE_COLORS[m % n], MARKERS[(m // n) % len(MARKERS)], HATCHES[(m // n) % len(HATCHES)]


def as_graph(where: str, x, name: str = "analysis_or_graph") -> InteractionGraph:
    """The graph of an Analysis, or an InteractionGraph itself."""
    if isinstance(x, Analysis):
        return x.graph
    return check_instance(where, name, x, InteractionGraph, "an Analysis or an InteractionGraph")


def check_analysis(where: str, x, name: str = "analysis") -> Analysis:
    """``x`` must be an :class:`Analysis`."""
    return check_instance(where, name, x, Analysis, "an Analysis")


def check_ax(where: str, ax, n_panels: int) -> list:
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
        length = f" of length {len(axes)}" if isinstance(axes, Sequence) else ""
        one = "an Axes or " if n_panels == 1 else ""
        constraint = f"{one}a sequence of {n_panels} Axes (one per panel)"
        raise invalid(where, "ax", constraint, ax, shown=a_or_an(type(ax).__name__) + length)
    return axes


def single_axes(where: str, ax, figsize: tuple[float, float]):
    """``ax`` checked, or the one Axes of a new constrained-layout figure of ``figsize``."""
    if ax is not None:
        return check_ax(where, ax, 1)[0]
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained").subplots()


def panel_grid(where: str, ax, n_panels: int, *, ncols: int, panel_size, max_width=11.0):
    """A new constrained-layout figure with a grid of ``n_panels`` axes, or the caller's axes."""
    if ax is not None:
        axes = check_ax(where, ax, n_panels)
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


def module_legend_handles(present: np.ndarray, counts: dict[int, int], kind: str = "marker"):
    """Legend handles for the modules in ``present`` (capped), largest first as the CLI and
    summary.json list their sizes, plus unassigned last."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    mods = sorted((int(m) for m in present if m != UNASSIGNED), key=lambda m: (-counts[m], m))
    handles = []
    for m in mods[:MAX_LEGEND_MODULES]:
        color, marker, hatch = module_style(m)
        label = f"module {m} ({counts[m]} node{'s' if counts[m] != 1 else ''})"
        if kind == "marker":
            handles.append(
                Line2D([], [], ls="", marker=marker, mfc=color, mec="0.2", ms=7, label=label)
            )
        else:
            handles.append(Patch(fc=color, ec="0.2", hatch=hatch, label=label))
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
                mfc=UNASSIGNED_COLOR,
                mec="0.2",
                ms=7,
                label=f"no edge / unassigned ({counts[UNASSIGNED]})",
            )
        )
    return handles


def as_list(where: str, name: str, x, kind: type) -> list:
    """One ``kind`` or a non-empty sequence (or dict values) of them, as a list."""
    if isinstance(x, kind):
        return [x]
    items = list(x.values()) if isinstance(x, Mapping) else x
    constraint = f"{a_or_an(kind.__name__)} or a non-empty sequence of them"
    if (
        not isinstance(items, Sequence)
        or isinstance(items, str)
        or not items
        or not all(isinstance(item, kind) for item in items)
    ):
        raise invalid(where, name, constraint, x)
    return list(items)


def fit_tick_labels(ax) -> None:
    """Turn the x tick labels (0, 30, 60 or 90 degrees) until no two neighbours overlap: long
    module paths such as ``blocks.0.hook_resid_post`` would run together."""
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    for angle in (0, 30, 60, 90):
        for t in labels:
            t.set_rotation(angle)
            t.set_horizontalalignment("center" if angle in (0, 90) else "right")
            t.set_rotation_mode("anchor" if angle in (30, 60) else "default")
        boxes = [t.get_window_extent() for t in labels]  # the figure's own renderer
        if all(a.x1 + 2 <= b.x0 for a, b in zip(boxes, boxes[1:])):
            return


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

    where = "save_figure"
    check_instance(where, "fig", fig, Figure, "a matplotlib Figure")
    if isinstance(formats, str):
        formats = (formats,)
    supported = fig.canvas.get_supported_filetypes()
    if not formats or not all(isinstance(f, str) and f.lower() in supported for f in formats):
        raise invalid(where, "formats", f"a non-empty sequence of {sorted(supported)}", formats)
    base = Path(path_without_suffix)
    if base.name in ("", ".", ".."):
        raise invalid(where, "path_without_suffix", "a file name", str(path_without_suffix))
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in (f.lower() for f in formats):
        path = base.parent / f"{base.name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI)
        paths.append(path)
    return paths

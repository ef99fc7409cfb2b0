"""The interaction graph, drawn layer by layer with nodes colored by module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._validation import check_int
from ..analysis import Analysis
from ..graph import InteractionGraph
from ..partition.objective import (
    UNASSIGNED,
    ModuleResult,
    cross_module_cost,
    module_labels,
    plural,
)
from .style import (
    CROSS_EDGE_COLOR,
    as_graph,
    fit_tick_labels,
    module_legend_handles,
    module_style,
    single_axes,
)

__all__ = ["plot_graph"]


def node_labels(graph: InteractionGraph, modules) -> np.ndarray:
    """Module of every node (all 0 when ``modules`` is None); -1 for a node without edges."""
    labels = np.zeros(graph.n_nodes, np.int64) if modules is None else module_labels(graph, modules)
    return np.where(graph.connected_nodes, labels, UNASSIGNED)


def importance_scale(importance: np.ndarray) -> np.ndarray:
    """Log importance mapped to [0, 1] (smallest positive to largest); 0 for zero importance."""
    pos = importance[importance > 0]
    if not len(pos):
        return np.zeros(len(importance))
    lo, hi = np.log10(pos.min()), np.log10(pos.max())
    t = (np.log10(np.maximum(importance, pos.min())) - lo) / max(hi - lo, 1e-12)
    return np.where(importance > 0, t, 0.0)


def node_layout(graph: InteractionGraph, labels: np.ndarray) -> np.ndarray:
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
    """Draw the interaction graph layer by layer, nodes colored by module.

    Parameters
    ----------
    analysis_or_graph : Analysis or InteractionGraph
    modules : ModuleResult, dict {node id: module} or sequence of labels, optional
        Colors the nodes (Okabe-Ito; from the ninth module on the marker changes too) and orders
        them within each layer by module, then by importance, descending. Without it nodes are
        ordered by importance. Nodes without any edge are grey either way.
    ax : matplotlib Axes, optional
        Draw here instead of on a new figure.
    max_edges : int
        Only the strongest ``max_edges`` edges are drawn (the title says how many of how many).

    Returns
    -------
    matplotlib.axes.Axes
        x is the layer (ticks name it), y the node's place within its layer (each layer spans the
        full height). Node area grows with log importance; edge width and opacity with strength.
        Edges inside a module take its color, edges between modules are dark grey.

    Examples
    --------
    >>> import numpy as np
    >>> g = InteractionGraph(("a", "b"), (np.ones(2), np.ones(2)), (np.eye(2) * 10,), eps=1.0)
    >>> ax = plot_graph(g)
    >>> ax.get_xlabel()
    'layer'
    """
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    graph = as_graph("plot_graph", analysis_or_graph)
    check_int("plot_graph", "max_edges", max_edges, low=0)
    labels = node_labels(graph, modules)
    n_layers = len(graph.layer_sizes)
    width = min(11.0, max(7.0, 1.7 * n_layers + 2.5))
    height = min(9.0, max(4.5, 0.09 * max(graph.layer_sizes) + 2.5))
    ax = single_axes("plot_graph", ax, (width, height))
    fig = ax.figure

    x = graph.node_layer.astype(np.float64)
    y = node_layout(graph, labels)

    # Edges: the strongest max_edges, drawn weakest first so strong ones lie on top.
    e = graph.edges
    n_total = len(e)
    keep = np.argsort(-e.strength, kind="stable")[:max_edges][::-1]
    s_max = float(e.strength.max()) if n_total else 1.0
    rel = e.strength[keep] / s_max if s_max > 0 else np.ones(len(keep))
    src, dst = e.src[keep], e.dst[keep]
    same = (labels[src] == labels[dst]) & (labels[src] != UNASSIGNED)
    colors = np.array(
        [
            to_rgba(module_style(int(labels[a]))[0] if s else CROSS_EDGE_COLOR)
            for a, s in zip(src, same)
        ]
    ).reshape(-1, 4)
    colors[:, 3] = 0.12 + 0.6 * rel
    segments = np.stack([np.column_stack([x[src], y[src]]), np.column_stack([x[dst], y[dst]])], 1)
    ax.add_collection(LineCollection(segments, colors=colors, linewidths=0.3 + 2.7 * rel, zorder=1))

    # Nodes: area from log importance, scaled so the densest layer's markers do not overlap.
    t = importance_scale(graph.node_importance)
    ax_h_pt = ax.get_position().height * fig.get_figheight() * 72
    max_d = float(np.clip(0.9 * ax_h_pt / max(max(graph.layer_sizes), 1), 3.0, 14.0))
    sizes = (0.3 * max_d + 0.7 * max_d * t) ** 2  # marker area in points^2
    present = np.unique(labels)
    for m in present:  # one scatter per module: marker shapes differ beyond eight modules
        sel = labels == m
        color, marker, _ = module_style(int(m))
        ax.scatter(
            x[sel],
            y[sel],
            s=sizes[sel],
            c=color,
            marker=marker,
            edgecolors="0.2",
            linewidths=0.4,
            zorder=3,
        )

    ax.set_xticks(range(n_layers), graph.layer_names)
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
        cut = cross_module_cost(graph, labels)
        n_mod = len(np.unique(labels[labels != UNASSIGNED]))
        how = f" ({modules.method})" if isinstance(modules, ModuleResult) else ""
        title += f"\n{plural(n_mod, 'module')}{how}, cross-module cost {cut:.3g}"
        title += f" of {float(e.strength.sum()):.3g} total strength"
    ax.set_title(title, fontsize=10)
    counts = {int(m): int(np.sum(labels == m)) for m in present}
    handles = module_legend_handles(present, counts) if modules is not None else []
    if modules is None and UNASSIGNED in present:
        handles = module_legend_handles(present[present == UNASSIGNED], counts)
    if n_total:
        for frac in (1.0, 0.5):
            handles.append(
                Line2D(
                    [],
                    [],
                    color=CROSS_EDGE_COLOR,
                    lw=0.3 + 2.7 * frac,
                    alpha=0.12 + 0.6 * frac,
                    label=f"edge strength {frac * s_max:.2g}" + (" (max)" if frac == 1 else ""),
                )
            )
    handles.append(Line2D([], [], ls="", label="node area ~ log importance"))
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9
    )
    fit_tick_labels(ax)
    return ax

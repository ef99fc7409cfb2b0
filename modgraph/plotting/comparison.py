"""The same network in several bases: edges, strength and the cost of cutting into modules."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .._validation import check_instance, invalid
from ..analysis import Analysis
from ..errors import InputError
from ..partition import ModuleResult
from ..partition.objective import module_labels
from .style import STRENGTH_UNITS, check_analysis, module_style, panel_grid

__all__ = ["plot_basis_comparison"]


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
    _check_inputs(analyses, modules)
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
        panels.append(_cost_panel(keys, modules, total))
    fig, axes, new = panel_grid(
        "plot_basis_comparison", ax, len(panels), ncols=3, panel_size=(3.5, 4.2)
    )
    x = np.arange(len(keys))
    xt = [k if len(epss) == 1 else f"{k}\neps={g.eps:g}" for k, g in zip(keys, graphs)]
    for ax_, (title, ylabel, vals, text) in zip(axes, panels):
        for i, v in enumerate(vals):
            color, _, hatch = module_style(i)
            ax_.bar(i, 0 if np.isnan(v) else v, 0.65, color=color, hatch=hatch, ec="0.2", lw=0.6)
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
        title = (f"The same network in {len(keys)} bases" if len(keys) > 1
                 else f"The network in the {keys[0]} basis")  # fmt: skip
        fig.suptitle(f"{title} ({eps_txt})", fontsize=11)
    return fig


def _check_inputs(analyses, modules) -> None:
    where = "plot_basis_comparison"
    if not isinstance(analyses, Mapping) or not analyses:
        raise invalid(where, "analyses", "a non-empty dict {label: Analysis}", analyses)
    for k, a in analyses.items():
        check_analysis(where, a, f"analyses[{k!r}]")
    if modules is None:
        return
    if not isinstance(modules, Mapping) or not modules:
        raise invalid(where, "modules", "None or a non-empty dict {label: ModuleResult}", modules)
    unknown = [k for k in modules if k not in analyses]
    if unknown:
        raise InputError(
            f"modules has labels {unknown!r} that are not in analyses {list(analyses)!r}"
        )
    for k, r in modules.items():
        check_instance(where, f"modules[{k!r}]", r, ModuleResult)
        module_labels(analyses[k].graph, r, f"modules[{k!r}]")


def _cost_panel(keys, modules, total):
    """The cross-module cost of each basis' partition, with its share of the total strength."""
    cost = np.array([modules[k].cost if k in modules else np.nan for k in keys])
    text = []
    for k, t in zip(keys, total):
        if k not in modules:
            text.append("n/a")
        elif t > 0:
            r = modules[k]
            text.append(f"{r.cost:.3g}\n({r.n_modules} mod., {100 * r.cost / t:.0f}%)")
        else:
            text.append(f"{modules[k].cost:.3g}")
    return ("cross-module cost of the partition", f"cost ({STRENGTH_UNITS})", cost, text)

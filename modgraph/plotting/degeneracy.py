"""Degeneracy figures: parameters freed per layer, and SGLD loss traces of the LLC."""

from __future__ import annotations

import numpy as np

from .._validation import check_instance
from ..diagnostics.hessian import EffectiveParameterCount
from ..diagnostics.llc import LLCEstimate
from ..diagnostics.ranks import LayerRanks
from .style import LINE_COLORS, MODULE_COLORS, panel_grid

__all__ = ["plot_degeneracy"]


def plot_degeneracy(
    ranks_result: LayerRanks,
    llc_result: LLCEstimate | EffectiveParameterCount | None = None,
    *,
    ax=None,
):
    """Report figure: parameters freed per layer and (optionally) the SGLD loss traces.

    Parameters
    ----------
    ranks_result : LayerRanks
        From :func:`layer_ranks`.
    llc_result : LLCEstimate or EffectiveParameterCount, optional
        Adds a panel with the loss of every chain against the step, burn-in shaded.
    ax : Axes or sequence of Axes, optional
        One per panel (two with ``llc_result``).

    Returns
    -------
    matplotlib.figure.Figure
        One or two panels; never shown: save it or display it yourself.
    """
    where = "plot_degeneracy"
    if isinstance(llc_result, EffectiveParameterCount):
        llc_result = llc_result.llc
    check_instance(where, "ranks_result", ranks_result, LayerRanks)
    if llc_result is not None:
        check_instance(where, "llc_result", llc_result, (LLCEstimate, EffectiveParameterCount))
    ncols = 1 if llc_result is None else 2
    fig, axes, _ = panel_grid(where, ax, ncols, ncols=ncols, panel_size=(5.5, 4.2), max_width=11.0)
    ax = axes[0]
    names = ranks_result.names
    x = np.arange(len(names))
    series = [
        (
            "activation rank drop (G)",
            [r.freed_by_activations for r in ranks_result.layers],
            MODULE_COLORS[1],
        ),
        (
            "Jacobian rank drop (M)",
            [r.freed_by_jacobians for r in ranks_result.layers],
            MODULE_COLORS[0],
        ),
        ("counted by both", [-r.double_counted for r in ranks_result.layers], MODULE_COLORS[3]),
    ]
    width = 0.27
    for k, (label, vals, color) in enumerate(series):
        ax.bar(
            x + (k - 1) * width, vals, width, label=label, color=color, edgecolor="black", lw=0.5
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_xlabel("layer")
    ax.set_ylabel("parameters freed (count; overlap negative)")
    ax.set_title(
        f"Degeneracy per layer (threshold={ranks_result.threshold:g}): "
        f"{ranks_result.total_freed} of {ranks_result.n_params} freed",
        fontsize=10,
    )
    ax.legend(fontsize=8, frameon=False)
    if llc_result is not None:
        ax = axes[1]
        trace = llc_result.loss_trace
        steps = np.arange(trace.shape[1])
        ax.axvspan(0, llc_result.n_burnin, color="0.88", label="burn-in (discarded)")
        for c, row in enumerate(trace):
            color = LINE_COLORS[c % len(LINE_COLORS)]
            ax.plot(steps, row, lw=0.7, color=color, label=f"chain {c}")
        if llc_result.ok:
            mean = llc_result.init_loss + llc_result.value / llc_result.nbeta
            ax.axhline(mean, color="black", ls="--", lw=1, label="post-burn-in mean")
            status = (
                f"lambda = {llc_result.value:.3g} +/- {llc_result.std_error:.2g}, "
                f"R-hat {llc_result.rhat:.2f}"
            )
        else:
            status = "diverged: " + llc_result.reason.split(";")[0]
        ax.set_xlabel("SGLD step")
        ax.set_ylabel("loss L (output units$^2$)")
        ax.set_title(f"SGLD loss traces (n*beta={llc_result.nbeta:.3g})\n{status}", fontsize=10)
        ax.legend(fontsize=8, frameon=False, ncol=2)
    return fig

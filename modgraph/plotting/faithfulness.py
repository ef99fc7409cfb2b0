"""Faithfulness curves: the behavioral loss as the weakest interactions are removed."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .._validation import check_instance, invalid
from ..circuits.faithfulness import FaithfulnessCurve
from .style import LINE_COLORS, LINE_STYLES, MARKERS, single_axes

__all__ = ["plot_faithfulness"]

#: Losses are shown down to this factor times eps.
Y_DECADES_BELOW_EPS = 1e-6


def plot_faithfulness(curves: Mapping[str, FaithfulnessCurve], *, ax=None):
    """Faithfulness curves of several bases on one log-log plot.

    Parameters
    ----------
    curves : dict of str to FaithfulnessCurve
        Label of each curve (e.g. the basis) -> curve.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        Edges kept (log x, 0 drawn at 0.5) against behavioral loss (log y; points with a loss of
        exactly 0, such as "every edge kept", are left out; the axis starts ``1e-6 * eps`` at the
        lowest), with ``eps`` as a dotted line.
    """
    where = "plot_faithfulness"
    if not isinstance(curves, Mapping) or not curves:
        raise invalid(where, "curves", "a non-empty dict {label: FaithfulnessCurve}", curves)
    for k, c in curves.items():
        check_instance(where, f"curves[{k!r}]", c, FaithfulnessCurve)
    ax = single_axes(where, ax, (6.4, 4.2))
    for n, (label, c) in enumerate(curves.items()):
        shown = c.loss > 0  # a loss of exactly 0 (nothing removed) has no place on a log axis
        ax.plot(
            np.maximum(c.n_edges_kept[shown], 0.5),  # 0 edges kept drawn at x = 0.5
            c.loss[shown],
            color=LINE_COLORS[n % len(LINE_COLORS)],
            linestyle=LINE_STYLES[n % len(LINE_STYLES)],
            marker=MARKERS[n % len(MARKERS)],
            markersize=4,
            label=f"{label}: {c.n_edges_graph} of {c.n_edges_total} edges above eps$^{{1/2}}$",
        )
    for e in sorted({c.eps for c in curves.values()}):
        ax.axhline(e, color="0.4", linestyle=":", linewidth=1)
        ax.annotate(
            f"eps = {e:g}", (0.01, e), xycoords=("axes fraction", "data"), ha="left",
            va="bottom", fontsize=8, color="0.3",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    # losses far below eps are round-off of removing edges of strength ~0: do not let them set
    # the scale (the values stay in the curves)
    low = min(c.eps for c in curves.values()) * Y_DECADES_BELOW_EPS
    bottom, top = ax.get_ylim()
    if bottom < low < top:
        ax.set_ylim(low, top)
    ax.set_xlabel("edges kept, strongest first (0 kept drawn at 0.5)")
    ax.set_ylabel("behavioral loss $L_B$ (eq. 6)")
    ax.set_title("Faithfulness: loss as the weakest interactions are removed")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return ax

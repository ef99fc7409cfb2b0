"""The spectra behind the basis: eigenvalues of G and of the whitened M, per layer."""

from __future__ import annotations

import math

import numpy as np

from .._linalg import n_above
from ..analysis import Analysis
from .style import MODULE_COLORS, check_analysis, panel_grid

__all__ = ["plot_spectra"]


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
        log axis: they, and values that are zero to rounding, are drawn as down-triangles on one
        floor for all panels, a decade below the lowest truncation threshold (and ``eps``), named
        in the legend and counted in each panel.
    """
    from matplotlib.lines import Line2D

    analysis = check_analysis("plot_spectra", analysis)
    rtol = float(analysis.config.get("rtol", 1e-10))
    basis = analysis.config.get("basis", "interaction")
    layers = analysis.layers
    ncols = min(4, math.ceil(math.sqrt(len(layers))))
    fig, axes, new = panel_grid("plot_spectra", ax, len(layers), ncols=ncols, panel_size=(4.0, 3.0))
    g_style = dict(color=MODULE_COLORS[0], marker="o")
    l_style = dict(color=MODULE_COLORS[3], marker="s")
    has_lambda = has_zero = False
    truncates = basis != "neuron"
    spectra = [
        (
            layer.gram_spectrum.detach().cpu().numpy().astype(np.float64),
            layer.lambda_spectrum.detach().cpu().numpy().astype(np.float64),
        )
        for layer in layers
    ]
    floor = _floor(spectra, rtol if truncates else None, analysis.eps)
    for ax_, layer, (dG, lam) in zip(axes, layers, spectra):
        kG = len(dG) if basis == "neuron" else n_above(dG, rtol)
        kL = layer.k if len(lam) else 0
        series = [(dG, kG, g_style)] + ([(lam, kL, l_style)] if len(lam) else [])
        n_zero = 0
        for vals, k, style in series:
            r = np.arange(1, len(vals) + 1)
            kept = np.arange(len(vals)) < k
            zero = vals <= floor
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
        notes = [f"{len(dG) - kG} dropped (no variance)"] if kG < len(dG) else []
        notes += [f"{n_zero} zero, at the bottom"] if n_zero else []
        title = f"{layer.name}: {layer.k} of {layer.d} directions kept"
        title += "\n" + "; ".join(notes) if notes else ""
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
        Line2D(
            [],
            [],
            ls="",
            marker="v",
            mec="0.3",
            mfc="none",
            label=f"zero to rounding (<= {floor:.0e})",
        ),
        Line2D(
            [], [], ls="--", color="0.3", label=f"dropped below: rtol x largest (rtol={rtol:g})"
        ),
        Line2D(
            [],
            [],
            ls=":",
            color="black",
            lw=1.2,
            label=f"eps = {analysis.eps:g}: the graph's noise scale (directions below it are "
            "kept too)",
        ),
    ]
    wanted = [True, has_lambda, True, truncates, has_zero, truncates, has_lambda]
    handles = [h for h, keep in zip(handles, wanted) if keep]
    if new:
        fig.suptitle(
            f"Spectra per layer ({basis} basis): G in activation units$^2$"
            + (", Lambda in loss units" if has_lambda else ""),
            fontsize=11,
        )
        ncol = 4 if fig.get_figwidth() >= 12 else 2
        fig.legend(
            handles=handles, loc="outside lower center", ncol=ncol, frameon=False, fontsize=9
        )
    else:
        axes[0].legend(handles=handles, fontsize=9, frameon=False)
    return fig


def _floor(spectra, rtol: float | None, eps: float) -> float:
    """One floor for every panel: a decade below the lowest threshold drawn (``rtol * max`` of
    each spectrum, ``eps`` on Lambda), or below the smallest positive value without thresholds.
    Values below it are zero to rounding (they do not stretch the axis to 1e-48)."""
    marks = []
    for dG, lam in spectra:
        for v in (dG, lam):
            if len(v) and v[0] > 0:
                marks.append(rtol * v[0] if rtol is not None else v[v > 0].min())
        if len(lam):
            marks.append(eps)
    lowest = min(marks) if marks else 1.0
    return 10.0 ** (math.floor(math.log10(lowest)) - 1)

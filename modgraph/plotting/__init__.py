"""Figures: one style module (:mod:`modgraph.plotting.style`), one file per figure family.

Every plot takes ``ax=None`` and draws into the caller's axes when given one; single-panel plots
return their Axes, multi-panel plots their Figure (each docstring says which). Nothing here calls
``plt.show()``; :func:`save_figure` writes a figure atomically.
"""

from .comparison import plot_basis_comparison
from .degeneracy import plot_degeneracy
from .faithfulness import plot_faithfulness
from .graph import plot_graph
from .interactive import interactive_report, save_html
from .modules import plot_cost_curve, plot_module_heatmap
from .samples import example_details
from .spectra import plot_spectra
from .style import MODULE_COLORS, module_style, save_figure

__all__ = [
    "plot_graph",
    "plot_spectra",
    "plot_cost_curve",
    "plot_module_heatmap",
    "plot_basis_comparison",
    "plot_degeneracy",
    "plot_faithfulness",
    "save_figure",
    "interactive_report",
    "save_html",
    "example_details",
    "module_style",
    "MODULE_COLORS",
]

"""Modules of an interaction graph: the paper's cost, Leiden and spectral solvers, the null.

Bushnaq et al. 2024 (sec. 5) score a split of the network into modules by what it costs to cut the
edges between modules: an edge of strength ``w`` costs ``ln(w / eps^1/2)`` (nothing when
``w <= eps^1/2``, so those edges are not in the graph at all). The best modules minimise

.. math::

    \\mathrm{cost}(z) = \\sum_{(a, b) \\in E,\\ z_a \\neq z_b} \\ln\\left(
        \\frac{w_{ab}}{\\varepsilon^{1/2}}\\right),

which alone is minimised by putting everything in one module, so every method here adds a notion
of module size: Leiden through its quality function (modularity or CPM), spectral clustering
through the normalized Laplacian (a relaxation of the normalized cut) and a fixed number of modules.

Nodes without any edge (every interaction below ``eps^1/2``) carry no information about modules;
they get the label ``-1`` ("unassigned") and are not counted in ``n_modules``.
"""

from .find import CostCurve, cost_curve, find_modules
from .null import Significance, module_significance, shuffled_graph
from .objective import (
    UNASSIGNED,
    ModuleResult,
    adjusted_rand_index,
    cross_module_cost,
    module_interactions,
    normalized_cut,
)

__all__ = [
    "UNASSIGNED",
    "ModuleResult",
    "CostCurve",
    "Significance",
    "find_modules",
    "cross_module_cost",
    "normalized_cut",
    "cost_curve",
    "module_significance",
    "shuffled_graph",
    "adjusted_rand_index",
    "module_interactions",
]

"""Modules of an interaction graph: one objective, two solvers, a null model, the number.

Bushnaq et al. 2024 (sec. 5) score a split of the network into modules by what it costs to cut the
edges between modules: an edge of strength ``w`` costs ``ln(w / eps^1/2)`` (nothing when
``w <= eps^1/2``, so those edges are not in the graph at all):

.. math::

    \\mathrm{cost}(z) = \\sum_{(a, b) \\in E,\\ z_a \\neq z_b} \\ln\\left(
        \\frac{w_{ab}}{\\varepsilon^{1/2}}\\right).

That alone is minimised by one module, and at a fixed number of modules by cutting off weakly
connected nodes one by one, so modules minimise it per unit of module strength, the normalized
cut (:func:`normalized_cut`, which derives it). Leiden and spectral clustering start the search
(:mod:`.solvers`), single-node moves finish it (:mod:`.refine`); :mod:`.null` draws graphs
without modules and tests a partition against them; :mod:`.find` chooses the number of modules
from those tests. :mod:`.mapequation` is the other principle: once the scan finds the graph
modular, the map equation (Infomap) chooses the modules and their number, as the shortest
description of a walk on the graph, with splits that are no evidence of modules joined (the
default of ``find_modules`` when the number is chosen automatically; Leiden's recursive
bisection with ``method="leiden"``).

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

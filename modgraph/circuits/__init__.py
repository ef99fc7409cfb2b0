"""Circuit finding in the interaction basis: ablations, module tests, circuits, faithfulness.

- :mod:`~modgraph.circuits.ablation`: the engine that removes basis directions and edges;
- :mod:`~modgraph.circuits.modules`: each module removed or kept alone, what it reads and writes;
- :mod:`~modgraph.circuits.faithfulness`: the smallest circuit, faithfulness curves;
- :mod:`~modgraph.circuits.eps`: eps chosen from a task metric by edge ablation.
"""

from .ablation import EDGE_METHODS, MODES, run_ablated, run_edge_ablated
from .eps import METRICS, EdgesNeeded, EpsChoice, choose_eps, edges_needed
from .faithfulness import Circuit, FaithfulnessCurve, faithfulness_curve, smallest_circuit
from .modules import ModuleAblation, ModuleIO, module_ablation, module_io

__all__ = [
    "MODES",
    "EDGE_METHODS",
    "run_ablated",
    "run_edge_ablated",
    "ModuleAblation",
    "module_ablation",
    "ModuleIO",
    "module_io",
    "Circuit",
    "smallest_circuit",
    "FaithfulnessCurve",
    "faithfulness_curve",
    "METRICS",
    "EpsChoice",
    "choose_eps",
    "EdgesNeeded",
    "edges_needed",
]

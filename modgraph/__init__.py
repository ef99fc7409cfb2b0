"""modgraph: find modules in neural networks through the interaction basis.

Bushnaq et al., "Using Degeneracy in the Loss Landscape for Mechanistic Interpretability"
(arXiv 2405.10927): a model and data go in; the model is converted to the interaction basis; a
graph of interaction strengths ln(w / eps^1/2) is built; modules are the partition that cuts the
least interaction.
"""

__version__ = "0.1.0"

from .ablation import (
    Circuit,
    FaithfulnessCurve,
    ModuleAblation,
    ModuleIO,
    behavioural_loss,
    faithfulness_curve,
    module_ablation,
    module_io,
    plot_faithfulness,
    run_ablated,
    run_edge_ablated,
    smallest_circuit,
)
from .basis import LayerBasis, fit_basis
from .chain import Batches, LayerChain
from .degeneracy import (
    effective_parameter_count,
    layer_ranks,
    llc_estimate,
    plot_degeneracy,
    synchronized_blocks,
)
from .errors import InputError, NonFiniteError
from .graph import InteractionGraph
from .partition import (
    ModuleResult,
    adjusted_rand_index,
    cost_curve,
    cross_module_cost,
    find_modules,
    module_significance,
)
from .pipeline import Analysis, analyze, load_analysis
from .sparsify import BlockGate, SparsifiedLayer, SparsifiedModel, sparsify
from .statistics import LayerStatistics
from .transformer import TinyTransformer, transformer_chain

__all__ = [
    "Circuit",
    "FaithfulnessCurve",
    "ModuleAblation",
    "ModuleIO",
    "behavioural_loss",
    "faithfulness_curve",
    "module_ablation",
    "module_io",
    "plot_faithfulness",
    "run_ablated",
    "run_edge_ablated",
    "smallest_circuit",
    "sparsify",
    "transformer_chain",
    "Analysis",
    "Batches",
    "BlockGate",
    "InputError",
    "InteractionGraph",
    "ModuleResult",
    "LayerBasis",
    "LayerChain",
    "LayerStatistics",
    "NonFiniteError",
    "SparsifiedLayer",
    "SparsifiedModel",
    "TinyTransformer",
    "adjusted_rand_index",
    "analyze",
    "cost_curve",
    "cross_module_cost",
    "effective_parameter_count",
    "find_modules",
    "layer_ranks",
    "llc_estimate",
    "module_significance",
    "plot_degeneracy",
    "synchronized_blocks",
    "fit_basis",
    "load_analysis",
]

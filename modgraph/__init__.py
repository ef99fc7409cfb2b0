"""modgraph: find modules in neural networks through the interaction basis.

Bushnaq et al., "Using Degeneracy in the Loss Landscape for Mechanistic Interpretability"
(arXiv 2405.10927). The pipeline, one module per stage, in order:

1. :mod:`~modgraph.chain`, :mod:`~modgraph.hooked` and :mod:`~modgraph.data`: the model cut into
   layers (stage modules of an ``nn.Sequential``, or module paths of any model read through
   forward hooks); the data as batches;
2. :mod:`~modgraph.statistics`: streamed float64 means, activation Grams G, Jacobian Grams M;
3. :mod:`~modgraph.basis`: the interaction basis C = Lambda^1/2 V (D_G^1/2)^+ U per layer, and
   :mod:`~modgraph.rotation`, the sparse rotation of pairs the data leaves undetermined;
4. :mod:`~modgraph.edges`: interaction strengths w between directions of adjacent layers;
5. :mod:`~modgraph.graph`: nodes are directions, edges of strength ln(w / eps^1/2);
6. :mod:`~modgraph.partition`: modules (Leiden, spectral), the paper's cost, the null model;
7. :mod:`~modgraph.report`: figures, GraphML, the analysis and a summary, written atomically.

:func:`analyze` (:mod:`~modgraph.pipeline`) runs stages 1-5 and returns an :class:`Analysis`;
:func:`write_report` runs 6-7. Side areas: :mod:`~modgraph.diagnostics` (degeneracy: ranks,
synchronized ReLUs, N_eff, LLC, sparsify), :mod:`~modgraph.circuits` (ablations, module tests,
circuits, faithfulness), :mod:`~modgraph.plotting`, :mod:`~modgraph.adapters` (transformers) and
:mod:`~modgraph.toys` (the demo, planted networks, a tiny transformer).
"""

from ._version import __version__
from .adapters import transformer_chain
from .analysis import Analysis, load_analysis
from .basis import LayerBasis, fit_basis
from .chain import LayerChain
from .circuits import (
    Circuit,
    EdgesNeeded,
    EpsChoice,
    FaithfulnessCurve,
    ModuleAblation,
    ModuleIO,
    choose_eps,
    edges_needed,
    faithfulness_curve,
    module_ablation,
    module_io,
    run_ablated,
    run_edge_ablated,
    smallest_circuit,
)
from .data import Batches
from .diagnostics import (
    BlockGate,
    EffectiveParameterCount,
    LayerRank,
    LayerRanks,
    LLCEstimate,
    SparsifiedLayer,
    SparsifiedModel,
    SynchronizedBlocks,
    effective_parameter_count,
    layer_ranks,
    llc_estimate,
    sparsify,
    synchronized_blocks,
)
from .errors import InputError, NonFiniteError
from .graph import InteractionGraph
from .hooked import HookedChain
from .loss import behavioral_loss
from .partition import (
    CostCurve,
    ModuleResult,
    Significance,
    adjusted_rand_index,
    cost_curve,
    cross_module_cost,
    find_modules,
    module_significance,
    normalized_cut,
)
from .pipeline import analyze
from .plotting import (
    plot_basis_comparison,
    plot_cost_curve,
    plot_degeneracy,
    plot_faithfulness,
    plot_graph,
    plot_module_heatmap,
    plot_spectra,
    save_figure,
)
from .report import write_report
from .statistics import LayerStatistics
from .toys import TinyTransformer

__all__ = [
    "__version__",
    # stages 1-5
    "LayerChain",
    "HookedChain",
    "Batches",
    "LayerStatistics",
    "LayerBasis",
    "fit_basis",
    "InteractionGraph",
    "analyze",
    "Analysis",
    "choose_eps",
    "EpsChoice",
    "edges_needed",
    "EdgesNeeded",
    "load_analysis",
    # stages 6-7
    "ModuleResult",
    "CostCurve",
    "Significance",
    "find_modules",
    "cross_module_cost",
    "normalized_cut",
    "cost_curve",
    "module_significance",
    "adjusted_rand_index",
    "write_report",
    # errors
    "InputError",
    "NonFiniteError",
    # circuits
    "behavioral_loss",
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
    # diagnostics
    "LayerRank",
    "LayerRanks",
    "layer_ranks",
    "SynchronizedBlocks",
    "synchronized_blocks",
    "EffectiveParameterCount",
    "effective_parameter_count",
    "LLCEstimate",
    "llc_estimate",
    "BlockGate",
    "SparsifiedLayer",
    "SparsifiedModel",
    "sparsify",
    # plotting
    "plot_graph",
    "plot_spectra",
    "plot_cost_curve",
    "plot_module_heatmap",
    "plot_basis_comparison",
    "plot_degeneracy",
    "plot_faithfulness",
    "save_figure",
    # adapters and toys
    "transformer_chain",
    "TinyTransformer",
]

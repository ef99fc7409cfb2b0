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
:func:`write_report` runs 6-7. The top level holds the pipeline and the module stage; the side
areas are subpackages, imported with ``modgraph``: :mod:`~modgraph.diagnostics` (degeneracy:
ranks, synchronized ReLUs, N_eff, LLC, sparsify), :mod:`~modgraph.circuits` (ablations, module
tests, circuits, faithfulness, the task tolerance's eps), :mod:`~modgraph.plotting` (every
figure), :mod:`~modgraph.adapters` (transformers) and :mod:`~modgraph.toys` (the demo, planted
networks, a tiny transformer); :mod:`~modgraph.partition` has the objective's parts.
"""

# the side areas, as attributes: mg.circuits.faithfulness_curve, mg.diagnostics.layer_ranks, ...
from . import adapters, circuits, diagnostics, partition, plotting, toys  # noqa: F401
from ._version import __version__
from .adapters import transformer_chain
from .analysis import Analysis, load_analysis
from .chain import LayerChain
from .circuits import EdgesNeeded, EpsChoice, choose_eps, edges_needed
from .errors import InputError, NonFiniteError
from .graph import InteractionGraph
from .hooked import HookedChain
from .partition import (
    CostCurve,
    ModuleResult,
    Significance,
    cost_curve,
    find_modules,
    module_significance,
)
from .pipeline import analyze
from .plotting import plot_cost_curve, plot_graph, plot_spectra
from .report import write_report

__all__ = [
    "__version__",
    # the model and the analysis (stages 1-5)
    "analyze",
    "Analysis",
    "load_analysis",
    "InteractionGraph",
    "LayerChain",
    "HookedChain",
    "transformer_chain",
    "choose_eps",
    "EpsChoice",
    "edges_needed",
    "EdgesNeeded",
    # modules (stages 6-7)
    "find_modules",
    "ModuleResult",
    "Significance",
    "module_significance",
    "cost_curve",
    "CostCurve",
    "write_report",
    "plot_graph",
    "plot_spectra",
    "plot_cost_curve",
    # errors
    "InputError",
    "NonFiniteError",
]

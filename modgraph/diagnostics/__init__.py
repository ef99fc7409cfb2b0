"""Degeneracy diagnostics: how many parameters the network really uses (paper sec. 2-4).

- :func:`layer_ranks`: the activation Gram G and Jacobian Gram M of every layer, their numerical
  ranks, and the parameters each rank drop frees (sec. 3.1);
- :func:`synchronized_blocks`: ReLUs that fire on the same inputs, and the degrees of freedom that
  adds (sec. 3.2);
- :func:`effective_parameter_count`: ``N_eff(eps) = 2 lambda_B(eps)`` (sec. 2), from the rank of
  the Hessian of the behavioral loss or from the local learning coefficient
  (:func:`llc_estimate`, SGLD);
- :func:`sparsify`: the reparametrization of sec. 4 that turns those degeneracies into absent
  interactions.

:func:`modgraph.plotting.plot_degeneracy` draws the report figure.
"""

from .hessian import EffectiveParameterCount, effective_parameter_count
from .llc import LLCEstimate, llc_estimate
from .ranks import LayerRank, LayerRanks, layer_ranks
from .sparsify import BlockGate, SparsifiedLayer, SparsifiedModel, sparsify
from .synchronized import SynchronizedBlocks, synchronized_blocks

__all__ = [
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
]

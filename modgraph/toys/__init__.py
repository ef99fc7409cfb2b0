"""Toys with known answers: the demo problem, planted modular networks, a tiny transformer.

Shared by the tests, the benchmarks, the examples and ``modgraph demo``; nothing in the pipeline
imports them.
"""

from .demo import DemoProblem, make_demo, true_modules
from .planted import CASES, Case, Planted, hide_relu_neurons, make_case, planted_mlp
from .transformer import TinyTransformer, modular_addition_data, train_modular_addition

__all__ = [
    "DemoProblem",
    "make_demo",
    "true_modules",
    "Case",
    "CASES",
    "make_case",
    "Planted",
    "hide_relu_neurons",
    "planted_mlp",
    "TinyTransformer",
    "modular_addition_data",
    "train_modular_addition",
]

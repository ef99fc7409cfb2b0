"""modgraph: find modules in neural networks through the interaction basis."""

__version__ = "0.1.0"

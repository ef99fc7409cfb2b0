"""Is a partition's cost lower than on graphs without module structure? The null model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._validation import check_instance, check_int, check_seed
from ..errors import InputError
from ..graph import InteractionGraph
from .find import solve
from .objective import ConnectedGraph, ModuleResult, check_graph, cross_module_cost

__all__ = ["Significance", "shuffled_graph", "module_significance"]


@dataclass(frozen=True)
class Significance:
    """How a partition's cost compares with partitions of shuffled graphs.

    Attributes
    ----------
    cost : float
        Cross-module cost of the partition tested.
    null_costs : ndarray of float64, shape (n_null,)
        Cost of the partition found, with the same parameters, on each shuffled graph.
    z : float
        ``(cost - mean(null_costs)) / std(null_costs, ddof=1)``; strongly negative = modular.
    p_value : float
        One-sided, ``(1 + #{null_costs <= cost}) / (1 + n_null)``; never below
        ``1 / (1 + n_null)``.
    n_null : int
    params : dict
        Parameters used to partition the null graphs.
    """

    cost: float
    null_costs: np.ndarray
    z: float
    p_value: float
    n_null: int
    params: dict = field(default_factory=dict)


def shuffled_graph(graph: InteractionGraph, rng: np.random.Generator) -> InteractionGraph:
    """The null model: each ``w[l]``'s entries permuted over all positions of that matrix.

    Layer sizes, importances and the number of edges between each pair of layers (and their
    strengths) are kept; only which directions they join is randomised.
    """
    w = tuple(rng.permutation(wl.ravel()).reshape(wl.shape) for wl in graph.w)
    return InteractionGraph(graph.layer_names, graph.importance, w, eps=graph.eps)


def module_significance(
    graph: InteractionGraph, result: ModuleResult, *, n_null: int = 20, seed: int = 0
) -> Significance:
    """Is the partition's cross-module cost lower than on graphs without module structure?

    Each null graph is ``graph`` with the entries of every ``w[l]`` shuffled (see
    :func:`shuffled_graph`), partitioned with ``result.params``. For ``method="spectral"`` the
    null partitions get ``n_modules = result.n_modules``, so like is compared with like (the cost
    grows with the number of modules); Leiden keeps its parameters and finds its own number.

    The null costs of spectral partitions with ``refine=True`` are spread widely: on a graph
    without modules the refinement sometimes erodes modules to single nodes (low cost) and
    sometimes not, so read ``p_value`` rather than ``z`` there, or test a ``refine=False`` result.

    Parameters
    ----------
    graph : InteractionGraph
        The graph ``result`` partitions.
    result : ModuleResult
    n_null : int
        Number of shuffled graphs, at least 2.
    seed : int
        Seed of the shuffles (the partitions use ``result.params["seed"]``).

    Returns
    -------
    Significance
        ``z`` strongly negative and ``p_value`` near ``1 / (1 + n_null)`` mean significant
        modularity. With zero spread in the null costs, ``z`` is 0 if ``cost`` equals them and
        +-inf otherwise.
    """
    where = "module_significance"
    check_graph(graph, where)
    check_instance(where, "result", result, ModuleResult)
    n_null = check_int(where, "n_null", n_null, low=2)
    check_seed(where, seed)
    if graph.n_edges == 0:
        raise InputError(
            "graph has no edges, so there is nothing to test (every w <= eps^1/2; lower eps)"
        )
    cost = cross_module_cost(graph, result.membership)
    params = dict(result.params)
    if params.get("method") == "spectral":
        params["n_modules"] = result.n_modules
    rng = np.random.default_rng(seed)
    null_costs = np.empty(n_null)
    for t in range(n_null):
        null = shuffled_graph(graph, rng)
        sub = ConnectedGraph(null)
        p = dict(params)
        if p.get("n_modules") is not None:
            p["n_modules"] = min(p["n_modules"], sub.n)  # shuffling can strand nodes
        null_costs[t] = solve(sub, p).cost
    mean, sd = float(null_costs.mean()), float(null_costs.std(ddof=1))
    if sd > 0:
        z = (cost - mean) / sd
    else:
        z = 0.0 if cost == mean else math.copysign(math.inf, cost - mean)
    p_value = (1 + int(np.sum(null_costs <= cost))) / (1 + n_null)
    return Significance(
        cost=cost, null_costs=null_costs, z=float(z), p_value=p_value, n_null=n_null, params=params
    )

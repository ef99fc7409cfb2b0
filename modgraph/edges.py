"""Interaction strengths between basis directions of adjacent layers.

For direction ``j`` of layer ``l`` and direction ``i`` of layer ``l + 1`` the strength is the RMS
over the data of the gradient-times-activation attribution (paper sec. 5, eq. 34):

.. math::

    w_{ij} = \\sqrt{\\mathbb E_x\\left[\\left(\\hat f_{l,j}(x)\\,
             \\frac{\\partial \\hat f_{l+1,i}}{\\partial \\hat f_{l,j}}(x)\\right)^2\\right]}

``attribution="integrated"`` replaces the gradient by its average along the straight path from the
layer's mean (``alpha = 0``) to ``f_hat`` (``alpha = 1``), with Gauss-Legendre or trapezoid
quadrature; for a linear stage every point on the path has the same gradient, so both agree.
The part of the activation the basis dropped is held fixed along the path. The result equals
captum's ``IntegratedGradients`` on each layer pair to rounding; computing all pairs and targets
in one vmapped pass is faster than captum's one call per target (``benchmarks/bench_libraries.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.func import vjp

from . import distributed
from ._validation import check_choice, check_int
from .basis import LayerBasis
from .chain import Chain
from .data import Batches
from .errors import InputError
from .statistics import DEFAULT_JACOBIAN_BUDGET, check_finite, checked_forward, jacobian_rows, rows

__all__ = [
    "interaction_strengths",
    "output_attribution",
    "quadrature",
    "PositionSources",
    "ATTRIBUTIONS",
]

ATTRIBUTIONS = ("gradient", "integrated")
RULES = ("gauss-legendre", "trapezoid")


@dataclass(frozen=True)
class PositionSources:
    """Random-sign sources over output positions for the edges of sequence layers.

    The edge sums the squared attribution over output positions ``t`` (per input position
    ``s``, then the mean over samples and ``s``): ``w_ij^2 = E_{x,s}[sum_t a_{ts}^2]`` with
    ``a_{ts} = f_hat_{s,j} d f_hat_{t,i} / d f_hat_{s,j}``. Exact, that is one backward per
    direction ``i`` and output position ``t``, ``O(T^2)`` per sequence. With ``n`` sources, one
    backward per direction and source of ``sum_t phi_t f_hat_{t,i}`` (``phi_t = +-1`` at random
    per sample and position) gives ``sum_t phi_t a_{ts}``, whose square is ``sum_t a_{ts}^2`` in
    expectation: ``O(T)`` per sequence, unbiased for ``w**2``, relative error ~ ``sqrt(2 / n)``
    per sample and input position before the mean over the data shrinks it. The square stays
    per input position ``s``, as the exact edge has it; the reference code (``rib``) sums over
    input positions before squaring, which counts attributions of opposite sign at two
    positions as cancelling. ``analyze(position_sources=n)`` estimates ``M`` the same way
    (:func:`~modgraph.statistics.jacobian_rows`).

    Attributes
    ----------
    n : int
        Sources per direction (at least 1); layers of at most ``n`` output positions are exact.
    seed : int
        Seed of the signs (each batch and layer pair draws its own from it).
    """

    n: int
    seed: int = 0

    def __post_init__(self):
        check_int("PositionSources", "n", self.n, low=1)
        check_int("PositionSources", "seed", self.seed, low=0)

    def at(self, batch: int, pair: int) -> tuple[int, int]:
        """(number, seed) of the sources of batch ``batch`` at layer pair ``pair``."""
        return self.n, (self.seed * 1_000_003 + batch * 1_009 + pair) % (2**63 - 1)


def quadrature(n_steps: int, rule: str = "gauss-legendre") -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights (summing to 1) for the path integral.

    Examples
    --------
    >>> a, w = quadrature(3, "trapezoid")
    >>> a.tolist(), w.tolist()
    ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25])
    """
    check_int("quadrature", "n_steps", n_steps, low=1)
    check_choice("quadrature", "rule", rule, RULES)
    if rule == "gauss-legendre":
        x, w = np.polynomial.legendre.leggauss(n_steps)
        return (x + 1) / 2, w / 2
    if rule == "trapezoid":
        if n_steps < 2:
            raise InputError(f"the trapezoid rule needs n_steps >= 2, got {n_steps}")
        a = np.linspace(0.0, 1.0, n_steps)
        w = np.full(n_steps, 1.0 / (n_steps - 1))
        w[[0, -1]] /= 2
        return a, w
    raise AssertionError(rule)  # unreachable: checked above


@torch.no_grad()
def interaction_strengths(  # noqa: PLR0913 (a stage function: analyze passes its options)
    chain: Chain,
    bases: list[LayerBasis],
    batches: Batches,
    *,
    attribution: str = "gradient",
    n_steps: int = 8,
    rule: str = "gauss-legendre",
    jacobian_budget: int = DEFAULT_JACOBIAN_BUDGET,
    sources: PositionSources | None = None,
    on_batch: Callable[[list[Tensor]], None] | None = None,
) -> list[Tensor]:
    """RMS attribution ``w`` between the basis directions of every pair of adjacent layers.

    Parameters
    ----------
    chain : LayerChain
    bases : list of LayerBasis
        One per layer of the chain.
    batches : Batches
        The data, read once.
    attribution : {"gradient", "integrated"}
    n_steps, rule :
        Quadrature for ``attribution="integrated"`` (see :func:`quadrature`).
    sources : PositionSources, optional
        For sequence layers: estimate the sum over output positions with random-sign sources
        instead of one Jacobian row per output position. ``None``: exact.
    on_batch : callable, optional
        Called with every batch's activations (one tensor per layer), so that other per-sample
        work (the exemplars, :mod:`modgraph.exemplars`) shares this pass over the data.

    Returns
    -------
    list of Tensor
        ``w[l]`` of shape (k_{l+1}, k_l), float64. For sequences the expectation runs over
        (sample, input position) pairs and the squared attributions of all output positions
        are summed, the convention of ``M`` (see :mod:`modgraph.statistics`).
    """
    check_choice("interaction_strengths", "attribution", attribution, ATTRIBUTIONS)
    if attribution == "integrated":
        alphas, weights = quadrature(n_steps, rule)
    else:
        alphas, weights = np.ones(1), np.ones(1)
    sums = [
        torch.zeros(bases[l + 1].k, bases[l].k, dtype=torch.float64, device=batches.device)
        for l in range(len(chain) - 1)
    ]
    counts = [0] * (len(chain) - 1)
    error, seen = None, False
    try:
        for b, x in enumerate(batches):
            seen = True
            acts = checked_forward(chain, x, b)
            if on_batch is not None:
                on_batch(acts)
            for l in range(len(chain) - 1):
                stage, src, dst, f = chain.stage(l, x), bases[l], bases[l + 1], acts[l]
                if src.k == 0 or dst.k == 0 or not f.is_floating_point():
                    continue
                # per-sample Jacobians in the model's dtype (float32 contractions run ~2.5x
                # faster than float64 here); their squares are summed in float64
                f_hat = src.transform(f).to(f.dtype)
                C_pinv = src.C_pinv.to(f.dtype)
                if attribution == "integrated":  # basis part of f - mean; the rest stays fixed
                    along = f_hat @ C_pinv.T
                    paths = [vjp(stage, f - (1.0 - a) * along) for a in alphas]
                else:
                    paths = [vjp(stage, f)]
                for rows_idx, weight, grad in _path_jacobians(
                    paths,
                    weights,
                    dst.C.to(f.dtype),
                    f.numel() // x.shape[0],
                    jacobian_budget,
                    (src.name, b),
                    None if sources is None else sources.at(b, l),
                ):
                    attr = (grad @ C_pinv) * f_hat  # (c, B, [P,] k_l)
                    sums[l].index_add_(0, rows_idx, weight * rows_sum(attr.square()))
                counts[l] += rows(f).shape[0]
        if not seen:
            raise InputError("data is empty: it yielded no samples")
    except Exception as err:  # every rank must learn of it before the next collective
        error = err
    distributed.settle(error)
    return _rms(sums, counts)


def _rms(sums: list[Tensor], counts: list[int]) -> list[Tensor]:
    """Root of the mean square, with sums and sample counts added up over all ranks."""
    out = []
    for s, n in zip(sums, counts):
        n = distributed.all_sum(torch.tensor(float(n), dtype=torch.float64)).item()
        out.append((distributed.all_sum(s) / max(n, 1)).sqrt())
    return out


def rows_sum(t: Tensor) -> Tensor:
    """Sum a (chunk, batch, [positions,] k) tensor over samples and positions, in float64."""
    return t.reshape(t.shape[0], -1, t.shape[-1]).sum(1, dtype=torch.float64)


def _path_jacobians(paths, weights, readout, width, budget, where, sources=None):
    """Chunks of ``(row index, weight, quadrature-averaged Jacobian rows)`` of ``readout @
    stage``; ``where`` = (layer name, batch) for errors; ``sources`` = (number, seed) of
    position sources, the same signs on every path."""
    out = paths[0][0]
    n, seed = sources if sources is not None else (None, None)
    chunks = [
        jacobian_rows(
            pullback,
            out,
            readout,
            width=width,
            budget=budget,
            position_sources=n,
            generator=None if seed is None else torch.Generator().manual_seed(seed),
        )
        for _, pullback in paths
    ]
    for parts in zip(*chunks):
        grad = 0.0
        for (_, _, (g,)), wq in zip(parts, weights):
            check_finite(g, "Jacobian", *where)
            grad = grad + float(wq) * g
        yield parts[0][0], parts[0][1], grad


@torch.no_grad()
def output_attribution(
    chain: Chain,
    bases: list[LayerBasis],
    batches: Batches,
    *,
    jacobian_budget: int = DEFAULT_JACOBIAN_BUDGET,
) -> list[Tensor]:
    """RMS attribution from every basis direction to every output dimension.

    ``A[l][o, j] = sqrt(E_x[(f_hat_{l,j} * d f_L,o / d f_hat_{l,j})^2])``: the same
    gradient-times-activation measure as the edges, taken from layer ``l`` straight to the raw
    output dimensions (summed over output positions for sequences). It says which outputs a
    direction drives (the ground truth of a planted module) and which directions an output reads.

    Returns
    -------
    list of Tensor
        ``A[l]`` of shape (d_out, k_l), float64, one per layer.
    """
    L = len(chain) - 1
    sums: list[Tensor] | None = None
    counts = [0] * (L + 1)
    error = None
    try:
        for b, x in enumerate(batches):
            acts = checked_forward(chain, x, b)
            d_out = acts[-1].shape[-1]
            if sums is None:
                sums = [
                    torch.zeros(d_out, basis.k, dtype=torch.float64, device=x.device)
                    for basis in bases
                ]
            eye = torch.eye(d_out, dtype=acts[-1].dtype, device=x.device)
            for l in range(L + 1):
                basis, f = bases[l], acts[l]
                if basis.k == 0 or not f.is_floating_point():
                    continue
                f_hat = basis.transform(f).to(f.dtype)
                C_pinv = basis.C_pinv.to(f.dtype)
                paths = [vjp(lambda f, l=l, x=x: chain.run_from(l, f, x), f)]
                for rows_idx, _, grad in _path_jacobians(
                    paths, [1.0], eye, f.numel() // x.shape[0], jacobian_budget, (basis.name, b)
                ):
                    sums[l].index_add_(0, rows_idx, rows_sum(((grad @ C_pinv) * f_hat).square()))
                counts[l] += rows(f).shape[0]
        if sums is None:
            raise InputError("data is empty: it yielded no samples")
    except Exception as err:  # every rank must learn of it before the next collective
        error = err
    distributed.settle(error)
    return _rms(sums, counts)

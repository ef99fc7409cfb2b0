"""Layer ranks: the activation and Jacobian Gram spectra of every layer, and the parameters each
rank drop frees (paper sec. 3.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from .._linalg import eigvals_desc
from .._validation import check_int, check_real
from ..chain import LayerChain, LayerSelector, device_and_dtype
from ..data import Batches
from ..errors import InputError
from ..statistics import global_statistics

__all__ = ["LayerRank", "LayerRanks", "layer_ranks"]


# ---------------------------------------------------------------------------------- layer ranks
@dataclass(frozen=True)
class LayerRank:
    """Rank diagnostics of one layer ``f_l`` (see :func:`layer_ranks`).

    Attributes
    ----------
    name : str
        Layer name in the chain.
    width : int
        ``d_l``, the number of features of the layer (flattened).
    activation_eigenvalues : ndarray of shape (d_l,)
        Eigenvalues of the centered activation Gram ``G_l = E[(f - mu)(f - mu)^T]``, largest first,
        in the activations' own units squared.
    jacobian_eigenvalues : ndarray of shape (d_l,)
        Eigenvalues of ``M_l = E[J^T J]`` with ``J = d f_out / d f_l``, largest first.
    activation_rank, jacobian_rank : int
        Number of eigenvalues above ``threshold``.
    preactivation_rank : int or None
        Rank of ``M`` taken at the output of the ``nn.Linear`` that writes this layer (before its
        nonlinearity), which is what frees that Linear's weights; None where no Linear writes the
        layer.
    freed_by_activations : int
        Parameters of the ``nn.Linear`` that reads this layer which the activation rank drop frees:
        ``(d_l - rank G_l) * d_out`` (sec. 3.1).
    freed_by_jacobians : int
        Parameters of the ``nn.Linear`` that writes this layer which the Jacobian rank drop frees:
        ``(d_pre - rank M_pre) * (d_{l-1} + bias)`` (sec. 3.1).
    double_counted : int
        Weights of the Linear reading this layer that both of the above free (its input's
        activation drop times its output's Jacobian drop); subtracted once in the total.
    """

    name: str
    width: int
    activation_eigenvalues: np.ndarray = field(repr=False)
    jacobian_eigenvalues: np.ndarray = field(repr=False)
    activation_rank: int
    jacobian_rank: int
    preactivation_rank: int | None
    freed_by_activations: int
    freed_by_jacobians: int
    double_counted: int


@dataclass(frozen=True)
class LayerRanks:
    """Result of :func:`layer_ranks`: one :class:`LayerRank` per chain layer, input first."""

    layers: tuple[LayerRank, ...]
    threshold: float
    n_samples: int
    n_params: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.layers)

    @property
    def total_freed(self) -> int:
        """Parameters freed by all rank drops, each weight counted once."""
        return sum(
            r.freed_by_activations + r.freed_by_jacobians - r.double_counted for r in self.layers
        )

    def to_dict(self) -> dict[str, list]:
        """Column-wise plain-Python summary (no spectra), e.g. for JSON or a DataFrame."""
        keys = (
            "name",
            "width",
            "activation_rank",
            "jacobian_rank",
            "preactivation_rank",
            "freed_by_activations",
            "freed_by_jacobians",
            "double_counted",
        )
        return {k: [getattr(r, k) for r in self.layers] for k in keys}

    def table(self) -> str:
        """The summary as a fixed-width text table."""
        head = ("layer", "d", "rank G", "rank M", "rank M_pre", "freed(G)", "freed(M)", "both")
        rows = [head] + [
            (
                r.name,
                r.width,
                r.activation_rank,
                r.jacobian_rank,
                "-" if r.preactivation_rank is None else r.preactivation_rank,
                r.freed_by_activations,
                r.freed_by_jacobians,
                r.double_counted,
            )
            for r in self.layers
        ]
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
        lines = ["  ".join(str(v).rjust(w) for v, w in zip(row, widths)) for row in rows]
        lines.append(
            f"total freed: {self.total_freed} of {self.n_params} parameters "
            f"(threshold={self.threshold:g})"
        )
        return "\n".join(lines)


def _leading_linear(stage: nn.Module) -> tuple[nn.Linear, nn.Module | None] | None:
    """``(linear, rest)`` when a stage is ``Linear`` or ``Sequential(Linear, ...)``, else None."""
    if isinstance(stage, nn.Linear):
        return stage, None
    if isinstance(stage, nn.Sequential) and len(stage) and isinstance(stage[0], nn.Linear):
        return stage[0], (stage[1:] if len(stage) > 1 else None)
    return None


def _split_preactivations(chain: LayerChain) -> tuple[LayerChain, list[int], dict[int, int]]:
    """The chain with every ``Sequential(Linear, rest...)`` stage cut after its Linear.

    Returns the finer chain, the position in it of each layer of ``chain``, and, keyed by the layer
    such a stage writes, the position of its preactivation (the Linear's output). G and the global
    M of a layer do not depend on where else the chain is cut, so one pass over the finer chain
    gives the statistics of both the layers and the preactivations.
    """
    stages, names, at, pre = [], [chain.names[0]], [0], {}
    for l, stage in enumerate(chain.stages):
        lin = _leading_linear(stage)
        if lin is not None and lin[1] is not None:
            stages.append(lin[0])
            names.append(f"{chain.names[l + 1]} (pre)")
            pre[l + 1] = len(stages)
            stage = lin[1]
        stages.append(stage)
        names.append(chain.names[l + 1])
        at.append(len(stages))
    return LayerChain(tuple(stages), tuple(names)), at, pre


def layer_ranks(
    model, data, *, threshold: float, layers: LayerSelector = None, batch_size: int = 256
) -> LayerRanks:
    """Activation and Jacobian Gram spectra per layer, their ranks, and the parameters freed.

    A direction ``v`` with ``v^T G_l v = 0`` is never used by the data, so every weight reading
    it is free: for the Linear ``W_l`` of shape ``(d_out, d_l)`` reading layer ``l``, an
    activation rank drop frees ``d_out`` parameters per lost dimension. A direction ``u`` of the
    Linear's output with ``u^T M u = 0`` never reaches the output, so a Jacobian rank drop frees
    one row of ``W_l`` (and its bias), ``d_l + 1`` parameters per lost dimension (sec. 3.1,
    eqs. 12-16). Both together free
    ``(d_l + b) d_out - (r_G + b) r_M`` weights of ``W_l`` (``b = 1`` with a bias): the product of
    the two drops is counted once (``double_counted``).

    .. math::

        G_l = \\mathbb{E}_x[(f_l - \\mu_l)(f_l - \\mu_l)^T], \\qquad
        M_l = \\mathbb{E}_x\\left[\\frac{\\partial f_{out}}{\\partial f_l}^T
        \\frac{\\partial f_{out}}{\\partial f_l}\\right]

    G is centered because the bias of the reading Linear absorbs the mean: the rank of the
    uncentered moment of ``[f; 1]`` is ``rank G + 1``, so the count is the same (for a Linear
    without a bias the centered rank can undercount the used directions by one). The Jacobian rank
    that frees parameters is taken at the Linear's output, *before* its nonlinearity
    (``preactivation_rank``), since a ReLU's on/off pattern changes from input to input; ``M`` at
    the layer itself (``jacobian_rank``) is reported too.

    Parameters
    ----------
    model : nn.Sequential, list of nn.Module, or LayerChain
        The trained network, in eval mode.
    data : tensor of shape (n_samples, ...), array, or re-iterable of batches
        Inputs, as :class:`~modgraph.data.Batches` takes them (a one-shot generator is refused);
        read once.
    threshold : float
        An eigenvalue counts as nonzero when it is larger than ``threshold``. Absolute, not
        relative to the largest eigenvalue (this parameter was named ``eps`` before 0.2; that name
        still works, with a DeprecationWarning): G is in the activations' own units squared and M in
        (output units / activation units) squared, so rescaling a layer rescales its spectrum.
    layers : None, str, list of str, or callable
        Layer selector, as in :meth:`LayerChain.from_model`.
    batch_size : int
        Samples per batch. G and M come from :func:`~modgraph.statistics.global_statistics`
        (float64, centered updates), in one pass that also covers the preactivations.

    Returns
    -------
    LayerRanks

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    >>> x = torch.randn(64, 1, dtype=torch.float64) @ torch.ones(1, 3, dtype=torch.float64)
    >>> r = layer_ranks(net, x, threshold=1e-9)
    >>> r.layers[0].activation_rank, r.layers[0].freed_by_activations
    (1, 8)
    """
    eps = check_real("layer_ranks", "threshold", threshold, low=0, low_open=True)
    check_int("layer_ranks", "batch_size", batch_size, low=1)
    chain = LayerChain.from_model(model, layers)
    device, dtype = device_and_dtype(chain)
    batches = Batches(data, batch_size=batch_size, device=device, dtype=dtype, where="layer_ranks")
    fine, at, pre = _split_preactivations(chain)
    stats = global_statistics(fine, batches)
    if stats[0].n < 2:
        raise InputError(f"data has {stats[0].n} sample; ranks need at least 2 samples")
    L = len(chain.stages)
    widths = [len(stats[i].mean) for i in at]
    g_eigs = [eigvals_desc(stats[i].G) for i in at]
    m_eigs = [eigvals_desc(stats[i].M) for i in at]
    r_g = [int((e > eps).sum()) for e in g_eigs]
    r_m = [int((e > eps).sum()) for e in m_eigs]
    r_pre: list[int | None] = [None] * (L + 1)
    freed_act = [0] * (L + 1)
    freed_jac = [0] * (L + 1)
    both = [0] * (L + 1)
    for l, stage in enumerate(chain.stages):
        lin = _leading_linear(stage)
        if lin is None:
            continue
        linear = lin[0]
        if l + 1 in pre:
            r_out = int((eigvals_desc(stats[pre[l + 1]].M) > eps).sum())
        else:  # a plain Linear writes layer l + 1 itself
            r_out = r_m[l + 1]
        r_pre[l + 1] = r_out
        d_in, d_out = linear.in_features, linear.out_features
        if d_in != widths[l]:
            raise InputError(
                f"layer {chain.names[l]!r} has {widths[l]} features but its Linear reads {d_in}; "
                "layer_ranks needs flat (n_samples, d) activations"
            )
        bias = int(linear.bias is not None)
        freed_act[l] = (d_in - r_g[l]) * d_out
        freed_jac[l + 1] = (d_out - r_out) * (d_in + bias)
        both[l] = (d_in - r_g[l]) * (d_out - r_out)
    out = tuple(
        LayerRank(
            name=chain.names[l],
            width=widths[l],
            activation_eigenvalues=g_eigs[l],
            jacobian_eigenvalues=m_eigs[l],
            activation_rank=r_g[l],
            jacobian_rank=r_m[l],
            preactivation_rank=r_pre[l],
            freed_by_activations=freed_act[l],
            freed_by_jacobians=freed_jac[l],
            double_counted=both[l],
        )
        for l in range(L + 1)
    )
    n_params = sum(p.numel() for p in set(chain.parameters()))  # a shared weight counts once
    return LayerRanks(layers=out, threshold=eps, n_samples=stats[0].n, n_params=n_params)

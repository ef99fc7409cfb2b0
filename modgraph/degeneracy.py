"""Degeneracy diagnostics: how many parameters the network really uses (paper sec. 2-3).

Three views, all measured on the trained network and the data:

- :func:`layer_ranks`: the activation Gram G and Jacobian Gram M of every layer, their numerical
  ranks, and the parameters each rank drop frees (sec. 3.1).
- :func:`synchronized_blocks`: ReLUs that fire on the same inputs, and the degrees of freedom that
  adds (sec. 3.2).
- :func:`~modgraph.llc.effective_parameter_count`: ``N_eff(eps) = 2 lambda_B(eps)`` (sec. 2), from
  the rank of the Hessian of the behavioural loss or from the local learning coefficient
  (:func:`~modgraph.llc.llc_estimate`); both live in :mod:`modgraph.llc` and are re-exported here.

:func:`plot_degeneracy` draws the report figure of the first and the last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .chain import Batches, LayerChain, LayerSelector
from .errors import InputError
from .llc import (
    EffectiveParameterCount,
    LLCEstimate,
    _check_nonneg_float,
    _device_dtype,
    _eigvals_desc,
    effective_parameter_count,
    llc_estimate,
)
from .pipeline import _check_eps
from .statistics import _check_finite, global_statistics

__all__ = [
    "LayerRank",
    "LayerRanks",
    "SynchronizedBlocks",
    "LLCEstimate",
    "EffectiveParameterCount",
    "layer_ranks",
    "synchronized_blocks",
    "llc_estimate",
    "effective_parameter_count",
    "plot_degeneracy",
]

#: Okabe-Ito colours (colour-blind safe), used by :func:`plot_degeneracy`.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
_LINE_COLOURS = ("#56B4E9", "#009E73", "#E69F00", "#0072B2", "#CC79A7", "#D55E00")


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
        Number of eigenvalues above ``eps``.
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
    eps: float
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
            f"total freed: {self.total_freed} of {self.n_params} parameters (eps={self.eps:g})"
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
    model, data, *, eps: float, layers: LayerSelector = None, batch_size: int = 256
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
        Inputs, as :class:`~modgraph.chain.Batches` takes them (a one-shot generator is refused);
        read once.
    eps : float
        Noise scale: an eigenvalue counts as nonzero when it is larger than ``eps``. Absolute, not
        relative to the largest eigenvalue: G is in the activations' own units squared and M in
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
    >>> r = layer_ranks(net, x, eps=1e-9)
    >>> r.layers[0].activation_rank, r.layers[0].freed_by_activations
    (1, 8)
    """
    eps = _check_eps(eps)
    chain = LayerChain.from_model(model, layers)
    device, dtype = _device_dtype(chain)
    batches = Batches(data, batch_size=batch_size, device=device, dtype=dtype)
    fine, at, pre = _split_preactivations(chain)
    stats = global_statistics(fine, batches)
    L = len(chain.stages)
    widths = [len(stats[i].mean) for i in at]
    g_eigs = [_eigvals_desc(stats[i].G) for i in at]
    m_eigs = [_eigvals_desc(stats[i].M) for i in at]
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
            r_out = int((_eigvals_desc(stats[pre[l + 1]].M) > eps).sum())
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
    return LayerRanks(layers=out, eps=eps, n_samples=stats[0].n, n_params=n_params)


# ------------------------------------------------------------------------------ synchronized ReLUs
@dataclass(frozen=True)
class SynchronizedBlocks:
    """Result of :func:`synchronized_blocks`.

    Attributes
    ----------
    layer : str
        The ReLU layer.
    blocks : tuple of tuple of int
        Neuron indices of each block of alive neurons that fire together (singletons included),
        sorted by their smallest index. Always-on neurons form one block of their own.
    ranks : tuple of int
        ``s_a``, the rank of each block's preactivations on the inputs where it fires.
    always_on, dead : tuple of int
        Neurons positive on every input (a linear block) and on none (dead; in no block).
    degrees_of_freedom : int
        ``sum_a s_a^2`` (eq. 22).
    tol : float
        Largest within-block disagreement of firing patterns allowed (0: identical patterns).
    n_samples : int
    """

    layer: str
    blocks: tuple[tuple[int, ...], ...]
    ranks: tuple[int, ...]
    always_on: tuple[int, ...]
    dead: tuple[int, ...]
    degrees_of_freedom: int
    tol: float
    n_samples: int

    @property
    def synchronized(self) -> tuple[tuple[int, ...], ...]:
        """Blocks of two or more neurons."""
        return tuple(b for b in self.blocks if len(b) > 1)


def synchronized_blocks(
    model,
    data,
    layer: int | str,
    *,
    tol: float = 0.0,
    layers: LayerSelector = None,
    batch_size: int = 256,
    rank_rtol: float | None = None,
) -> SynchronizedBlocks:
    """Groups of ReLUs that fire on the same inputs, and the degrees of freedom they add.

    If the neurons of a block ``a`` are on for exactly the same inputs, the ReLU acts on the block
    as one switch: ``relu(p_a(x)) = s(x) p_a(x)`` with ``s(x)`` in ``{0, 1}``. Any invertible map
    ``C`` near the identity on the block's preactivations, undone by ``C^{-1}`` on the outgoing
    weights, keeps the function (sec. 3.2, eqs. 17-19). Only ``C`` restricted to the span of the
    preactivations matters, so the block adds ``s_a^2`` degrees of freedom, ``s_a`` the rank of the
    block's preactivations (eq. 22):

    .. math::

        N_{sync} = \\sum_a s_a^2 .

    Counting ``s_a`` (the rank) rather than the block size avoids double counting with
    :func:`layer_ranks`: the fibre of ``(W_out, W_in) -> W_out W_in`` for a block of ``k`` neurons
    whose preactivations have rank ``s_a`` has dimension ``(k - s_a)(d_in + d_out) + s_a^2``; the
    first term is what the activation and Jacobian rank drops of this layer already free, the second
    is the synchronisation. A block of one neuron contributes 1, the usual ReLU rescaling symmetry.

    Neurons that fire on every input are linear on the data: they fire together, so they form one
    block (and can be mixed freely). Neurons that never fire are dead: their weights are already
    free through the rank drops (a zero activation and a zero preactivation Jacobian), so they are
    listed in ``dead`` and left out of the blocks.

    Parameters
    ----------
    model : nn.Sequential, list of nn.Module, or LayerChain
    data : tensor of shape (n_samples, ...), array, or re-iterable of batches
    layer : int or str
        Position or name of a chain layer whose stage ends with ``nn.ReLU``.
    tol : float
        Approximate synchronisation: two neurons are in sync when their firing patterns disagree on
        at most a fraction ``tol`` of the inputs (the Hamming distance of the on/off patterns,
        our reading of the eq. 20 measure). Blocks are formed by complete linkage, so every pair
        in a block is within ``tol``. ``tol=0`` groups identical patterns only.
    layers : None, str, list of str, or callable
        Layer selector for the chain.
    batch_size : int
    rank_rtol : float or None
        A singular value of a block's preactivation matrix counts when above
        ``rank_rtol * sigma_max``; None: ``max(n, k) * machine eps`` of the model's dtype (numpy's
        ``matrix_rank`` rule).

    Returns
    -------
    SynchronizedBlocks

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> lin = nn.Linear(1, 3).double()
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[1.0], [2.0], [-1.0]]))
    ...     _ = lin.bias.zero_()
    >>> net = nn.Sequential(lin, nn.ReLU(), nn.Linear(3, 1).double())
    >>> res = synchronized_blocks(net, torch.linspace(-1, 1, 10).double()[:, None], 1)
    >>> res.blocks, res.ranks, res.degrees_of_freedom
    (((0, 1), (2,)), (1, 1), 2)
    """
    tol = _check_nonneg_float("tol", tol)
    if tol > 1:
        raise InputError(f"tol is a fraction of inputs and must be in [0, 1], got {tol!r}")
    chain = LayerChain.from_model(model, layers)
    l = chain.index(layer)
    name = chain.names[l]
    stage = chain.stages[l - 1] if l > 0 else None
    last = stage[-1] if isinstance(stage, nn.Sequential) else stage
    if not isinstance(last, nn.ReLU):
        raise InputError(f"layer {name!r} is not the output of a ReLU")
    before = stage[:-1] if isinstance(stage, nn.Sequential) else None
    device, dtype = _device_dtype(chain)
    pres = []
    for bi, x in enumerate(Batches(data, batch_size=batch_size, device=device, dtype=dtype)):
        with torch.no_grad():
            f = chain.forward(x, upto=l - 1)[-1]
            p = before(f) if before is not None else f
        _check_finite(p, "preactivations", name, bi)
        pres.append(p.reshape(len(p), -1).to(torch.float64).cpu())
    if not pres:
        raise InputError("data is empty: it yielded no samples")
    P = torch.cat(pres).numpy()
    n = len(P)
    on = P > 0
    counts = on.sum(0)
    dead = tuple(int(i) for i in np.flatnonzero(counts == 0))
    always = tuple(int(i) for i in np.flatnonzero(counts == n))
    alive = np.flatnonzero(counts > 0)
    labels = _group_patterns(on[:, alive], tol)
    groups: dict[int, list[int]] = {}
    for i, lab in zip(alive, labels):
        groups.setdefault(int(lab), []).append(int(i))
    blocks = sorted((tuple(g) for g in groups.values()), key=lambda b: b[0])
    eps_mach = float(np.finfo(np.float64 if dtype == torch.float64 else np.float32).eps)
    ranks = []
    for b in blocks:
        rows = on[:, list(b)].any(1)
        sub = P[np.ix_(rows, list(b))]
        sv = np.linalg.svd(sub, compute_uv=False)
        rtol = max(sub.shape) * eps_mach if rank_rtol is None else float(rank_rtol)
        ranks.append(int((sv > rtol * sv[0]).sum()) if sv.size and sv[0] > 0 else 0)
    return SynchronizedBlocks(
        layer=name,
        blocks=tuple(blocks),
        ranks=tuple(ranks),
        always_on=always,
        dead=dead,
        degrees_of_freedom=int(sum(s * s for s in ranks)),
        tol=tol,
        n_samples=n,
    )


def _group_patterns(on: np.ndarray, tol: float) -> np.ndarray:
    """Block label per column of a boolean (n, k) firing matrix."""
    k = on.shape[1]
    if k == 0:
        return np.zeros(0, dtype=int)
    if tol == 0 or k == 1:
        _, labels = np.unique(on.T, axis=0, return_inverse=True)
        return labels.reshape(-1)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    dist = pdist(on.T, metric="hamming")  # fraction of inputs where two patterns differ
    return fcluster(linkage(dist, method="complete"), t=tol, criterion="distance")


# ---------------------------------------------------------------------------------- figure
def plot_degeneracy(
    ranks_result: LayerRanks, llc_result: LLCEstimate | EffectiveParameterCount | None = None
):
    """Report figure: parameters freed per layer and (optionally) the SGLD loss traces.

    Parameters
    ----------
    ranks_result : LayerRanks
        From :func:`layer_ranks`.
    llc_result : LLCEstimate or EffectiveParameterCount, optional
        Adds a panel with the loss of every chain against the step, burn-in shaded.

    Returns
    -------
    matplotlib.figure.Figure
        Never shown; save it or display it yourself.
    """
    from matplotlib.figure import Figure

    if isinstance(llc_result, EffectiveParameterCount):
        llc_result = llc_result.llc
    if not isinstance(ranks_result, LayerRanks):
        raise InputError(f"ranks_result must be a LayerRanks, got {type(ranks_result).__name__}")
    ncols = 1 if llc_result is None else 2
    fig = Figure(figsize=(5.5 * ncols, 4.2), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    ax = axes[0]
    names = ranks_result.names
    x = np.arange(len(names))
    series = [
        (
            "activation rank drop (G)",
            [r.freed_by_activations for r in ranks_result.layers],
            OKABE_ITO[0],
        ),
        (
            "Jacobian rank drop (M)",
            [r.freed_by_jacobians for r in ranks_result.layers],
            OKABE_ITO[4],
        ),
        ("counted by both", [-r.double_counted for r in ranks_result.layers], OKABE_ITO[5]),
    ]
    width = 0.27
    for k, (label, vals, colour) in enumerate(series):
        ax.bar(
            x + (k - 1) * width, vals, width, label=label, color=colour, edgecolor="black", lw=0.5
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_xlabel("layer")
    ax.set_ylabel("parameters freed (count; overlap negative)")
    ax.set_title(
        f"Degeneracy per layer (eps={ranks_result.eps:g}): "
        f"{ranks_result.total_freed} of {ranks_result.n_params} freed",
        fontsize=10,
    )
    ax.legend(fontsize=8, frameon=False)
    if llc_result is not None:
        ax = axes[1]
        trace = llc_result.loss_trace
        steps = np.arange(trace.shape[1])
        ax.axvspan(0, llc_result.num_burnin, color="0.88", label="burn-in (discarded)")
        for c, row in enumerate(trace):
            colour = _LINE_COLOURS[c % len(_LINE_COLOURS)]  # yellow is too faint for thin lines
            ax.plot(steps, row, lw=0.7, color=colour, label=f"chain {c}")
        if llc_result.ok:
            mean = llc_result.init_loss + llc_result.value / llc_result.nbeta
            ax.axhline(mean, color="black", ls="--", lw=1, label="post-burn-in mean")
            status = (
                f"lambda = {llc_result.value:.3g} +/- {llc_result.std_error:.2g}, "
                f"R-hat {llc_result.rhat:.2f}"
            )
        else:
            status = "diverged: " + llc_result.reason.split(";")[0]
        ax.set_xlabel("SGLD step")
        ax.set_ylabel("loss L (output units$^2$)")
        ax.set_title(f"SGLD loss traces (n*beta={llc_result.nbeta:.3g})\n{status}", fontsize=10)
        ax.legend(fontsize=8, frameon=False, ncol=2)
    return fig

"""Degeneracy diagnostics and the effective parameter count (paper sec. 2-3).

Everything here is measured on the *behavioural loss* (eq. 6), the mean squared distance between the
outputs of a perturbed network and those of the trained network ``theta*`` on the data,

.. math::

    L_B(\\theta) = \\frac{1}{n} \\sum_{x \\in D} \\lVert f_\\theta(x) - f_{\\theta^*}(x) \\rVert^2 ,

with no factor 1/2 (the paper's normalisation), so that its Hessian at ``theta*`` is
``(2/n) sum_x J_theta(x)^T J_theta(x)`` (eq. 10). No labels are needed and ``L_B(theta*) = 0``.

Three views of how many parameters the network really uses:

- :func:`layer_ranks`: the activation Gram G and Jacobian Gram M of every layer, their numerical
  ranks, and the parameters each rank drop frees (sec. 3.1).
- :func:`synchronized_blocks`: ReLUs that fire on the same inputs, and the degrees of freedom that
  adds (sec. 3.2).
- :func:`effective_parameter_count`: ``N_eff(eps) = 2 lambda_B(eps)`` (sec. 2), from the rank of the
  Hessian of L_B (exact, or Kronecker-factored as in eq. 37) or from the local learning coefficient
  estimated with SGLD (:func:`llc_estimate`, which also takes any callable loss).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, jacrev, jvp, vjp, vmap

from modgraph.chain import (
    InputError,
    LayerChain,
    LayerSelector,
    NonFiniteError,
    iter_batches,
)

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


# ---------------------------------------------------------------------------------- input checks
def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)):
        raise InputError(f"eps must be a positive finite float, got {eps!r}")
    eps = float(eps)
    if not math.isfinite(eps) or eps <= 0:
        raise InputError(f"eps must be a positive finite float, got {eps!r}")
    return eps


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_nonneg_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InputError(f"{name} must be a non-negative finite float, got {value!r}")
    if not math.isfinite(float(value)) or value < 0:
        raise InputError(f"{name} must be a non-negative finite float, got {value!r}")
    return float(value)


def _as_module(model) -> nn.Module:
    """The model as one module (for ``functional_call``), whatever form the chain accepts."""
    if isinstance(model, LayerChain):
        return nn.Sequential(*model.stages)
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, (list, tuple)) and all(isinstance(m, nn.Module) for m in model):
        return nn.Sequential(*model)
    raise InputError(
        "model must be an nn.Sequential, a list of nn.Module or a LayerChain, "
        f"got {type(model).__name__}"
    )


def _device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in module.parameters():
        return p.device, p.dtype
    raise InputError("model has no parameters")


def _collect(data, *, batch_size: int, device, dtype) -> Tensor:
    batches = list(iter_batches(data, batch_size=batch_size, device=device, dtype=dtype))
    if not batches:
        raise InputError("data holds no samples")
    return torch.cat(batches)


def _eigvals_desc(a: Tensor) -> np.ndarray:
    """Eigenvalues of a symmetric float64 matrix, largest first (symmetrised first)."""
    a = 0.5 * (a + a.T)
    return torch.linalg.eigvalsh(a).flip(0).cpu().numpy()


# ---------------------------------------------------------------------------------- accumulators
class _Moments:
    """Streamed float64 mean and centered second moment (Chan et al. merge of batch moments)."""

    def __init__(self, d: int, device):
        self.n = 0
        self.mean = torch.zeros(d, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(d, d, dtype=torch.float64, device=device)

    def update(self, x: Tensor) -> None:
        x = x.detach().reshape(len(x), -1).to(torch.float64)
        b = len(x)
        mb = x.mean(0)
        xc = x - mb
        delta = mb - self.mean
        n = self.n + b
        self.m2 += xc.T @ xc + torch.outer(delta, delta) * (self.n * b / n)
        self.mean += delta * (b / n)
        self.n = n

    def centered(self) -> Tensor:
        return self.m2 / self.n

    def uncentered(self) -> Tensor:
        return self.m2 / self.n + torch.outer(self.mean, self.mean)


def _jacobian_gram_update(fn: Callable[[Tensor], Tensor], f: Tensor, acc: Tensor) -> None:
    """``acc += sum_x J(x)^T J(x)`` with ``J(x) = d fn(f)[x] / d f[x]``, per sample.

    One ``vjp`` gives the pullback; ``vmap`` runs it on chunks of one-hot output cotangents, so a
    chunk of rows of every sample's Jacobian comes out at once. Samples must not interact (eval
    mode), which :class:`LayerChain` checks.
    """
    b, shape = f.shape[0], f.shape[1:]
    flat = f.detach().reshape(b, -1)

    def flat_fn(ff: Tensor) -> Tensor:
        return fn(ff.view(b, *shape)).reshape(b, -1)

    with torch.no_grad():  # outer no_grad: no graph to the parameters; vjp still differentiates
        out, pullback = vjp(flat_fn, flat)
    d_out, d_in = out.shape[1], flat.shape[1]
    chunk = max(1, (1 << 22) // max(1, b * d_in))
    eye = torch.eye(d_out, dtype=out.dtype, device=out.device)
    for k0 in range(0, d_out, chunk):
        cot = eye[k0 : k0 + chunk, None, :].expand(-1, b, -1).contiguous()
        with torch.no_grad():
            (rows,) = vmap(pullback)(cot)  # (chunk, b, d_in)
        rows = rows.detach().reshape(-1, d_in).to(torch.float64)
        acc += rows.T @ rows


def _check_finite(t: Tensor, what: str, layer: str, batch: int) -> None:
    if not torch.isfinite(t).all():
        raise NonFiniteError(f"non-finite {what} at layer {layer!r} in data batch {batch}")


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
    data : tensor of shape (n_samples, ...) or iterable of batches
        Inputs; read once.
    eps : float
        Noise scale: an eigenvalue counts as nonzero when it is larger than ``eps``. Absolute, not
        relative to the largest eigenvalue: G is in the activations' own units squared and M in
        (output units / activation units) squared, so rescaling a layer rescales its spectrum.
    layers : None, str, list of str, or callable
        Layer selector, as in :meth:`LayerChain.from_model`.
    batch_size : int
        Samples per batch. Gram matrices are accumulated in float64 with centered updates.

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
    module = _as_module(chain)
    device, dtype = _device_dtype(module)
    L = len(chain.stages)
    moments: list[_Moments | None] = [None] * (L + 1)
    grams: list[Tensor | None] = [None] * (L + 1)
    pre_grams: list[Tensor | None] = [None] * (L + 1)  # indexed by the layer the Linear writes
    widths = [0] * (L + 1)
    n = 0
    for bi, x in enumerate(iter_batches(data, batch_size=batch_size, device=device, dtype=dtype)):
        with torch.no_grad():
            acts = chain.forward(x)
        for l, f in enumerate(acts):
            name = chain.names[l]
            _check_finite(f, "activations", name, bi)
            if moments[l] is None:
                widths[l] = f[0].numel()
                moments[l] = _Moments(widths[l], device)
                grams[l] = torch.zeros(widths[l], widths[l], dtype=torch.float64, device=device)
            moments[l].update(f)
            _jacobian_gram_update(lambda g, l=l: chain.run_from(l, g), f, grams[l])
            _check_finite(grams[l], "Jacobian", name, bi)
        for l, stage in enumerate(chain.stages):
            lin = _leading_linear(stage)
            if lin is None or lin[1] is None:
                continue  # plain Linear: its output is layer l + 1 itself, M reused below
            linear, rest = lin
            with torch.no_grad():
                pre = linear(acts[l])
            if pre_grams[l + 1] is None:
                d = pre[0].numel()
                pre_grams[l + 1] = torch.zeros(d, d, dtype=torch.float64, device=device)
            _jacobian_gram_update(
                lambda p, l=l, rest=rest: chain.run_from(l + 1, rest(p)), pre, pre_grams[l + 1]
            )
            _check_finite(pre_grams[l + 1], "Jacobian", f"{chain.names[l + 1]} (pre)", bi)
        n += len(x)
    if n == 0:
        raise InputError("data holds no samples")

    g_eigs = [_eigvals_desc(m.centered()) for m in moments]
    m_eigs = [_eigvals_desc(g / n) for g in grams]
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
        linear, rest = lin
        if rest is None:
            r_out = r_m[l + 1]
        else:
            r_out = int((_eigvals_desc(pre_grams[l + 1] / n) > eps).sum())
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
    n_params = sum(p.numel() for p in module.parameters())
    return LayerRanks(layers=out, eps=eps, n_samples=n, n_params=n_params)


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
    data : tensor of shape (n_samples, ...) or iterable of batches
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
    device, dtype = _device_dtype(_as_module(chain))
    pres = []
    for bi, x in enumerate(iter_batches(data, batch_size=batch_size, device=device, dtype=dtype)):
        with torch.no_grad():
            f = chain.forward(x, upto=l - 1)[-1]
            p = before(f) if before is not None else f
        _check_finite(p, "preactivations", name, bi)
        pres.append(p.reshape(len(p), -1).to(torch.float64).cpu())
    if not pres:
        raise InputError("data holds no samples")
    P = torch.cat(pres).numpy()
    n, d = P.shape
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


# ---------------------------------------------------------------------------------- SGLD / LLC
@dataclass(frozen=True)
class LLCEstimate:
    """Result of :func:`llc_estimate`.

    Attributes
    ----------
    value : float
        ``lambda_hat = n beta (E_w[L(w)] - L(w*))`` averaged over chains after burn-in; NaN when
        ``ok`` is False.
    ok : bool
        False when a chain diverged (non-finite loss or gradient, or a loss blow-up).
    reason : str
        Why ``ok`` is False ("" otherwise).
    loss_trace : ndarray of shape (num_chains, num_steps)
        Loss at every step of every chain (NaN after a divergence).
    init_loss : float
        ``L(w*)``.
    chain_values : ndarray of shape (num_chains,)
        ``lambda_hat`` of each chain.
    std_error : float
        Standard error of ``value`` from the spread between chains.
    rhat : float
        Split Gelman-Rubin R-hat of the post-burn-in loss traces (near 1 when converged).
    drift : float
        ``lambda_hat`` of the second half of the post-burn-in trace minus that of the first half.
    drifted : bool
        Whether ``|drift|`` exceeds both 3 standard errors and 5 % of ``value``.
    nbeta, gamma, step_size, eps : float
        Inverse temperature, localisation strength, SGLD step size, loss scale (NaN if unset).
    num_burnin : int
    """

    value: float
    ok: bool
    reason: str
    loss_trace: np.ndarray = field(repr=False)
    init_loss: float
    chain_values: np.ndarray = field(repr=False)
    std_error: float
    rhat: float
    drift: float
    drifted: bool
    nbeta: float
    gamma: float
    step_size: float
    eps: float
    num_burnin: int

    @property
    def converged(self) -> bool:
        """``ok``, R-hat below 1.1 and no drift."""
        return bool(self.ok and self.rhat < 1.1 and not self.drifted)


def _split_rhat(trace: np.ndarray) -> float:
    c, t = trace.shape
    half = t // 2
    if c * 2 < 2 or half < 2:
        return float("nan")
    chains = np.concatenate([trace[:, :half], trace[:, half : 2 * half]])
    means = chains.mean(1)
    w = chains.var(1, ddof=1).mean()
    b = half * means.var(ddof=1)
    if w == 0:
        return 1.0 if b == 0 else float("inf")
    var_plus = (half - 1) / half * w + b / half
    return float(np.sqrt(var_plus / w))


def _sgld(
    value_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]],
    w0: Tensor,
    *,
    nbeta: float,
    gamma: float,
    step: float,
    num_chains: int,
    num_steps: int,
    generator: torch.Generator,
    init_loss: float,
) -> tuple[np.ndarray, str]:
    """SGLD chains started at ``w0``; returns the loss trace (chains, steps) and a failure reason.

    Update (Welling & Teh 2011, with the localisation of Lau et al.)::

        w <- w - step/2 (nbeta grad L(w) + gamma (w - w0)) + sqrt(step) xi,   xi ~ N(0, I)

    whose stationary density is proportional to ``exp(-nbeta L(w) - gamma/2 |w - w0|^2)``.
    """
    W = w0.detach().expand(num_chains, -1).clone()
    trace = torch.full((num_chains, num_steps), float("nan"), dtype=torch.float64, device=w0.device)
    d = w0.numel()
    blowup = 100.0 * max(d, 10)  # nbeta * (L - L0) has mean lambda <= d / 2
    reason = ""
    check_every = 50
    for t in range(num_steps):
        loss, g = value_and_grad(W)
        trace[:, t] = loss.detach().to(torch.float64)
        noise = torch.randn(W.shape, generator=generator, dtype=W.dtype, device=W.device)
        W = W - 0.5 * step * (nbeta * g + gamma * (W - w0)) + math.sqrt(step) * noise
        if (t + 1) % check_every == 0 or t == num_steps - 1:
            seg = trace[:, max(0, t + 1 - check_every) : t + 1]
            bad_w = ~torch.isfinite(W).all(1)
            bad_l = ~torch.isfinite(seg).all(1)
            big = (nbeta * (seg - init_loss) > blowup).any(1)
            if bad_w.any() or bad_l.any() or big.any():
                c = int(torch.nonzero(bad_w | bad_l | big)[0])
                kind = "a non-finite loss or parameter" if (bad_w | bad_l)[c] else "a loss blow-up"
                reason = (
                    f"chain {c} diverged with {kind} by step {t + 1} (n*beta*(L - L0) above "
                    f"{blowup:g} or NaN/inf); lower step_size (was {step:g})"
                )
                break
    return trace.cpu().numpy(), reason


def _summarise(
    trace: np.ndarray,
    reason: str,
    *,
    init_loss: float,
    nbeta: float,
    gamma: float,
    step: float,
    eps: float,
    num_burnin: int,
) -> LLCEstimate:
    post = trace[:, num_burnin:]
    ok = reason == "" and bool(np.isfinite(post).all()) and post.shape[1] > 0
    if not ok and not reason:
        reason = "no finite post-burn-in samples"
    with np.errstate(all="ignore"):
        chain_values = nbeta * (post.mean(1) - init_loss)
        c = len(chain_values)
        value = float(chain_values.mean()) if ok else float("nan")
        se = float(chain_values.std(ddof=1) / np.sqrt(c)) if ok and c > 1 else float("nan")
        half = post.shape[1] // 2
        first = nbeta * (post[:, :half].mean(1) - init_loss)
        second = nbeta * (post[:, half : 2 * half].mean(1) - init_loss)
        diff = second - first
        drift = float(diff.mean()) if ok and half > 0 else float("nan")
        se_d = float(diff.std(ddof=1) / np.sqrt(c)) if c > 1 else 0.0
        drifted = bool(ok and abs(drift) > max(3 * se_d, 0.05 * abs(value)))
        rhat = _split_rhat(post) if ok else float("nan")
    return LLCEstimate(
        value=value,
        ok=ok,
        reason=reason,
        loss_trace=trace,
        init_loss=float(init_loss),
        chain_values=chain_values,
        std_error=se,
        rhat=rhat,
        drift=drift,
        drifted=drifted,
        nbeta=float(nbeta),
        gamma=float(gamma),
        step_size=float(step),
        eps=float(eps) if eps is not None else float("nan"),
        num_burnin=num_burnin,
    )


def _top_eigenvalue(
    hvp: Callable[[Tensor], Tensor], d: int, like: Tensor, *, iters: int = 30
) -> float:
    """Largest eigenvalue of a PSD operator by power iteration (fixed start: deterministic)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(d, generator=g, dtype=torch.float64).to(like)
    v = v / v.norm()
    lam = 0.0
    for _ in range(iters):
        hv = hvp(v)
        lam = float(v @ hv)
        nrm = hv.norm()
        if not torch.isfinite(nrm) or nrm == 0:
            break
        v = hv / nrm
    return max(lam, 0.0)


def _temperature(eps, n, beta) -> tuple[float, float | None]:
    if eps is not None:
        eps = _check_eps(eps)
        if beta is not None:
            raise InputError(
                "give either eps (n*beta = 1/eps) or beta, not both; "
                f"got eps={eps!r}, beta={beta!r}"
            )
        return 1.0 / eps, eps
    if n is None:
        raise InputError(
            "llc_estimate needs eps (n*beta = 1/eps) or n (with beta = 1/log n), got neither"
        )
    n = _check_positive_int("n", n, minimum=2)
    if beta is None:
        beta = 1.0 / math.log(n)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (0 < beta < math.inf):
        raise InputError(f"beta must be a positive finite float, got {beta!r}")
    return n * float(beta), None


def _check_sampler(gamma, step_size, num_chains, num_steps, num_burnin):
    gamma = _check_nonneg_float("gamma", gamma)
    if step_size is not None:
        if isinstance(step_size, bool) or not isinstance(step_size, (int, float)):
            raise InputError(f"step_size must be a positive float or None, got {step_size!r}")
        if not (0 < step_size < math.inf):
            raise InputError(f"step_size must be a positive float or None, got {step_size!r}")
    num_chains = _check_positive_int("num_chains", num_chains)
    num_steps = _check_positive_int("num_steps", num_steps, minimum=2)
    num_burnin = num_steps // 4 if num_burnin is None else num_burnin
    num_burnin = _check_positive_int("num_burnin", num_burnin, minimum=0)
    if num_burnin >= num_steps:
        raise InputError(f"num_burnin must be smaller than num_steps={num_steps}, got {num_burnin}")
    return gamma, num_chains, num_steps, num_burnin


def llc_estimate(
    loss_fn: Callable[[Tensor], Tensor],
    w0,
    *,
    eps: float | None = None,
    n: int | None = None,
    beta: float | None = None,
    gamma: float = 1.0,
    step_size: float | None = None,
    num_chains: int = 4,
    num_steps: int = 2000,
    num_burnin: int | None = None,
    step_scale: float = 0.1,
    vectorized: bool = False,
    seed: int = 0,
) -> LLCEstimate:
    """Local learning coefficient of a loss at ``w0``, estimated with SGLD.

    The estimator of Lau et al. (2023), as in devinterp:

    .. math::

        \\hat\\lambda = n\\beta \\left(\\mathbb{E}_w[L(w)] - L(w^*)\\right), \\qquad
        w \\sim p(w) \\propto
        \\exp\\left(-n\\beta L(w) - \\frac{\\gamma}{2}\\lVert w - w^*\\rVert^2\\right).

    **How eps enters.** The paper's ``lambda(eps)`` (sec. 2) is the scaling exponent of the
    volume of parameters with loss below ``eps``, ``V(eps) ~ eps^lambda``. Under the tempered
    posterior the loss values have density ``~ eps^(lambda - 1) exp(-n beta eps)``, so the chain
    samples losses of order ``lambda / (n beta)`` and the estimator returns the volume exponent at
    that scale (exactly, for a homogeneous loss). We therefore set the inverse temperature to
    ``n beta = 1 / eps``. A quadratic direction of curvature ``h`` then counts fully when
    ``h >> gamma eps`` and not at all when ``h << gamma eps``: ``gamma`` sets the parameter scale
    (``1/sqrt(gamma)``) over which a change of loss below ``eps`` counts as free. Without ``eps``,
    ``n beta`` follows the devinterp convention, ``beta = 1 / log n`` by default.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(w)`` -> scalar tensor for ``w`` of shape (d,). Called through
        ``torch.func.vmap(grad_and_value(loss_fn))`` on all chains at once when it allows it, one
        chain at a time otherwise. It may be stochastic (a minibatch loss) if it cannot be vmapped.
        With ``vectorized=True`` it is called once per step on all chains, ``loss_fn(W)`` for ``W``
        of shape (num_chains, d) returning shape (num_chains,) (fastest for toy losses).
    w0 : tensor of shape (d,)
        The point ``w*`` (a local minimum); its dtype is kept.
    eps : float, optional
        Loss scale; sets ``n beta = 1 / eps``. Excludes ``beta``.
    n, beta : int, float, optional
        Without ``eps``: ``n beta`` with ``beta = 1 / log n`` by default.
    gamma : float
        Localisation strength (0: none).
    step_size : float, optional
        SGLD step. None: ``step_scale / (n beta lambda_max(H) + gamma)`` with ``lambda_max(H)`` the
        top Hessian eigenvalue of ``loss_fn`` at ``w0`` (power iteration), which keeps the bias of
        the stiffest direction near ``step_scale / 4``. Pass it explicitly when the Hessian vanishes
        at ``w0`` (e.g. a purely quartic loss).
    num_chains, num_steps, num_burnin : int
        Chains, steps per chain, and steps discarded (default ``num_steps // 4``).
    step_scale : float
        See ``step_size``.
    vectorized : bool
        Whether ``loss_fn`` takes a batch of parameter vectors (see ``loss_fn``).
    seed : int
        Seed of the noise; results are deterministic on CPU (GPU reductions may differ slightly).

    Returns
    -------
    LLCEstimate
        ``value`` is NaN and ``ok`` False (with ``reason``) when a chain diverges; the traces are
        kept for inspection.

    Examples
    --------
    >>> import torch
    >>> est = llc_estimate(lambda w: (w**2).sum(), torch.zeros(2, dtype=torch.float64),
    ...                    eps=1e-2, gamma=0.0, num_steps=4000, seed=0)
    >>> round(est.value, 1)  # a regular 2-parameter model: lambda = d/2
    1.0
    """
    nbeta, eps_used = _temperature(eps, n, beta)
    gamma, num_chains, num_steps, num_burnin = _check_sampler(
        gamma, step_size, num_chains, num_steps, num_burnin
    )
    w0 = torch.as_tensor(w0)
    if not w0.is_floating_point():
        w0 = w0.to(torch.get_default_dtype())
    w0 = w0.detach().reshape(-1)
    d = w0.numel()
    single = (lambda w: loss_fn(w[None])[0]) if vectorized else loss_fn
    with torch.no_grad():
        init = float(single(w0.clone()))
    if not math.isfinite(init):
        raise InputError(f"loss_fn(w0) must be finite, got {init}")

    batched = vmap(grad_and_value(loss_fn))

    def value_and_grad(W: Tensor) -> tuple[Tensor, Tensor]:
        if vectorized:
            W = W.detach().requires_grad_(True)
            v = loss_fn(W)
            (g,) = torch.autograd.grad(v.sum(), W)
            return v.detach(), g
        try:
            g, v = batched(W)
        except Exception:  # not vmappable (randomness, data-dependent control flow): loop
            gs, vs = [], []
            for w in W:
                w = w.detach().requires_grad_(True)
                v1 = loss_fn(w)
                (g1,) = torch.autograd.grad(v1, w)
                gs.append(g1)
                vs.append(v1.detach())
            g, v = torch.stack(gs), torch.stack(vs)
        return v, g

    if step_size is None:
        grad_fn = torch.func.grad(single)

        def hvp(v: Tensor) -> Tensor:
            return jvp(grad_fn, (w0,), (v,))[1]

        lam_max = _top_eigenvalue(hvp, d, w0)
        step_size = step_scale / (nbeta * lam_max + gamma) if nbeta * lam_max + gamma > 0 else None
        if step_size is None:
            raise InputError("step_size is needed: the Hessian vanishes at w0 and gamma is 0")
    gen = torch.Generator(device=w0.device).manual_seed(seed)
    trace, reason = _sgld(
        value_and_grad,
        w0,
        nbeta=nbeta,
        gamma=gamma,
        step=float(step_size),
        num_chains=num_chains,
        num_steps=num_steps,
        generator=gen,
        init_loss=init,
    )
    return _summarise(
        trace,
        reason,
        init_loss=init,
        nbeta=nbeta,
        gamma=gamma,
        step=float(step_size),
        eps=eps_used,
        num_burnin=num_burnin,
    )


# ---------------------------------------------------------------------------------- effective count
@dataclass(frozen=True)
class EffectiveParameterCount:
    """Result of :func:`effective_parameter_count`.

    Attributes
    ----------
    value : float
        ``N_eff(eps)``: the Hessian rank, or ``2 lambda_hat`` (NaN if the chains diverged).
    method : {"hessian", "llc"}
    approximation : {"exact", "kfac"} or None
        How the Hessian was formed (None for "llc").
    eps : float
    n_params : int
    eigenvalues : ndarray or None
        Hessian eigenvalues, largest first (for "kfac" the products of factor eigenvalues, eq. 37).
    threshold : float or None
        An eigenvalue above it counts.
    llc : LLCEstimate or None
        The sampler's result and diagnostics for "llc".
    """

    value: float
    method: str
    approximation: str | None
    eps: float
    n_params: int
    eigenvalues: np.ndarray | None = field(default=None, repr=False)
    threshold: float | None = None
    llc: LLCEstimate | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.llc.ok if self.llc is not None else bool(np.isfinite(self.value))


def _flat_params(module: nn.Module):
    names, shapes = [], []
    for k, p in module.named_parameters():
        names.append(k)
        shapes.append(p.shape)
    w0 = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    sizes = [math.prod(s) for s in shapes]

    def unflatten(w: Tensor) -> dict[str, Tensor]:
        return {k: c.view(s) for k, c, s in zip(names, w.split(sizes), shapes)}

    return w0, unflatten


def _hessian_exact(module: nn.Module, data, *, batch_size: int, device) -> Tensor:
    """``(2/n) sum_x J_theta(x)^T J_theta(x)`` (eq. 10), in float64 throughout."""
    m64 = copy.deepcopy(module).to(torch.float64)
    w0, unflatten = _flat_params(m64)

    def f(w: Tensor, x: Tensor) -> Tensor:
        return functional_call(m64, unflatten(w), (x[None],)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))
    P = w0.numel()
    H = torch.zeros(P, P, dtype=torch.float64, device=device)
    n = 0
    for bi, x in enumerate(
        iter_batches(data, batch_size=batch_size, device=device, dtype=torch.float64)
    ):
        J = jac(w0, x).reshape(-1, P)  # (b * d_out, P)
        _check_finite(J, "parameter Jacobian", "output", bi)
        H += J.T @ J
        n += len(x)
    return 2.0 * H / n


def _hessian_kfac_eigs(module: nn.Module, data, *, batch_size: int, device, dtype) -> np.ndarray:
    """Eigenvalues of the Kronecker-factored Hessian (eq. 37): ``2 B_l (x) A_l`` per nn.Linear.

    ``A_l`` is the uncentered second moment of the Linear's input ``[f; 1]`` and ``B_l`` the Gram of
    the Jacobian of the output wrt the Linear's output; eigenvalues of a Kronecker product are the
    products of the factors' eigenvalues. Cross-layer blocks are dropped.
    """
    chain = LayerChain.from_model(module, layers=lambda name: True)
    linears = []
    for l, stage in enumerate(chain.stages):
        n_own = sum(p.numel() for p in stage.parameters())
        if isinstance(stage, nn.Linear):
            linears.append(l)
        elif n_own:
            raise InputError(
                f"the kfac approximation handles nn.Linear parameters only; module "
                f"{chain.names[l + 1]!r} is a {type(stage).__name__} with parameters"
            )
    A = {}
    B = {}
    n = 0
    for bi, x in enumerate(iter_batches(data, batch_size=batch_size, device=device, dtype=dtype)):
        with torch.no_grad():
            acts = chain.forward(x)
        for l in linears:
            f = acts[l].reshape(len(x), -1).to(torch.float64)
            if chain.stages[l].bias is not None:
                f = torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype, device=f.device)], 1)
            A[l] = A.get(l, 0) + f.T @ f
            d = acts[l + 1][0].numel()
            B.setdefault(l, torch.zeros(d, d, dtype=torch.float64, device=device))
            _jacobian_gram_update(lambda g, l=l: chain.run_from(l + 1, g), acts[l + 1], B[l])
            _check_finite(B[l], "Jacobian", chain.names[l + 1], bi)
        n += len(x)
    eigs = [
        2.0 * np.outer(_eigvals_desc(B[l] / n), _eigvals_desc(A[l] / n)).reshape(-1)
        for l in linears
    ]
    return np.sort(np.concatenate(eigs))[::-1]


def effective_parameter_count(
    model,
    data,
    *,
    eps: float,
    method: str = "hessian",
    seed: int = 0,
    batch_size: int = 256,
    exact_max_params: int = 5000,
    gamma: float = 100.0,
    step_size: float | None = None,
    num_chains: int = 4,
    num_steps: int = 2000,
    num_burnin: int | None = None,
    minibatch_size: int | None = 256,
) -> EffectiveParameterCount:
    """``N_eff(eps) = 2 lambda_B(eps)`` of the behavioural loss at the trained parameters.

    ``method="hessian"``: the number of eigenvalues of the Hessian of L_B (eq. 6) at ``theta*``
    above ``2 eps``. For the behavioural loss the Hessian there is exactly the Gauss-Newton matrix

    .. math::

        H = \\frac{2}{n} \\sum_x J_\\theta(x)^T J_\\theta(x), \\qquad
        J_\\theta(x) = \\frac{\\partial f_\\theta(x)}{\\partial \\theta}  \\quad \\text{(eq. 10)}

    and a unit step along an eigenvector of eigenvalue ``h`` raises L_B by ``h / 2``; the direction
    counts when that exceeds ``eps``. (Eigenvalues below ``P * machine eps * h_max`` never count.)
    This equals ``2 lambda`` where the loss is quadratic to leading order in every non-free
    direction; quartic and higher directions (e.g. ``w1^2 w2^2``) need ``method="llc"``. With at
    most ``exact_max_params`` parameters H is formed exactly from per-sample Jacobians
    (``vmap(jacrev(functional_call))``, float64); above it each ``nn.Linear`` gets the Kronecker
    factorisation of eq. 37 (``approximation="kfac"``), which drops cross-layer blocks and so misses
    degeneracies shared between layers (such as ``W2 W1 = W2 A^-1 A W1``): it over-counts there.

    ``method="llc"``: ``2 lambda_hat`` from :func:`llc_estimate` on the minibatch behavioural loss,
    with ``n beta = 1/eps`` and localisation ``gamma``. ``L_B(theta*) = 0`` exactly. The default
    step is ``0.1 / (n beta h_max + gamma)`` with ``h_max`` the top eigenvalue of H (power
    iteration on Jacobian-vector products).

    Parameters
    ----------
    model : nn.Sequential, list of nn.Module, or LayerChain
    data : tensor of shape (n_samples, ...) or iterable of batches
    eps : float
        Loss scale (absolute, in output units squared).
    method : {"hessian", "llc"}
    seed : int
        SGLD seed ("llc").
    batch_size : int
        Batch size for forming H.
    exact_max_params : int
        Largest parameter count for the exact Hessian.
    gamma, step_size, num_chains, num_steps, num_burnin : see :func:`llc_estimate`
    minibatch_size : int or None
        SGLD minibatch (None: full batch).

    Returns
    -------
    EffectiveParameterCount

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 2)).double()
    >>> x = torch.randn(50, 3, dtype=torch.float64)
    >>> res = effective_parameter_count(net, x, eps=1e-6)
    >>> res.value, res.approximation, res.n_params
    (8.0, 'exact', 8)
    """
    eps = _check_eps(eps)
    if method not in ("hessian", "llc"):
        raise InputError(f"method must be 'hessian' or 'llc', got {method!r}")
    exact_max_params = _check_positive_int("exact_max_params", exact_max_params, minimum=0)
    module = _as_module(model)
    LayerChain.from_model(module)  # checks eval mode and the model's form
    device, dtype = _device_dtype(module)
    P = sum(p.numel() for p in module.parameters())
    if method == "hessian":
        if P <= exact_max_params:
            eigs = _eigvals_desc(_hessian_exact(module, data, batch_size=batch_size, device=device))
            approx = "exact"
        else:
            eigs = _hessian_kfac_eigs(
                module, data, batch_size=batch_size, device=device, dtype=dtype
            )
            approx = "kfac"
        floor = P * float(np.finfo(np.float64).eps) * max(float(eigs[0]), 0.0)
        threshold = max(2.0 * eps, floor)
        return EffectiveParameterCount(
            value=float((eigs > threshold).sum()),
            method=method,
            approximation=approx,
            eps=eps,
            n_params=P,
            eigenvalues=eigs,
            threshold=threshold,
        )
    est = _behavioural_llc(
        module,
        _collect(data, batch_size=batch_size, device=device, dtype=dtype),
        eps=eps,
        gamma=gamma,
        step_size=step_size,
        num_chains=num_chains,
        num_steps=num_steps,
        num_burnin=num_burnin,
        minibatch_size=minibatch_size,
        seed=seed,
    )
    return EffectiveParameterCount(
        value=2.0 * est.value if est.ok else float("nan"),
        method=method,
        approximation=None,
        eps=eps,
        n_params=P,
        llc=est,
    )


def _behavioural_llc(
    module: nn.Module,
    x: Tensor,
    *,
    eps: float,
    gamma: float,
    step_size: float | None,
    num_chains: int,
    num_steps: int,
    num_burnin: int | None,
    minibatch_size: int | None,
    seed: int,
) -> LLCEstimate:
    nbeta, _ = _temperature(eps, None, None)
    gamma, num_chains, num_steps, num_burnin = _check_sampler(
        gamma, step_size, num_chains, num_steps, num_burnin
    )
    n = len(x)
    m = n if minibatch_size is None else _check_positive_int("minibatch_size", minibatch_size)
    w0, unflatten = _flat_params(module)
    with torch.no_grad():
        y_star = module(x)
    _check_finite(y_star, "outputs", "output", 0)

    def loss_at(w: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        out = functional_call(module, unflatten(w), (xb,))
        return (out - yb).pow(2).reshape(len(xb), -1).sum(1).mean()

    gen = torch.Generator(device=x.device).manual_seed(seed)

    def value_and_grad(W: Tensor) -> tuple[Tensor, Tensor]:
        vs, gs = [], []
        for w in W:
            if m >= n:
                xb, yb = x, y_star
            else:
                idx = torch.randint(n, (m,), generator=gen, device=x.device)
                xb, yb = x[idx], y_star[idx]
            w = w.detach().requires_grad_(True)
            v = loss_at(w, xb, yb)
            (g,) = torch.autograd.grad(v, w)
            vs.append(v.detach())
            gs.append(g)
        return torch.stack(vs), torch.stack(gs)

    with torch.no_grad():
        init = float(loss_at(w0, x, y_star))
    if step_size is None:
        xs = x[: min(n, 512)]

        def outputs(w: Tensor) -> Tensor:
            return functional_call(module, unflatten(w), (xs,)).reshape(-1)

        def gn_hvp(v: Tensor) -> Tensor:  # (2/m) J^T J v: the Hessian of L_B at theta*
            jv = jvp(outputs, (w0,), (v.to(w0.dtype),))[1]
            (jtjv,) = vjp(outputs, w0)[1](jv)
            return (2.0 / len(xs)) * jtjv.to(v.dtype)

        h_max = _top_eigenvalue(gn_hvp, w0.numel(), w0)
        step_size = 0.1 / (nbeta * h_max + gamma)
    trace, reason = _sgld(
        value_and_grad,
        w0,
        nbeta=nbeta,
        gamma=gamma,
        step=float(step_size),
        num_chains=num_chains,
        num_steps=num_steps,
        generator=gen,
        init_loss=init,
    )
    return _summarise(
        trace,
        reason,
        init_loss=init,
        nbeta=nbeta,
        gamma=gamma,
        step=float(step_size),
        eps=eps,
        num_burnin=num_burnin,
    )


# ---------------------------------------------------------------------------------- figure
def plot_degeneracy(ranks_result: LayerRanks, llc_result: LLCEstimate | None = None):
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

"""Interaction sparsity from degeneracy (paper sec. 4): reparametrize a ReLU MLP so that its free
parameters become absent interactions.

A dense ReLU network ``Linear -> ReLU -> ... -> Linear`` is rewritten layer by layer from the input.
At every Linear ``W_l`` (reading layer ``l``, writing layer ``l + 1``):

1. **Activation rank drop** (eqs. 23-24). Where the activations ``f_l`` span ``r = rank G_l`` of
   their ``d_l`` dimensions, ``r`` neurons ``S`` are picked (column-pivoted QR of the centered
   activations) and the others are written on them, ``f_j - mu_j = sum_{k in S} A_jk (f_k - mu_k)``
   for ``j`` not in ``S``. Then

   .. math::

       W'_{:,S} = W_{:,S} + W_{:,\\bar S} A, \\qquad W'_{:,\\bar S} = 0, \\qquad
       b' = b + W_{:,\\bar S} (\\mu_{\\bar S} - A \\mu_S),

   so ``(d_l - r) d_{l+1}`` weights vanish: the neurons outside ``S`` are disconnected.

2. **Synchronized blocks** (eqs. 25-28). Neurons of layer ``l + 1`` that fire on the same inputs
   (:func:`~modgraph.diagnostics.synchronized_blocks`) see one switch ``s_a(x)`` in ``{0, 1}``:
   ``relu(p_a) = s_a p_a``, so for any invertible ``C_a``, ``C_a relu(p_a) = s_a C_a p_a``: the
   basis change commutes with the block's ReLU once the ReLU is read as the block's gate. For a
   block whose preactivations have rank ``s_a``, pick ``s_a`` independent neurons ``R`` and ``s_a``
   input columns ``T`` with ``B = W_{R,T}`` invertible, write the other neurons of the block as
   ``p_N = D p_R`` on the inputs where the block fires, and take

   .. math::

       C_a = \\begin{pmatrix} B^{-1} & 0 \\\\ -D & I \\end{pmatrix}, \\qquad
       W_l \\leftarrow C_a W_l, \\quad W_{l+1} \\leftarrow W_{l+1} C_a^{-1}.

   The new incoming weights of ``R`` are the identity on the columns ``T``: ``s_a (s_a - 1)``
   interactions become zero and ``s_a`` become exactly 1 (the per-neuron rescalings, which fix a
   weight but cannot zero one). The neurons ``N`` are identically zero on the data, so step 1 at
   the next layer disconnects them.

3. **Dead ends.** A neuron whose outgoing weights are all zero cannot affect the output; its
   incoming weights and bias are set to zero (the Jacobian rank drop of sec. 3.1).

The new network is an ``nn.Sequential`` of ``nn.Linear`` and, at layers with synchronized blocks,
:class:`BlockGate` (ReLU on the other neurons; every neuron of a block gated by one reference
preactivation of the block, read off the new coordinates). It computes the same function **on the
data** (off the data, blocks need not stay synchronized).

**Approximate version.** ``eps`` drops activation directions of variance at most ``eps``
(absolute, as in :func:`~modgraph.diagnostics.layer_ranks`), ``mismatch`` groups neurons whose
firing patterns differ on up to that fraction of the inputs, and ``rank_rtol`` sets the rank of a
block's preactivations. Each approximate step changes the network by ``Delta_k`` at one layer,
which the untouched downstream layers (ReLU: 1-Lipschitz) carry to the output, so by Minkowski's
inequality the behavioral loss (eq. 6) obeys

.. math::

    L_B^{1/2} \\le \\sum_k \\Big(\\prod_{m > l_k} \\lVert W_m \\rVert_2\\Big)
    \\, \\mathbb{E}_x\\left[\\lVert \\Delta_k(x) \\rVert^2\\right]^{1/2} ,

which is reported as ``loss_bound`` next to the measured ``behavioral_loss``.

Derived from first principles (we could not read the paper's sec. 4 text); the equation numbers
refer to the issue's description of the construction.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from .._validation import check_int, check_real
from ..chain import LayerChain
from ..data import Batches
from ..errors import InputError
from ..graph import InteractionGraph
from ..loss import behavioral_loss
from .ranks import LayerRanks, layer_ranks
from .synchronized import SynchronizedBlocks, synchronized_blocks

__all__ = ["BlockGate", "SparsifiedLayer", "SparsifiedModel", "sparsify"]


# ---------------------------------------------------------------------------------- the gate
class BlockGate(nn.Module):
    """ReLU, except that each synchronized block is switched by one reference preactivation.

    For block ``a`` with neurons ``idx_a`` the output is ``p[idx_a] * 1[p[ref_a] @ v_a > 0]``, with
    ``p[ref_a] @ v_a`` the original preactivation of the block's reference neuron written in the new
    coordinates; every other neuron gets ``relu(p)``.

    Parameters
    ----------
    width : int
        Number of neurons.
    blocks : list of (idx, ref, v)
        ``idx`` the block's neurons, ``ref`` the neurons the gate reads and ``v`` (same length as
        ``ref``) the weights of that reading.
    """

    def __init__(self, width: int, blocks: list[tuple[list[int], list[int], Tensor]]):
        super().__init__()
        self.width = width
        self.n_blocks = len(blocks)
        for a, (idx, ref, v) in enumerate(blocks):
            self.register_buffer(f"idx{a}", torch.as_tensor(idx, dtype=torch.long))
            self.register_buffer(f"ref{a}", torch.as_tensor(ref, dtype=torch.long))
            self.register_buffer(f"v{a}", torch.as_tensor(v, dtype=torch.float64))

    def forward(self, p: Tensor) -> Tensor:
        out = torch.relu(p)
        for a in range(self.n_blocks):
            idx, ref, v = getattr(self, f"idx{a}"), getattr(self, f"ref{a}"), getattr(self, f"v{a}")
            gate = (p[:, ref] @ v.to(p.dtype)) > 0
            out[:, idx] = p[:, idx] * gate[:, None].to(p.dtype)
        return out

    def extra_repr(self) -> str:
        return f"width={self.width}, blocks={self.n_blocks}"


# ---------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class SparsifiedLayer:
    """Counts for one Linear ``W_l`` (reading layer ``name``), see :func:`sparsify`.

    Attributes
    ----------
    name, name_out : str
        Chain names of the layer the Linear reads and of the layer it writes.
    d_in, d_out : int
    activation_rank : int
        ``r``, the neurons of layer ``l`` kept connected (step 1).
    dof_rank : int
        ``freed_by_activations`` of :func:`~modgraph.diagnostics.layer_ranks`: ``(d_in - r) d_out``.
    zeroed_rank : int
        Weights of ``W_l`` made zero by step 1.
    dof_sync : int
        ``sum_a s_a^2`` over the blocks of layer ``l + 1``
        (:func:`~modgraph.diagnostics.synchronized_blocks`; 0 where no ReLU follows).
    rescalings : int
        ``sum_a s_a``: the part of ``dof_sync`` that only rescales neurons.
    zeroed_sync, unit_sync : int
        Weights of ``W_l`` made zero / exactly 1 by the blockwise basis change (step 2).
    zeroed_dead_ends : int
        Weights of ``W_l`` made zero because their target neuron has no outgoing weights (step 3).
    absent_before, absent_after : int
        Zero weights of ``W_l`` in the original and in the new network.
    loss_bound_rank, loss_bound_sync : float
        This layer's terms of the bound on ``L_B^{1/2}`` (0 for exact steps, up to rounding).
    """

    name: str
    name_out: str
    d_in: int
    d_out: int
    activation_rank: int
    dof_rank: int
    zeroed_rank: int
    dof_sync: int
    rescalings: int
    zeroed_sync: int
    unit_sync: int
    zeroed_dead_ends: int
    absent_before: int
    absent_after: int
    loss_bound_rank: float
    loss_bound_sync: float

    @property
    def zeroed(self) -> int:
        return self.zeroed_rank + self.zeroed_sync + self.zeroed_dead_ends

    @property
    def meets_bound(self) -> bool:
        """``zeroed_rank >= dof_rank``, ``zeroed_sync >= dof_sync - rescalings`` and
        ``zeroed_sync + unit_sync >= dof_sync``: one absent interaction per degree of freedom,
        except that a rescaling fixes a weight to +-1 instead of zeroing one."""
        return (
            self.zeroed_rank >= self.dof_rank
            and self.zeroed_sync >= self.dof_sync - self.rescalings
            and self.zeroed_sync + self.unit_sync >= self.dof_sync
        )


@dataclass(frozen=True, eq=False)
class SparsifiedModel:
    """Result of :func:`sparsify`.

    Attributes
    ----------
    model : nn.Sequential
        The reparametrized network (float64, eval mode): ``nn.Linear`` and ``nn.ReLU`` /
        :class:`BlockGate`. Same outputs as the original on the data (exactly, up to rounding, for
        exact degeneracies; within ``behavioral_loss`` for approximate ones).
    layer_names : tuple of str
        Chain names of layers ``0 .. L`` (input, hidden layers, output).
    weights, biases : tuple of Tensor
        New ``W_l`` of shape (d_{l+1}, d_l) and ``b_l`` of shape (d_{l+1},).
    bases : tuple of Tensor
        ``C_l`` of shape (d_l, d_l): the new neurons of layer ``l`` are ``C_l f_l`` on the data
        (identity at the input, the output and layers without synchronized blocks).
    blocks : tuple of tuple of tuple of int
        Per layer, the neuron indices of the blocks that were rotated (two or more neurons).
    layers : tuple of SparsifiedLayer
        One per Linear.
    graph, original_graph : InteractionGraph
        Interaction graphs of the new and the original network, neuron nodes, edge strength
        ``w[l][i, j] = E_x[(W_l[i, j] f_{l,j}(x))^2]^{1/2}``: the RMS contribution of neuron ``j``
        of layer ``l`` to the preactivation of neuron ``i`` of layer ``l + 1``. A zero weight or a
        neuron silent on the data gives an absent edge. Importance is the activation variance.
    behavioral_loss : float
        ``L_B`` (eq. 6) of the new network against the original on the data.
    loss_bound : float
        Upper bound on ``behavioral_loss`` (module docstring) in exact arithmetic; rounding in
        the basis changes adds about ``cond(C) * machine eps`` relative error on top (so for exact
        degeneracies the measured loss, ~1e-28, can exceed a bound of ~1e-30).
    eps, mismatch : float
    n_samples : int
    ranks : LayerRanks
        The degeneracy diagnostics of the original network.
    sync : tuple of SynchronizedBlocks or None
        Per layer (None where no ReLU writes the layer).
    """

    model: nn.Sequential = field(repr=False)
    layer_names: tuple[str, ...]
    weights: tuple[Tensor, ...] = field(repr=False)
    biases: tuple[Tensor, ...] = field(repr=False)
    bases: tuple[Tensor, ...] = field(repr=False)
    blocks: tuple[tuple[tuple[int, ...], ...], ...]
    layers: tuple[SparsifiedLayer, ...] = field(repr=False)
    graph: InteractionGraph = field(repr=False)
    original_graph: InteractionGraph = field(repr=False)
    behavioral_loss: float
    loss_bound: float
    eps: float
    mismatch: float
    n_samples: int
    ranks: LayerRanks = field(repr=False)
    sync: tuple[SynchronizedBlocks | None, ...] = field(repr=False)

    @property
    def meets_bound(self) -> bool:
        return all(r.meets_bound for r in self.layers)

    def to_dict(self) -> dict[str, list]:
        """Column-wise plain-Python summary of :attr:`layers`."""
        keys = list(SparsifiedLayer.__dataclass_fields__) + ["zeroed", "meets_bound"]
        return {k: [getattr(r, k) for r in self.layers] for k in keys}

    def report(self) -> str:
        """Per-Linear table: interactions zeroed against the degrees of freedom, and the loss."""
        head = (
            "Linear",
            "d_in",
            "d_out",
            "rank G",
            "dof(G)",
            "zeroed(G)",
            "dof(sync)",
            "rescale",
            "zeroed(sync)",
            "=1",
            "dead ends",
            "absent",
            "bound",
        )
        rows = [head]
        for r in self.layers:
            rows.append(
                (
                    f"{r.name}->{r.name_out}",
                    r.d_in,
                    r.d_out,
                    r.activation_rank,
                    r.dof_rank,
                    r.zeroed_rank,
                    r.dof_sync,
                    r.rescalings,
                    r.zeroed_sync,
                    r.unit_sync,
                    r.zeroed_dead_ends,
                    f"{r.absent_before}->{r.absent_after}",
                    "ok" if r.meets_bound else "FAILS",
                )
            )
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
        lines = ["  ".join(str(v).rjust(w) for v, w in zip(row, widths)) for row in rows]
        lines.append(
            f"edges {self.original_graph.n_edges} -> {self.graph.n_edges} (w > eps^1/2); "
            f"behavioral loss {self.behavioral_loss:.3g} <= bound {self.loss_bound:.3g} "
            f"(eps={self.eps:g}, mismatch={self.mismatch:g}, {self.n_samples} samples)"
        )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- helpers
def _parse_mlp(model) -> tuple[list[nn.Linear], list[bool]]:
    """The Linears of a ``Linear (-> ReLU) ... -> Linear`` Sequential; whether a ReLU follows."""
    if not isinstance(model, nn.Sequential):
        raise InputError(f"model must be an nn.Sequential of nn.Linear and nn.ReLU, got {model!r}")
    mods = list(model)
    linears, relu = [], []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            linears.append(m)
            relu.append(False)
        elif isinstance(m, nn.ReLU) and i > 0 and isinstance(mods[i - 1], nn.Linear):
            relu[-1] = True
        else:
            raise InputError(
                f"model must alternate nn.Linear and (optional) nn.ReLU, got {type(m).__name__} "
                f"at position {i}"
            )
    if not linears:
        raise InputError("model must contain at least one nn.Linear, got none")
    if relu[-1]:
        raise InputError("model must end with an nn.Linear (the output layer), got a final ReLU")
    if model.training:
        raise InputError("model must be in eval mode, got training=True (call model.eval())")
    return linears, relu


def _forward(Ws, bs, gates, x: Tensor, upto: int) -> list[Tensor]:
    """Activations ``f_0 .. f_upto`` of the network being rewritten (float64)."""
    fs = [x]
    for l in range(upto):
        p = fs[-1] @ Ws[l].T + bs[l]
        fs.append(gates[l](p) if gates[l] is not None else p)
    return fs


def _pivots(a: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` well-conditioned columns of ``a`` (column-pivoted QR)."""
    if k == 0 or a.size == 0:
        return np.zeros(0, dtype=int)
    _, _, piv = scipy.linalg.qr(a, mode="economic", pivoting=True)
    return np.sort(piv[:k])


def _lipschitz_after(Ws, l: int) -> float:
    """``prod_{m > l} ||W_m||_2``: carries a change of layer ``l + 1`` to the output."""
    return math.prod(float(torch.linalg.matrix_norm(W, ord=2)) for W in Ws[l + 1 :])


def _rms(d: Tensor) -> float:
    return float(d.square().sum(1).mean().sqrt()) if d.numel() else 0.0


def _interaction_w(Ws, fs) -> tuple[np.ndarray, ...]:
    """``w[l][i, j] = E[(W[i, j] f_j)^2]^1/2`` for every Linear."""
    return tuple(
        (W.abs() * f.square().mean(0).sqrt()[None, :]).cpu().numpy() for W, f in zip(Ws, fs)
    )


def _graph(names, Ws, fs, eps) -> InteractionGraph:
    imp = tuple(f.var(0, unbiased=False).cpu().numpy() for f in fs)
    return InteractionGraph(tuple(names), imp, _interaction_w(Ws, fs), eps)


def _rotate_block(W: Tensor, p: Tensor, on: np.ndarray, block: list[int], rank_rtol):
    """The blockwise basis change ``C_a`` of one synchronized block (eqs. 25-27).

    Returns ``(C_a, ref, R, T, v, N, D)``: ``C_a`` of shape (k, k) in the block's neuron order,
    the reference neuron whose firing switches the block, the ``s_a`` kept neurons ``R`` (``ref``
    first) and input columns ``T`` (global indices) with ``C_a W`` the identity on ``(R, T)``,
    ``v = B[0]`` so that ``p_ref = v @ p~_R``, and the other neurons ``N`` with ``p_N = D p_R``
    where the block fires. None when ``W[R]`` has no invertible ``s x s`` block of weights (the
    rank then comes from the bias alone).
    """
    k = len(block)
    pat = on[:, block]
    ref_pos = int(np.argmin([(pat != pat[:, [j]]).sum() for j in range(k)]))  # the medoid
    P = p[:, block].cpu().numpy()
    rows = pat.any(1)
    sub = P[rows]
    sv = np.linalg.svd(sub, compute_uv=False)
    rtol = max(sub.shape) * float(np.finfo(np.float64).eps) if rank_rtol is None else rank_rtol
    s = int((sv > rtol * sv[0]).sum()) if sv.size and sv[0] > 0 else 0
    if s == 0:
        return None
    # R: the reference first, then the neurons best independent of it (pivoted QR of the rest)
    others = [j for j in range(k) if j != ref_pos]
    q = sub[:, [ref_pos]] / np.linalg.norm(sub[:, ref_pos])
    rest = sub[:, others] - q @ (q.T @ sub[:, others])
    Rpos = [ref_pos] + [others[i] for i in _pivots(rest, s - 1)]
    Npos = [j for j in range(k) if j not in Rpos]
    R = [block[j] for j in Rpos]
    WR = W[R].cpu().numpy()
    live = np.flatnonzero(np.abs(WR).sum(0) > 0)
    T = live[_pivots(WR[:, live], s)]
    B = WR[:, T]
    if len(T) < s or np.linalg.cond(B) > 1.0 / (1e3 * np.finfo(np.float64).eps):
        return None
    Binv = np.linalg.inv(B)
    gate_on = pat[:, ref_pos]
    D = (
        np.linalg.lstsq(P[gate_on][:, Rpos], P[gate_on][:, Npos], rcond=None)[0].T
        if Npos and gate_on.any()
        else np.zeros((len(Npos), s))
    )
    Ca = np.zeros((k, k))
    Ca[np.ix_(Rpos, Rpos)] = Binv
    Ca[np.ix_(Npos, Rpos)] = -D
    Ca[np.ix_(Npos, Npos)] = np.eye(len(Npos))
    Ca = torch.as_tensor(Ca, dtype=torch.float64, device=p.device)
    v = torch.as_tensor(B[0], dtype=torch.float64, device=p.device)
    N = [block[j] for j in Npos]
    Dt = torch.as_tensor(D, dtype=torch.float64, device=p.device)
    return Ca, block[ref_pos], R, [int(t) for t in T], v, N, Dt


def _build(Ws, bs, gates) -> nn.Sequential:
    mods: list[nn.Module] = []
    for W, b, g in zip(Ws, bs, gates):
        lin = nn.Linear(W.shape[1], W.shape[0]).to(device=W.device, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(W)
            lin.bias.copy_(b)
        mods.append(lin)
        if g is not None:
            mods.append(g)
    return nn.Sequential(*mods).eval()


#: The synchronization columns of a layer that no ReLU writes.
_NO_SYNC = {"zeroed_sync": 0, "unit_sync": 0, "loss_bound_sync": 0.0}


class _Rewrite:
    """The network being rewritten: weights, biases, gates and bases, changed step by step."""

    def __init__(self, linears: list[nn.Linear], relu: list[bool], x: Tensor):
        L = len(linears)
        self.x, self.n, self.device = x, len(x), x.device
        self.W0 = [lin.weight.detach().to(torch.float64).clone() for lin in linears]
        self.Ws = [w.clone() for w in self.W0]
        self.bs = [
            lin.bias.detach().to(torch.float64).clone()
            if lin.bias is not None
            else torch.zeros(lin.out_features, dtype=torch.float64, device=self.device)
            for lin in linears
        ]
        self.gates: list[nn.Module | None] = [nn.ReLU() if r else None for r in relu]
        eye = lambda d: torch.eye(d, dtype=torch.float64, device=self.device)  # noqa: E731
        self.bases = [eye(w.shape[1]) for w in self.Ws] + [eye(self.Ws[-1].shape[0])]
        self.rotated: list[tuple[tuple[int, ...], ...]] = [() for _ in range(L + 1)]
        self.gate_reads: list[list[int]] = [[] for _ in range(L + 1)]
        self.dead_zeroed = [0] * L
        self.lip = [_lipschitz_after(self.W0, l) for l in range(L)]

    def _input_of(self, l: int) -> Tensor:
        return _forward(self.Ws, self.bs, self.gates, self.x, l)[-1]

    def rank_step(self, l: int, eps: float) -> dict:
        """Zero the weights reading directions of layer ``l`` of variance at most ``eps``."""
        Ws, bs, device = self.Ws, self.bs, self.device
        f = self._input_of(l)
        mu = f.mean(0)
        X = (f - mu).cpu().numpy()
        r = int((np.linalg.eigvalsh(X.T @ X / self.n) > eps).sum())
        S = _pivots(X, r)
        Sc = np.setdiff1d(np.arange(f.shape[1]), S)
        zeros_before = int((Ws[l] == 0).sum())
        bound_rank = 0.0
        if len(Sc):
            XS, XSc = X[:, S], X[:, Sc]
            A = np.linalg.lstsq(XS, XSc, rcond=None)[0].T if r else np.zeros((len(Sc), 0))
            At = torch.as_tensor(A, dtype=torch.float64, device=device)
            St, Sct = torch.as_tensor(S, device=device), torch.as_tensor(Sc, device=device)
            WSc = Ws[l][:, Sct].clone()
            resid = torch.as_tensor(XSc - XS @ A.T, dtype=torch.float64, device=device)
            bound_rank = self.lip[l] * _rms(resid @ WSc.T)
            Ws[l][:, St] += WSc @ At
            bs[l] += WSc @ (mu[Sct] - At @ mu[St])
            Ws[l][:, Sct] = 0.0
        return dict(
            activation_rank=r,
            zeroed_rank=int((Ws[l] == 0).sum()) - zeros_before,
            loss_bound_rank=bound_rank,
        )

    def sync_step(self, l: int, sb: SynchronizedBlocks, rank_rtol) -> dict:
        """Rotate each synchronized block of layer ``l + 1`` so its weights become sparse."""
        Ws, bs = self.Ws, self.bs
        p = self._input_of(l) @ Ws[l].T + bs[l]
        C, R_T, gate_blocks, done, silent, f_gated = self._block_bases(l, sb, p, rank_rtol)
        # the approximate part: each block switched by its reference neuron
        bound_sync = self.lip[l] * _rms(f_gated - torch.relu(p))
        was_zero = Ws[l] == 0
        Ws[l], bs[l] = C @ Ws[l], C @ bs[l]
        unit_sync = 0
        for R, T in R_T:  # unit weights on (R, T) hold by construction: write them exactly
            Ws[l][np.ix_(R, T)] = torch.diag(Ws[l][np.ix_(R, T)].diagonal().sign())
            unit_sync += len(R)
        # the neurons of a block beyond its rank are silent: dead ends (Jacobian drop)
        Ws[l][silent], bs[l][silent] = 0.0, 0.0
        made = (Ws[l] == 0) & ~was_zero
        self.dead_zeroed[l] = int(made[silent].sum())
        Ws[l + 1] = Ws[l + 1] @ torch.linalg.inv(C)
        if done:
            self.gates[l] = BlockGate(len(C), gate_blocks)
            self.gate_reads[l + 1] = sorted(i for _, R, _ in gate_blocks for i in R)
        self.bases[l + 1] = C
        self.rotated[l + 1] = tuple(done)
        return dict(
            zeroed_sync=int(made.sum()) - self.dead_zeroed[l],
            unit_sync=unit_sync,
            loss_bound_sync=bound_sync,
        )

    def _block_bases(self, l: int, sb: SynchronizedBlocks, p: Tensor, rank_rtol):
        """The basis change ``C`` of layer ``l + 1``'s neurons, block by block, and its parts."""
        W, device = self.Ws[l], self.device
        on = (p > 0).cpu().numpy()
        C = torch.eye(p.shape[1], dtype=torch.float64, device=device)
        gate_blocks, done, R_T, silent = [], [], [], []
        f_gated = torch.relu(p)
        for blk in sb.blocks:
            if len(blk) == 1:  # the ReLU's own rescaling: c > 0 commutes with it
                i = blk[0]
                t = int(W[i].abs().argmax())
                if W[i, t] != 0:
                    C[i, i] = 1.0 / W[i, t].abs()
                    R_T.append(([i], [t]))
                continue
            res = _rotate_block(W, p, on, list(blk), rank_rtol)
            if res is None:  # no invertible block of weights: left as it is
                continue
            Ca, ref, R, T, v, N, D = res
            bi = torch.as_tensor(blk, device=device)
            C[bi[:, None], bi[None, :]] = Ca
            gate = (p[:, ref] > 0)[:, None].to(p.dtype)
            f_gated[:, bi] = p[:, bi] * gate
            if N:  # rows N are silent on the data: their neurons carry D p_R
                f_gated[:, N] = (p[:, R] @ D.T) * gate
                silent.extend(N)
            gate_blocks.append((list(blk), R, v))
            R_T.append((R, T))
            done.append(tuple(blk))
        return C, R_T, gate_blocks, done, silent, f_gated

    def dead_ends(self) -> None:
        """Zero the weights into neurons whose outgoing weights are all zero, output backwards."""
        Ws, bs = self.Ws, self.bs
        for l in range(len(Ws) - 1, 0, -1):
            dead = (Ws[l] == 0).all(0)
            dead[self.gate_reads[l]] = False  # a gate reads them: not dead ends
            before = int((Ws[l - 1] == 0).sum())
            Ws[l - 1][dead] = 0.0
            bs[l - 1][dead] = 0.0
            self.dead_zeroed[l - 1] += int((Ws[l - 1] == 0).sum()) - before


# ---------------------------------------------------------------------------------- sparsify
def sparsify(
    model: nn.Sequential,
    data,
    *,
    eps: float,
    mismatch: float = 0.0,
    rank_rtol: float | None = None,
    batch_size: int = 256,
) -> SparsifiedModel:
    """Rewrite a ReLU MLP so that its rank drops and synchronized blocks become absent interactions.

    See the module docstring for the construction (sec. 4, eqs. 23-28) and the loss bound.

    Parameters
    ----------
    model : nn.Sequential
        ``Linear (-> ReLU) -> ... -> Linear``, in eval mode. Not modified; the rewrite is float64.
    data : tensor of shape (n_samples, d_0), array, or re-iterable of batches
        The inputs on which the new network must agree with the old one (held in memory).
    eps : float
        Activation rank threshold: a direction of layer ``l`` counts when its variance (eigenvalue
        of the centered ``G_l``, in activation units squared) exceeds ``eps``; also the noise scale
        of the returned interaction graphs. Tiny (e.g. ``1e-10``) for exact degeneracies.
    mismatch : float
        Fraction of inputs on which the firing patterns of a block may disagree (0: exact). Named
        ``tol`` before 0.2; that name still works, with a DeprecationWarning.
    rank_rtol : float or None
        Rank of a block's preactivations: singular values above ``rank_rtol * sigma_max`` count.
        None: ``max(n, k) * machine eps`` (as :func:`~modgraph.diagnostics.synchronized_blocks`).
    batch_size : int
        Batch size used to read ``data`` and by the degeneracy diagnostics.

    Returns
    -------
    SparsifiedModel

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    >>> x = torch.randn(200, 2, dtype=torch.float64) @ torch.randn(2, 3, dtype=torch.float64)
    >>> s = sparsify(net, x, eps=1e-10)
    >>> s.layers[0].activation_rank, s.layers[0].zeroed_rank  # one input direction unused
    (2, 4)
    >>> bool((s.model(x) - net(x)).abs().max() < 1e-10)
    True
    """
    where = "sparsify"
    eps = check_real(where, "eps", eps, low=0, low_open=True)
    mismatch = check_real(where, "mismatch", mismatch, low=0, high=1)
    check_int(where, "batch_size", batch_size, low=1)
    if rank_rtol is not None:
        rank_rtol = check_real(where, "rank_rtol", rank_rtol, low=0)
    linears, relu = _parse_mlp(model)
    chain = LayerChain.from_model(model)
    names = chain.names
    L = len(linears)
    device = linears[0].weight.device
    batches = list(
        Batches(data, batch_size=batch_size, device=device, dtype=torch.float64, where=where)
    )
    if not batches:
        raise InputError("data is empty: it yielded no samples")
    x = torch.cat(batches).reshape(sum(len(b) for b in batches), -1)
    if x.shape[1] != linears[0].in_features:
        raise InputError(
            f"data has {x.shape[1]} features per sample but the first Linear reads "
            f"{linears[0].in_features}"
        )
    n = len(x)

    m64 = copy.deepcopy(model).to(torch.float64).eval()
    ranks = layer_ranks(m64, x, threshold=eps, batch_size=batch_size)
    sync = [None] + [
        synchronized_blocks(m64, x, l + 1, mismatch=mismatch, batch_size=batch_size,
                            rank_rtol=rank_rtol)
        if relu[l]
        else None
        for l in range(L)
    ]  # fmt: skip
    rw = _Rewrite(linears, relu, x)
    rows: list[dict] = []
    with torch.no_grad():
        for l in range(L):
            row = rw.rank_step(l, eps)  # step 1: activation rank drop at layer l (eqs. 23-24)
            sb = sync[l + 1]  # step 2: synchronized blocks of layer l + 1 (eqs. 25-28)
            row.update(rw.sync_step(l, sb, rank_rtol) if sb is not None else _NO_SYNC)
            row.update(
                dof_sync=sb.degrees_of_freedom if sb is not None else 0,
                rescalings=sum(sb.ranks) if sb is not None else 0,
            )
            rows.append(row)
        rw.dead_ends()  # step 3: dead ends, from the output back
        Ws, bs, W0 = rw.Ws, rw.bs, rw.W0
        new = _build(Ws, bs, rw.gates)
        y_ref = m64(x)
        y_new = new(x)
        loss = behavioral_loss(y_new, y_ref)
        bound = sum(r["loss_bound_rank"] + r["loss_bound_sync"] for r in rows) ** 2
        fs_new = _forward(Ws, bs, rw.gates, x, L - 1)
        b0 = [lin.bias.detach().double() if lin.bias is not None else 0.0 for lin in linears]
        fs_old = _forward(W0, b0, [nn.ReLU() if r else None for r in relu], x, L - 1)
        fs_new.append(y_new)
        fs_old.append(y_ref)
    layers = tuple(
        SparsifiedLayer(
            name=names[l],
            name_out=names[l + 1],
            d_in=Ws[l].shape[1],
            d_out=Ws[l].shape[0],
            dof_rank=ranks.layers[l].freed_by_activations,
            zeroed_dead_ends=rw.dead_zeroed[l],
            absent_before=int((W0[l] == 0).sum()),
            absent_after=int((Ws[l] == 0).sum()),
            **rows[l],
        )
        for l in range(L)
    )
    return SparsifiedModel(
        model=new,
        layer_names=tuple(names),
        weights=tuple(Ws),
        biases=tuple(bs),
        bases=tuple(rw.bases),
        blocks=tuple(rw.rotated),
        layers=layers,
        graph=_graph(names, Ws, fs_new, eps),
        original_graph=_graph(names, W0, fs_old, eps),
        behavioral_loss=loss,
        loss_bound=bound,
        eps=eps,
        mismatch=mismatch,
        n_samples=n,
        ranks=ranks,
        sync=tuple(sync),
    )

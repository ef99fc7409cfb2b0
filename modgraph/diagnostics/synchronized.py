"""Synchronized ReLUs: neurons that fire on the same inputs, and the degrees of freedom that
adds (paper sec. 3.2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._validation import check_int, check_real
from ..chain import LayerChain, LayerSelector, device_and_dtype
from ..data import Batches
from ..errors import InputError
from ..statistics import check_finite

__all__ = ["SynchronizedBlocks", "synchronized_blocks", "group_patterns"]


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
    mismatch : float
        Largest within-block disagreement of firing patterns allowed (0: identical patterns).
    n_samples : int
    """

    layer: str
    blocks: tuple[tuple[int, ...], ...]
    ranks: tuple[int, ...]
    always_on: tuple[int, ...]
    dead: tuple[int, ...]
    degrees_of_freedom: int
    mismatch: float
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
    mismatch: float = 0.0,
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
    is the synchronization. A block of one neuron contributes 1, the usual ReLU rescaling symmetry.

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
    mismatch : float
        Approximate synchronization: two neurons are in sync when their firing patterns disagree on
        at most this fraction of the inputs (the Hamming distance of the on/off patterns, our
        reading of the eq. 20 measure). Blocks are formed by complete linkage, so every pair in a
        block is within ``mismatch``. 0 groups identical patterns only. (Named ``tol`` before 0.2;
        that name still works, with a DeprecationWarning.)
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
    where = "synchronized_blocks"
    mismatch = check_real(where, "mismatch", mismatch, low=0, high=1)
    check_int(where, "batch_size", batch_size, low=1)
    if rank_rtol is not None:
        rank_rtol = check_real(where, "rank_rtol", rank_rtol, low=0)
    chain = LayerChain.from_model(model, layers)
    l = chain.index(layer)
    name = chain.names[l]
    stage = chain.stages[l - 1] if l > 0 else None
    last = stage[-1] if isinstance(stage, nn.Sequential) else stage
    if not isinstance(last, nn.ReLU):
        raise InputError(f"layer {name!r} is not the output of a ReLU")
    before = stage[:-1] if isinstance(stage, nn.Sequential) else None
    device, dtype = device_and_dtype(chain)
    pres = []
    for bi, x in enumerate(
        Batches(data, batch_size=batch_size, device=device, dtype=dtype, where=where)
    ):
        with torch.no_grad():
            f = chain.forward(x, upto=l - 1)[-1]
            p = before(f) if before is not None else f
        check_finite(p, "preactivations", name, bi)
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
    labels = group_patterns(on[:, alive], mismatch)
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
        mismatch=mismatch,
        n_samples=n,
    )


def group_patterns(on: np.ndarray, mismatch: float) -> np.ndarray:
    """Block label per column of a boolean (n, k) firing matrix."""
    k = on.shape[1]
    if k == 0:
        return np.zeros(0, dtype=int)
    if mismatch == 0 or k == 1:
        _, labels = np.unique(on.T, axis=0, return_inverse=True)
        return labels.reshape(-1)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    dist = pdist(on.T, metric="hamming")  # fraction of inputs where two patterns differ
    return fcluster(linkage(dist, method="complete"), t=mismatch, criterion="distance")

"""Fixing the interaction basis where the data does not: sparse rotations of undetermined pairs.

The interaction basis is defined only up to a rotation inside (near-)degenerate eigenspaces of the
whitened ``M`` (paper sec. 6.2). At finite data the rotation between two directions ``i, j`` is
picked by sampling noise in their cross terms of ``G`` and ``M``. In importance-scaled basis
coordinates ``a = f_hat`` (covariance ``Lambda``) with per-sample Jacobian ``B = J C^+`` (Gram
``I``), how much direction ``j`` leaks into the fitted row ``i`` of ``C`` is, to first order,

.. math::

    \theta_{ij} = \frac{\\mathbb E_x[\\psi_{ij}]}{\\lambda_i - \\lambda_j}, \\qquad
    \\psi_{ij} = \\sqrt{\\lambda_j/\\lambda_i}\\; a_i a_j
        + \\sqrt{\\lambda_i \\lambda_j}\\; (B^T B)_{ij},

whose expectation is zero in the population, so ``SE(theta_ij) = sd_x(psi_ij) / (sqrt(n)
|lambda_i - lambda_j|)`` (:func:`mixing_error`; for the output's PCA basis ``psi = a_i a_j``). For
two planted modules whose ``Lambda`` values are close this is large: the fitted directions mix
the modules and carry edges into both.

:func:`sparse_rotation` treats every pair with ``SE > angle_se`` as undetermined by the data and
chooses its rotation (within ``± z * SE``, at most ``pi/4``) to make the interaction edges sparse:
Jacobi sweeps over the undetermined pairs, each minimising the summed ``w`` (an L1 sparsity
criterion) of the edges that touch the two directions. A linear stage makes the transition
diagonal (appendix A), so a pair is rotated jointly with its images through linear stages (else
the rotation would only trade the edges it removes for off-diagonal ones). Pairs the data does
determine are left exactly as fitted: where every ``Lambda`` gap is large compared to its sampling
error the basis is unchanged, bit for bit.

Cost. Every quantity the criterion needs is a moment over samples of basis coordinates and
per-sample Jacobians (:func:`_moments`), held for up to ``max_samples`` samples. On a wide layer
a direction's eigenvalue can be within sampling error of dozens of others' (a random MLP
784-512-512-10 at 3000 samples has 19,300 undetermined pairs), so each direction keeps only its
``max_partners`` most undetermined partners, and the pairs of a layer are split into rounds of
disjoint pairs (greedy edge coloring) that are evaluated and rotated together: rotations of
disjoint pairs touch disjoint rows and columns (parallel Jacobi ordering). One pair at a time took
over 10 minutes on that MLP; rounds take 6 s (``benchmarks/bench_analyze.py``).

Sequences count positions as samples and sum the squared attributions over output positions, as
:mod:`modgraph.statistics` and :mod:`modgraph.edges` do. Under ``torch.distributed`` every mean is
summed over ranks (with rank-independent chunking), so every rank takes the same decisions.

What a rotation keeps: ``C @ C_pinv = I`` (to round-off), the kept subspace, descending
importance, determinism, and invariance to invertible maps of linear layers (everything it reads
is computed in basis coordinates). For interaction layers the activation covariance ``C G C^T``
stays exactly diagonal, the new importance being the diagonal of ``Q Lambda Q^T``; ``C_pinv^T M
C_pinv`` keeps a unit diagonal, but inside a rotated pair its off-diagonal is
``~ theta |lambda_i - lambda_j| / (lambda_i + lambda_j)``.

How far it may turn: the composed rotation of a layer, ``Q = exp(A)`` (``A`` antisymmetric,
``A_ij`` to first order the angle between the rotated and the fitted directions ``i, j``), moves
no pair by more than ``z`` of its standard errors (and ``pi/4``): ``|A_ij| <= z SE_ij`` for every
pair, rotated or not. Three things hold it there. A unit's turns add up over the sweeps within
its bound (not up to its bound in each sweep); a unit turns no further than the ``z`` standard
errors of its images in later layers allow; and a direction turned with several partners also
moves against directions it was never paired with (second-order terms), so the composed ``A`` is
computed after the sweeps (:func:`_composed_excess`) and, where it exceeds a bound, the sweeps
run again from the fitted basis with the bounds shrunk by the excess (those of the layers that
moved too far, and of every layer linked to them through linear stages), at most
``MAX_SHRINKS`` times. A layer that still went too far then has every composed angle scaled back
(``exp(t A)``, its most-moved pair at its bound) if no linear stage links it to another; linked
layers are left as fitted, with a warning (scaled alone, their images would no longer follow).
Before this check the composed rotation of ``tests/test_rotation.py``'s 4-module hidden case
moved a pair 1.93 times its bound (two sweeps, each up to the bound).
For the output's PCA basis (only ``G``), a rotated pair's covariance gets the off-diagonal
instead.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.linalg
import torch
from torch import Tensor
from torch.func import vjp

from . import distributed
from ._validation import check_int, check_real
from .basis import LayerBasis, fix_signs, tie_groups
from .chain import LayerChain
from .data import Batches
from .statistics import DEFAULT_JACOBIAN_BUDGET, jacobian_rows, rows

__all__ = ["ROTATIONS", "RotationSettings", "sparse_rotation", "mixing_error"]

ROTATIONS = ("sparse", "none")
#: Fewest data samples the standard errors and the sparsity criterion are estimated from.
MIN_SAMPLES = 256
#: Angles tried per pair (on a symmetric grid, 0 included) before two finer grids.
N_ANGLES = 41
#: Float64 elements of per-pair intermediates evaluated at once (128 MiB).
CHUNK_ELEMENTS = 2**24
#: Most rows ``B_oi B_o'i`` per sample for which :func:`_psi_square_sum` forms them.
GRAM_PAIR_ROWS = 136
#: Sweeps stop once one decreases the objective by less than this fraction of the first's.
CONVERGED = 0.05
#: Most times the sweeps are run again with every bound shrunk, while the composed rotation
#: moves some pair further than its bound (:func:`_composed_excess`) by more than EXCESS_RTOL.
MAX_SHRINKS = 4
EXCESS_RTOL = 1e-6
#: Each try shrinks the bounds by the excess and this much more (second-order terms shrink
#: faster than the bounds, so one more try is nearly always enough).
SHRINK_MARGIN = 0.05
#: Composed angles up to this are round-off of the products of turns, not a move.
ROUND_OFF = 1e-12


def _positions(f: Tensor) -> int:
    return f.shape[1] if f.ndim == 3 else 1


def _jacobian(f: Tensor, fn, readout: Tensor, C_pinv: Tensor, budget: int) -> Tensor:
    """Per-row Jacobian of ``readout @ fn(f)`` in the basis coordinates of ``f``, readout rows
    outermost.

    Rows are samples (positions of sequences as samples): shape (r, rows, P_out, k) with ``r``
    readout rows and ``P_out`` the output's positions (1 for (batch, d) outputs). That is the
    order the rows come in, so for ``P_out = 1`` it is a view, not a copy, and the sweeps'
    layout (:func:`_orient`) is one blocked transposition away.
    """
    out, pullback = vjp(fn, f)
    P_out, r = _positions(out), readout.shape[0]
    width = f.numel() // f.shape[0]
    parts = [
        g @ C_pinv
        for _, _, (g,) in jacobian_rows(pullback, out, readout, width=width, budget=budget)
    ]
    g = torch.cat(parts).reshape(r, P_out, f.shape[0], _positions(f), C_pinv.shape[1])
    return g.permute(0, 2, 3, 1, 4).reshape(r, -1, P_out, C_pinv.shape[1])


@torch.no_grad()  # a standard error, never differentiated
def _psi_square_sum(a: Tensor, lam: Tensor, B: Tensor | None) -> Tensor:
    """``sum_x psi_ij(x)^2`` over the rows of ``a`` (see :func:`mixing_error`), in float64.

    With ``psi = r a_i a_j + g (B^T B)_ij`` (``r = sqrt(lam_j / lam_i)``, ``g = sqrt(lam_i
    lam_j)``; ``B`` None: ``psi = a_i a_j``) the sum is ``r^2 (a^2)^T a^2 + 2 r g P^T P + g^2
    sum_x (B^T B)^2`` with ``P`` the rows ``a_i B_oi`` (``B``: (d, rows, k), its rows ``o``
    outermost): Gram products, run by the BLAS rather than as (rows, k, k) temporaries (MLP
    784-512-512-10, global: 0.35 s against 0.73 s on layer 0). The last term is one too, over
    the rows ``B_oi B_o'i`` (``o <= o'``, weighted ``sqrt 2`` off the diagonal), while those are
    at most ``GRAM_PAIR_ROWS`` per sample; with more (the local variant's ``B`` has a row per
    next-layer direction) it is summed per sample.
    """
    k = a.shape[1]
    total = a.new_zeros(k, k, dtype=torch.float64)
    if B is None:
        step = max(1, CHUNK_ELEMENTS // max(1, k))
        for s in range(0, a.shape[0], step):
            a2 = a[s : s + step].double().square()
            total += a2.T @ a2
        return total
    li, lj = lam[:, None], lam[None, :]
    ratio, geometric = (lj / li).sqrt(), (li * lj).sqrt()
    d = B.shape[0]
    iu = torch.triu_indices(d, d, device=B.device)
    pair_rows = iu.shape[1] <= GRAM_PAIR_ROWS
    weight = torch.where(iu[0] == iu[1], 1.0, math.sqrt(2.0)).to(B.device, torch.float64)
    per_row = k * (d + 1 + (iu.shape[1] if pair_rows else k))
    step = max(1, CHUNK_ELEMENTS // per_row)
    aa, ab, bb = (a.new_zeros(k, k, dtype=torch.float64) for _ in range(3))
    for s in range(0, a.shape[0], step):
        ac, bc = a[s : s + step].double(), B[:, s : s + step].double()
        a2 = ac.square()
        aa += a2.T @ a2
        P = (ac * bc).flatten(0, 1)
        ab += P.T @ P
        if pair_rows:
            Q = (bc[iu[0]] * bc[iu[1]]).mul_(weight[:, None, None]).flatten(0, 1)
            bb += Q.T @ Q
        else:
            bb += torch.bmm(bc.permute(1, 2, 0), bc.transpose(0, 1)).square_().sum(0)
    return (
        total.add_(aa.mul_(ratio.square()))
        .add_(ab.mul_(2 * ratio * geometric))
        .add_(bb.mul_(geometric.square()))
    )


def _standard_error(psi2_mean: Tensor, lam: Tensor, n: int) -> Tensor:
    se = psi2_mean.sqrt() / (math.sqrt(n) * (lam[:, None] - lam[None, :]).abs())
    se.fill_diagonal_(0.0)
    return se


def mixing_error(a: Tensor, lam: Tensor, n: int, B: Tensor | None = None) -> Tensor:
    """Standard error of the first-order rotation angle between every pair of directions.

    Parameters
    ----------
    a : Tensor of shape (n_sub, k)
        Basis coordinates of (a subsample of) the data: importance-scaled interaction
        coordinates (covariance ``Lambda``), or PCA coordinates (covariance the eigenvalues).
    lam : Tensor of shape (k,)
        The directions' eigenvalues (``Lambda``, or the variance for a PCA basis).
    n : int
        Number of samples ``G`` and ``M`` were estimated from.
    B : Tensor of shape (n_sub, d_out, k), optional
        Per-sample Jacobian of what ``M`` measures with respect to the coordinates; None for a
        PCA basis (orthonormal directions, ``M`` unused).

    Returns
    -------
    Tensor of shape (k, k)
        Entry ``(i, j)``: standard error of how much direction ``j`` leaks into the fitted row
        ``i`` of ``C`` (an angle in whitened coordinates); ``inf`` where eigenvalues are exactly
        tied, 0 on the diagonal. Checked against the spread over refits on independent data in
        ``tests/test_rotation.py``.
    """
    B = None if B is None else B.transpose(0, 1)
    return _standard_error(_psi_square_sum(a, lam, B) / a.shape[0], lam, n)


@dataclass
class _Samples:
    """Per-sample data of every layer, in the current basis coordinates (updated by rotations).

    ``a[l]``: (rows_l, k_l) coordinates; ``J[l]``: Jacobians of the next layer's coordinates;
    ``count[l]``: rows over all ranks; ``psi2[l]``: the mean ``psi^2`` of :func:`mixing_error`
    over all ranks.

    Each ``J[l]`` is stored with one side's directions outermost, ``major[l]``: ``"next"`` (k_{l+1},
    rows, P, k_l), as read, or ``"prev"`` (k_l, rows, P, k_{l+1}), with ``P`` the next layer's
    positions; :func:`_orient` turns the sides of the layer being rotated outermost.
    ``spare[l]``: storage for ``J[l]``'s next transposition.
    """

    a: list[Tensor]
    J: list[Tensor]
    count: list[int]
    psi2: list[Tensor]
    major: list[str]
    spare: dict[int, Tensor] = field(default_factory=dict)
    scratch: dict[str, Tensor] = field(default_factory=dict)

    def buffer(
        self, slot: str, shape: tuple[int, ...], like: Tensor, dtype: torch.dtype | None = None
    ) -> Tensor:
        """A scratch tensor of ``shape`` on ``like``'s device and of its dtype (or ``dtype``),
        reused across calls (its contents are undefined).

        The sweeps' temporaries are 100-300 MB each on a wide layer; allocated afresh, each
        one's pages are faulted in again, which measured 5x slower than writing into a reused
        buffer (``x * 2.0`` on a (223, 256, 1, 512) float32 tensor: 38 ms against 7 ms).
        """
        n, dtype = math.prod(shape), dtype or like.dtype
        flat = self.scratch.get(slot)
        if flat is None or flat.numel() < n or flat.dtype != dtype:
            flat = self.scratch[slot] = torch.empty(n, dtype=dtype, device=like.device)
        return flat[:n].view(shape)


def _orient(data: _Samples, m: int, L: int) -> None:
    """Store the Jacobians into and out of layer ``m`` with its directions outermost.

    Each rotation of layer ``m`` reads and rewrites the rows of ``J[m - 1]`` and the columns of
    ``J[m]`` of nearly all its directions; as strided gathers these dominated the sweeps
    (MLP 784-512-512-10: 10.7 s of a 38 s rotation in ``aten::index`` on the (256, 1, 512, 512)
    Jacobian), as blocks along the first dimension they are plain copies.

    A layout's storage is kept, and receives the next transposition of that Jacobian: written
    into fresh memory (whose pages fault in) a transposition of the (256, 1, 512, 512) float32
    Jacobian measured 0.5 s, into reused memory 0.08 s. The peak memory is unchanged: a
    transposition needs both layouts at once either way.
    """
    for l, side in ((m - 1, "next"), (m, "prev")):
        if 0 <= l < L and data.major[l] != side:
            J, spare = data.J[l], data.spare.get(l)
            if spare is None:
                spare = J.new_empty(J.shape)
            data.J[l] = _transposed(J.flatten(1, 2).transpose(0, 1), J.shape[1:3], spare)
            data.spare[l], data.major[l] = J, side


def _transposed(src: Tensor, middle, out: Tensor) -> Tensor:
    """``src`` (R, a, b) as a contiguous (b, *middle, a) with ``R = prod(middle)``, written into
    ``out`` (contiguous, as many elements), one of the ``R`` matrices at a time.

    Each matrix is first copied whole into a contiguous buffer (its rows are far apart in
    ``src``: row copies), then transposed from there: 2.2x faster than transposing the strided
    matrix directly (90 ms against 197 ms on a (512, 256, 1, 512) float32 Jacobian), which was
    3x faster than ``permute(...).contiguous()``, whose strided reads miss the cache.
    """
    R, a, b = src.shape
    out = out.view(b, *middle, a)
    dst = out.view(b, R, a)
    matrix = src.new_empty(a, b)
    for r in range(R):
        dst[:, r].copy_(matrix.copy_(src[r]).T)
    return out


def _directions(data: _Samples, l: int, side: str, idx: Tensor, slot: str) -> Tensor:
    """The Jacobian slices of directions ``idx`` on ``side`` of ``J[l]`` (oriented, see
    :func:`_orient`): (U, rows, P, k of the other side), in scratch buffer ``slot``."""
    J = data.J[l]
    if data.major[l] == side:
        return torch.index_select(J, 0, idx, out=data.buffer(slot, (len(idx), *J.shape[1:]), J))
    out = data.buffer(slot, (*J.shape[:3], len(idx)), J)
    return torch.index_select(J, 3, idx, out=out).permute(3, 1, 2, 0)


def _turn(
    data: _Samples, l: int, side: str, pairs: Tensor, c: Tensor, y: Tensor | None = None
) -> None:
    """Replace the slices ``y_p, y_q`` of every pair on ``side`` of ``J[l]`` by
    ``c00 y_p + c01 y_q`` and ``c10 y_p + c11 y_q`` (``c``: (U, 2, 2), the data's dtype).

    The pairs' slices are gathered interleaved (``p0, q0, p1, q1, ...``), so one batched
    (2, 2) @ (2, N) product turns them all: one gather, one product and one scatter, where
    forming each new slice separately took two of each and four elementwise passes. ``y``: the
    slices, if already gathered (:func:`_moments` gathers them), saving the gather.
    """
    idx = pairs.reshape(-1)
    if y is None:
        y = _directions(data, l, side, idx, "y")
    out = data.buffer("t", y.shape, y)
    torch.bmm(c, y.reshape(len(pairs), 2, -1), out=out.view(len(pairs), 2, -1))
    _set_directions(data, l, side, idx, out)


def _set_directions(data: _Samples, l: int, side: str, idx: Tensor, value: Tensor) -> None:
    """Write slices shaped as :func:`_directions` returns them back into ``J[l]``."""
    if data.major[l] == side:
        data.J[l].index_copy_(0, idx, value)
    else:
        data.J[l].index_copy_(3, idx, value.permute(3, 1, 2, 0))


def _width(data: _Samples, l: int, side: str) -> int:
    """Directions on ``side`` of the oriented ``J[l]``."""
    return data.J[l].shape[0 if data.major[l] == side else 3]


@torch.no_grad()
def _read(chain, bases, batches, max_samples, global_, memory_budget, budget) -> _Samples | str:
    """Read up to ``max_samples`` samples (over all ranks), or say why the rotation cannot run.

    Which samples are read does not depend on the order of the data: each sample gets a key
    computed from its content (:func:`sample_keys`) and the ones with the smallest keys are
    used, so a shuffled DataLoader or a permuted tensor gives the same basis (up to rounding).
    """
    L = len(chain) - 1
    # per sample: its key, its rows (positions of sequences count as samples) and the bytes it
    # holds; batches of sequences of different lengths differ in both
    keys, sizes, by_shape = [], [], {}
    for x in batches:
        shape = tuple(x.shape[1:])
        if shape not in by_shape:  # one forward of one sample per sample shape
            one = chain.forward(x[:1])
            if any(not f.is_floating_point() for f in one):
                return "a layer's activations are not floating point"
            P = [_positions(f) for f in one]
            per = one[0].element_size() * sum(
                P[l] * (bases[l].k + (P[l + 1] * bases[l + 1].k * bases[l].k if l < L else 0))
                for l in range(L + 1)
            )
            by_shape[shape] = (float(P[0]), float(per))
        keys.append(sample_keys(x))
        sizes.append(torch.tensor(by_shape[shape], dtype=torch.float64).expand(len(x), 2))
    if not keys:
        return "the data is empty"
    keys = torch.cat(keys)
    threshold, n_ties, ran_out = _selection(
        keys, torch.cat(sizes).to(keys.device), max_samples, memory_budget
    )
    cap = int((keys < threshold).sum()) + n_ties  # on this rank
    if not distributed.all_sum(torch.tensor(float(cap))) > 0:
        return f"no sample fits memory_budget ({memory_budget} bytes)"
    a, J = [[] for _ in range(L + 1)], [[] for _ in range(L)]
    psi2 = [torch.zeros(b.k, b.k, dtype=torch.float64, device=b.C.device) for b in bases]
    lams = [b.eigenvalues.double() for b in bases]
    n = 0
    for x in batches:
        k = sample_keys(x)
        tie = torch.nonzero(k == threshold).flatten()[:n_ties]  # ties: identical samples
        n_ties -= len(tie)
        keep = torch.cat([torch.nonzero(k < threshold).flatten(), tie]).sort().values
        if len(keep) == 0:
            continue
        x = x[keep]
        acts = chain.forward(x)
        coords = [rows(b.transform(f)).to(f.dtype) for b, f in zip(bases, acts)]
        for l in range(L + 1):
            a[l].append(coords[l])
            if l == L:
                psi2[l] += _psi_square_sum(coords[l], lams[l], None)
                continue
            f = acts[l]
            C_pinv = bases[l].C_pinv.to(f.dtype)
            Jl = _jacobian(f, chain.stage(l, x), bases[l + 1].C.to(f.dtype), C_pinv, budget)
            J[l].append(Jl)
            if global_:
                eye = torch.eye(bases[L].d, dtype=f.dtype, device=f.device)
                Bl = _jacobian(f, lambda f, l=l, x=x: chain.run_from(l, f, x), eye, C_pinv, budget)
            else:
                Bl = Jl
            # (r, rows, P, k) as (P * r, rows, k): a view for P = 1
            psi2[l] += _psi_square_sum(coords[l], lams[l], Bl.transpose(1, 2).flatten(0, 1))
        n += x.shape[0]
        if n >= cap:
            break
    a = [torch.cat(t) for t in a]
    total = int(distributed.all_sum(torch.tensor(float(a[0].shape[0]), dtype=torch.float64)))
    if total < MIN_SAMPLES:
        if ran_out:  # the data ran out
            return f"the data has {total} samples, fewer than the {MIN_SAMPLES} it needs"
        return (
            f"only {total} samples fit max_samples and memory_budget (at least {MIN_SAMPLES} "
            "are needed; raise memory_budget or keep fewer directions)"
        )
    count = [
        int(distributed.all_sum(torch.tensor(float(t.shape[0]), dtype=torch.float64)).item())
        for t in a
    ]
    psi2 = [distributed.all_sum(p) / c for p, c in zip(psi2, count)]
    return _Samples(a, [_rows(t) for t in J], count, psi2, ["next"] * L)


def _rows(parts: list[Tensor]) -> Tensor:
    """Per-batch Jacobians (r, rows, P_out, k) as one, rows after rows. Batches of sequences of
    different lengths have different ``P_out``: the missing output positions are zero blocks,
    which add nothing to any sum over output positions (and a zero block is allowed wherever a
    transition is tested for linearity)."""
    P = max(t.shape[2] for t in parts)
    return torch.cat([torch.nn.functional.pad(t, (0, 0, 0, P - t.shape[2])) for t in parts], 1)


def _selection(keys: Tensor, sizes: Tensor, max_rows: int, budget: int):
    """Which samples the rotation reads: the ones with the smallest keys over *all* ranks, in
    key order until their rows reach ``max_rows`` or their bytes would pass ``budget``, so that
    any sharding or order of the data (a shuffled loader reads another order on every pass)
    reads the samples one process would. ``sizes``: each sample's rows and bytes, (n, 2).

    Returns the threshold (keys below it are read), how many of this rank's keys equal to it
    are read too (equal keys are equal samples: ranks take them in rank order), and whether
    that is all of the data.
    """
    table, lengths = distributed.all_concat(torch.cat([keys[:, None], sizes], 1))
    every = table[:, 0]
    sorted_keys, order = torch.sort(every.cpu(), stable=True)
    cum_rows, cum_bytes = torch.cumsum(table.cpu()[order, 1:], 0).T.contiguous()
    enough = int(torch.searchsorted(cum_rows, float(max_rows))) + 1  # rows reach max_rows
    m = min(enough, int((cum_bytes <= budget).sum()), len(every))
    if m == 0:
        return -math.inf, 0, False
    if m == len(every):
        return math.inf, 0, True
    threshold = float(sorted_keys[m - 1])
    wanted = m - int((every < threshold).sum())  # ties to read, over all ranks
    start = sum(lengths[: distributed.rank()])
    before = int((every[:start] == threshold).sum())  # ties on earlier ranks
    mine = int((keys == threshold).sum())
    return threshold, min(mine, max(0, wanted - before)), False


def sample_keys(x: Tensor) -> Tensor:
    """A pseudo-random key in [0, 1) per sample (row of ``x``), a function of its content only.

    A fixed random projection of the flattened sample, scrambled: equal samples get equal keys
    and any order of the data gives every sample the same key.
    """
    flat = x.reshape(len(x), -1).to(torch.float64)
    g = torch.Generator().manual_seed(0)
    r = torch.randn(flat.shape[1], generator=g, dtype=torch.float64).to(flat.device)
    return torch.frac(torch.sin(flat @ r) * 43758.5453).abs()


def _mean(t: Tensor, count: int) -> Tensor:
    """Mean over all ranks of a local sum."""
    return distributed.all_sum(t) / count


def _monomial_map(J: Tensor, count: int):
    """A *linear* transition that maps directions one-to-one: ``({j: (i, sign)}, T)``.

    The interaction basis makes a linear stage's transition diagonal up to order and sign (paper
    appendix A), so a rotation of two directions must be matched by the same rotation of their
    images, or the transition stops being diagonal. ``T`` is the transition (mean over samples,
    the same on every rank). Empty when the Jacobian varies over samples; for sequences each
    output position's block must be either ``T`` or zero (a position-wise linear map).
    """
    rtol = max(1e-8, 1e3 * torch.finfo(J.dtype).eps)  # float32 Jacobians: 1.2e-4
    T = _mean(J.sum((1, 2), dtype=torch.float64), count)  # J: (k_next, rows, P, k_prev)
    scale = float(T.abs().max())
    # every (sample, output position) block is T or zero, and each sample's blocks sum to T
    Tj = T.to(J.dtype)[:, None, None, :]

    def deviation(J: Tensor) -> Tensor:
        dev = torch.minimum((J - Tj).abs().amax((0, 3)), J.abs().amax((0, 3))).amax()
        return torch.maximum(dev, (J.sum(2, keepdim=True) - Tj).abs().amax())

    # a non-linear stage's first sample already deviates: the full check (0.6 s on a
    # (256, 1, 512, 512) Jacobian) only runs where it could pass
    bad = bool(deviation(J[:, :1]) > rtol * scale) or bool(deviation(J) > rtol * scale)
    bad = torch.tensor(float(bad), dtype=torch.float64, device=J.device)
    if scale == 0 or float(distributed.all_sum(bad)) > 0:
        return {}, None
    big = T.abs() > rtol**0.5 * scale
    out = {}
    for j in range(T.shape[1]):
        rows_j = torch.nonzero(big[:, j]).flatten().tolist()
        if len(rows_j) == 1 and int(big[rows_j[0]].sum()) == 1:
            out[j] = (rows_j[0], 1.0 if T[rows_j[0], j] > 0 else -1.0)
    return out, T


def _scale(lam: Tensor, kind: str) -> Tensor:
    # f_hat = D z with z the coordinates the rotation is orthogonal in
    return lam.sqrt() if kind == "importance" else torch.ones_like(lam)


def _rotation_blocks(theta: Tensor, m: Tensor, kind: str) -> Tensor:
    """``R = D' Q D^-1`` on each unit's pair for each angle: theta (U, T), m (U, 2, 2) -> (U, T,
    2, 2). ``m`` is the pair's block of ``Q Lambda Q^T`` so far; the new importances are the
    diagonal of ``Q m Q^T``."""
    c, s = theta.cos(), theta.sin()
    m00, m01, m11 = m[:, 0, 0, None], m[:, 0, 1, None], m[:, 1, 1, None]
    lp = c**2 * m00 + 2 * c * s * m01 + s**2 * m11
    lq = s**2 * m00 - 2 * c * s * m01 + c**2 * m11
    d0, d1 = _scale(m00, kind), _scale(m11, kind)
    dp, dq = _scale(lp, kind), _scale(lq, kind)
    row_p = torch.stack([dp * c / d0, dp * s / d1], -1)
    row_q = torch.stack([-dq * s / d0, dq * c / d1], -1)
    return torch.stack([row_p, row_q], -2)


def _outer(r: Tensor) -> Tensor:
    """(..., 2, 2) -> (..., 2, 4): row ``alpha`` holds ``r[alpha, a] r[alpha, b]``."""
    return (r[..., :, :, None] * r[..., :, None, :]).flatten(-2)


@dataclass
class _Level:
    layer: int
    pairs: Tensor  # (U, 2) direction indices
    sign: Tensor  # (U,) angle sign relative to the first level


def _select(levels: list[_Level], which) -> list[_Level]:
    """The same units' levels restricted to ``which`` (a slice or a boolean mask)."""
    return [replace(lev, pairs=lev.pairs[which], sign=lev.sign[which]) for lev in levels]


def _chains(l, pairs, maps, L) -> list[list[tuple[int, tuple[int, int], float]]]:
    """For each pair of layer ``l``: the layers, pairs and angle signs its rotation carries."""
    out = []
    for p, q in pairs:
        unit, m, sign = [(l, (p, q), 1.0)], l, 1.0
        while m < L and p in maps[m] and q in maps[m]:
            (p, sp), (q, sq) = maps[m][p], maps[m][q]
            m, sign = m + 1, sign * sp * sq
            unit.append((m, (p, q), sign))
        out.append(unit)
    return out


def _limit_partners(pairs: list[tuple[int, int]], max_partners: int) -> list[tuple[int, int]]:
    """The pairs, in the given order, skipping those whose directions have ``max_partners``."""
    count: dict[int, int] = {}
    out = []
    for p, q in pairs:
        if count.get(p, 0) < max_partners and count.get(q, 0) < max_partners:
            out.append((p, q))
            count[p], count[q] = count.get(p, 0) + 1, count.get(q, 0) + 1
    return out


def _rounds(pairs: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Split pairs into rounds of disjoint pairs (greedy edge coloring, in the given order).

    Rotations of disjoint pairs of one layer change disjoint rows and columns, so a round is
    evaluated and applied at once (parallel Jacobi ordering)."""
    rounds, used = [], []
    for p, q in pairs:
        for r, u in zip(rounds, used):
            if p not in u and q not in u:
                r.append((p, q))
                u.update((p, q))
                break
        else:
            rounds.append([(p, q)])
            used.append({p, q})
    return rounds


def _products(y0: Tensor, y1: Tensor) -> tuple[tuple[Tensor, Tensor], ...]:
    """The factors of the pair's three second moments: pp, pq, qq."""
    return (y0, y0), (y0, y1), (y1, y1)


def _moments(data: _Samples, trans, levels: list[_Level], sl: slice, L: int):
    """The data moments the edges touching a chunk of units depend on, for any rotation.

    An edge into a pair is ``w^2 = E[(a_prev_i (R J_in)_{alpha i})^2]``, a quadratic form in the
    rows of ``R`` (``A``: (U, 4, k_prev)); an edge out of it is ``E[(R a)_alpha^2 (J_out
    R^-1)_{j alpha}^2]``, quartic (``E``: (U, 16, k_next)); between pairs joined by a constant
    transition the edges need that transition's block and the pair's second moment. Sequences
    sum the squared attributions of all output positions. Means over all ranks.

    Also returns the Jacobian slices it gathered, ``{(layer, side): slices}`` (interleaved
    pairs, as :func:`_turn` takes them), which stay valid until the chunk's units are turned.
    """
    first, last = levels[0], levels[-1]
    A = E = None
    gathered = {}
    if first.layer > 0:
        l = first.layer - 1
        w = data.a[l].abs()[None, :, None, :]
        y = gathered[l, "next"] = _directions(data, l, "next", first.pairs[sl].reshape(-1), "ya")
        x = torch.mul(y, w, out=data.buffer("xw", y.shape, y))
        x0, x1 = x[0::2], x[1::2]  # (U, rows, P, k): the pairs' p and q slices
        t = data.buffer("t", x0.shape, x0)
        t64, pairs = data.buffer("f64", x0.shape, x0, torch.float64), _products(x0, x1)
        # summed over (rows, P) in float64; copied first, as sum(dtype=float64) of float32 is a
        # slow path (75 ms against 20 ms on (223, 256, 1, 512))
        sums = [t64.copy_(torch.mul(u, v, out=t)).flatten(1, 2).sum(1) for u, v in pairs]
        A = torch.stack(sums, 1)
        A = _mean(A, data.count[l])[:, [0, 1, 1, 2]]  # (U, 4, k_prev): (a, b) = pp, pq, qp, qq
    if last.layer < L:
        m, idx = last.layer, last.pairs[sl]
        u0, u1 = data.a[m][:, idx[:, 0]], data.a[m][:, idx[:, 1]]  # (rows, U)
        y = gathered[m, "prev"] = _directions(data, m, "prev", idx.reshape(-1), "ye")
        y0, y1 = y[0::2], y[1::2]  # (U, rows, P, k_next)
        YY = data.buffer("yy", (*y0.shape[:2], y0.shape[3], 3), y0)  # (U, rows, k_next, 3)
        if y0.shape[2] == 1:  # one output position: the products are the sums, written in place
            for i, (u, v) in enumerate(_products(y0[:, :, 0], y1[:, :, 0])):
                torch.mul(u, v, out=YY[..., i])
        else:
            t = data.buffer("t", y0.shape, y0)
            for i, (u, v) in enumerate(_products(y0, y1)):
                torch.sum(torch.mul(u, v, out=t), 2, out=YY[..., i])
        YY = YY.flatten(2)  # (U, rows, k_next * 3)
        uu = torch.stack([u0 * u0, u0 * u1, u1 * u1], -1).permute(1, 2, 0)  # (U, 3, rows)
        E = (uu @ YY).double().unflatten(2, (-1, 3)).transpose(2, 3)  # (U, 3, 3, k_next)
        u4 = [0, 1, 1, 2]  # (a, c) and (b, d) = pp, pq, qp, qq
        E = _mean(E[:, u4][:, :, u4].flatten(1, 2), data.count[m])  # (U, 16, k_next)
    middle = []
    for lev0, lev1 in zip(levels[:-1], levels[1:]):
        p0, p1 = lev0.pairs[sl], lev1.pairs[sl]
        Jb = trans[lev0.layer][p1[:, :, None], p0[:, None, :]]
        u = data.a[lev0.layer][:, p0]
        Sigma = torch.einsum("nua,nub->uab", u, u).double()
        middle.append((Jb, _mean(Sigma, data.count[lev0.layer])))
    return A, E, middle, gathered


def _objective(theta: Tensor, ms, levels, kinds, A, E, middle) -> Tensor:
    """L1 of the edges touching each unit's chain of rotated pairs: theta (U, T) -> (U, T)."""
    rs = [
        _rotation_blocks(theta * lev.sign[:, None], m, kinds[lev.layer])
        for lev, m in zip(levels, ms)
    ]
    total = torch.zeros_like(theta)
    if A is not None:  # edges into the first pair
        total += _root_sum(_outer(rs[0]), A)
    for r0, r1, (Jb, Sigma) in zip(rs[:-1], rs[1:], middle):  # constant transitions
        Jr = r1 @ Jb[:, None] @ torch.linalg.inv(r0)
        var = torch.einsum("utab,ubc,utac->uta", r0, Sigma, r0)
        total += (Jr.square() * var[:, :, None, :]).sqrt().sum((2, 3))
    if E is not None:  # edges out of the last pair
        r = rs[-1]
        s = torch.linalg.inv(r).transpose(-1, -2)
        k4 = (_outer(r)[..., :, :, None] * _outer(s)[..., :, None, :]).flatten(-2)
        total += _root_sum(k4, E)
    return total


def _root_sum(coef: Tensor, moments: Tensor) -> Tensor:
    """``sum_{a, j} sqrt(max(0, (coef @ moments)_{u, t, a, j}))`` for coef (U, T, 2, c) and
    moments (U, c, k): the summed edge strengths at every angle. One (T * 2, c) @ (c, k) product
    per unit: broadcasting ``moments`` over the angles instead copies it T times."""
    U, T = coef.shape[:2]
    w2 = torch.bmm(coef.reshape(U, T * 2, -1), moments)
    return w2.clamp_min_(0).sqrt_().view(U, T, -1).sum(2)


def _best_angles(room: Tensor, objective) -> Tensor:
    """Per unit: grid search on ``[room[:, 0], room[:, 1]]`` (a range that holds 0; 0 included),
    refined twice around the best; 0 unless the best is a real (not round-off) improvement on
    the basis so far. Returns the angles and the decrease of the objective they bring."""
    lo, hi = room[:, 0, None], room[:, 1, None]
    grid = torch.linspace(-1.0, 1.0, N_ANGLES, dtype=torch.float64)
    grid[N_ANGLES // 2] = 0.0
    theta = torch.where(grid < 0, -lo * grid, hi * grid)
    obj = objective(theta)
    at_zero = obj[:, N_ANGLES // 2]
    value, i = obj.min(1)
    best = theta.gather(1, i[:, None])[:, 0]
    step = (hi - lo) / (N_ANGLES - 1)
    fine = torch.linspace(-1.0, 1.0, 11, dtype=torch.float64)
    for _ in range(2):
        theta = torch.maximum(torch.minimum(best[:, None] + step * fine, hi), lo)
        v, i = objective(theta).min(1)
        better = v < value
        best = torch.where(better, theta.gather(1, i[:, None])[:, 0], best)
        value = torch.where(better, v, value)
        step = step / 5
    better = value < at_zero * (1 - 1e-9)
    return torch.where(better, best, 0.0), torch.where(better, at_zero - value, 0.0)


def _apply(data: _Samples, trans, Mz, R_tot, levels, t: Tensor, kinds, gathered) -> None:
    """Rotate every level's pairs by its angle (disjoint pairs: one batched update per level).

    ``kinds``: each layer's scaling (the last one is the output). ``gathered``: Jacobian slices
    of these pairs already at hand (see :func:`_moments`). An angle of 0 turns by the identity
    exactly (cos 0 = 1, sin 0 = 0), so a unit the search left as fitted may come along."""
    L = len(kinds) - 1
    for lev in levels:
        m, idx = lev.layer, lev.pairs
        th = t * lev.sign
        block = Mz[m][idx[:, :, None], idx[:, None, :]]
        r = _rotation_blocks(th[:, None], block, kinds[m])[:, 0]
        r_inv = torch.linalg.inv(r)
        rd, r_invd = r.to(data.a[m].dtype), r_inv.to(data.a[m].dtype)  # the data's dtype
        c, s = th.cos(), th.sin()
        Q = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)
        Mz[m][idx] = Q @ Mz[m][idx]
        Mz[m][:, idx] = torch.einsum("kub,uab->kua", Mz[m][:, idx], Q)
        data.a[m][:, idx] = torch.einsum("uab,nub->nua", rd, data.a[m][:, idx])
        if m > 0:  # rows of the Jacobian into the layer: R J
            _turn(data, m - 1, "next", idx, rd, gathered.get((m - 1, "next")))
            if trans[m - 1] is not None:
                trans[m - 1][idx] = r @ trans[m - 1][idx]
        if m < L:  # columns of the Jacobian out of it: J R^-1
            _turn(data, m, "prev", idx, r_invd.transpose(1, 2), gathered.get((m, "prev")))
            if trans[m] is not None:
                trans[m][:, idx] = torch.einsum("jub,uba->jua", trans[m][:, idx], r_inv)
        R_tot[m][idx] = r @ R_tot[m][idx]


@dataclass(frozen=True)
class RotationSettings:
    """The options of :func:`sparse_rotation` (see there); checked on construction."""

    angle_se: float = 0.02
    z: float = 3.0
    max_samples: int = 256
    n_sweeps: int = 2
    max_partners: int = 12
    tie_rtol: float = 1e-3
    memory_budget: int = 2**30
    jacobian_budget: int = DEFAULT_JACOBIAN_BUDGET

    def __post_init__(self):
        where = "sparse_rotation"
        check_real(where, "angle_se", self.angle_se, low=0)
        check_real(where, "z", self.z, low=0, low_open=True)
        check_real(where, "tie_rtol", self.tie_rtol, low=0)
        for name in ("max_samples", "n_sweeps", "max_partners", "memory_budget", "jacobian_budget"):
            check_int(where, name, getattr(self, name), low=1)


def sparse_rotation(
    chain: LayerChain,
    bases: list[LayerBasis],
    batches: Batches,
    *,
    n: int,
    variant: str = "global",
    scale: str = "importance",
    settings: RotationSettings | None = None,
    **overrides,
) -> list[LayerBasis]:
    """Rotate every pair of directions the data leaves undetermined towards sparse interactions.

    Parameters
    ----------
    chain : LayerChain
    bases : list of LayerBasis
        The fitted interaction bases (the last one the output's PCA rotation).
    batches : Batches
        The data; at most ``max_samples`` samples are read (over all ranks under
        torch.distributed: the same samples whatever the sharding).
    n : int
        Number of samples the statistics were estimated from (sets the standard errors).
    variant : {"global", "local"}
        Which Jacobian ``M`` was built from (for the standard errors).
    scale : {"importance", "whitened"}
        The scaling of the bases; ``"whitened"`` bases are returned unchanged (their linear
        transitions are diagonal but not unit, so pairs cannot be rotated jointly through them).
    settings : RotationSettings, optional
        The options below, together; keyword arguments override single fields of it.
    angle_se : float
        A pair is undetermined, and may be rotated, when the standard error of its angle exceeds
        ``angle_se`` radians.
    z : float
        The composed rotation of a layer moves no pair by more than ``z`` standard errors of
        its angle (and at most ``pi/4``), whether or not the pair was turned itself.
    max_samples : int
        Samples used for the standard errors and the sparsity criterion.
    n_sweeps : int
        Most Jacobi sweeps over the undetermined pairs of all layers (fewer once a sweep gains
        less than ``CONVERGED`` of the first sweep's decrease of the objective).
    max_partners : int
        Each direction is paired with at most this many others, its most undetermined ones.
        Bounds the work on wide layers, where a direction's eigenvalue can be close to many
        others': the number of rounds per sweep is at most ``2 * max_partners - 1``.
    tie_rtol : float
        Relative gap under which the new eigenvalues are reported as tied.
    memory_budget : int
        Most bytes of per-sample coordinates and Jacobians held at once (default 1 GiB; they
        are held in the model's dtype): fewer than ``max_samples`` samples are read when the
        layers are wide, and the basis is left as fitted, with a warning, when fewer than
        ``MIN_SAMPLES`` would fit.
    jacobian_budget : int
        Elements per vmapped chunk of Jacobian rows (as in :func:`modgraph.analyze`).

    Notes
    -----
    Sequences count each position as a sample and sum the edges over output positions, as the
    statistics and edges do. Under torch.distributed every rank reads its own samples and all
    means (standard errors, moments) are summed over ranks, so all ranks rotate alike.

    Returns
    -------
    list of LayerBasis
        New bases (the input ones where nothing is undetermined), directions in descending
        importance, signs fixed as :func:`modgraph.basis.fit_basis` fixes them.
    """
    s = replace(settings or RotationSettings(), **overrides)
    if scale != "importance":
        return list(bases)
    L = len(chain) - 1
    global_ = variant == "global"
    data = _read(chain, bases, batches, s.max_samples, global_, s.memory_budget, s.jacobian_budget)
    if isinstance(data, str):
        warnings.warn(f"rotation='sparse' left the basis as fitted: {data}", stacklevel=3)
        return list(bases)
    se, limit, bounds = _undetermined(data, bases, n, s)
    if not any(bool((b > 0).any()) for b in bounds):
        return list(bases)
    kinds = ["importance"] * L + ["pca"]
    shrink = [1.0] * (L + 1)
    for attempt in range(MAX_SHRINKS + 1):
        if attempt:  # the sweeps turned the data: read it afresh (the same samples)
            data = None  # free it first
            data = _read(chain, bases, batches, s.max_samples, global_, s.memory_budget,
                         s.jacobian_budget)  # fmt: skip
        scaled = [(b * f, x * f) for b, x, f in zip(bounds, limit, shrink)]
        Mz, R_tot, maps = _sweeps(data, bases, *zip(*scaled), se, kinds, s)
        excess = [
            _composed_excess(Mz[l], R_tot[l], b.eigenvalues.double(), limit[l], kinds[l])
            for l, b in enumerate(bases)
        ]
        # a pair's turn is carried to its images through linear stages: a run of linked layers
        # is shrunk, and judged, by the largest excess in it
        worst = {tuple(run): max(excess[l] for l in run) for run in _linked_runs(maps)}
        if max(worst.values()) <= 1 + EXCESS_RTOL or attempt == MAX_SHRINKS:
            break
        for run, e in worst.items():
            if e > 1 + EXCESS_RTOL:
                for l in run:
                    shrink[l] /= e * (1 + SHRINK_MARGIN)
    return _within_bounds(bases, Mz, R_tot, worst, kinds, s.tie_rtol)


def _within_bounds(bases, Mz, R_tot, worst: dict, kinds, tie_rtol: float) -> list[LayerBasis]:
    """The rotated bases, where a run of layers still went too far after the last try: a layer
    of its own turned back (every composed angle scaled so that the most-moved pair sits at its
    bound), linked layers left as fitted (their images would no longer follow), with a warning."""
    out = [_rotated(b, Mz[l], R_tot[l], tie_rtol) for l, b in enumerate(bases)]
    for run, e in worst.items():
        if e <= 1 + EXCESS_RTOL:
            continue
        if len(run) == 1:
            (l,) = run
            back = _scaled_back(Mz[l], R_tot[l], bases[l].eigenvalues.double(), kinds[l], 1 / e)
            out[l] = _rotated(bases[l], *back, tie_rtol)
        else:
            warnings.warn(
                f"rotation='sparse' left layers {list(run)} as fitted: after {MAX_SHRINKS} "
                f"smaller tries their composed rotation still moved a pair {e:.3g} times its "
                "bound",
                stacklevel=4,
            )
            for l in run:
                out[l] = bases[l]
    return out


def _sweeps(data: _Samples, bases, bounds, limit, se, kinds, s: RotationSettings):
    """Jacobi sweeps over the undetermined pairs: ``Q Lambda Q^T``, ``R_tot`` and the monomial
    map of every layer's transition (empty where it is not linear)."""
    L = len(bases) - 1
    maps, trans = zip(*(_monomial_map(data.J[l], data.count[l]) for l in range(L)))
    maps, trans = list(maps) + [{}], list(trans) + [None]
    Mz = [torch.diag(b.eigenvalues.double()) for b in bases]  # Q Lambda Q^T so far
    R_tot = [torch.eye(b.k, dtype=torch.float64) for b in bases]  # f_hat' = R_tot f_hat
    plans = _plans(se, bounds, limit, maps, s.max_partners)
    first_gain = None
    for _ in range(s.n_sweeps):
        gain = 0.0
        for m, groups in enumerate(plans):
            if groups:
                _orient(data, m, L)
            for levels, lim, turned in groups:
                # a unit turns by at most its bound in all, over every sweep
                room = torch.stack([-lim - turned, lim - turned], 1)
                t, g = _sweep_group(data, trans, Mz, R_tot, levels, room, kinds, L)
                turned += t
                gain += float(g[t != 0].sum())
        first_gain = gain if first_gain is None else first_gain
        if gain <= CONVERGED * first_gain:  # Jacobi sweeps converge about geometrically
            break
    return Mz, R_tot, maps


def _linked_runs(maps) -> list[list[int]]:
    """Runs of consecutive layers joined by linear stages (a non-empty monomial map)."""
    runs = [[0]]
    for l in range(1, len(maps)):
        if maps[l - 1]:
            runs[-1].append(l)
        else:
            runs.append([l])
    return runs


def _schur(Mz: Tensor, R_tot: Tensor, lam: Tensor, kind: str):
    """The composed rotation ``Q`` of a layer (orthogonal, in the coordinates ``z`` the rotation
    is orthogonal in: ``R_tot = D' Q D^-1``) as ``Z diag(w) Z^H``: ``Q`` is normal, so its
    complex Schur form is diagonal, and ``Q^t = Z diag(w^t) Z^H``, ``log Q = Z diag(log w) Z^H``."""
    Q = _scale(Mz.diagonal(), kind).reciprocal()[:, None] * R_tot * _scale(lam, kind)
    T, Z = scipy.linalg.schur(Q.cpu().numpy(), output="complex")
    return Z, np.diagonal(T)


def _composed_excess(Mz: Tensor, R_tot: Tensor, lam: Tensor, limit: Tensor, kind: str) -> float:
    """How far the composed rotation moved the layer's most-moved pair, in units of its bound.

    The sweeps turn pairs one at a time; their product ``Q = exp(A)`` (:func:`_schur`), with
    ``A`` antisymmetric and ``A_ij`` to first order the angle by which the rotated directions
    ``i, j`` differ from the fitted ones. Each unit's own turns stay within its bound, but a
    direction turned with several partners also moves against directions it was never paired
    with (second-order terms). Returns ``max |A_ij| / limit_ij`` (``limit``: ``z`` standard
    errors, at most ``pi/4``); 0 for a layer left as fitted.
    """
    if torch.equal(R_tot, torch.eye(len(lam), dtype=torch.float64)):
        return 0.0
    Z, w = _schur(Mz, R_tot, lam, kind)
    moved = np.abs(((Z * np.log(w)) @ Z.conj().T).real)
    np.fill_diagonal(moved, 0.0)
    moved[moved <= ROUND_OFF] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(moved > 0, moved / limit.cpu().numpy(), 0.0)
    return float(ratio.max())


def _scaled_back(Mz: Tensor, R_tot: Tensor, lam: Tensor, kind: str, t: float):
    """``Mz`` and ``R_tot`` of the rotation ``Q^t = exp(t A)``: every composed angle times ``t``."""
    Z, w = _schur(Mz, R_tot, lam, kind)
    Q = torch.as_tensor(((Z * w**t) @ Z.conj().T).real, dtype=torch.float64)
    Mz = Q @ torch.diag(lam.cpu()) @ Q.T
    return Mz, _scale(Mz.diagonal(), kind)[:, None] * Q / _scale(lam.cpu(), kind)


def _undetermined(data: _Samples, bases, n: int, s: RotationSettings):
    """Per layer: the angle standard errors of all pairs, how far each pair may be moved (``z``
    standard errors, at most ``pi/4``: the limit of the composed rotation, determined pairs
    included) and how far each may be turned as a pair of its own (the limit where the pair is
    undetermined, 0 where it is not)."""
    se, limit, bounds = [], [], []
    for l, basis in enumerate(bases):
        e = _standard_error(data.psi2[l], basis.eigenvalues.double(), n)
        e = torch.maximum(e, e.T)
        se.append(e)
        limit.append((s.z * e).clamp(max=math.pi / 4))
        bounds.append(limit[-1].masked_fill(e <= s.angle_se, 0.0))
    return se, limit, bounds


def _plans(se, bounds, limit, maps, max_partners: int) -> list:
    """Per layer: groups of disjoint units (pairs and their images), chains of equal length,
    and how far each unit may turn: its pair's bound, and no further than any of its images'
    ``limit`` (their own ``z`` standard errors) allows."""
    L = len(bounds) - 1
    candidates = [torch.nonzero(torch.triu(b > 0, 1)).tolist() for b in bounds]
    images = [set() for _ in range(L + 1)]  # pairs moved along with a pair of an earlier layer
    plans = []
    for l in range(L + 1):
        pairs = [tuple(pq) for pq in candidates[l] if tuple(pq) not in images[l]]
        if pairs:  # most undetermined first; one gather, not a tensor index per pair
            key = se[l][tuple(torch.tensor(pairs).T)].tolist()
            pairs = [pairs[i] for i in sorted(range(len(pairs)), key=lambda i: -key[i])]
        pairs = _limit_partners(pairs, max_partners)
        for unit in _chains(l, pairs, maps, L):
            for m, pq, _ in unit[1:]:
                images[m].add(tuple(sorted(pq)))
        groups = []
        for round_ in _rounds(pairs):
            by_length = {}
            for unit in _chains(l, round_, maps, L):
                by_length.setdefault(len(unit), []).append(unit)
            for units in by_length.values():
                levels = [
                    _Level(
                        units[0][i][0],
                        torch.tensor([u[i][1] for u in units]),
                        torch.tensor([u[i][2] for u in units], dtype=torch.float64),
                    )
                    for i in range(len(units[0]))
                ]
                lim = torch.stack([_unit_limit(u, bounds[l], limit) for u in units])
                groups.append((levels, lim, torch.zeros_like(lim)))
        plans.append(groups)
    return plans


def _unit_limit(unit, bound: Tensor, limit) -> Tensor:
    """How far a unit may turn: its first pair's bound, and its images' limits."""
    return min([bound[unit[0][1]], *(limit[m][pq] for m, pq, _ in unit[1:])])


def _rotated(basis: LayerBasis, Mz: Tensor, R_tot: Tensor, tie_rtol: float) -> LayerBasis:
    """``basis`` turned by ``R_tot``, directions in descending importance, signs fixed."""
    if torch.equal(R_tot, torch.eye(basis.k, dtype=torch.float64)):
        return basis
    lam = Mz.diagonal().clone()
    order = torch.argsort(lam, descending=True, stable=True)
    R = R_tot[order]
    C, C_pinv = fix_signs(R @ basis.C, basis.C_pinv @ torch.linalg.inv(R))
    lam = lam[order]
    return replace(basis, C=C, C_pinv=C_pinv, eigenvalues=lam, ties=tie_groups(lam, tie_rtol))


def _sweep_group(data, trans, Mz, R_tot, levels, room, kinds, L) -> tuple[Tensor, Tensor]:
    """Turn every unit of a group by its best angle; returns the angles and the decrease of the
    objective each brings.

    A chunk of units at a time (bounding memory), each turned right after its angles are found,
    while the Jacobian slices its moments gathered are at hand: the units of a group are
    disjoint, so turning one chunk changes nothing another chunk's moments read.
    """
    # per unit, the moments' intermediates hold ~ rows * positions * 4 * width elements; the
    # global row counts (not this rank's) keep the number of collectives equal on all ranks
    first, m = levels[0].layer, levels[-1].layer
    per_unit = (
        [4 * data.count[first - 1] * data.J[first - 1].shape[2] * data.a[first - 1].shape[1]]
        if first > 0
        else [1]
    )
    if m < L:
        per_unit.append(4 * data.count[m] * data.J[m].shape[2] * _width(data, m, "next"))
    step = max(1, CHUNK_ELEMENTS // max(per_unit))
    out = []
    for s in range(0, len(room), step):
        sl = slice(s, s + step)
        A, E, middle, gathered = _moments(data, trans, levels, sl, L)
        ms = [Mz[lev.layer][lev.pairs[sl, :, None], lev.pairs[sl, None, :]] for lev in levels]
        sub = _select(levels, sl)

        def objective(theta, ms=ms, sub=sub, A=A, E=E, middle=middle):
            return _objective(theta, ms, sub, kinds, A, E, middle)

        t, g = _best_angles(room[sl], objective)
        if bool((t != 0).any()):
            _apply(data, trans, Mz, R_tot, sub, t, kinds, gathered)
        out.append((t, g))
    return torch.cat([t for t, _ in out]), torch.cat([g for _, g in out])

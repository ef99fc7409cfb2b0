"""Streamed float64 statistics per layer: mean, centered activation Gram G, Jacobian Gram M.

All accumulators merge batch by batch (Chan et al.'s pairwise update for the centered Gram), so
the result does not depend on how the data are split and memory does not grow with the dataset;
under ``torch.distributed`` the ranks' accumulators merge the same way (:mod:`.distributed`).
Per-sample Jacobians are computed with ``torch.func`` (``vjp`` vmapped over chunks of output
directions) and folded into ``M`` chunk by chunk: all samples' Jacobians are never held at once.

Sequences. An activation of shape (batch, d) is one sample per row. An activation of shape
(batch, positions, d) counts every position as a sample: ``G`` and the mean are over all
(sample, position) pairs. A Jacobian couples positions (attention), so for an input position the
Jacobian rows of *all* output positions are summed in ``M``, with ``J_{q,o} = d out_{q,o}/d f_p``:
``M = E_{x, p}[sum_{q, o} J_{q,o}^T J_{q,o}]`` (``p`` input position, ``q`` output position).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import vjp, vmap

from . import distributed
from ._linalg import symmetrize
from .chain import Chain, data_error
from .data import Batches
from .errors import InputError, NonFiniteError

__all__ = [
    "LayerStatistics",
    "MomentAccumulator",
    "activation_statistics",
    "jacobian_gram",
    "global_statistics",
]

#: Elements of per-sample Jacobian rows per vmapped chunk (float64: 16 MiB). The backward pass
#: holds several times more in intermediates. Measured (torch 2.13, 2 CPU threads): 2**21 against
#: 2**25 ran the edge pass of an MLP 784-512-512-10 1.6x faster with 0.36x the peak memory, and
#: of a 1-layer transformer 1.8x faster with 0.31x the memory (smaller chunks stay in cache).
DEFAULT_JACOBIAN_BUDGET = 2**21


@dataclass(frozen=True)
class LayerStatistics:
    """Statistics of one layer over the data.

    Attributes
    ----------
    n : int
        Number of samples.
    mean : Tensor of shape (d,)
    G : Tensor of shape (d, d)
        Centered activation Gram ``E[(f - mu)(f - mu)^T]`` (float64).
    M : Tensor of shape (d, d) or None
        Jacobian Gram ``E[J^T J]`` (float64); ``None`` until computed.
    """

    n: int
    mean: Tensor
    G: Tensor
    M: Tensor | None = None


class MomentAccumulator:
    """Streaming mean and centered second moment of row vectors, in float64.

    Merging uses the pairwise update of Chan, Golub & LeVeque (1979), which keeps the centered
    Gram accurate where the naive ``E[ff^T] - mu mu^T`` cancels catastrophically.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(10, 3, dtype=torch.float64)
    >>> acc = MomentAccumulator(3)
    >>> acc.update(x[:4]); acc.update(x[4:])
    >>> torch.allclose(acc.gram(), torch.cov(x.T, correction=0))
    True
    """

    def __init__(self, d: int, device: torch.device | str = "cpu"):
        self.n = 0
        self.mean = torch.zeros(d, dtype=torch.float64, device=device)
        self.scatter = torch.zeros(d, d, dtype=torch.float64, device=device)

    def update(self, x: Tensor) -> None:
        """Fold in a batch of rows, shape (n_batch, d)."""
        x = x.to(torch.float64)
        nb = x.shape[0]
        if nb == 0:
            return
        mb = x.mean(0)
        xc = x - mb
        sb = xc.T @ xc
        n = self.n + nb
        delta = mb - self.mean
        self.scatter += sb + torch.outer(delta, delta) * (self.n * nb / n)
        self.mean += delta * (nb / n)
        self.n = n

    def merge(self, other: MomentAccumulator) -> None:
        """Fold in another accumulator (the same pairwise update as between batches)."""
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.scatter += other.scatter + torch.outer(delta, delta) * (self.n * other.n / n)
        self.mean += delta * (other.n / n)
        self.n = n

    def all_reduce(self) -> None:
        """Merge every rank's accumulator, in rank order, on every rank (no-op without a group)."""
        if not distributed.active():
            return
        n = torch.tensor([float(self.n)], dtype=torch.float64, device=self.mean.device)
        parts = zip(
            distributed.all_gather(n),
            distributed.all_gather(self.mean),
            distributed.all_gather(self.scatter),
        )
        merged = MomentAccumulator(self.mean.shape[0], self.mean.device)
        for n_r, mean_r, scatter_r in parts:
            other = MomentAccumulator(self.mean.shape[0], self.mean.device)
            other.n, other.mean, other.scatter = int(n_r.item()), mean_r, scatter_r
            merged.merge(other)
        self.n, self.mean, self.scatter = merged.n, merged.mean, merged.scatter

    def gram(self) -> Tensor:
        """Centered Gram ``E[(x - mu)(x - mu)^T]`` (population normalization), symmetrized."""
        g = self.scatter / max(self.n, 1)
        return (g + g.T) / 2


def check_finite(t: Tensor, what: str, layer: str, batch: int) -> None:
    # A sum is finite only if every entry is (an inf or a nan makes it inf or nan). Summing reads
    # the tensor once; isfinite(t).all() writes a mask first and is 24-32x slower (a float32
    # Jacobian of 512 x 500 x 784: 51 ms against 1.24 s). Only a sum that is not finite (an
    # entry, or an overflow of finite ones) pays for the exact check.
    if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
        raise NonFiniteError(f"non-finite {what} at layer {layer!r} in data batch {batch}")


def checked_forward(chain: Chain, x: Tensor, batch: int, upto: int | None = None) -> list[Tensor]:
    try:
        acts = chain.forward(x, upto)
    except (RuntimeError, IndexError) as err:  # shape/dtype mismatch: name the data
        if not x.is_floating_point():
            _check_token_ids(chain, x, batch)
            raise InputError(
                f"data batch {batch} holds integer values (dtype {x.dtype}, e.g. token ids) but "
                f"the model's first stage does not accept them; a model of tokens must start "
                f"with an embedding (nn.Embedding): {err}"
            ) from err
        raise data_error(chain.modules(), lambda x: chain.forward(x, upto), x, batch, err) from err
    for name, f in zip(chain.names, acts):
        if f.ndim not in (2, 3):
            raise InputError(
                f"layer {name!r} has activations of shape {tuple(f.shape)}; modgraph reads "
                "(batch, d) or (batch, positions, d): flatten other shapes (nn.Flatten)"
            )
        if f.is_floating_point():
            check_finite(f, "activations", name, batch)
    return acts


def _check_token_ids(chain: Chain, x: Tensor, batch: int) -> None:
    """Token ids outside an embedding's table get their own message."""
    first = chain.modules()[0]
    table = next((m for m in first.modules() if isinstance(m, torch.nn.Embedding)), None)
    if table is not None and (int(x.max()) >= table.num_embeddings or int(x.min()) < 0):
        raise InputError(
            f"data batch {batch} holds token ids from {int(x.min())} to {int(x.max())}, but the "
            f"model's embedding has {table.num_embeddings} rows (ids 0..{table.num_embeddings - 1})"
        )


def rows(f: Tensor) -> Tensor:
    """Samples as rows: (batch, d) as it is, (batch, positions, d) as (batch * positions, d)."""
    return f.reshape(-1, f.shape[-1])


def _chunk(d_out: int, n_batch: int, width: int, budget: int) -> int:
    return max(1, min(d_out, budget // max(1, n_batch * width)))


def readout_rows(readout: Tensor, out: Tensor, start: int, stop: int) -> tuple[Tensor, Tensor]:
    """Cotangents for Jacobian rows ``start:stop`` of ``readout`` applied at each output position.

    Row ``r`` is readout row ``r // P`` at output position ``r % P`` (``P = 1`` for (batch, d)
    outputs), the same for every sample. Returns the readout row index of each cotangent and the
    cotangents, shape (stop - start, *out.shape). Materialised on purpose: vmapping a pullback over
    a stride-0 expanded cotangent measured 3x slower (torch 2.13, CPU) than over a copy.
    """
    P = out.shape[1] if out.ndim == 3 else 1
    r = torch.arange(start, stop, device=out.device)
    idx, pos = r // P, r % P
    cot = out.new_zeros(len(r), out.shape[0], P, out.shape[-1])
    cot[torch.arange(len(r), device=out.device), :, pos, :] = readout[idx][:, None, :]
    return idx, cot.reshape(len(r), *out.shape)


def jacobian_rows(
    pullback,
    out: Tensor,
    readout: Tensor,
    *,
    width: int,
    budget: int,
    probes: int | None = None,
    generator: torch.Generator | None = None,
    position_sources: int | None = None,
):
    """Yield ``(row_index, weight, grads)`` chunks of per-sample Jacobian rows of ``readout @ out``.

    ``grads`` is the pullback of each cotangent (a tuple, one per input of the pullback), shape
    (chunk, *input.shape). Exact rows: every readout row at every output position, weight 1.
    With ``probes=k``: ``k`` Rademacher probes ``z`` per sample and position in readout space,
    cotangent ``z @ readout``, weight ``1/k``: then ``sum w g^T g`` is an unbiased estimate of
    ``J^T R^T R J`` with relative error ~ 1/sqrt(k); ``row_index`` is None.
    With ``position_sources=S`` and no ``probes`` (sequence outputs of ``P > S`` positions; a
    probe covers every position already): every readout row
    ``i``, ``S`` times, each time at all positions at once with a random sign per sample and
    position (``phi_t = +-1``, cotangent ``phi_t readout_i`` at position ``t``), weight ``1/S``,
    ``row_index`` ``i``. A pullback then costs one backward for all ``P`` positions, so a
    sequence costs ``O(P)`` instead of ``O(P^2)``, and ``E[(sum_t phi_t g_t)^2] = sum_t g_t^2``
    for any per-input-position quantity ``g_t`` linear in the row, since the cross terms have
    mean 0: ``sum w (.)^2`` is an unbiased estimate of the sum over output positions of squares
    (relative error ~ sqrt(2 / S) where the positions contribute alike). The reference code
    (``rib``) estimates its edges the same way.
    """
    P = out.shape[1] if out.ndim == 3 else 1
    n_rows = readout.shape[0] * P
    if probes is None and position_sources is not None and out.ndim == 3 and position_sources < P:
        k, S = readout.shape[0], position_sources
        chunk = _chunk(k * S, out.shape[0], width, budget)
        for start in range(0, k * S, chunk):
            r = torch.arange(start, min(k * S, start + chunk), device=out.device)
            idx = r // S
            phi = (
                torch.randint(0, 2, (len(r), out.shape[0], P, 1), generator=generator,
                              device="cpu").to(device=out.device, dtype=out.dtype) * 2 - 1
            )  # fmt: skip
            yield idx, 1.0 / S, vmap(pullback)(phi * readout[idx][:, None, None, :])
        return
    if probes is None or probes >= n_rows:
        chunk = _chunk(n_rows, out.shape[0], width, budget)
        for start in range(0, n_rows, chunk):
            idx, cot = readout_rows(readout, out, start, min(n_rows, start + chunk))
            yield idx, 1.0, vmap(pullback)(cot)
        return
    chunk = _chunk(probes, out.shape[0], width, budget)
    for start in range(0, probes, chunk):
        c = min(probes, start + chunk) - start
        z = (
            torch.randint(
                0, 2, (c, *out.shape[:-1], readout.shape[0]), generator=generator, device="cpu"
            ).to(device=out.device, dtype=out.dtype)
            * 2
            - 1
        )
        yield None, 1.0 / probes, vmap(pullback)(z @ readout)


def activation_statistics(
    chain: Chain, batches: Batches, *, upto: int | None = None
) -> list[MomentAccumulator]:
    """One pass over the data: mean and centered Gram of every layer (or layers ``0..upto``)."""
    upto = len(chain) - 1 if upto is None else upto
    accs: list[MomentAccumulator] | None = None
    error = None
    try:
        with torch.no_grad():
            for b, x in enumerate(batches):
                acts = checked_forward(chain, x, b, upto)
                if accs is None:
                    accs = [MomentAccumulator(f.shape[-1], batches.device) for f in acts]
                for acc, f in zip(accs, acts):
                    acc.update(rows(f))
        if accs is None:
            raise InputError("data is empty: it yielded no samples")
    except Exception as err:  # every rank must learn of it before the next collective
        error = err
    distributed.settle(error)
    for acc in accs:
        acc.all_reduce()
    return accs


@torch.no_grad()
def global_statistics(
    chain: Chain,
    batches: Batches,
    *,
    jacobian_budget: int = DEFAULT_JACOBIAN_BUDGET,
    probes: int | None = None,
    position_sources: int | None = None,
    seed: int = 0,
) -> list[LayerStatistics]:
    """One pass: mean, G and the global Jacobian Gram ``M_l = E[J_l^T J_l]``, ``J_l = df_L/df_l``.

    All layers' Jacobian rows come from one backward pass per output direction: the chain is run
    with a zero perturbation added to every layer, and the vjp with respect to the perturbations
    is the vjp with respect to the activations. Output directions are vmapped in chunks sized to
    ``jacobian_budget`` elements. ``probes=k`` estimates ``M`` from ``k`` random output probes per
    sample instead (for large outputs such as a vocabulary; see :func:`jacobian_rows`), and
    ``position_sources=S`` from ``S`` random-sign sources over the output positions per output
    direction (sequences; each probe already covers every position).
    """
    L = len(chain) - 1
    device = batches.device
    gen = torch.Generator().manual_seed(seed + distributed.rank())
    accs: list[MomentAccumulator] | None = None
    Ms: list[Tensor] = []
    error = None
    try:
        for b, x in enumerate(batches):
            acts = checked_forward(chain, x, b)
            if accs is None:
                accs = [MomentAccumulator(f.shape[-1], device) for f in acts]
                Ms = [
                    torch.zeros(
                        a.mean.shape[0], a.mean.shape[0], dtype=torch.float64, device=device
                    )
                    for a in accs
                ]
            for acc, f in zip(accs, acts):
                acc.update(rows(f))
            # layer 0 of a model of tokens is not differentiable: no perturbation there
            first = 0 if acts[0].is_floating_point() else 1
            deltas = tuple(torch.zeros_like(f) for f in acts[first:L])
            out, pullback = vjp(lambda d, x=x, first=first: chain.perturbed(x, d, first), deltas)
            eye = torch.eye(out.shape[-1], dtype=out.dtype, device=device)
            width = sum(f.numel() // x.shape[0] for f in acts)
            for _, weight, (grads,) in jacobian_rows(
                pullback,
                out,
                eye,
                width=width,
                budget=jacobian_budget,
                probes=probes,
                generator=gen,
                position_sources=position_sources,
            ):
                for l, g in zip(range(first, L), grads):
                    g = g.reshape(-1, g.shape[-1]).to(torch.float64)
                    check_finite(g, "Jacobian", chain.names[l], b)
                    Ms[l] += weight * (g.T @ g)
            # the output's Jacobian with respect to itself is the identity at every position
            Ms[L] += (
                torch.eye(Ms[L].shape[0], dtype=torch.float64, device=device)
                * rows(acts[L]).shape[0]
            )
        if accs is None:
            raise InputError("data is empty: it yielded no samples")
    except Exception as err:  # every rank must learn of it before the next collective
        error = err
    distributed.settle(error)
    out_stats = []
    for acc, M in zip(accs, Ms):
        acc.all_reduce()
        out_stats.append(
            LayerStatistics(acc.n, acc.mean, acc.gram(), symmetrize(distributed.all_sum(M) / acc.n))
        )
    return out_stats


@torch.no_grad()
def jacobian_gram(
    chain: Chain,
    layer: int,
    readout: Tensor,
    batches: Batches,
    *,
    jacobian_budget: int = DEFAULT_JACOBIAN_BUDGET,
    probes: int | None = None,
    position_sources: int | None = None,
    seed: int = 0,
) -> Tensor:
    """Local Jacobian Gram ``E[J^T J]`` with ``J = readout @ d g_l(f_l) / d f_l`` (appendix A).

    Parameters
    ----------
    readout : Tensor of shape (k, d_{l+1})
        Rows are the linear coordinates of the next layer that ``J`` differentiates (the next
        layer's interaction basis ``C_{l+1}``; centering does not change a derivative).

    Returns
    -------
    Tensor of shape (d_l, d_l), float64.
    """
    device, dtype = batches.device, batches.dtype
    gen = torch.Generator().manual_seed(seed + distributed.rank())
    M = None
    n = 0
    readout = readout.to(device=device, dtype=dtype)
    error = None
    try:
        for b, x in enumerate(batches):
            f = checked_forward(chain, x, b, upto=layer)[-1]
            out, pullback = vjp(chain.stage(layer, x), f)
            if M is None:
                M = torch.zeros(f.shape[-1], f.shape[-1], dtype=torch.float64, device=device)
            for _, weight, (g,) in jacobian_rows(
                pullback,
                out,
                readout,
                width=f.numel() // x.shape[0],
                budget=jacobian_budget,
                probes=probes,
                generator=gen,
                position_sources=position_sources,
            ):
                g = rows(g).to(torch.float64)
                check_finite(g, "Jacobian", chain.names[layer], b)
                M += weight * (g.T @ g)
            n += rows(f).shape[0]
        if M is None:
            raise InputError("data is empty: it yielded no samples")
    except Exception as err:  # every rank must learn of it before the next collective
        error = err
    distributed.settle(error)
    return symmetrize(distributed.all_sum(M) / distributed.all_sum(torch.tensor(float(n))).item())

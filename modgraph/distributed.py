"""Data parallelism over ``torch.distributed``: every rank reads its own shard of the data.

When a process group is initialised (e.g. under ``torchrun``), each pass over the data ends by
combining the ranks' accumulators, so every rank ends with exactly what one process would
compute on all shards together: centered moments are gathered and merged in rank order with the
same pairwise update a single process uses between batches; plain sums are all-reduced.

Nothing here runs a home-made transport: all communication is ``torch.distributed`` collectives,
on whatever backend the group was created with (gloo on CPU, NCCL on GPUs).

A rank that fails (bad data, non-finite values) must not leave the others waiting in a
collective forever: every pass ends with :func:`settle`, which exchanges each rank's error
status first and raises on *all* ranks if any failed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import InputError

__all__ = ["active", "rank", "world_size", "settle", "all_sum", "check_same"]


def active() -> bool:
    """True when a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def _transport(t: Tensor) -> tuple[Tensor, torch.device]:
    # gloo reduces CPU tensors only; NCCL needs them on the rank's GPU (counts are made on CPU)
    backend = dist.get_backend()
    if backend == "gloo" and t.device.type != "cpu":
        return t.cpu(), t.device
    if backend == "nccl" and t.device.type != "cuda":
        return t.to(torch.device("cuda", torch.cuda.current_device())), t.device
    return t, t.device


def all_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over all ranks (``t`` itself when not distributed)."""
    if not active():
        return t
    buf, device = _transport(t.clone())
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(device)


def all_gather(t: Tensor) -> list[Tensor]:
    """``t`` from every rank, in rank order (same shape on all ranks)."""
    if not active():
        return [t]
    buf, device = _transport(t.contiguous())
    out = [torch.empty_like(buf) for _ in range(world_size())]
    dist.all_gather(out, buf)
    return [o.to(device) for o in out]


def all_concat(t: Tensor) -> tuple[Tensor, list[int]]:
    """The tensors ``t`` of every rank concatenated along dim 0 in rank order (their lengths
    may differ, the other dims not), and each rank's length."""
    if not active():
        return t, [len(t)]
    lengths = [int(n) for n in all_gather(torch.tensor([len(t)], device=t.device))]
    padded = torch.zeros(max(lengths), *t.shape[1:], dtype=t.dtype, device=t.device)
    padded[: len(t)] = t
    parts = all_gather(padded)
    return torch.cat([p[:n] for p, n in zip(parts, lengths)]), lengths


def settle(error: BaseException | None) -> None:
    """End of a collective step: raise on every rank if any rank failed.

    Call with the exception the local work raised (or None). Not distributed: re-raise it.
    """
    if not active():
        if error is not None:
            raise error
        return
    statuses: list = [None] * world_size()
    dist.all_gather_object(statuses, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(r, s) for r, s in enumerate(statuses) if s is not None]
    if failed:
        r, s = failed[0]
        raise InputError(f"rank {r} of {world_size()} failed, so this rank stops too: {s}")


def check_same(what: str, value) -> None:
    """Raise on every rank unless all ranks hold an equal ``value`` (a picklable summary)."""
    if not active():
        return
    values: list = [None] * world_size()
    dist.all_gather_object(values, value)
    for r, v in enumerate(values):
        if v != values[0]:
            raise InputError(
                f"ranks disagree on the {what}: rank 0 has {values[0]!r}, rank {r} has {v!r}; "
                "every rank must analyse the same model with the same options"
            )

"""What each basis direction responds to: its top and bottom activating samples.

While the edges pass streams the data (:func:`modgraph.analyze`), :class:`ExemplarTracker` keeps,
for every basis direction of every layer, the ``k`` rows with the largest and the ``k`` with the
smallest coordinate ``f_hat``, with their sample index and position. Memory is O(k x directions),
whatever the number of samples.

The result is exact and the same for any split of the data into batches or ranks: rows are
ordered by value, and equal values by (sample, position). "Equal" means equal on a grid of
``RESOLUTION`` times the direction's standard deviation: identical inputs (the same token at
position 0, a ReLU layer that is off) give values that differ in the last bits with the batch
they were computed in (BLAS rounding), and a grid makes such ties ties for any split. A batch's
rows all come after the rows kept so far (samples are numbered in stream order), so one stable
sort of [kept, batch] by grid value keeps that order. Under ``torch.distributed`` each rank keeps
its own; at the end the ranks' lists are gathered in rank order, their sample numbers shifted as
if the shards were concatenated in rank order, and merged the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import distributed
from .basis import LayerBasis
from .statistics import LayerStatistics

__all__ = ["Extremes", "LayerExemplars", "ExemplarTracker", "RESOLUTION", "resolution"]

#: Values closer than this fraction of a direction's standard deviation count as equal.
RESOLUTION = 1e-9


@dataclass(frozen=True)
class Extremes:
    """The ``k`` most extreme rows of each direction of one layer, most extreme first.

    Attributes
    ----------
    values : Tensor
        (k_l, k) float64 basis coordinates ``f_hat``.
    samples : Tensor
        (k_l, k) int64 sample index in the data (in the order it was read; under
        ``torch.distributed``, the shards concatenated in rank order).
    positions : Tensor
        (k_l, k) int64 position within the sample (sequence position, or the flat spatial
        index of a feature map read as positions); 0 for layers of shape (batch, d).
    """

    values: Tensor
    samples: Tensor
    positions: Tensor


@dataclass(frozen=True)
class LayerExemplars:
    """Top (largest ``f_hat`` first) and bottom (smallest first) rows of one layer.

    ``sequence`` is True when the layer's rows are positions within samples (sequences, feature
    maps read as positions), so that ``positions`` say where in the sample.
    """

    top: Extremes
    bottom: Extremes
    sequence: bool = False


def resolution(basis: LayerBasis, stats: LayerStatistics) -> Tensor:
    """The grid step of each direction of ``basis``: ``RESOLUTION`` times its standard deviation."""
    var = ((basis.C @ stats.G) * basis.C).sum(1)
    return RESOLUTION * var.clamp_min(torch.finfo(torch.float64).tiny).sqrt()


class ExemplarTracker:
    """Exact streaming top-k and bottom-k of every direction's coordinate (see module doc)."""

    def __init__(self, bases: list[LayerBasis], stats: list[LayerStatistics], k: int):
        self.bases, self.k = bases, k
        self.step = [resolution(b, s)[:, None] for b, s in zip(bases, stats)]
        self.seen = 0  # samples read on this rank
        self.sequence = [False] * len(bases)
        # per layer, [top, bottom]: columns (key, value, sample, position), key = +-grid value
        self._kept = [[self._empty(b.k, b.C.device) for _ in range(2)] for b in bases]

    def _empty(self, n_dir: int, device):
        key = torch.full((n_dir, self.k), -torch.inf, dtype=torch.float64, device=device)
        idx = torch.full((n_dir, self.k), -1, dtype=torch.int64, device=device)
        return key, key.clone(), idx, idx.clone()

    @torch.no_grad()
    def update(self, acts: list[Tensor]) -> None:
        """Take one batch's activations (one per layer, as :meth:`Chain.forward` returns)."""
        n = acts[0].shape[0]
        for l, (basis, f) in enumerate(zip(self.bases, acts)):
            if basis.k == 0 or not f.is_floating_point():
                continue
            values = basis.transform(f.detach())  # (B, [P,] k_l) float64
            P = values.shape[1] if values.ndim == 3 else 1
            self.sequence[l] = values.ndim == 3
            values = values.reshape(-1, basis.k).T  # (k_l, B * P), rows in (sample, position) order
            row = torch.arange(values.shape[1], device=values.device)
            samples = (self.seen + row // P).expand_as(values)
            positions = (row % P).expand_as(values)
            grid = torch.round(values / self.step[l])
            for side, sign in enumerate((1.0, -1.0)):
                new = (sign * grid, values, samples, positions)
                self._kept[l][side] = _merge(self._kept[l][side], new, self.k)
        self.seen += n

    def result(self) -> tuple[LayerExemplars, ...]:
        """The exemplars of every layer, merged over ranks (a collective: every rank calls it)."""
        counts = [int(c) for c in distributed.all_gather(torch.tensor([self.seen]))]
        starts = [sum(counts[:r]) for r in range(len(counts))]
        out = []
        for kept, sequence in zip(self._kept, self.sequence):
            sides = []
            for columns in kept:
                gathered = [distributed.all_gather(t) for t in columns]
                gathered[2] = [torch.where(s >= 0, s + o, s) for s, o in zip(gathered[2], starts)]
                _, values, samples, positions = _top([torch.cat(g, 1) for g in gathered], self.k)
                m = int((samples >= 0).sum(1).max()) if samples.numel() else 0
                sides.append(Extremes(values[:, :m], samples[:, :m], positions[:, :m]))
            out.append(LayerExemplars(*sides, sequence=sequence))
        return tuple(out)


def _merge(kept, new, k: int):
    """The ``k`` largest keys of ``kept`` then ``new`` (columns), ties in column order."""
    return _top([torch.cat([a, b], 1) for a, b in zip(kept, new)], k)


def _top(columns, k: int):
    """The ``k`` columns with the largest key (``columns[0]``), equal keys in column order."""
    order = torch.sort(columns[0], dim=1, descending=True, stable=True).indices[:, :k]
    return tuple(c.gather(1, order) for c in columns)

"""Data: user inputs read as re-iterable batches on the analysis device.

Every pass over the data (statistics, Jacobians, rotation, edges) iterates a :class:`Batches`
again, so a tensor, an array, a list of batches or a DataLoader all work; a one-shot generator is
refused up front.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from ._validation import check_int, invalid
from .errors import InputError

__all__ = ["Batches", "iter_batches"]

_DATA = "a tensor, an array or a re-iterable of batches"


def iter_batches(
    data, *, batch_size: int, device: torch.device, dtype: torch.dtype, where: str = "iter_batches"
) -> Iterator[Tensor]:
    """Yield input batches from a tensor, an array, or an iterable of batches.

    A tensor (or numpy array) of shape ``(n_samples, ...)`` is cut into batches of
    ``batch_size``. Any other iterable is read as a sequence of batches (tensors of uneven sizes, or
    ``(inputs, labels, ...)`` tuples as a DataLoader yields; labels are ignored). Floating inputs
    are cast to the model's dtype; integer inputs (token ids) are kept.
    """
    check_int(where, "batch_size", batch_size, low=1)
    if not isinstance(data, Tensor) and hasattr(data, "__array__"):
        data = torch.as_tensor(data)
    if isinstance(data, Tensor):
        if data.ndim == 0 or len(data) == 0:
            raise InputError(f"data is empty (shape {tuple(data.shape)})")
        batches: Iterable = data.split(batch_size)
    elif isinstance(data, Iterable):
        batches = data
    else:
        raise invalid(where, "data", _DATA, data)
    for i, b in enumerate(batches):
        if isinstance(b, (tuple, list)) and b and all(isinstance(t, Tensor) for t in b):
            if len({len(t) if t.ndim else 0 for t in b}) > 1:  # not (inputs, labels, ...)
                raise InputError(
                    f"data batch {i} is a list of tensors of different lengths "
                    f"{[tuple(t.shape) for t in b][:4]}; modgraph has no padding mask: batch "
                    "sequences of equal length together (lengths may differ between batches)"
                )
            b = b[0]
        elif isinstance(b, (tuple, list)) and b and isinstance(b[0], (Tensor, np.ndarray)):
            b = b[0]
        if not isinstance(b, Tensor):
            try:
                b = torch.as_tensor(np.asarray(b))
            except (ValueError, TypeError) as err:
                raise InputError(
                    f"data batch {i} ({type(b).__name__}) cannot be read as one tensor; ragged "
                    f"sequences need equal lengths within a batch: {err}"
                ) from None
        if b.is_meta:
            raise invalid(where, "data", "tensors with values (not on the meta device)", b,
                          shown=f"a meta tensor of shape {tuple(b.shape)}")  # fmt: skip
        if b.ndim == 0 or len(b) == 0:
            continue
        yield b.to(device=device, dtype=dtype if b.is_floating_point() else None)


class Batches:
    """Re-iterable view of user data as input batches on the analysis device.

    Each pass over the data (statistics, Jacobians, edges) iterates this object again, so the data
    must be re-iterable; a one-shot generator is refused up front rather than silently yielding
    nothing on the second pass.

    Parameters
    ----------
    data : tensor, array, or iterable of batches
        See :func:`iter_batches`.
    progress : bool
        Show a tqdm bar (labelled ``desc``) for each pass.
    where : str
        The public function the data was given to, named in error messages.
    """

    def __init__(
        self,
        data,
        *,
        batch_size: int = 256,
        device="cpu",
        dtype=torch.float32,
        progress: bool = False,
        desc: str = "",
        where: str = "Batches",
    ):
        if isinstance(data, Batches):
            data = data.data
        check_int(where, "batch_size", batch_size, low=1)
        if not isinstance(data, Tensor) and not hasattr(data, "__array__"):
            if data is None or not isinstance(data, Iterable):
                raise invalid(where, "data", _DATA, data)
            if isinstance(data, Iterator):  # not iter(data): that would start a pass
                raise InputError(
                    f"data is a one-shot iterator ({type(data).__name__}) but modgraph reads the "
                    "data several times; pass a tensor, a list of batches or a DataLoader"
                )
        self.data = data
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.dtype = dtype
        self.progress = progress
        self.desc = desc
        self.where = where
        self._samples = [None]  # samples of a complete pass, shared by labelled() copies

    def labelled(self, desc: str) -> Batches:
        """The same batches, with the progress bar labelled ``desc``."""
        other = copy.copy(self)
        other.desc = desc
        return other

    def __iter__(self) -> Iterator[Tensor]:
        it = self._counted(
            iter_batches(
                self.data,
                batch_size=self.batch_size,
                device=self.device,
                dtype=self.dtype,
                where=self.where,
            )
        )
        if not self.progress:
            return it
        from tqdm.auto import tqdm

        total = None
        if isinstance(self.data, Tensor):
            total = -(-len(self.data) // self.batch_size)
        elif hasattr(self.data, "__len__"):
            total = len(self.data)
        return iter(tqdm(it, desc=self.desc, total=total, unit="batch", leave=False))

    def _counted(self, it: Iterator[Tensor]) -> Iterator[Tensor]:
        """Yield the batches; at the end of a complete pass, check it saw the same samples as
        the first (data that changes between passes would mix statistics of different data)."""
        n = 0
        for b in it:
            n += len(b)
            yield b
        first = self._samples[0]
        if first is None:
            self._samples[0] = n
        elif n != first:
            raise InputError(
                f"data yielded {first} samples on its first pass and {n} on a later one; "
                "modgraph reads the data several times and every pass must yield the same "
                "samples (a DataLoader with drop_last or a sampler that varies its length?)"
            )

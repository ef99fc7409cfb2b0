"""Data: user inputs read as re-iterable batches on the analysis device.

Every pass over the data (statistics, Jacobians, rotation, edges) iterates a :class:`Batches`
again, so a tensor, an array, a list of batches or a DataLoader all work; a one-shot generator is
refused up front.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from ._validation import check_int, invalid
from .errors import InputError

__all__ = ["Batches", "iter_batches", "sample_fingerprints"]

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
        out = b.to(device=device, dtype=dtype if b.is_floating_point() else None)
        # a copy whenever .to() returned the user's own tensor: a model that writes into its
        # input (x.mul_(...), ReLU(inplace=True) on the input) must never change the user's data
        yield out.clone() if out is b else out


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
        # shared by labelled() copies: the first complete pass's per-sample fingerprints (for
        # data read from an iterable) or sample count, and a pass begun by first()
        self._state: dict = {
            "ref": None, "sorted": None, "n": None, "recording": False, "pending": None,
            "reordered": False,
        }  # fmt: skip

    def labelled(self, desc: str) -> Batches:
        """The same batches, with the progress bar labelled ``desc``."""
        other = copy.copy(self)
        other.desc = desc
        return other

    def first(self) -> Tensor | None:
        """The first batch (None for empty data), read as the start of the next pass: the next
        iteration yields it again and goes on with the same pass, so probing the input type
        costs no extra pass and the first complete pass is the one the statistics read."""
        it = self._pass()
        b = next(it, None)
        self._state["pending"] = None if b is None else (b, it)
        return b

    def __iter__(self) -> Iterator[Tensor]:
        pending, self._state["pending"] = self._state["pending"], None
        it = self._pass() if pending is None else itertools.chain([pending[0]], pending[1])
        if not self.progress:
            return it
        from tqdm.auto import tqdm

        total = None
        if isinstance(self.data, Tensor):
            total = -(-len(self.data) // self.batch_size)
        elif hasattr(self.data, "__len__"):
            total = len(self.data)
        return iter(tqdm(it, desc=self.desc, total=total, unit="batch", leave=False))

    @property
    def reordered(self) -> bool:
        """Whether a later pass yielded the first pass's samples in another order (a shuffling
        DataLoader): order-free statistics are unaffected, sample numbers are not."""
        return self._state["reordered"]

    def _pass(self) -> Iterator[Tensor]:
        return self._checked(
            iter_batches(
                self.data,
                batch_size=self.batch_size,
                device=self.device,
                dtype=self.dtype,
                where=self.where,
            )
        )

    def _checked(self, it: Iterator[Tensor]) -> Iterator[Tensor]:
        """Yield the batches, checking that every pass reads the samples of the first complete
        one: the same count, and for data read from an iterable (a DataLoader) the same samples,
        by a fingerprint of each sample's bytes. Random augmentation would otherwise mix
        statistics of different data; a shuffled order is noted (:attr:`reordered`)."""
        st = self._state
        ref = st["ref"]
        record = st["n"] is None and not st["recording"]
        fingerprints = not isinstance(self.data, Tensor) and not hasattr(self.data, "__array__")
        chunks: list[Tensor] = []
        st["recording"] |= record
        n = 0
        try:
            for i, b in enumerate(it):
                if fingerprints and (record or ref is not None):
                    fp = sample_fingerprints(b).cpu()
                    if record:
                        chunks.append(fp)
                    elif _compare(ref, st["sorted"], fp, n, i):
                        st["reordered"] = True
                n += len(b)
                yield b
        finally:
            if record:
                st["recording"] = False
        if record:  # a complete first pass
            st["n"], st["ref"] = n, torch.cat(chunks) if fingerprints and chunks else None
            st["sorted"] = None if st["ref"] is None else st["ref"].sort().values
        elif st["n"] is not None and n != st["n"]:
            raise InputError(
                f"data yielded {st['n']} samples on its first pass and {n} on a later one; "
                "modgraph reads the data several times and every pass must yield the same "
                "samples (a DataLoader with drop_last or a sampler that varies its length?)"
            )


_CHANGED = (
    "; modgraph reads the data several times (statistics, basis, edges) and every pass must "
    "yield the same samples: a DataLoader without random transforms, or the inputs as one tensor"
)


def _compare(ref: Tensor, ordered: Tensor, fp: Tensor, start: int, batch: int) -> bool:
    """Check the fingerprints ``fp`` of a later pass's batch ``batch`` (its samples ``start,
    ...``) against the first pass's ``ref`` (``ordered``: sorted). Returns whether they are
    first-pass samples in another order; raises for samples the first pass did not have."""
    end = start + len(fp)
    if end > len(ref):
        raise InputError(
            f"data yielded more than the {len(ref)} samples of its first pass on a later one"
            + _CHANGED
        )
    if torch.equal(ref[start:end], fp):
        return False
    at = torch.searchsorted(ordered, fp).clamp(max=len(ordered) - 1)
    if not bool((ordered[at] == fp).all()):
        raise InputError(
            f"data changed between passes: batch {batch} of a later pass holds samples the "
            "first pass did not have (random augmentation in a transform?)" + _CHANGED
        )
    return True


_WEIGHTS: dict[tuple[int, str], Tensor] = {}


def sample_fingerprints(b: Tensor) -> Tensor:
    """One int64 per sample, from its bytes: equal samples give equal values, different ones
    different values but with probability ~2^-60 (a random linear hash mod 2^64, exact)."""
    x = b.detach().reshape(len(b), -1)
    x = (x.to(torch.uint8) if x.dtype == torch.bool else x).contiguous().view(torch.uint8)
    if x.shape[1] % 4 == 0:
        x = x.view(torch.int32)
    m, key = x.shape[1], (x.shape[1], str(x.device))
    if key not in _WEIGHTS:
        gen = torch.Generator().manual_seed(0x5EED)
        _WEIGHTS[key] = torch.randint(-(2**62), 2**62, (m,), generator=gen).to(x.device)
    w = _WEIGHTS[key]
    rows = max(1, (1 << 22) // max(m, 1))  # bound the int64 copy to ~32 MB
    # int64 products and sums wrap around mod 2^64 identically in any order
    return torch.cat([(x[i : i + rows].to(torch.int64) * w).sum(1) for i in range(0, len(x), rows)])

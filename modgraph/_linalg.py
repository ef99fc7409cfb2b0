"""Linear-algebra helpers shared by the stages: symmetric eigendecompositions and ranks.

Every Gram matrix is symmetrized before it is decomposed, because accumulated float64 sums are
symmetric only up to rounding; ``torch.linalg.eigh`` returns eigenvectors as *columns*.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["symmetrize", "eigh_desc", "eigvals_desc", "n_above"]


def symmetrize(m: Tensor) -> Tensor:
    """``(m + m^T) / 2``."""
    return (m + m.T) / 2


def eigh_desc(a: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (largest first) and eigenvectors (columns, in the same order) of ``a``."""
    vals, vecs = torch.linalg.eigh(symmetrize(a))
    return vals.flip(0), vecs.flip(1)


def eigvals_desc(a: Tensor) -> np.ndarray:
    """Eigenvalues of the symmetrized ``a``, largest first, as a NumPy array."""
    return torch.linalg.eigvalsh(symmetrize(a)).flip(0).cpu().numpy()


def n_above(vals, rtol: float) -> int:
    """How many of the descending ``vals`` exceed ``rtol`` times the first (0 if it is <= 0).

    The rank rule of :func:`modgraph.basis.fit_basis`; takes a tensor or an array.

    >>> n_above(np.array([4.0, 1.0, 1e-12]), 1e-10)
    2
    """
    if len(vals) == 0 or vals[0] <= 0:
        return 0
    return int((vals > rtol * vals[0]).sum())

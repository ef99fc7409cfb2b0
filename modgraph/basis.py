"""The interaction basis of one layer (paper sec. 6 and appendix A), and its baselines.

Given a layer's centered activation Gram ``G = U^T D_G U`` and Jacobian Gram ``M = E[J^T J]``:

.. math::

    \\tilde M = D_G^{1/2} U M U^T D_G^{1/2} = V \\Lambda V^T, \\qquad
    C = S\\, V^T (D_G^{1/2})^+ U, \\qquad \\hat f = C (f - \\mu)

with ``S = Lambda^{1/2}`` (``scale="importance"``, appendix A eq. 45) or ``S = (Lambda^{1/2})^+``
(``scale="whitened"``, the sec. 6 text). Whitening makes the basis invariant to invertible linear
maps of the layer, diagonalising ``M`` aligns it with the directions the output depends on, and the
importance scaling makes a deep linear network's layer transitions identity matrices.

Directions are dropped where ``D_G`` or ``Lambda`` falls below ``rtol`` times its largest value:
they carry no variance or have no effect on the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._linalg import eigh_desc, n_above
from ._validation import check_bool, check_choice, check_instance, check_int, check_real
from .errors import InputError
from .statistics import LayerStatistics

__all__ = ["fix_signs", "tie_groups", "LayerBasis", "fit_basis", "BASES", "SCALES"]

BASES = ("interaction", "pca", "neuron")
SCALES = ("importance", "whitened")


@dataclass(frozen=True)
class LayerBasis:
    """The basis of one layer: ``f_hat = (f - mean) @ C.T``.

    Attributes
    ----------
    name : str
        Layer name (module path, ``"input"`` for the input).
    position : int
        Position in the chain, 0 for the input.
    C : Tensor of shape (k, d)
        Rows are the kept basis directions, sorted by importance, descending.
    C_pinv : Tensor of shape (d, k)
        Right inverse of ``C`` (``C @ C_pinv = I_k``); ``f = mean + f_hat @ C_pinv.T + r`` where
        ``r`` is the part of ``f - mean`` the basis dropped.
    mean : Tensor of shape (d,)
    eigenvalues : Tensor of shape (k,)
        Importance of the kept directions: ``Lambda`` for the interaction basis, the activation
        variance for ``pca``, ``neuron`` and the output layer.
    gram_spectrum : Tensor of shape (d,)
        All eigenvalues of ``G``, descending (diagnostics: what whitening dropped).
    lambda_spectrum : Tensor of shape (k_G,)
        All eigenvalues of the whitened ``M``, descending, before truncation (empty for the
        baselines and the output layer).
    ties : tuple of tuple of int
        Groups of kept directions whose eigenvalues are equal to within ``tie_rtol``: the basis is
        only defined up to a rotation inside each group (sec. 6.2).
    """

    name: str
    position: int
    C: Tensor
    C_pinv: Tensor
    mean: Tensor
    eigenvalues: Tensor
    gram_spectrum: Tensor
    lambda_spectrum: Tensor
    ties: tuple[tuple[int, ...], ...] = ()

    @property
    def k(self) -> int:
        """Number of kept directions."""
        return self.C.shape[0]

    @property
    def d(self) -> int:
        """Width of the layer (features per sample)."""
        return self.C.shape[1]

    def transform(self, f: Tensor) -> Tensor:
        """Basis coordinates ``(f - mean) @ C.T`` of activations of shape (..., d) -> (..., k)."""
        if f.shape[-1] != self.d:
            raise InputError(
                f"layer {self.name!r} has {f.shape[-1]} features "
                f"but the basis was fitted on {self.d}"
            )
        return (f.to(self.C) - self.mean) @ self.C.T


def fix_signs(C: Tensor, C_pinv: Tensor) -> tuple[Tensor, Tensor]:
    """Make each direction's largest-magnitude entry positive, so the basis is reproducible."""
    if C.shape[0] == 0:
        return C, C_pinv
    idx = C.abs().argmax(1)
    s = torch.sign(C.gather(1, idx[:, None]))[:, 0]
    s[s == 0] = 1
    return C * s[:, None], C_pinv * s[None, :]


def tie_groups(vals: Tensor, tie_rtol: float) -> tuple[tuple[int, ...], ...]:
    groups, cur = [], [0] if len(vals) else []
    for i in range(1, len(vals)):
        if vals[i - 1] - vals[i] <= tie_rtol * abs(vals[i - 1]):
            cur.append(i)
        else:
            groups.append(cur)
            cur = [i]
    groups.append(cur)
    return tuple(tuple(g) for g in groups if len(g) > 1)


def fit_basis(
    stats: LayerStatistics,
    *,
    name: str,
    position: int,
    basis: str = "interaction",
    scale: str = "importance",
    is_output: bool = False,
    rtol: float = 1e-10,
    tie_rtol: float = 1e-3,
) -> LayerBasis:
    """Fit one layer's basis from its statistics.

    Parameters
    ----------
    stats : LayerStatistics
        ``G`` is required; ``M`` is required for ``basis="interaction"`` (except the output layer).
    basis : {"interaction", "pca", "neuron"}
        ``"pca"`` keeps the principal directions of ``G`` (rotation only); ``"neuron"`` keeps every
        neuron (``C = I``). Both are baselines.
    scale : {"importance", "whitened"}
        ``S = Lambda^{1/2}`` (appendix A) or ``S = (Lambda^{1/2})^+`` (sec. 6).
    is_output : bool
        The final output's basis is its PCA rotation whatever ``basis`` and ``scale`` say
        (``M = I`` there, and rotation keeps the output's units).
    rtol : float
        Relative tolerance below which eigenvalues of ``G`` and of the whitened ``M`` count as zero.
    tie_rtol : float
        Relative gap below which neighboring kept eigenvalues are reported as tied.

    Examples
    --------
    >>> import torch
    >>> G = torch.diag(torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64))
    >>> stats = LayerStatistics(10, torch.zeros(3, dtype=torch.float64), G, torch.eye(3).double())
    >>> b = fit_basis(stats, name="h", position=1)
    >>> b.k, b.eigenvalues.tolist()
    (2, [4.0, 1.0])
    """
    where = "fit_basis"
    check_instance(where, "stats", stats, LayerStatistics)
    check_instance(where, "name", name, str)
    check_int(where, "position", position, low=0)
    check_choice(where, "basis", basis, BASES)
    check_choice(where, "scale", scale, SCALES)
    check_bool(where, "is_output", is_output)
    check_real(where, "rtol", rtol, low=0, high=1, high_open=True)
    check_real(where, "tie_rtol", tie_rtol, low=0)
    G = stats.G.to(torch.float64)
    d = G.shape[0]
    dG, Q = eigh_desc(G)
    dG = dG.clamp_min(0)
    kG = n_above(dG, rtol)
    U = Q[:, :kG].T
    empty = dG.new_zeros(0)

    if basis == "neuron":
        eye = torch.eye(d, dtype=torch.float64, device=G.device)
        return LayerBasis(
            name, position, eye, eye.clone(), stats.mean, G.diagonal().clone(), dG, empty
        )
    if basis == "pca" or is_output:
        C, C_pinv = fix_signs(U, U.T)
        return LayerBasis(
            name, position, C, C_pinv, stats.mean, dG[:kG], dG, empty, tie_groups(dG[:kG], tie_rtol)
        )

    if stats.M is None:
        raise InputError(f"layer {name!r} has no Jacobian Gram M; the interaction basis needs it")
    s = dG[:kG].sqrt()
    M_white = s[:, None] * (U @ stats.M.to(torch.float64) @ U.T) * s[None, :]
    lam, V = eigh_desc(M_white)
    lam = lam.clamp_min(0)
    k = n_above(lam, rtol)
    lam_k, V_k = lam[:k], V[:, :k]
    S = lam_k.sqrt() if scale == "importance" else lam_k.rsqrt()
    C = (S[:, None] * V_k.T / s[None, :]) @ U
    C_pinv = U.T @ (s[:, None] * V_k / S[None, :])
    C, C_pinv = fix_signs(C, C_pinv)
    return LayerBasis(
        name, position, C, C_pinv, stats.mean, lam_k, dG, lam, tie_groups(lam_k, tie_rtol)
    )

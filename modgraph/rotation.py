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

:func:`sparse_rotation` treats every pair with ``SE > tol`` as undetermined by the data and
chooses its rotation (within ``± z * SE``, at most ``pi/4``) to make the interaction edges sparse:
Jacobi sweeps over the undetermined pairs, each minimising the summed ``w`` (an L1 sparsity
criterion) of the edges that touch the two directions. A linear stage makes the transition
diagonal (appendix A), so a pair is rotated jointly with its images through linear stages (else
the rotation would only trade the edges it removes for off-diagonal ones). Pairs the data does
determine are left exactly as fitted: where every ``Lambda`` gap is large compared to its sampling
error the basis is unchanged, bit for bit.

What a rotation keeps: ``C @ C_pinv = I`` (to round-off), the kept subspace, descending
importance, determinism, and invariance to invertible maps of linear layers (everything it reads
is computed in basis coordinates). For interaction layers the activation covariance ``C G C^T``
stays exactly diagonal, the new importance being the diagonal of ``Q Lambda Q^T``; ``C_pinv^T M
C_pinv`` keeps a unit diagonal, but inside a rotated pair its off-diagonal is
``~ theta |lambda_i - lambda_j| / (lambda_i + lambda_j)``, at most ``z`` sampling errors of that
cross term: the data cannot tell it from zero. For the output's PCA basis (only ``G``), a rotated
pair's covariance gets the off-diagonal instead.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial

import torch
from torch import Tensor
from torch.func import vjp, vmap

from .basis import LayerBasis, _fix_signs, _ties
from .chain import Batches, LayerChain
from .errors import InputError

__all__ = ["ROTATIONS", "sparse_rotation", "mixing_error"]

ROTATIONS = ("sparse", "none")
#: Fewest samples the standard errors are estimated from.
MIN_SAMPLES = 256
#: Angles tried per pair (on a symmetric grid, 0 included) before two finer grids.
N_ANGLES = 41


def _check_positive(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"{name} must be a positive float, got {value!r}")
    return float(value)


@torch.no_grad()
def _per_sample(chain: LayerChain, bases, batches: Batches, max_samples: int, global_: bool):
    """Basis coordinates ``a[l]`` (n, k_l), local Jacobians ``J[l]`` (n, k_{l+1}, k_l) in basis
    coordinates and, for the error of ``theta``, the Jacobian the layer's ``M`` was built from
    (``B[l]``: (n, d_out, k_l) for the global variant, ``J[l]`` for the local one)."""
    L = len(chain.stages)
    a = [[] for _ in range(L + 1)]
    J = [[] for _ in range(L)]
    B = [[] for _ in range(L)]
    n = 0
    for x in batches:
        if n >= max_samples:
            break
        x = x[: max_samples - n]
        acts = chain.forward(x)
        if any(f.ndim != 2 or not f.is_floating_point() for f in acts):
            return None
        for l in range(L + 1):
            a[l].append(bases[l].transform(acts[l]))
        for l, stage in enumerate(chain.stages):
            f = acts[l]
            C_pinv = bases[l].C_pinv.to(f.dtype)
            _, pullback = vjp(stage, f)
            rows = bases[l + 1].C.to(f.dtype)
            cot = rows[:, None, :].expand(-1, f.shape[0], -1).contiguous()
            g = vmap(pullback)(cot)[0] @ C_pinv  # (k_{l+1}, n, k_l)
            J[l].append(g.permute(1, 0, 2).double())
            if global_:
                out, pullback = vjp(lambda f, l=l: chain.run_from(l, f), f)
                eye = torch.eye(out.shape[1], dtype=f.dtype, device=f.device)
                cot = eye[:, None, :].expand(-1, f.shape[0], -1).contiguous()
                g = vmap(pullback)(cot)[0] @ C_pinv  # (d_out, n, k_l)
                B[l].append(g.permute(1, 0, 2).double())
        n += x.shape[0]
    a = [torch.cat(t) for t in a]
    J = [torch.cat(t) for t in J]
    B = [torch.cat(t) for t in B] if global_ else J
    return a, J, B


def mixing_error(a: Tensor, lam: Tensor, n: int, B: Tensor | None = None) -> Tensor:
    """Standard error of the first-order rotation angle between every pair of directions.

    Parameters
    ----------
    a : Tensor of shape (n_sub, k)
        Importance-scaled basis coordinates of (a subsample of) the data.
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
    li, lj = lam[:, None], lam[None, :]
    num = a[:, :, None] * a[:, None, :]
    if B is not None:
        num = (lj / li).sqrt() * num + (li * lj).sqrt() * torch.einsum("noi,noj->nij", B, B)
    sd = num.square().mean(0).sqrt()
    se = sd / (math.sqrt(n) * (li - lj).abs())
    se.fill_diagonal_(0.0)
    return se


def _scale(lam: Tensor, kind: str) -> Tensor:
    # f_hat = D z with z the coordinates the rotation is orthogonal in
    if kind == "importance":
        return lam.sqrt()
    if kind == "whitened":
        return lam.rsqrt()
    return torch.ones_like(lam)  # PCA / output: orthonormal directions


def _pair_moments(p, q, a_prev, J_in, a, J_out):
    """The data moments the edges touching directions p, q depend on, for any rotation of them.

    An edge into the pair is ``w^2 = E[(a_prev_i (R J_in)_{alpha i})^2]``, a quadratic form in the
    rows of ``R``; an edge out of it is ``E[(R a)_alpha^2 (J_out R^-1)_{j alpha}^2]``, quartic.
    Precomputing the moments makes every trial angle cost O(k) instead of O(n k).
    """
    A = E = None
    if J_in is not None:  # A[(a, b), i] = E[a_prev_i^2 J_in[a, i] J_in[b, i]]
        X = J_in[:, [p, q], :] * a_prev[:, None, :].abs()
        A = (X[:, :, None, :] * X[:, None, :, :]).mean(0).reshape(4, -1)
    if J_out is not None:  # E[(a, c, b, d), j] = E[u_a u_c J_out[j, b] J_out[j, d]]
        n = a.shape[0]
        u, Y = a[:, [p, q]], J_out[:, :, [p, q]]
        uu = (u[:, :, None] * u[:, None, :]).reshape(n, 4)
        YY = (Y[:, :, :, None] * Y[:, :, None, :]).reshape(n, -1, 4).transpose(1, 2)
        E = (uu.T @ YY.reshape(n, -1) / n).reshape(16, -1)
    return A, E


def _rotation_block(theta: Tensor, m: Tensor, kind: str) -> Tensor:
    """``R = D' Q D^-1`` on the (p, q) block for each angle: shape (T, 2, 2).

    ``m`` is the (p, q) block of ``Q Lambda Q^T`` so far; the new importances are the diagonal
    of ``Q m Q^T``.
    """
    c, s = theta.cos(), theta.sin()
    lp = c**2 * m[0, 0] + 2 * c * s * m[0, 1] + s**2 * m[1, 1]
    lq = s**2 * m[0, 0] - 2 * c * s * m[0, 1] + c**2 * m[1, 1]
    d = _scale(m.diagonal(), kind)
    dp, dq = _scale(lp, kind), _scale(lq, kind)
    row_p = torch.stack([dp * c / d[0], dp * s / d[1]], -1)
    row_q = torch.stack([-dq * s / d[0], dq * c / d[1]], -1)
    return torch.stack([row_p, row_q], -2)


def _monomial_map(J: Tensor, rtol: float = 1e-8) -> dict[int, tuple[int, float]]:
    """Directions a *linear* transition maps one-to-one: ``{j: (i, sign)}``.

    The interaction basis makes a linear stage's transition diagonal up to order and sign (paper
    appendix A), so a rotation of two directions must be matched by the same rotation of their
    images, or the transition stops being diagonal. Empty when the Jacobian varies over samples.
    """
    T = J.mean(0)
    scale = T.abs().max()
    if scale == 0 or (J - T).abs().max() > rtol * scale:
        return {}
    big = T.abs() > rtol**0.5 * scale
    out = {}
    for j in range(T.shape[1]):
        rows = torch.nonzero(big[:, j]).flatten().tolist()
        if len(rows) == 1 and int(big[rows[0]].sum()) == 1:
            out[j] = (rows[0], 1.0 if T[rows[0], j] > 0 else -1.0)
    return out


def _chain_of(l: int, p: int, q: int, maps, L: int):
    """Layers, pairs and angle signs a rotation of (p, q) in layer ``l`` carries along."""
    unit = [(l, [p, q], 1.0)]
    while l < L and p in maps[l] and q in maps[l]:
        (p, sp), (q, sq) = maps[l][p], maps[l][q]
        l += 1
        unit.append((l, [p, q], unit[-1][2] * sp * sq))
    return unit


def _unit_objective(theta: Tensor, unit, Mz, kinds, A, E, middle) -> Tensor:
    """L1 of the edges touching a chain of rotated pairs, for each angle in ``theta``."""
    rs = [_rotation_block(sign * theta, Mz[l][pq][:, pq], kinds[l]) for l, pq, sign in unit]
    T = theta.shape[0]
    total = torch.zeros_like(theta)
    if A is not None:  # edges into the first pair
        r = rs[0]
        rr = (r[:, :, :, None] * r[:, :, None, :]).reshape(T, 2, 4)
        total = total + (rr @ A).clamp_min(0).sqrt().sum((1, 2))
    for i, (Jb, Sigma) in enumerate(middle):  # constant Jacobians between the pairs
        r0, r1 = rs[i], rs[i + 1]
        Jr = r1 @ Jb @ torch.linalg.inv(r0)
        var = torch.einsum("tab,bc,tac->ta", r0, Sigma, r0)
        total = total + (Jr.square() * var[:, None, :]).sqrt().sum((1, 2))
    if E is not None:  # edges out of the last pair
        r = rs[-1]
        rr = (r[:, :, :, None] * r[:, :, None, :]).reshape(T, 2, 4)
        r_inv = torch.linalg.inv(r).transpose(1, 2)
        ss = (r_inv[:, :, :, None] * r_inv[:, :, None, :]).reshape(T, 2, 4)
        k4 = (rr[:, :, :, None] * ss[:, :, None, :]).reshape(T, 2, 16)
        total = total + (k4 @ E).clamp_min(0).sqrt().sum((1, 2))
    return total


def _best_angle(lim: float, objective) -> float:
    """Grid search on [-lim, lim] (0 included), refined twice on finer grids around the best."""
    theta = torch.linspace(-lim, lim, N_ANGLES, dtype=torch.float64)
    obj = objective(theta)
    at_zero = float(obj[N_ANGLES // 2])
    best, step = float(theta[int(obj.argmin())]), 2 * lim / (N_ANGLES - 1)
    value = float(obj.min())
    for _ in range(2):
        theta = torch.linspace(best - step, best + step, 11, dtype=torch.float64).clamp(-lim, lim)
        obj = objective(theta)
        i = int(obj.argmin())
        if float(obj[i]) < value:
            best, value = float(theta[i]), float(obj[i])
        step = step / 5
    # keep the fitted basis unless the rotation is a real (not round-off) improvement
    return best if value < at_zero * (1 - 1e-9) else 0.0


def sparse_rotation(
    chain: LayerChain,
    bases: list[LayerBasis],
    batches: Batches,
    *,
    n: int,
    variant: str = "global",
    scale: str = "importance",
    tol: float = 0.1,
    z: float = 3.0,
    max_samples: int = 2048,
    n_sweeps: int = 4,
    tie_rtol: float = 1e-3,
    memory_budget: int = 2**27,
) -> list[LayerBasis]:
    """Rotate every pair of directions the data leaves undetermined towards sparse interactions.

    Parameters
    ----------
    chain : LayerChain
    bases : list of LayerBasis
        The fitted interaction bases (the last one the output's PCA rotation).
    batches : Batches
        The data; at most ``max_samples`` samples are read.
    n : int
        Number of samples the statistics were estimated from (sets the standard errors).
    variant : {"global", "local"}
        Which Jacobian ``M`` was built from (for the standard errors).
    scale : {"importance", "whitened"}
        The scaling of the bases.
    tol : float
        A pair is undetermined, and may be rotated, when the standard error of its angle exceeds
        ``tol`` radians.
    z : float
        A pair is rotated by at most ``z`` standard errors (and at most ``pi/4``).
    max_samples : int
        Samples used for the standard errors and the sparsity criterion.
    n_sweeps : int
        Jacobi sweeps over the undetermined pairs of all layers.
    tie_rtol : float
        Relative gap under which the new eigenvalues are reported as tied.
    memory_budget : int
        Most float64 elements of per-sample Jacobians held at once (default 1 GiB): fewer than
        ``max_samples`` samples are read when the layers are wide, and the basis is left as
        fitted when fewer than ``MIN_SAMPLES`` would fit.

    Notes
    -----
    The per-sample Jacobians of ``max_samples`` samples are held at once (``max_samples * k_{l+1}
    * k_l`` floats per layer), and only (batch, d) activations are handled. The standard errors
    use this process's data only (not combined over distributed ranks).

    Returns
    -------
    list of LayerBasis
        New bases (the input ones where nothing is undetermined), directions in descending
        importance, signs fixed as :func:`modgraph.basis.fit_basis` fixes them. Layers with
        (batch, positions, d) activations are returned unchanged.
    """
    z = _check_positive("z", z)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise InputError(f"tol must be a non-negative float, got {tol!r}")
    L = len(chain.stages)
    if scale != "importance":  # linear transitions are diagonal but not unit: no joint rotation
        return list(bases)
    # the per-sample Jacobians are held at once: cap their number to a memory budget
    d_out = bases[L].d
    per_sample = sum(b.k for b in bases) + sum(
        bases[l + 1].k * bases[l].k + (d_out * bases[l].k if variant == "global" else 0)
        for l in range(L)
    )
    max_samples = min(max_samples, max(1, memory_budget // per_sample))
    if max_samples < MIN_SAMPLES:  # too few for a standard error: leave the basis as fitted
        return list(bases)
    data = _per_sample(chain, bases, batches, max_samples, variant == "global")
    if data is None:
        return list(bases)
    a, J, B = data
    kinds = [scale] * L + ["pca"]
    # the pairs each layer may rotate, and how far
    bounds = []
    for l in range(L + 1):
        lam = bases[l].eigenvalues.double()
        if bases[l].k < 2:
            bounds.append(None)
            continue
        se = mixing_error(
            a[l] * (_scale(lam, "importance") / _scale(lam, kinds[l])),
            lam,
            n,
            None if l == L else B[l] * (_scale(lam, kinds[l]) / _scale(lam, "importance")),
        )
        se = torch.maximum(se, se.T)
        bound = (z * se).clamp(max=math.pi / 4)
        bound[se <= tol] = 0.0
        bounds.append(bound)
    if all(b is None or not (b > 0).any() for b in bounds):
        return list(bases)

    lams = [b.eigenvalues.double().clone() for b in bases]
    Mz = [torch.diag(lam) for lam in lams]  # the rotated importance matrix, Q Lambda Q^T
    R_tot = [torch.eye(b.k, dtype=torch.float64) for b in bases]  # f_hat' = R_tot f_hat
    maps = [_monomial_map(J[l]) for l in range(L)]
    images = [set() for _ in range(L + 1)]  # pairs moved along with a pair of an earlier layer
    for l in range(L):
        if bounds[l] is None:
            continue
        for p, q in torch.nonzero(torch.triu(bounds[l] > 0, 1)).tolist():
            for m, pq, _ in _chain_of(l, p, q, maps, L)[1:]:
                images[m].add(tuple(sorted(pq)))
    for _ in range(n_sweeps):
        changed = False
        for l in range(L + 1):
            if bounds[l] is None:
                continue
            for p, q in torch.nonzero(torch.triu(bounds[l] > 0, 1)).tolist():
                if (p, q) in images[l]:
                    continue
                unit = _chain_of(l, p, q, maps, L)
                first, last = unit[0], unit[-1]
                A, _ = _pair_moments(
                    *first[1],
                    a[l - 1] if l > 0 else None,
                    J[l - 1] if l > 0 else None,
                    a[l],
                    None,
                )
                m = last[0]
                _, E = _pair_moments(*last[1], None, None, a[m], J[m] if m < L else None)
                middle = []
                for (l0, pq0, _), (_, pq1, _) in zip(unit[:-1], unit[1:]):
                    Jb = J[l0][0][pq1][:, pq0]
                    u = a[l0][:, pq0]
                    middle.append((Jb, u.T @ u / u.shape[0]))
                objective = partial(
                    _unit_objective, unit=unit, Mz=Mz, kinds=kinds, A=A, E=E, middle=middle
                )
                t = _best_angle(float(bounds[l][p, q]), objective)
                if t == 0.0:
                    continue
                for m, pq, sign in unit:
                    tm = t * sign
                    th = torch.tensor([tm], dtype=torch.float64)
                    r = _rotation_block(th, Mz[m][pq][:, pq].clone(), kinds[m])[0]
                    c, sn = math.cos(tm), math.sin(tm)
                    Q = torch.tensor([[c, sn], [-sn, c]], dtype=torch.float64)
                    Mz[m][pq] = Q @ Mz[m][pq]
                    Mz[m][:, pq] = Mz[m][:, pq] @ Q.T
                    # f_hat' = R f_hat with R the identity outside the (p, q) block
                    a[m][:, pq] = a[m][:, pq] @ r.T
                    if m > 0:
                        J[m - 1][:, pq, :] = torch.einsum("ab,nbk->nak", r, J[m - 1][:, pq, :])
                    if m < L:
                        J[m][:, :, pq] = J[m][:, :, pq] @ torch.linalg.inv(r)
                    R_tot[m][pq] = r @ R_tot[m][pq]
                changed = True
        if not changed:
            break

    out = []
    for l, basis in enumerate(bases):
        if torch.equal(R_tot[l], torch.eye(basis.k, dtype=torch.float64)):
            out.append(basis)
            continue
        lam = Mz[l].diagonal().clone()
        order = torch.argsort(lam, descending=True, stable=True)
        R = R_tot[l][order]
        C = R @ basis.C
        C_pinv = basis.C_pinv @ torch.linalg.inv(R)
        C, C_pinv = _fix_signs(C, C_pinv)
        lam = lam[order]
        out.append(replace(basis, C=C, C_pinv=C_pinv, eigenvalues=lam, ties=_ties(lam, tie_rtol)))
    return out

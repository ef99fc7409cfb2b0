"""The effective parameter count ``N_eff(eps) = 2 lambda_B(eps)`` (paper sec. 2) and the SGLD
estimate of the local learning coefficient.

``N_eff`` is measured on the *behavioral loss* (eq. 6), the mean squared distance between the
outputs of a perturbed network and those of the trained network ``theta*`` on the data,

.. math::

    L_B(\\theta) = \\frac{1}{n} \\sum_{x \\in D} \\lVert f_\\theta(x) - f_{\\theta^*}(x) \\rVert^2 ,

with no factor 1/2 (the paper's normalization), so that its Hessian at ``theta*`` is
``(2/n) sum_x J_theta(x)^T J_theta(x)`` (eq. 10). No labels are needed and ``L_B(theta*) = 0``.

- :func:`effective_parameter_count`: the rank of the Hessian of L_B (exact, or Kronecker-factored
  as in eq. 37), or twice the local learning coefficient of L_B.
  The local learning coefficient comes from :func:`~modgraph.diagnostics.llc.behavioral_llc`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from .._linalg import eigvals_desc
from .._validation import check_choice, check_int, check_real, check_seed
from ..chain import LayerChain, device_and_dtype
from ..data import Batches
from ..errors import InputError
from ..statistics import check_finite, global_statistics
from .llc import LLCEstimate, Sampler, behavioral_llc, flat_params

__all__ = ["EffectiveParameterCount", "effective_parameter_count", "METHODS"]

METHODS = ("hessian", "llc")


@dataclass(frozen=True)
class EffectiveParameterCount:
    """Result of :func:`effective_parameter_count`.

    Attributes
    ----------
    value : float
        ``N_eff(eps)``: the Hessian rank, or ``2 lambda_hat`` (NaN if the chains diverged).
    method : {"hessian", "llc"}
    approximation : {"exact", "kfac"} or None
        How the Hessian was formed (None for "llc").
    eps : float
    n_params : int
    eigenvalues : ndarray or None
        Hessian eigenvalues, largest first (for "kfac" the products of factor eigenvalues, eq. 37).
    threshold : float or None
        An eigenvalue above it counts.
    llc : LLCEstimate or None
        The sampler's result and diagnostics for "llc".
    """

    value: float
    method: str
    approximation: str | None
    eps: float
    n_params: int
    eigenvalues: np.ndarray | None = field(default=None, repr=False)
    threshold: float | None = None
    llc: LLCEstimate | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.llc.ok if self.llc is not None else bool(np.isfinite(self.value))


def _hessian_exact(module: nn.Module, batches: Batches) -> Tensor:
    """``(2/n) sum_x J_theta(x)^T J_theta(x)`` (eq. 10), in float64 throughout."""
    m64 = copy.deepcopy(module).to(torch.float64)
    w0, unflatten = flat_params(m64)

    def f(w: Tensor, x: Tensor) -> Tensor:
        return functional_call(m64, unflatten(w), (x[None],)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))
    P = w0.numel()
    H = torch.zeros(P, P, dtype=torch.float64, device=w0.device)
    n = 0
    for bi, x in enumerate(batches):
        J = jac(w0, x).reshape(-1, P)  # (b * d_out, P)
        check_finite(J, "parameter Jacobian", "output", bi)
        H += J.T @ J
        n += len(x)
    return 2.0 * H / n


def _hessian_kfac_eigs(module: nn.Module, batches: Batches) -> np.ndarray:
    """Eigenvalues of the Kronecker-factored Hessian (eq. 37): ``2 B_l (x) A_l`` per nn.Linear.

    ``A_l`` is the uncentered second moment of the Linear's input ``[f; 1]`` and ``B_l`` the Gram of
    the Jacobian of the output wrt the Linear's output (the global ``M`` of that layer);
    eigenvalues of a Kronecker product are the products of the factors' eigenvalues. Cross-layer
    blocks are dropped.
    """
    chain = LayerChain.from_model(module, layers=lambda name: True)
    linears = []
    for l, stage in enumerate(chain.stages):
        if isinstance(stage, nn.Linear):
            linears.append(l)
        elif any(True for _ in stage.parameters()):
            raise InputError(
                f"the kfac approximation handles nn.Linear parameters only; module "
                f"{chain.names[l + 1]!r} is a {type(stage).__name__} with parameters"
            )
    stats = global_statistics(chain, batches)
    eigs = []
    for l in linears:
        mean, G = stats[l].mean, stats[l].G
        if chain.stages[l].bias is not None:  # the bias reads a constant 1: no variance
            mean = torch.cat([mean, mean.new_ones(1)])
            G = nn.functional.pad(G, (0, 1, 0, 1))
        A = G + torch.outer(mean, mean)
        eigs.append(2.0 * np.outer(eigvals_desc(stats[l + 1].M), eigvals_desc(A)).reshape(-1))
    return np.sort(np.concatenate(eigs))[::-1]


def effective_parameter_count(  # noqa: PLR0913 (public; the Hessian's and SGLD's knobs)
    model,
    data,
    *,
    eps: float,
    method: str = "hessian",
    seed: int = 0,
    batch_size: int = 256,
    exact_max_params: int = 5000,
    gamma: float = 100.0,
    step_size: float | None = None,
    n_chains: int = 4,
    n_steps: int = 2000,
    n_burnin: int | None = None,
    minibatch_size: int | None = 256,
) -> EffectiveParameterCount:
    """``N_eff(eps) = 2 lambda_B(eps)`` of the behavioral loss at the trained parameters.

    ``method="hessian"``: the number of eigenvalues of the Hessian of L_B (eq. 6) at ``theta*``
    above ``2 eps``. For the behavioral loss the Hessian there is exactly the Gauss-Newton matrix

    .. math::

        H = \\frac{2}{n} \\sum_x J_\\theta(x)^T J_\\theta(x), \\qquad
        J_\\theta(x) = \\frac{\\partial f_\\theta(x)}{\\partial \\theta}  \\quad \\text{(eq. 10)}

    and a unit step along an eigenvector of eigenvalue ``h`` raises L_B by ``h / 2``; the direction
    counts when that exceeds ``eps``. (Eigenvalues below ``P * machine eps * h_max`` never count.)
    This equals ``2 lambda`` where the loss is quadratic to leading order in every non-free
    direction; quartic and higher directions (e.g. ``w1^2 w2^2``) need ``method="llc"``. With at
    most ``exact_max_params`` parameters H is formed exactly from per-sample Jacobians
    (``vmap(jacrev(functional_call))``, float64); above it each ``nn.Linear`` gets the Kronecker
    factorization of eq. 37 (``approximation="kfac"``), which drops cross-layer blocks and so misses
    degeneracies shared between layers (such as ``W2 W1 = W2 A^-1 A W1``): it over-counts there.

    ``method="llc"``: ``2 lambda_hat`` from :func:`llc_estimate` on the minibatch behavioral loss,
    with ``n beta = 1/eps`` and localisation ``gamma``. ``L_B(theta*) = 0`` exactly. The default
    step is ``0.1 / (n beta h_max + gamma)`` with ``h_max`` the top eigenvalue of H (power
    iteration on Jacobian-vector products).

    Parameters
    ----------
    model : nn.Sequential, list of nn.Module, or LayerChain
        The trained network, in eval mode.
    data : tensor of shape (n_samples, ...), array, or re-iterable of batches
        Inputs, as :class:`~modgraph.data.Batches` takes them (a one-shot generator is refused).
    eps : float
        Loss scale (absolute, in output units squared).
    method : {"hessian", "llc"}
    seed : int
        SGLD seed ("llc").
    batch_size : int
        Batch size for forming H.
    exact_max_params : int
        Largest parameter count for the exact Hessian.
    gamma, step_size, n_chains, n_steps, n_burnin : see :func:`llc_estimate`
    minibatch_size : int or None
        SGLD minibatch (None: full batch).

    Returns
    -------
    EffectiveParameterCount

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 2)).double()
    >>> x = torch.randn(50, 3, dtype=torch.float64)
    >>> res = effective_parameter_count(net, x, eps=1e-6)
    >>> res.value, res.approximation, res.n_params
    (8.0, 'exact', 8)
    """
    where = "effective_parameter_count"
    eps = check_real(where, "eps", eps, low=0, low_open=True)
    check_choice(where, "method", method, METHODS)
    check_seed(where, seed)
    exact_max_params = check_int(where, "exact_max_params", exact_max_params, low=0)
    check_int(where, "batch_size", batch_size, low=1)
    options = dict(gamma=gamma, step_size=step_size, n_chains=n_chains, n_steps=n_steps)
    sampler = Sampler.checked(where, 1.0 / eps, {**options, "n_burnin": n_burnin})
    if minibatch_size is not None:
        check_int(where, "minibatch_size", minibatch_size, low=1)
    chain = LayerChain.from_model(model)
    module = nn.Sequential(*chain.stages)
    LayerChain.from_model(module)  # checks eval mode, also of a ready-made LayerChain's stages
    device, dtype = device_and_dtype(chain)
    P = sum(p.numel() for p in module.parameters())
    if P == 0:
        raise InputError("model has no parameters, so there is nothing to count")
    if method == "hessian":
        if P <= exact_max_params:
            batches = Batches(
                data, batch_size=batch_size, device=device, dtype=torch.float64, where=where
            )
            eigs = eigvals_desc(_hessian_exact(module, batches))
            approx = "exact"
        else:
            batches = Batches(data, batch_size=batch_size, device=device, dtype=dtype, where=where)
            eigs = _hessian_kfac_eigs(module, batches)
            approx = "kfac"
        floor = P * float(np.finfo(np.float64).eps) * max(float(eigs[0]), 0.0)
        threshold = max(2.0 * eps, floor)
        return EffectiveParameterCount(
            value=float((eigs > threshold).sum()),
            method=method,
            approximation=approx,
            eps=eps,
            n_params=P,
            eigenvalues=eigs,
            threshold=threshold,
        )
    batches = list(Batches(data, batch_size=batch_size, device=device, dtype=dtype, where=where))
    if not batches:
        raise InputError("data is empty: it yielded no samples")
    x = torch.cat(batches)
    m = len(x) if minibatch_size is None else minibatch_size
    est = behavioral_llc(module, x, sampler, minibatch_size=m, seed=seed)
    return EffectiveParameterCount(
        value=2.0 * est.value if est.ok else float("nan"),
        method=method,
        approximation=None,
        eps=eps,
        n_params=P,
        llc=est,
    )

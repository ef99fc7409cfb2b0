"""The effective parameter count ``N_eff(eps) = 2 lambda_B(eps)`` (paper sec. 2) and the SGLD
estimate of the local learning coefficient.

``N_eff`` is measured on the *behavioural loss* (eq. 6), the mean squared distance between the
outputs of a perturbed network and those of the trained network ``theta*`` on the data,

.. math::

    L_B(\\theta) = \\frac{1}{n} \\sum_{x \\in D} \\lVert f_\\theta(x) - f_{\\theta^*}(x) \\rVert^2 ,

with no factor 1/2 (the paper's normalisation), so that its Hessian at ``theta*`` is
``(2/n) sum_x J_theta(x)^T J_theta(x)`` (eq. 10). No labels are needed and ``L_B(theta*) = 0``.

- :func:`effective_parameter_count`: the rank of the Hessian of L_B (exact, or Kronecker-factored
  as in eq. 37), or twice the local learning coefficient of L_B.
- :func:`llc_estimate`: the local learning coefficient of any callable loss, by SGLD.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, jacrev, jvp, vjp, vmap

from .chain import Batches, LayerChain
from .errors import InputError
from .pipeline import _check_eps
from .statistics import _check_finite, global_statistics

__all__ = ["LLCEstimate", "EffectiveParameterCount", "llc_estimate", "effective_parameter_count"]


# ---------------------------------------------------------------------------------- helpers
def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_nonneg_float(name: str, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating, np.integer))
        or not math.isfinite(float(value))
        or value < 0
    ):
        raise InputError(f"{name} must be a non-negative finite float, got {value!r}")
    return float(value)


def _device_dtype(model: nn.Module | LayerChain) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, p.dtype
    raise InputError("model has no parameters")


def _eigvals_desc(a: Tensor) -> np.ndarray:
    """Eigenvalues of a symmetric float64 matrix, largest first (symmetrised first)."""
    a = 0.5 * (a + a.T)
    return torch.linalg.eigvalsh(a).flip(0).cpu().numpy()


def _flat_params(module: nn.Module) -> tuple[Tensor, Callable[[Tensor], dict[str, Tensor]]]:
    """The parameters as one vector ``w0``, and the map back to ``functional_call``'s dict."""
    names, shapes = zip(*((k, p.shape) for k, p in module.named_parameters()))
    w0 = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    sizes = [math.prod(s) for s in shapes]

    def unflatten(w: Tensor) -> dict[str, Tensor]:
        return {k: c.view(s) for k, c, s in zip(names, w.split(sizes), shapes)}

    return w0, unflatten


def _top_eigenvalue(
    hvp: Callable[[Tensor], Tensor], d: int, like: Tensor, *, iters: int = 30
) -> float:
    """Largest eigenvalue of a PSD operator by power iteration (fixed start: deterministic)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(d, generator=g, dtype=torch.float64).to(like)
    v = v / v.norm()
    lam = 0.0
    for _ in range(iters):
        hv = hvp(v)
        lam = float(v @ hv)
        nrm = hv.norm()
        if not torch.isfinite(nrm) or nrm == 0:
            break
        v = hv / nrm
    return max(lam, 0.0)


# ---------------------------------------------------------------------------------- SGLD / LLC
@dataclass(frozen=True)
class LLCEstimate:
    """Result of :func:`llc_estimate`.

    Attributes
    ----------
    value : float
        ``lambda_hat = n beta (E_w[L(w)] - L(w*))`` averaged over chains after burn-in; NaN when
        ``ok`` is False.
    ok : bool
        False when a chain diverged (non-finite loss or gradient, or a loss blow-up).
    reason : str
        Why ``ok`` is False ("" otherwise).
    loss_trace : ndarray of shape (num_chains, num_steps)
        Loss at every step of every chain (NaN after a divergence).
    init_loss : float
        ``L(w*)``.
    chain_values : ndarray of shape (num_chains,)
        ``lambda_hat`` of each chain.
    std_error : float
        Standard error of ``value`` from the spread between chains.
    rhat : float
        Split Gelman-Rubin R-hat of the post-burn-in loss traces (near 1 when converged).
    drift : float
        ``lambda_hat`` of the second half of the post-burn-in trace minus that of the first half.
    drifted : bool
        Whether ``|drift|`` exceeds both 3 standard errors and 5 % of ``value``.
    nbeta, gamma, step_size, eps : float
        Inverse temperature, localisation strength, SGLD step size, loss scale (NaN if unset).
    num_burnin : int
    """

    value: float
    ok: bool
    reason: str
    loss_trace: np.ndarray = field(repr=False)
    init_loss: float
    chain_values: np.ndarray = field(repr=False)
    std_error: float
    rhat: float
    drift: float
    drifted: bool
    nbeta: float
    gamma: float
    step_size: float
    eps: float
    num_burnin: int

    @property
    def converged(self) -> bool:
        """``ok``, R-hat below 1.1 and no drift."""
        return bool(self.ok and self.rhat < 1.1 and not self.drifted)


def _split_rhat(trace: np.ndarray) -> float:
    half = trace.shape[1] // 2
    if half < 2:
        return float("nan")
    chains = np.concatenate([trace[:, :half], trace[:, half : 2 * half]])
    means = chains.mean(1)
    w = chains.var(1, ddof=1).mean()
    b = half * means.var(ddof=1)
    if w == 0:
        return 1.0 if b == 0 else float("inf")
    var_plus = (half - 1) / half * w + b / half
    return float(np.sqrt(var_plus / w))


def _per_chain_value_and_grad(loss: Callable[[Tensor], Tensor], W: Tensor) -> tuple[Tensor, Tensor]:
    """``(loss(w), grad loss(w))`` for each row ``w`` of ``W``, one autograd call per chain."""
    vs, gs = [], []
    for w in W:
        w = w.detach().requires_grad_(True)
        v = loss(w)
        (g,) = torch.autograd.grad(v, w)
        vs.append(v.detach())
        gs.append(g)
    return torch.stack(vs), torch.stack(gs)


def _sgld(
    value_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]],
    w0: Tensor,
    *,
    nbeta: float,
    gamma: float,
    step: float,
    num_chains: int,
    num_steps: int,
    generator: torch.Generator,
    init_loss: float,
) -> tuple[np.ndarray, str]:
    """SGLD chains started at ``w0``; returns the loss trace (chains, steps) and a failure reason.

    Update (Welling & Teh 2011, with the localisation of Lau et al.)::

        w <- w - step/2 (nbeta grad L(w) + gamma (w - w0)) + sqrt(step) xi,   xi ~ N(0, I)

    whose stationary density is proportional to ``exp(-nbeta L(w) - gamma/2 |w - w0|^2)``.
    """
    W = w0.detach().expand(num_chains, -1).clone()
    trace = torch.full((num_chains, num_steps), float("nan"), dtype=torch.float64, device=w0.device)
    blowup = 100.0 * max(w0.numel(), 10)  # nbeta * (L - L0) has mean lambda <= d / 2
    check_every = 50
    for t in range(num_steps):
        loss, g = value_and_grad(W)
        trace[:, t] = loss.detach().to(torch.float64)
        noise = torch.randn(W.shape, generator=generator, dtype=W.dtype, device=W.device)
        W = W - 0.5 * step * (nbeta * g + gamma * (W - w0)) + math.sqrt(step) * noise
        if (t + 1) % check_every == 0 or t == num_steps - 1:
            seg = trace[:, max(0, t + 1 - check_every) : t + 1]
            bad = ~torch.isfinite(W).all(1) | ~torch.isfinite(seg).all(1)
            big = (nbeta * (seg - init_loss) > blowup).any(1)
            if (bad | big).any():
                c = int(torch.nonzero(bad | big)[0])
                kind = "a non-finite loss or parameter" if bad[c] else "a loss blow-up"
                reason = (
                    f"chain {c} diverged with {kind} by step {t + 1} (n*beta*(L - L0) above "
                    f"{blowup:g} or NaN/inf); lower step_size (was {step:g})"
                )
                return trace.cpu().numpy(), reason
    return trace.cpu().numpy(), ""


def _sgld_estimate(
    value_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]],
    w0: Tensor,
    *,
    init_loss: float,
    nbeta: float,
    gamma: float,
    step: float,
    eps: float | None,
    num_chains: int,
    num_steps: int,
    num_burnin: int,
    generator: torch.Generator,
) -> LLCEstimate:
    """Run :func:`_sgld` and summarise its post-burn-in trace as an :class:`LLCEstimate`."""
    trace, reason = _sgld(
        value_and_grad,
        w0,
        nbeta=nbeta,
        gamma=gamma,
        step=step,
        num_chains=num_chains,
        num_steps=num_steps,
        generator=generator,
        init_loss=init_loss,
    )
    post = trace[:, num_burnin:]
    ok = reason == "" and bool(np.isfinite(post).all()) and post.shape[1] > 0
    if not ok and not reason:
        reason = "no finite post-burn-in samples"
    with np.errstate(all="ignore"):
        chain_values = nbeta * (post.mean(1) - init_loss)
        c = len(chain_values)
        value = float(chain_values.mean()) if ok else float("nan")
        se = float(chain_values.std(ddof=1) / np.sqrt(c)) if ok and c > 1 else float("nan")
        half = post.shape[1] // 2
        first = nbeta * (post[:, :half].mean(1) - init_loss)
        second = nbeta * (post[:, half : 2 * half].mean(1) - init_loss)
        diff = second - first
        drift = float(diff.mean()) if ok and half > 0 else float("nan")
        se_d = float(diff.std(ddof=1) / np.sqrt(c)) if c > 1 else 0.0
        drifted = bool(ok and abs(drift) > max(3 * se_d, 0.05 * abs(value)))
        rhat = _split_rhat(post) if ok else float("nan")
    return LLCEstimate(
        value=value,
        ok=ok,
        reason=reason,
        loss_trace=trace,
        init_loss=float(init_loss),
        chain_values=chain_values,
        std_error=se,
        rhat=rhat,
        drift=drift,
        drifted=drifted,
        nbeta=float(nbeta),
        gamma=float(gamma),
        step_size=float(step),
        eps=float("nan") if eps is None else float(eps),
        num_burnin=num_burnin,
    )


def _temperature(eps, n, beta) -> tuple[float, float | None]:
    """``(n beta, eps)``: ``n beta = 1 / eps``, or ``n / log n`` (devinterp) without eps."""
    if eps is not None:
        eps = _check_eps(eps)
        if beta is not None:
            raise InputError(
                "give either eps (n*beta = 1/eps) or beta, not both; "
                f"got eps={eps!r}, beta={beta!r}"
            )
        return 1.0 / eps, eps
    if n is None:
        raise InputError(
            "llc_estimate needs eps (n*beta = 1/eps) or n (with beta = 1/log n), got neither"
        )
    n = _check_positive_int("n", n, minimum=2)
    if beta is None:
        beta = 1.0 / math.log(n)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (0 < beta < math.inf):
        raise InputError(f"beta must be a positive finite float, got {beta!r}")
    return n * float(beta), None


def _check_sampler(gamma, step_size, num_chains, num_steps, num_burnin):
    gamma = _check_nonneg_float("gamma", gamma)
    if step_size is not None and (
        isinstance(step_size, bool)
        or not isinstance(step_size, (int, float))
        or not (0 < step_size < math.inf)
    ):
        raise InputError(f"step_size must be a positive float or None, got {step_size!r}")
    num_chains = _check_positive_int("num_chains", num_chains)
    num_steps = _check_positive_int("num_steps", num_steps, minimum=2)
    num_burnin = num_steps // 4 if num_burnin is None else num_burnin
    num_burnin = _check_positive_int("num_burnin", num_burnin, minimum=0)
    if num_burnin >= num_steps:
        raise InputError(f"num_burnin must be smaller than num_steps={num_steps}, got {num_burnin}")
    return gamma, num_chains, num_steps, num_burnin


def llc_estimate(
    loss_fn: Callable[[Tensor], Tensor],
    w0,
    *,
    eps: float | None = None,
    n: int | None = None,
    beta: float | None = None,
    gamma: float = 1.0,
    step_size: float | None = None,
    num_chains: int = 4,
    num_steps: int = 2000,
    num_burnin: int | None = None,
    step_scale: float = 0.1,
    vectorized: bool = False,
    seed: int = 0,
) -> LLCEstimate:
    """Local learning coefficient of a loss at ``w0``, estimated with SGLD.

    The estimator of Lau et al. (2023), as in devinterp:

    .. math::

        \\hat\\lambda = n\\beta \\left(\\mathbb{E}_w[L(w)] - L(w^*)\\right), \\qquad
        w \\sim p(w) \\propto
        \\exp\\left(-n\\beta L(w) - \\frac{\\gamma}{2}\\lVert w - w^*\\rVert^2\\right).

    **How eps enters.** The paper's ``lambda(eps)`` (sec. 2) is the scaling exponent of the
    volume of parameters with loss below ``eps``, ``V(eps) ~ eps^lambda``. Under the tempered
    posterior the loss values have density ``~ eps^(lambda - 1) exp(-n beta eps)``, so the chain
    samples losses of order ``lambda / (n beta)`` and the estimator returns the volume exponent at
    that scale (exactly, for a homogeneous loss). We therefore set the inverse temperature to
    ``n beta = 1 / eps``. A quadratic direction of curvature ``h`` then counts fully when
    ``h >> gamma eps`` and not at all when ``h << gamma eps``: ``gamma`` sets the parameter scale
    (``1/sqrt(gamma)``) over which a change of loss below ``eps`` counts as free. Without ``eps``,
    ``n beta`` follows the devinterp convention, ``beta = 1 / log n`` by default.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(w)`` -> scalar tensor for ``w`` of shape (d,). Called through
        ``torch.func.vmap(grad_and_value(loss_fn))`` on all chains at once when it allows it, one
        chain at a time otherwise (decided at the first step). It may be stochastic (a minibatch
        loss) if it cannot be vmapped. With ``vectorized=True`` it is called once per step on all
        chains, ``loss_fn(W)`` for ``W`` of shape (num_chains, d) returning shape (num_chains,)
        (fastest for toy losses).
    w0 : tensor of shape (d,)
        The point ``w*`` (a local minimum); its dtype is kept.
    eps : float, optional
        Loss scale; sets ``n beta = 1 / eps``. Excludes ``beta``.
    n, beta : int, float, optional
        Without ``eps``: ``n beta`` with ``beta = 1 / log n`` by default.
    gamma : float
        Localisation strength (0: none).
    step_size : float, optional
        SGLD step. None: ``step_scale / (n beta lambda_max(H) + gamma)`` with ``lambda_max(H)`` the
        top Hessian eigenvalue of ``loss_fn`` at ``w0`` (power iteration), which keeps the bias of
        the stiffest direction near ``step_scale / 4``. Pass it explicitly when the Hessian vanishes
        at ``w0`` (e.g. a purely quartic loss).
    num_chains, num_steps, num_burnin : int
        Chains, steps per chain, and steps discarded (default ``num_steps // 4``).
    step_scale : float
        See ``step_size``.
    vectorized : bool
        Whether ``loss_fn`` takes a batch of parameter vectors (see ``loss_fn``).
    seed : int
        Seed of the noise; results are deterministic on CPU (GPU reductions may differ slightly).

    Returns
    -------
    LLCEstimate
        ``value`` is NaN and ``ok`` False (with ``reason``) when a chain diverges; the traces are
        kept for inspection.

    Examples
    --------
    >>> import torch
    >>> est = llc_estimate(lambda w: (w**2).sum(), torch.zeros(2, dtype=torch.float64),
    ...                    eps=1e-2, gamma=0.0, num_steps=4000, seed=0)
    >>> round(est.value, 1)  # a regular 2-parameter model: lambda = d/2
    1.0
    """
    nbeta, eps_used = _temperature(eps, n, beta)
    gamma, num_chains, num_steps, num_burnin = _check_sampler(
        gamma, step_size, num_chains, num_steps, num_burnin
    )
    w0 = torch.as_tensor(w0)
    if not w0.is_floating_point():
        w0 = w0.to(torch.get_default_dtype())
    w0 = w0.detach().reshape(-1)
    single = (lambda w: loss_fn(w[None])[0]) if vectorized else loss_fn
    with torch.no_grad():
        init = float(single(w0.clone()))
    if not math.isfinite(init):
        raise InputError(f"loss_fn(w0) must be finite, got {init}")

    batched = vmap(grad_and_value(loss_fn))
    vmappable = not vectorized

    def value_and_grad(W: Tensor) -> tuple[Tensor, Tensor]:
        nonlocal vmappable
        if vectorized:
            W = W.detach().requires_grad_(True)
            v = loss_fn(W)
            (g,) = torch.autograd.grad(v.sum(), W)
            return v.detach(), g
        if vmappable:
            try:
                g, v = batched(W)
                return v, g
            except Exception:  # not vmappable (randomness, data-dependent control flow): loop
                vmappable = False
        return _per_chain_value_and_grad(loss_fn, W)

    if step_size is None:
        grad_fn = torch.func.grad(single)

        def hvp(v: Tensor) -> Tensor:
            return jvp(grad_fn, (w0,), (v,))[1]

        stiffness = nbeta * _top_eigenvalue(hvp, w0.numel(), w0) + gamma
        if stiffness <= 0:
            raise InputError("step_size is needed: the Hessian vanishes at w0 and gamma is 0")
        step_size = step_scale / stiffness
    return _sgld_estimate(
        value_and_grad,
        w0,
        init_loss=init,
        nbeta=nbeta,
        gamma=gamma,
        step=float(step_size),
        eps=eps_used,
        num_chains=num_chains,
        num_steps=num_steps,
        num_burnin=num_burnin,
        generator=torch.Generator(device=w0.device).manual_seed(seed),
    )


# ---------------------------------------------------------------------------------- effective count
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
    w0, unflatten = _flat_params(m64)

    def f(w: Tensor, x: Tensor) -> Tensor:
        return functional_call(m64, unflatten(w), (x[None],)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))
    P = w0.numel()
    H = torch.zeros(P, P, dtype=torch.float64, device=w0.device)
    n = 0
    for bi, x in enumerate(batches):
        J = jac(w0, x).reshape(-1, P)  # (b * d_out, P)
        _check_finite(J, "parameter Jacobian", "output", bi)
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
        eigs.append(2.0 * np.outer(_eigvals_desc(stats[l + 1].M), _eigvals_desc(A)).reshape(-1))
    return np.sort(np.concatenate(eigs))[::-1]


def effective_parameter_count(
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
    num_chains: int = 4,
    num_steps: int = 2000,
    num_burnin: int | None = None,
    minibatch_size: int | None = 256,
) -> EffectiveParameterCount:
    """``N_eff(eps) = 2 lambda_B(eps)`` of the behavioural loss at the trained parameters.

    ``method="hessian"``: the number of eigenvalues of the Hessian of L_B (eq. 6) at ``theta*``
    above ``2 eps``. For the behavioural loss the Hessian there is exactly the Gauss-Newton matrix

    .. math::

        H = \\frac{2}{n} \\sum_x J_\\theta(x)^T J_\\theta(x), \\qquad
        J_\\theta(x) = \\frac{\\partial f_\\theta(x)}{\\partial \\theta}  \\quad \\text{(eq. 10)}

    and a unit step along an eigenvector of eigenvalue ``h`` raises L_B by ``h / 2``; the direction
    counts when that exceeds ``eps``. (Eigenvalues below ``P * machine eps * h_max`` never count.)
    This equals ``2 lambda`` where the loss is quadratic to leading order in every non-free
    direction; quartic and higher directions (e.g. ``w1^2 w2^2``) need ``method="llc"``. With at
    most ``exact_max_params`` parameters H is formed exactly from per-sample Jacobians
    (``vmap(jacrev(functional_call))``, float64); above it each ``nn.Linear`` gets the Kronecker
    factorisation of eq. 37 (``approximation="kfac"``), which drops cross-layer blocks and so misses
    degeneracies shared between layers (such as ``W2 W1 = W2 A^-1 A W1``): it over-counts there.

    ``method="llc"``: ``2 lambda_hat`` from :func:`llc_estimate` on the minibatch behavioural loss,
    with ``n beta = 1/eps`` and localisation ``gamma``. ``L_B(theta*) = 0`` exactly. The default
    step is ``0.1 / (n beta h_max + gamma)`` with ``h_max`` the top eigenvalue of H (power
    iteration on Jacobian-vector products).

    Parameters
    ----------
    model : nn.Sequential, list of nn.Module, or LayerChain
        The trained network, in eval mode.
    data : tensor of shape (n_samples, ...), array, or re-iterable of batches
        Inputs, as :class:`~modgraph.chain.Batches` takes them (a one-shot generator is refused).
    eps : float
        Loss scale (absolute, in output units squared).
    method : {"hessian", "llc"}
    seed : int
        SGLD seed ("llc").
    batch_size : int
        Batch size for forming H.
    exact_max_params : int
        Largest parameter count for the exact Hessian.
    gamma, step_size, num_chains, num_steps, num_burnin : see :func:`llc_estimate`
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
    eps = _check_eps(eps)
    if method not in ("hessian", "llc"):
        raise InputError(f"method must be 'hessian' or 'llc', got {method!r}")
    exact_max_params = _check_positive_int("exact_max_params", exact_max_params, minimum=0)
    module = nn.Sequential(*LayerChain.from_model(model).stages)
    LayerChain.from_model(module)  # checks eval mode, also of a ready-made LayerChain's stages
    device, dtype = _device_dtype(module)
    P = sum(p.numel() for p in module.parameters())
    if method == "hessian":
        if P <= exact_max_params:
            batches = Batches(data, batch_size=batch_size, device=device, dtype=torch.float64)
            eigs = _eigvals_desc(_hessian_exact(module, batches))
            approx = "exact"
        else:
            batches = Batches(data, batch_size=batch_size, device=device, dtype=dtype)
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
    batches = list(Batches(data, batch_size=batch_size, device=device, dtype=dtype))
    if not batches:
        raise InputError("data is empty: it yielded no samples")
    est = _behavioural_llc(
        module,
        torch.cat(batches),
        eps=eps,
        gamma=gamma,
        step_size=step_size,
        num_chains=num_chains,
        num_steps=num_steps,
        num_burnin=num_burnin,
        minibatch_size=minibatch_size,
        seed=seed,
    )
    return EffectiveParameterCount(
        value=2.0 * est.value if est.ok else float("nan"),
        method=method,
        approximation=None,
        eps=eps,
        n_params=P,
        llc=est,
    )


def _behavioural_llc(
    module: nn.Module,
    x: Tensor,
    *,
    eps: float,
    gamma: float,
    step_size: float | None,
    num_chains: int,
    num_steps: int,
    num_burnin: int | None,
    minibatch_size: int | None,
    seed: int,
) -> LLCEstimate:
    """SGLD on the minibatch behavioural loss L_B at ``theta*``, with ``n beta = 1 / eps``."""
    nbeta = 1.0 / eps
    gamma, num_chains, num_steps, num_burnin = _check_sampler(
        gamma, step_size, num_chains, num_steps, num_burnin
    )
    n = len(x)
    m = n if minibatch_size is None else _check_positive_int("minibatch_size", minibatch_size)
    w0, unflatten = _flat_params(module)
    with torch.no_grad():
        y_star = module(x)
    _check_finite(y_star, "outputs", "output", 0)

    def loss_at(w: Tensor, xb: Tensor, yb: Tensor) -> Tensor:
        out = functional_call(module, unflatten(w), (xb,))
        return (out - yb).pow(2).reshape(len(xb), -1).sum(1).mean()

    # one generator for the minibatches and the noise: deterministic given the seed
    gen = torch.Generator(device=x.device).manual_seed(seed)

    def minibatch_loss(w: Tensor) -> Tensor:
        if m >= n:
            return loss_at(w, x, y_star)
        idx = torch.randint(n, (m,), generator=gen, device=x.device)
        return loss_at(w, x[idx], y_star[idx])

    with torch.no_grad():
        init = float(loss_at(w0, x, y_star))
    if step_size is None:
        xs = x[: min(n, 512)]

        def outputs(w: Tensor) -> Tensor:
            return functional_call(module, unflatten(w), (xs,)).reshape(-1)

        def gn_hvp(v: Tensor) -> Tensor:  # (2/m) J^T J v: the Hessian of L_B at theta*
            jv = jvp(outputs, (w0,), (v.to(w0.dtype),))[1]
            (jtjv,) = vjp(outputs, w0)[1](jv)
            return (2.0 / len(xs)) * jtjv.to(v.dtype)

        step_size = 0.1 / (nbeta * _top_eigenvalue(gn_hvp, w0.numel(), w0) + gamma)
    return _sgld_estimate(
        lambda W: _per_chain_value_and_grad(minibatch_loss, W),
        w0,
        init_loss=init,
        nbeta=nbeta,
        gamma=gamma,
        step=float(step_size),
        eps=eps,
        num_chains=num_chains,
        num_steps=num_steps,
        num_burnin=num_burnin,
        generator=gen,
    )

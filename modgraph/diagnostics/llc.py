"""The local learning coefficient of a loss, estimated with SGLD (Lau et al. 2023).

:func:`llc_estimate` works on any callable loss; :func:`behavioral_llc` on the behavioral loss of
a network (eq. 6), for :func:`~modgraph.diagnostics.effective_parameter_count` (``method="llc"``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, jvp, vjp, vmap

from .._validation import check_bool, check_int, check_real, check_seed
from ..errors import InputError
from ..statistics import check_finite

__all__ = [
    "LLCEstimate",
    "Sampler",
    "llc_estimate",
    "behavioral_llc",
    "sgld_estimate",
    "flat_params",
    "top_eigenvalue",
    "per_chain_value_and_grad",
]


# ---------------------------------------------------------------------------------- helpers
def flat_params(module: nn.Module) -> tuple[Tensor, Callable[[Tensor], dict[str, Tensor]]]:
    """The parameters as one vector ``w0``, and the map back to ``functional_call``'s dict."""
    names, shapes = zip(*((k, p.shape) for k, p in module.named_parameters()))
    w0 = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    sizes = [math.prod(s) for s in shapes]

    def unflatten(w: Tensor) -> dict[str, Tensor]:
        return {k: c.view(s) for k, c, s in zip(names, w.split(sizes), shapes)}

    return w0, unflatten


def top_eigenvalue(
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
    loss_trace : ndarray of shape (n_chains, n_steps)
        Loss at every step of every chain (NaN after a divergence).
    init_loss : float
        ``L(w*)``.
    chain_values : ndarray of shape (n_chains,)
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
    n_burnin : int
        Steps discarded as burn-in (``num_burnin`` still reads it, with a DeprecationWarning).
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
    n_burnin: int

    @property
    def converged(self) -> bool:
        """``ok``, R-hat below 1.1 and no drift."""
        return bool(self.ok and self.rhat < 1.1 and not self.drifted)


@dataclass(frozen=True)
class Sampler:
    """Checked SGLD settings: inverse temperature, localisation, step, chains, steps, burn-in.

    ``step_size`` is None until it is chosen from the Hessian (see :func:`llc_estimate`).
    """

    nbeta: float
    gamma: float
    step_size: float | None
    n_chains: int
    n_steps: int
    n_burnin: int

    @classmethod
    def checked(cls, where: str, nbeta: float, options: dict) -> Sampler:
        """From the ``gamma, step_size, n_chains, n_steps, n_burnin`` options of ``where``."""
        gamma = check_real(where, "gamma", options["gamma"], low=0)
        step = options["step_size"]
        if step is not None:
            step = check_real(where, "step_size", step, low=0, low_open=True)
        n_chains = check_int(where, "n_chains", options["n_chains"], low=1)
        n_steps = check_int(where, "n_steps", options["n_steps"], low=2)
        n_burnin = options["n_burnin"]
        n_burnin = n_steps // 4 if n_burnin is None else n_burnin
        n_burnin = check_int(where, "n_burnin", n_burnin, low=0, high=n_steps - 1)
        return cls(nbeta, gamma, step, n_chains, n_steps, n_burnin)


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


def per_chain_value_and_grad(loss: Callable[[Tensor], Tensor], W: Tensor) -> tuple[Tensor, Tensor]:
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
    sampler: Sampler,
    *,
    generator: torch.Generator,
    init_loss: float,
) -> tuple[np.ndarray, str]:
    """SGLD chains started at ``w0``; returns the loss trace (chains, steps) and a failure reason.

    Update (Welling & Teh 2011, with the localisation of Lau et al.)::

        w <- w - step/2 (nbeta grad L(w) + gamma (w - w0)) + sqrt(step) xi,   xi ~ N(0, I)

    whose stationary density is proportional to ``exp(-nbeta L(w) - gamma/2 |w - w0|^2)``.
    """
    nbeta, gamma, step = sampler.nbeta, sampler.gamma, sampler.step_size
    n_chains, n_steps = sampler.n_chains, sampler.n_steps
    W = w0.detach().expand(n_chains, -1).clone()
    trace = torch.full((n_chains, n_steps), float("nan"), dtype=torch.float64, device=w0.device)
    blowup = 100.0 * max(w0.numel(), 10)  # nbeta * (L - L0) has mean lambda <= d / 2
    check_every = 50
    for t in range(n_steps):
        loss, g = value_and_grad(W)
        trace[:, t] = loss.detach().to(torch.float64)
        noise = torch.randn(W.shape, generator=generator, dtype=W.dtype, device=W.device)
        W = W - 0.5 * step * (nbeta * g + gamma * (W - w0)) + math.sqrt(step) * noise
        if (t + 1) % check_every == 0 or t == n_steps - 1:
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


def sgld_estimate(
    value_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]],
    w0: Tensor,
    sampler: Sampler,
    *,
    init_loss: float,
    eps: float | None,
    generator: torch.Generator,
) -> LLCEstimate:
    """Run SGLD chains and summarize their post-burn-in trace as an :class:`LLCEstimate`."""
    trace, reason = _sgld(value_and_grad, w0, sampler, generator=generator, init_loss=init_loss)
    nbeta = sampler.nbeta
    post = trace[:, sampler.n_burnin :]
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
        gamma=float(sampler.gamma),
        step_size=float(sampler.step_size),
        eps=float("nan") if eps is None else float(eps),
        n_burnin=sampler.n_burnin,
    )


def _temperature(where: str, eps, n, beta) -> tuple[float, float | None]:
    """``(n beta, eps)``: ``n beta = 1 / eps``, or ``n / log n`` (devinterp) without eps."""
    if n is not None:
        n = check_int(where, "n", n, low=2)
    if beta is not None:
        beta = check_real(where, "beta", beta, low=0, low_open=True)
    if eps is not None:
        eps = check_real(where, "eps", eps, low=0, low_open=True)
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
    if beta is None:
        beta = 1.0 / math.log(n)
    return n * beta, None


def llc_estimate(  # noqa: PLR0913 (public; SGLD's knobs, as in devinterp)
    loss_fn: Callable[[Tensor], Tensor],
    w0,
    *,
    eps: float | None = None,
    n: int | None = None,
    beta: float | None = None,
    gamma: float = 1.0,
    step_size: float | None = None,
    n_chains: int = 4,
    n_steps: int = 2000,
    n_burnin: int | None = None,
    step_scale: float = 0.1,
    vectorized: bool = False,
    seed: int = 0,
) -> LLCEstimate:
    """Local learning coefficient of a loss at ``w0``, estimated with SGLD.

    The estimator of Lau et al. (2023), as in devinterp (whose 1.x ``SGLD`` gives the same value
    on the same model and hyperparameters, all chains here running in one vmapped call, several
    times faster: ``benchmarks/bench_libraries.py``):

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
        chains, ``loss_fn(W)`` for ``W`` of shape (n_chains, d) returning shape (n_chains,)
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
    n_chains, n_steps, n_burnin : int
        Chains, steps per chain, and steps discarded (default ``n_steps // 4``). The names
        ``num_chains``, ``num_steps``, ``num_burnin`` still work, with a DeprecationWarning.
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
    ...                    eps=1e-2, gamma=0.0, n_steps=4000, seed=0)
    >>> round(est.value, 1)  # a regular 2-parameter model: lambda = d/2
    1.0
    """
    where = "llc_estimate"
    nbeta, eps_used = _temperature(where, eps, n, beta)
    options = dict(gamma=gamma, step_size=step_size, n_chains=n_chains, n_steps=n_steps)
    sampler = Sampler.checked(where, nbeta, {**options, "n_burnin": n_burnin})
    gamma = sampler.gamma
    check_real(where, "step_scale", step_scale, low=0, low_open=True)
    check_bool(where, "vectorized", vectorized)
    check_seed(where, seed)
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
            except RuntimeError as err:  # randomness or data-dependent control flow in loss_fn
                vmappable = False
                warnings.warn(
                    f"loss_fn cannot be vmapped ({str(err).splitlines()[0]}); the chains run "
                    "one at a time, which is slower",
                    RuntimeWarning,
                    stacklevel=4,
                )
        return per_chain_value_and_grad(loss_fn, W)

    if step_size is None:
        grad_fn = torch.func.grad(single)

        def hvp(v: Tensor) -> Tensor:
            return jvp(grad_fn, (w0,), (v,))[1]

        stiffness = nbeta * top_eigenvalue(hvp, w0.numel(), w0) + gamma
        if stiffness <= 0:
            raise InputError("step_size is needed: the Hessian vanishes at w0 and gamma is 0")
        sampler = replace(sampler, step_size=step_scale / stiffness)
    return sgld_estimate(
        value_and_grad,
        w0,
        sampler,
        init_loss=init,
        eps=eps_used,
        generator=torch.Generator(device=w0.device).manual_seed(seed),
    )


def behavioral_llc(
    module: nn.Module, x: Tensor, sampler: Sampler, *, minibatch_size: int, seed: int
) -> LLCEstimate:
    """SGLD on the minibatch behavioral loss L_B at ``theta*`` (``sampler.nbeta = 1 / eps``).

    ``minibatch_size`` at least ``len(x)`` means full batch; ``sampler.step_size`` None: chosen
    from the top eigenvalue of the Gauss-Newton Hessian.
    """
    nbeta, gamma = sampler.nbeta, sampler.gamma
    n, m = len(x), minibatch_size
    w0, unflatten = flat_params(module)
    with torch.no_grad():
        y_star = module(x)
    check_finite(y_star, "outputs", "output", 0)

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
    if sampler.step_size is None:
        xs = x[: min(n, 512)]

        def outputs(w: Tensor) -> Tensor:
            return functional_call(module, unflatten(w), (xs,)).reshape(-1)

        def gn_hvp(v: Tensor) -> Tensor:  # (2/m) J^T J v: the Hessian of L_B at theta*
            jv = jvp(outputs, (w0,), (v.to(w0.dtype),))[1]
            (jtjv,) = vjp(outputs, w0)[1](jv)
            return (2.0 / len(xs)) * jtjv.to(v.dtype)

        step = 0.1 / (nbeta * top_eigenvalue(gn_hvp, w0.numel(), w0) + gamma)
        sampler = replace(sampler, step_size=step)
    return sgld_estimate(
        lambda W: per_chain_value_and_grad(minibatch_loss, W),
        w0,
        sampler,
        init_loss=init,
        eps=1.0 / nbeta,
        generator=gen,
    )

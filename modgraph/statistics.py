"""Streamed float64 statistics per layer: mean, centered activation Gram G, Jacobian Gram M.

All accumulators merge batch by batch (Chan et al.'s pairwise update for the centered Gram), so
the result does not depend on how the data are split and memory does not grow with the dataset.
Per-sample Jacobians are computed with ``torch.func`` (``vjp`` vmapped over chunks of output
directions) and folded into ``M`` chunk by chunk: all samples' Jacobians are never held at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import vjp, vmap

from .chain import Batches, LayerChain
from .errors import InputError, NonFiniteError

__all__ = [
    "LayerStatistics",
    "MomentAccumulator",
    "activation_statistics",
    "jacobian_gram",
    "global_statistics",
]

#: Elements of per-sample Jacobian rows held at once (float64: 8 bytes each -> 256 MiB).
DEFAULT_JACOBIAN_BUDGET = 2**25


@dataclass(frozen=True)
class LayerStatistics:
    """Statistics of one layer over the data.

    Attributes
    ----------
    n : int
        Number of samples.
    mean : Tensor of shape (d,)
    G : Tensor of shape (d, d)
        Centered activation Gram ``E[(f - mu)(f - mu)^T]`` (float64).
    M : Tensor of shape (d, d) or None
        Jacobian Gram ``E[J^T J]`` (float64); ``None`` until computed.
    """

    n: int
    mean: Tensor
    G: Tensor
    M: Tensor | None = None


class MomentAccumulator:
    """Streaming mean and centered second moment of row vectors, in float64.

    Merging uses the pairwise update of Chan, Golub & LeVeque (1979), which keeps the centered
    Gram accurate where the naive ``E[ff^T] - mu mu^T`` cancels catastrophically.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(10, 3, dtype=torch.float64)
    >>> acc = MomentAccumulator(3)
    >>> acc.update(x[:4]); acc.update(x[4:])
    >>> torch.allclose(acc.gram(), torch.cov(x.T, correction=0))
    True
    """

    def __init__(self, d: int, device: torch.device | str = "cpu"):
        self.n = 0
        self.mean = torch.zeros(d, dtype=torch.float64, device=device)
        self.scatter = torch.zeros(d, d, dtype=torch.float64, device=device)

    def update(self, x: Tensor) -> None:
        """Fold in a batch of rows, shape (n_batch, d)."""
        x = x.to(torch.float64)
        nb = x.shape[0]
        if nb == 0:
            return
        mb = x.mean(0)
        xc = x - mb
        sb = xc.T @ xc
        n = self.n + nb
        delta = mb - self.mean
        self.scatter += sb + torch.outer(delta, delta) * (self.n * nb / n)
        self.mean += delta * (nb / n)
        self.n = n

    def gram(self) -> Tensor:
        """Centered Gram ``E[(x - mu)(x - mu)^T]`` (population normalisation), symmetrised."""
        g = self.scatter / max(self.n, 1)
        return (g + g.T) / 2


def _check_finite(t: Tensor, what: str, layer: str, batch: int) -> None:
    if not torch.isfinite(t).all():
        raise NonFiniteError(f"non-finite {what} at layer {layer!r} in data batch {batch}")


def _forward(chain: LayerChain, x: Tensor, batch: int, upto: int | None = None) -> list[Tensor]:
    try:
        acts = chain.forward(x, upto)
    except RuntimeError as err:  # shape mismatch and friends: name the data, keep torch's reason
        raise InputError(
            f"data batch {batch} of shape {tuple(x.shape)} does not fit the model: {err}"
        ) from err
    for name, f in zip(chain.names, acts):
        _check_finite(f, "activations", name, batch)
    return acts


def _flat(f: Tensor) -> Tensor:
    return f.reshape(f.shape[0], -1)


def cotangents(rows: Tensor, out_shape: torch.Size) -> Tensor:
    """The same output covector for every sample: shape (n_rows, *out_shape).

    Contiguous on purpose: vmapping a pullback over a stride-0 expanded cotangent measured 3x
    slower (torch 2.13, CPU) than over a materialised copy.
    """
    n = out_shape[0]
    return (
        rows[:, None, :]
        .expand(len(rows), n, rows.shape[1])
        .reshape(len(rows), *out_shape)
        .contiguous()
    )


def _chunk(d_out: int, n_batch: int, width: int, budget: int) -> int:
    return max(1, min(d_out, budget // max(1, n_batch * width)))


def activation_statistics(
    chain: LayerChain, batches: Batches, *, upto: int | None = None
) -> list[MomentAccumulator]:
    """One pass over the data: mean and centered Gram of every layer (or layers ``0..upto``)."""
    upto = len(chain.stages) if upto is None else upto
    accs: list[MomentAccumulator] | None = None
    with torch.no_grad():
        for b, x in enumerate(batches):
            acts = _forward(chain, x, b, upto)
            if accs is None:
                accs = [MomentAccumulator(_flat(f).shape[1], batches.device) for f in acts]
            for acc, f in zip(accs, acts):
                acc.update(_flat(f))
    if accs is None:
        raise InputError("data is empty: it yielded no samples")
    return accs


@torch.no_grad()
def global_statistics(
    chain: LayerChain,
    batches: Batches,
    *,
    jacobian_budget: int = DEFAULT_JACOBIAN_BUDGET,
) -> list[LayerStatistics]:
    """One pass: mean, G and the global Jacobian Gram ``M_l = E[J_l^T J_l]``, ``J_l = df_L/df_l``.

    All layers' Jacobian rows come from one backward pass per output direction: the chain is run
    with a zero perturbation added to every layer, and the vjp with respect to the perturbations
    is the vjp with respect to the activations. Output directions are vmapped in chunks sized to
    ``jacobian_budget`` elements.
    """
    L = len(chain.stages)
    device = batches.device
    accs: list[MomentAccumulator] | None = None
    Ms: list[Tensor] = []
    for b, x in enumerate(batches):
        with torch.no_grad():
            acts = _forward(chain, x, b)
        if accs is None:
            accs = [MomentAccumulator(_flat(f).shape[1], device) for f in acts]
            Ms = [
                torch.zeros(a.mean.shape[0], a.mean.shape[0], dtype=torch.float64, device=device)
                for a in accs
            ]
        for acc, f in zip(accs, acts):
            acc.update(_flat(f))

        deltas = tuple(torch.zeros_like(f) for f in acts[:L])

        def perturbed(deltas, x=x):
            f = x + deltas[0] if x.is_floating_point() else x
            for l, stage in enumerate(chain.stages):
                f = stage(f)
                if l + 1 < L:
                    f = f + deltas[l + 1]
            return f

        out, pullback = vjp(perturbed, deltas)
        n_out = _flat(out).shape[1]
        width = sum(_flat(f).shape[1] for f in acts)
        chunk = _chunk(n_out, x.shape[0], width, jacobian_budget)
        eye = torch.eye(n_out, dtype=out.dtype, device=device)
        for start in range(0, n_out, chunk):
            rows = eye[start : start + chunk]
            grads = vmap(pullback)(cotangents(rows, out.shape))[0]
            for l, g in enumerate(grads):
                g = g.reshape(-1, Ms[l].shape[0]).to(torch.float64)
                _check_finite(g, "Jacobian", chain.names[l], b)
                Ms[l] += g.T @ g
        # the output layer's Jacobian with respect to itself is the identity
        Ms[L] += torch.eye(Ms[L].shape[0], dtype=torch.float64, device=device) * x.shape[0]
    if accs is None:
        raise InputError("data is empty: it yielded no samples")
    n = accs[0].n
    return [LayerStatistics(n, a.mean, a.gram(), _sym(m / n)) for a, m in zip(accs, Ms)]


@torch.no_grad()
def jacobian_gram(
    chain: LayerChain,
    layer: int,
    readout: Tensor,
    batches: Batches,
    *,
    jacobian_budget: int = DEFAULT_JACOBIAN_BUDGET,
) -> Tensor:
    """Local Jacobian Gram ``E[J^T J]`` with ``J = readout @ d g_l(f_l) / d f_l`` (appendix A).

    Parameters
    ----------
    readout : Tensor of shape (k, d_{l+1})
        Rows are the linear coordinates of the next layer that ``J`` differentiates (the next
        layer's interaction basis ``C_{l+1}``; centering does not change a derivative).

    Returns
    -------
    Tensor of shape (d_l, d_l), float64.
    """
    stage = chain.stages[layer]
    device, dtype = batches.device, batches.dtype
    M = None
    n = 0
    readout = readout.to(device=device, dtype=dtype)
    for b, x in enumerate(batches):
        with torch.no_grad():
            f = _forward(chain, x, b, upto=layer)[-1]
        out, pullback = vjp(stage, f)
        d_in = _flat(f).shape[1]
        if M is None:
            M = torch.zeros(d_in, d_in, dtype=torch.float64, device=device)
        chunk = _chunk(readout.shape[0], x.shape[0], d_in, jacobian_budget)
        for start in range(0, readout.shape[0], chunk):
            rows = readout[start : start + chunk]
            g = vmap(pullback)(cotangents(rows, out.shape))[0].reshape(-1, d_in).to(torch.float64)
            _check_finite(g, "Jacobian", chain.names[layer], b)
            M += g.T @ g
        n += x.shape[0]
    if M is None:
        raise InputError("data is empty: it yielded no samples")
    return _sym(M / n)


def _sym(m: Tensor) -> Tensor:
    return (m + m.T) / 2

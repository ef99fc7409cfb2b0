"""The behavioral loss of eq. 6, the yardstick of every ablation and diagnostic."""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import InputError

__all__ = ["behavioral_loss"]


def behavioral_loss(model_outputs: Tensor, reference_outputs: Tensor) -> float:
    """The behavioral loss of eq. 6: mean over samples of the summed squared output error.

    .. math::

        L_B = \\frac{1}{n} \\sum_x \\lVert f(x) - f^*(x) \\rVert^2

    (no factor 1/2, as in :mod:`modgraph.diagnostics`). Computed in float64.

    Parameters
    ----------
    model_outputs, reference_outputs : Tensor of shape (n_samples, ...)

    Examples
    --------
    >>> import torch
    >>> behavioral_loss(torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.zeros(2, 2))
    2.5
    """
    a, b = torch.as_tensor(model_outputs), torch.as_tensor(reference_outputs)
    if a.shape != b.shape:
        raise InputError(
            f"model_outputs has shape {tuple(a.shape)} but reference_outputs has {tuple(b.shape)}"
        )
    if a.ndim == 0 or len(a) == 0:
        raise InputError(f"model_outputs must hold at least one sample, got shape {tuple(a.shape)}")
    a, b = a.detach().to(torch.float64), b.detach().to(a.device, torch.float64)
    d = (a - b).reshape(len(a), -1)
    return float(d.square().sum(1).mean())

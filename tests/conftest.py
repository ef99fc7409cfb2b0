import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def mlp(*widths, relu_after=None, bias=True) -> nn.Sequential:
    """A float64 MLP; ``relu_after`` lists the Linear indices followed by a ReLU (default: all
    but the last)."""
    relu_after = range(len(widths) - 2) if relu_after is None else relu_after
    mods = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        mods.append(nn.Linear(a, b, bias=bias))
        if i in relu_after:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).double().eval()


def sample_jacobian(fn, f: torch.Tensor) -> torch.Tensor:
    """Brute-force Jacobian of ``fn`` at one sample ``f`` of shape (1, ...), by
    ``torch.autograd.functional.jacobian``: shape (outputs, inputs), both flattened."""
    out = fn(f)
    J = torch.autograd.functional.jacobian(fn, f)
    return J.reshape(out[0].numel(), f[0].numel())


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))

"""The built-in default problem: an MLP trained on independent sub-tasks, so its modules are known.

The input is ``n_tasks`` groups of ``group_size`` features; sub-task ``k`` maps its own group to its
own two outputs, and no output depends on another group. A network that solves the problem needs
no interaction between sub-tasks, so the modules modgraph finds can be scored against the
sub-tasks (:func:`true_modules`). The tasks are given different output scales so that their
directions do not tie in the interaction basis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..analysis import Analysis
from ..chain import LayerChain
from ..data import Batches
from ..edges import output_attribution
from ..partition import adjusted_rand_index

__all__ = ["DemoProblem", "make_demo", "true_modules"]

#: Output scale of each sub-task (distinct, so that tasks do not tie in Lambda).
TASK_SCALES = (1.0, 0.55, 0.3, 0.18, 0.1)


@dataclass(frozen=True)
class DemoProblem:
    """A trained model with planted sub-tasks.

    Attributes
    ----------
    model : nn.Sequential
        The trained MLP, in eval mode.
    inputs : Tensor of shape (n_samples, n_tasks * group_size)
    targets : Tensor of shape (n_samples, 2 * n_tasks)
    input_groups, output_groups : tuple of tuple of int
        Input features and output dimensions of each sub-task.
    train_loss, test_loss : float
        Mean squared error at the end of training and on fresh inputs.
    analysis_inputs : Tensor of shape (n_analysis, n_tasks * group_size)
        Fresh inputs to analyse the model on. More samples than training: the cross-task
        covariance the basis sees shrinks like 1/sqrt(n), and with it the mixing of tasks.
    """

    model: nn.Sequential
    inputs: Tensor
    targets: Tensor
    input_groups: tuple[tuple[int, ...], ...]
    output_groups: tuple[tuple[int, ...], ...]
    train_loss: float
    test_loss: float
    analysis_inputs: Tensor

    @property
    def n_tasks(self) -> int:
        return len(self.output_groups)


def _targets(x: Tensor, n_tasks: int, group_size: int) -> Tensor:
    ys = []
    for k in range(n_tasks):
        g = x[:, k * group_size : (k + 1) * group_size]
        s = TASK_SCALES[k % len(TASK_SCALES)]
        ys.append(s * torch.tanh(g[:, 0] * g[:, 1] + 0.5 * g[:, 2]))
        ys.append(s * (g[:, 2:].abs().sum(1) - g[:, 0] * 0.5))
    return torch.stack(ys, 1)


def make_demo(
    seed: int = 0,
    *,
    n_tasks: int = 3,
    group_size: int = 4,
    hidden: int = 32,
    n_samples: int = 2048,
    steps: int = 3000,
    l1: float = 3e-4,
    n_analysis: int = 20_000,
) -> DemoProblem:
    """Train the demo MLP ``(n_tasks*group_size) -> hidden -> hidden -> 2*n_tasks`` (a few seconds).

    Training uses Adam on the mean squared error plus a small L1 weight penalty, which favors
    solutions without needless cross-task weights. Deterministic given ``seed`` on one CPU type,
    whatever the number of threads (training runs on one); CPUs with other vector instructions
    (``ATEN_CPU_CAPABILITY``) round differently and train slightly different weights.

    Examples
    --------
    >>> p = make_demo(seed=0, steps=50, n_samples=256, n_analysis=100)
    >>> p.inputs.shape, p.targets.shape, p.output_groups
    (torch.Size([256, 12]), torch.Size([256, 6]), ((0, 1), (2, 3), (4, 5)))
    """
    gen = torch.Generator().manual_seed(seed)
    d_in = n_tasks * group_size
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * n_tasks),
        )
    x = torch.randn(n_samples, d_in, generator=gen)
    y = _targets(x, n_tasks, group_size)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    # One thread: the reduction order, and so the trained weights, must not depend on how many
    # cores the machine has (3000 steps amplify rounding differences to visible ones).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            opt.zero_grad()
            mse = (model(x) - y).pow(2).mean()
            penalty = sum(m.weight.abs().sum() for m in model if isinstance(m, nn.Linear))
            (mse + l1 * penalty).backward()
            opt.step()
            sched.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        train_loss = float((model(x) - y).pow(2).mean())
        x_test = torch.randn(n_samples, d_in, generator=gen)
        test_loss = float((model(x_test) - _targets(x_test, n_tasks, group_size)).pow(2).mean())
    return DemoProblem(
        model=model,
        inputs=x,
        targets=y,
        input_groups=tuple(
            tuple(range(k * group_size, (k + 1) * group_size)) for k in range(n_tasks)
        ),
        output_groups=tuple((2 * k, 2 * k + 1) for k in range(n_tasks)),
        train_loss=train_loss,
        test_loss=test_loss,
        analysis_inputs=torch.randn(n_analysis, d_in, generator=gen),
    )


def true_modules(
    model, analysis: Analysis, data, output_groups, *, batch_size: int = 512
) -> dict[str, int]:
    """The planted module of every graph node: the sub-task whose outputs it drives most.

    A direction's drive on a sub-task is the root-sum-square of its output attribution
    (:func:`modgraph.edges.output_attribution`) over that sub-task's output dimensions.

    Returns
    -------
    dict
        Node id ``"l:i"`` -> index of the sub-task in ``output_groups``.
    """
    chain = LayerChain.from_model(model, analysis.layer_names[1:-1] or None)
    dtype = next(model.parameters()).dtype
    A = output_attribution(
        chain, list(analysis.layers), Batches(data, batch_size=batch_size, dtype=dtype)
    )
    truth = {}
    for l, a in enumerate(A):
        drive = torch.stack([a[list(g)].square().sum(0) for g in output_groups])  # (tasks, k_l)
        for i, task in enumerate(drive.argmax(0).tolist()):
            truth[f"{l}:{i}"] = task
    return truth


def score(truth: dict[str, int], membership: dict[str, int], nodes) -> float:
    """Adjusted Rand index between planted and found modules over ``nodes``."""
    nodes = list(nodes)
    return float(
        adjusted_rand_index(
            np.array([truth[n] for n in nodes]), np.array([membership[n] for n in nodes])
        )
    )

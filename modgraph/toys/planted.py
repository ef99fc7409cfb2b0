"""Hidden-modules benchmark: planted modular networks hidden by function-preserving maps.

Every case is ``K`` independent MLP modules side by side,

.. code-block:: text

    x_k (d_in) -> Linear -> ReLU -> Linear (bottleneck b, no nonlinearity) -> Linear -> ReLU
        -> Linear -> y_k (d_out)

assembled into one block-diagonal ``nn.Sequential`` whose block structure is then hidden:

- ``perm``: the neurons of both ReLU layers are permuted and positively rescaled;
- ``mix``: the linear bottleneck layer is mixed by a random invertible matrix ``R`` (the next
  weight gets ``R^-1``), like a residual stream or a bottleneck in a trained network;
- ``rot``: the inputs are rotated by a random orthogonal matrix (the first weight compensates).

``leak`` adds cross-module weights of that size (before hiding), ``trained`` trains each module on
its own sub-task (as the demo's sub-tasks) instead of drawing random weights. The
ground truth of a basis direction is the module whose outputs it drives most
(:func:`modgraph.toys.demo.true_modules`), and a partition is scored by the adjusted Rand index over
the nodes with edges.

:func:`varied_case` draws networks of other shapes (unequal modules, depths, tanh, bottlenecks),
none of them chosen for ``CASES``: what the module search is checked on beyond its benchmark.

``python -m modgraph.toys.benchmark`` (:mod:`modgraph.toys.benchmark`) prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..partition import find_modules
from .demo import score, true_modules

__all__ = [
    "Case",
    "CASES",
    "hide_relu_neurons",
    "make_case",
    "planted_mlp",
    "score_analysis",
    "varied_case",
]


@dataclass(frozen=True)
class Case:
    """One benchmark network.

    Attributes
    ----------
    name : str
    K : int
        Number of planted modules.
    hiding : str
        ``"+"``-joined subset of ``perm``, ``mix``, ``rot`` (see the module docstring).
    leak : float
        Size of the cross-module weights (uniform in ``[-leak, leak]``), 0 for none.
    trained : bool
        Modules trained on their own sub-task rather than random.
    seed : int
    n_samples : int
        Samples analysed.
    """

    name: str
    K: int
    hiding: str
    leak: float = 0.0
    trained: bool = False
    seed: int = 0
    n_samples: int = 1000


#: The benchmark. eps = 1e-3 absolute (``eps_units="absolute"``); the leaks stay well below
#: eps^1/2 in the output's units.
CASES = (
    Case("perm", 3, "perm"),
    Case("mix", 3, "perm+mix"),
    Case("mix-rot", 3, "perm+mix+rot"),
    Case("mix-rot-K4", 4, "perm+mix+rot", seed=1),
    Case("mix-rot-K5", 5, "perm+mix+rot", seed=2),
    Case("leak", 3, "perm+mix+rot", leak=2e-3, seed=3),
    Case("leak-K4", 4, "perm+mix+rot", leak=2e-3, seed=4),
    Case("trained", 3, "perm+mix+rot", trained=True, seed=5),
    Case("trained-leak", 4, "perm+mix+rot", leak=2e-3, trained=True, seed=6),
)
EPS = 1e-3
D_IN, HIDDEN, BOTTLENECK, D_OUT = 4, 8, 3, 2


@dataclass(frozen=True)
class Planted:
    """A built case: the hidden model, inputs to analyse and each module's output dimensions."""

    case: Case
    model: nn.Sequential
    inputs: Tensor
    output_groups: tuple[tuple[int, ...], ...]


def _module_targets(z: Tensor, k: int) -> Tensor:
    # a sub-task of one input group; the same family as the demo's tasks
    y0 = torch.tanh(z[:, 0] * z[:, 1] + 0.5 * z[:, 2])
    y1 = z[:, 2:].abs().sum(1) - 0.5 * z[:, 0] + 0.3 * k * z[:, 3]
    return torch.stack([y0, y1], 1)


def _random_module(g: torch.Generator) -> list[nn.Linear]:
    widths = [D_IN, HIDDEN, BOTTLENECK, HIDDEN, D_OUT]
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        lin = nn.Linear(a, b).double()
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g, dtype=torch.float64) * (2 / a) ** 0.5)
            lin.bias.copy_(torch.randn(b, generator=g, dtype=torch.float64) * 0.1)
        layers.append(lin)
    return layers


def _trained_module(g: torch.Generator, k: int, steps: int = 400) -> list[nn.Linear]:
    layers = _random_module(g)
    net = nn.Sequential(layers[0], nn.ReLU(), layers[1], layers[2], nn.ReLU(), layers[3])
    z = torch.randn(1024, D_IN, generator=g, dtype=torch.float64)
    _fit(net, z, _module_targets(z, k), steps)
    return layers


def _fit(net: nn.Module, z: Tensor, y: Tensor, steps: int) -> None:
    """``steps`` full-batch Adam steps (lr 1e-2) on the squared error of ``net(z)`` to ``y``."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        (net(z) - y).pow(2).mean().backward()
        opt.step()


def _side_by_side(mods: list[list[nn.Linear]], leak: float, g: torch.Generator) -> list[nn.Linear]:
    """The modules' Linear layers stacked block-diagonally, layer by layer, with cross-module
    weights uniform in ``[-leak, leak]`` (none for 0)."""
    big = []
    for layers in zip(*mods):
        W = torch.block_diag(*[lin.weight.detach() for lin in layers])
        if leak:
            noise = (torch.rand(W.shape, generator=g, dtype=torch.float64) * 2 - 1) * leak
            W = W + noise * (W == 0)
        lin = nn.Linear(W.shape[1], W.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(W)
            lin.bias.copy_(torch.cat([m.bias.detach() for m in layers]))
        big.append(lin)
    return big


@torch.no_grad()
def hide_relu_neurons(lin: nn.Linear, nxt: nn.Linear, generator: torch.Generator) -> Tensor:
    """Permute and positively rescale the ReLU neurons between ``lin`` and ``nxt``, in place.

    The network computes the same function (ReLU commutes with both). Returns the permutation:
    new neuron ``i`` is old neuron ``perm[i]``.
    """
    n = lin.out_features
    perm = torch.randperm(n, generator=generator)
    s = torch.rand(n, generator=generator, dtype=lin.weight.dtype) * 2 + 0.3
    lin.weight.copy_(s[:, None] * lin.weight[perm])
    lin.bias.copy_(s * lin.bias[perm])
    nxt.weight.copy_(nxt.weight[:, perm] / s[None, :])
    return perm


def planted_mlp(
    blocks, *, scales=None, bias: float = 0.1, leak: float = 0.0, seed: int = 0
) -> tuple[nn.Sequential, list[np.ndarray]]:
    """Independent ReLU MLP modules side by side, hidden by function-preserving maps.

    Every module is ``Linear -> ReLU -> ... -> Linear``; the modules are stacked block-diagonally
    and the neurons of every hidden ReLU layer are then permuted and positively rescaled
    (:func:`hide_relu_neurons`), so the planted structure is invisible in the weights' layout.

    Parameters
    ----------
    blocks : sequence of sequence of int
        One entry per layer, input first: the width of every module there, e.g.
        ``[(3, 3), (8, 8), (2, 2)]`` for two modules 3 -> 8 -> 2.
    scales : sequence of sequence of float, optional
        Per Linear, the factor on each module's standard-normal weights (default 1).
    bias : float
        Standard deviation of the biases.
    leak : float
        Cross-module weights, uniform in ``[-leak, leak]`` (0: exactly independent modules).
    seed : int

    Returns
    -------
    net, owners
        The float64 model in eval mode, and per layer (input first) the planted module of
        every neuron, in the hidden model's order.
    """
    g = torch.Generator().manual_seed(seed)
    blocks = [tuple(int(w) for w in b) for b in blocks]
    K = len(blocks[0])
    owners = [np.repeat(np.arange(K), b) for b in blocks]
    mods: list[nn.Module] = []
    for l, (a, b) in enumerate(zip(blocks[:-1], blocks[1:])):
        sc = [1.0] * K if scales is None else scales[l]
        W = torch.block_diag(
            *[s * torch.randn(r, c, generator=g, dtype=torch.float64) for r, c, s in zip(b, a, sc)]
        )
        W = W + leak * (torch.rand(W.shape, generator=g, dtype=torch.float64) * 2 - 1) * (W == 0)
        lin = nn.Linear(sum(a), sum(b)).double()
        with torch.no_grad():
            lin.weight.copy_(W)
            lin.bias.copy_(bias * torch.randn(sum(b), generator=g, dtype=torch.float64))
        mods += [lin, nn.ReLU()]
    net = nn.Sequential(*mods[:-1]).eval()
    for l in range(1, len(blocks) - 1):  # hide the blocks of every hidden ReLU layer
        perm = hide_relu_neurons(net[2 * (l - 1)], net[2 * l], g)
        owners[l] = owners[l][perm.numpy()]
    return net, owners


def make_case(case: Case) -> Planted:
    """Build the hidden modular network of ``case`` and its analysis inputs (deterministic)."""
    g = torch.Generator().manual_seed(case.seed)
    K = case.K
    mods = [_trained_module(g, k) if case.trained else _random_module(g) for k in range(K)]
    big = _side_by_side(mods, case.leak, g)
    net = nn.Sequential(big[0], nn.ReLU(), big[1], big[2], nn.ReLU(), big[3]).eval()
    hiding = set(case.hiding.split("+"))
    with torch.no_grad():
        if "perm" in hiding:
            for i in (0, 3):  # the Linear before each ReLU, and the Linear after it
                hide_relu_neurons(net[i], net[i + 2], g)
        if "mix" in hiding:
            n = net[2].out_features
            R = torch.randn(n, n, generator=g, dtype=torch.float64) / n**0.5
            R = R + torch.eye(n, dtype=torch.float64) * 0.5
            net[2].weight.copy_(R @ net[2].weight)
            net[2].bias.copy_(R @ net[2].bias)
            net[3].weight.copy_(net[3].weight @ torch.linalg.inv(R))
        z = torch.randn(case.n_samples, K * D_IN, generator=g, dtype=torch.float64)
        if "rot" in hiding:
            Q, _ = torch.linalg.qr(
                torch.randn(K * D_IN, K * D_IN, generator=g, dtype=torch.float64)
            )
            net[0].weight.copy_(net[0].weight @ Q.T)
            z = z @ Q.T
    groups = tuple(tuple(range(k * D_OUT, (k + 1) * D_OUT)) for k in range(K))
    return Planted(case, net, z, groups)


#: Seeds of :func:`varied_case` draw from ``VARIED_SEED_OFFSET + seed`` (apart from ``CASES``).
VARIED_SEED_OFFSET = 1000


@torch.no_grad()
def _hide_tanh_neurons(lin: nn.Linear, nxt: nn.Linear, generator: torch.Generator) -> None:
    """Permute the tanh neurons between ``lin`` and ``nxt`` and flip the signs of some, in place
    (tanh is odd: the network computes the same function)."""
    n = lin.out_features
    perm = torch.randperm(n, generator=generator)
    s = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).to(lin.weight.dtype)
    lin.weight.copy_(s[:, None] * lin.weight[perm])
    lin.bias.copy_(s * lin.bias[perm])
    nxt.weight.copy_(nxt.weight[:, perm] * s[None, :])


def varied_case(seed: int, n_samples: int = 1000) -> Planted:
    """A hidden modular network of a random architecture, none of it chosen for ``CASES``.

    Drawn from ``seed``: ``K`` = 2..6 modules of unequal shapes (inputs 3-6, hidden layers of
    5-14, outputs 1-3 per module), 2 or 3 hidden layers, ReLU or tanh, half of them with a
    linear bottleneck of 2-4 after the first hidden layer (mixed by a random invertible map),
    a third with leaks of 2e-3 and a third trained on a dense target of their own inputs.
    Hidden layers are permuted (and rescaled, ReLU, or sign-flipped, tanh), the inputs rotated.
    ``Planted.case.name`` says what was drawn.
    """
    rng = np.random.default_rng(VARIED_SEED_OFFSET + seed)
    g = torch.Generator().manual_seed(VARIED_SEED_OFFSET + seed)
    K, n_hidden = int(rng.integers(2, 7)), int(rng.integers(2, 4))
    act = str(rng.choice(["relu", "tanh"]))
    bottleneck, leak = bool(rng.random() < 0.5), float(rng.choice([0.0, 0.0, 2e-3]))
    trained = bool(rng.random() < 1 / 3)
    shapes = []
    for _ in range(K):
        w = [int(rng.integers(3, 7)), *(int(rng.integers(5, 15)) for _ in range(n_hidden))]
        if bottleneck:
            w.insert(2, int(rng.integers(2, 5)))
        shapes.append([*w, int(rng.integers(1, 4))])
    n_lin = len(shapes[0]) - 1
    # an activation after every Linear but the last and the bottleneck's
    activated = [l < n_lin - 1 and not (bottleneck and l == 1) for l in range(n_lin)]
    Act = nn.ReLU if act == "relu" else nn.Tanh

    def sequential(layers):
        return nn.Sequential(*(m for l, lin in enumerate(layers)
                               for m in ((lin, Act()) if activated[l] else (lin,))))  # fmt: skip

    mods = []
    for w in shapes:
        layers = []
        for a, b in zip(w[:-1], w[1:]):
            lin = nn.Linear(a, b).double()
            with torch.no_grad():
                scale = (2.0 if act == "relu" else 1.5) / a
                lin.weight.copy_(torch.randn(b, a, generator=g, dtype=torch.float64) * scale**0.5)
                lin.bias.copy_(0.1 * torch.randn(b, generator=g, dtype=torch.float64))
            layers.append(lin)
        if trained:
            net = sequential(layers)
            z = torch.randn(1024, w[0], generator=g, dtype=torch.float64)
            T = torch.randn(2, w[0], w[-1], generator=g, dtype=torch.float64)
            _fit(net, z, torch.tanh(z @ T[0]) + 0.5 * (z @ T[1]).abs(), 300)
        mods.append(layers)
    big = _side_by_side(mods, leak, g)
    net = sequential(big).eval()
    with torch.no_grad():
        for l in range(n_lin - 1):
            if not activated[l]:  # the linear bottleneck: mixed
                n = big[l].out_features
                R = torch.randn(n, n, generator=g, dtype=torch.float64) / n**0.5
                R = R + 0.5 * torch.eye(n, dtype=torch.float64)
                big[l].weight.copy_(R @ big[l].weight)
                big[l].bias.copy_(R @ big[l].bias)
                big[l + 1].weight.copy_(big[l + 1].weight @ torch.linalg.inv(R))
            elif act == "relu":
                hide_relu_neurons(big[l], big[l + 1], g)
            else:
                _hide_tanh_neurons(big[l], big[l + 1], g)
        d_in = big[0].in_features
        z = torch.randn(n_samples, d_in, generator=g, dtype=torch.float64)
        Q, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=g, dtype=torch.float64))
        big[0].weight.copy_(big[0].weight @ Q.T)
        z = z @ Q.T
    ends = np.cumsum([0, *(w[-1] for w in shapes)])
    groups = tuple(tuple(range(ends[k], ends[k + 1])) for k in range(K))
    name = f"var-{act}{n_hidden}" + "-bott" * bottleneck  # e.g. var-tanh3-bott: 3 hidden
    case = Case(name, K, "perm+mix+rot" if bottleneck else "perm+rot", leak=leak,
                trained=trained, seed=seed, n_samples=n_samples)  # fmt: skip
    return Planted(case, net, z, groups)


def score_analysis(planted: Planted, analysis, *, seed: int = 0) -> float:
    """ARI between Leiden modules and the planted modules, on the nodes with edges.

    Leiden is asked for ``K`` modules (the planted number, the same for every basis): with
    modularity alone it splits a planted module at its linear bottleneck, where the interaction
    basis leaves one edge per direction (diagonal transitions), whatever the basis quality.
    """
    g = analysis.graph
    truth = true_modules(planted.model, analysis, planted.inputs, planted.output_groups)
    found = find_modules(g, method="leiden", n_modules=planted.case.K, seed=seed)
    nodes = [n for n, c in zip(g.nodes, g.connected_nodes) if c]
    return score(truth, found.membership, nodes)

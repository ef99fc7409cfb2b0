"""Faithfulness curves of a small MLP in the interaction, PCA and neuron bases.

The MLP is trained on three independent sub-tasks (y_k depends only on the input group x_k). It is
analysed in the three bases, and in each the interaction edges are removed weakest first (exactly,
jointly; see :mod:`modgraph.circuits.ablation`) while the behavioral loss (eq. 6) against the
trained model is measured. A basis in which the computation is sparse keeps the loss low down to
fewer edges. The interaction-basis modules are then ablated one at a time.

Run from the repository root::

    python examples/faithfulness.py

Writes ``figures/faithfulness.png`` and ``figures/faithfulness.json``. CPU, float64, about a
minute; deterministic given the seeds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import modgraph as mg  # noqa: E402
from modgraph import circuits as ab  # noqa: E402

SEED = 0
GROUP = 3  # input dims per sub-task
N_TASKS = 3
HIDDEN = 32
EPS = 1e-4
STEPS = 1500
OUT = Path(__file__).resolve().parent.parent / "figures"


def targets(x: torch.Tensor) -> torch.Tensor:
    """Three sub-tasks, one per input group: y_k = a nonlinear function of x_k alone."""
    x0, x1, x2 = x.split(GROUP, dim=1)
    return torch.stack(
        [
            torch.sin(2 * x0[:, 0]) + x0[:, 1] * x0[:, 2],
            x1.abs().sum(1) - 1.5,
            torch.relu(x2[:, 0] + x2[:, 1]) - torch.relu(x2[:, 2]),
        ],
        dim=1,
    )


def train(x: torch.Tensor, y: torch.Tensor) -> nn.Sequential:
    torch.manual_seed(SEED)
    net = nn.Sequential(
        nn.Linear(GROUP * N_TASKS, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, N_TASKS),
    ).double()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = (net(x) - y).square().mean()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def main() -> None:
    gen = torch.Generator().manual_seed(SEED)
    x_train = torch.randn(4096, GROUP * N_TASKS, generator=gen, dtype=torch.float64)
    x = torch.randn(2048, GROUP * N_TASKS, generator=gen, dtype=torch.float64)
    t0 = time.perf_counter()
    net = train(x_train, targets(x_train))
    with torch.no_grad():
        test_mse = float((net(x) - targets(x)).square().mean())
        var = float(targets(x).var(0).mean())
    print(
        f"trained in {time.perf_counter() - t0:.1f} s: "
        f"test MSE {test_mse:.4f} (target variance {var:.3f})"
    )

    curves, analyses = {}, {}
    for basis in ("interaction", "pca", "neuron"):
        t0 = time.perf_counter()
        a = mg.analyze(net, x, basis=basis, eps=EPS, progress=False)
        curves[basis] = ab.faithfulness_curve(net, a, x, n_points=20)
        analyses[basis] = a
        ks = [layer.k for layer in a.layers]
        print(
            f"{basis:>11}: kept directions {ks}, {curves[basis].n_edges_total} candidate edges, "
            f"{a.graph.n_edges} above eps^1/2 ({time.perf_counter() - t0:.1f} s)"
        )

    print("\nbehavioral loss with only the n strongest edges kept")
    ref = curves["interaction"]
    print(f"{'n kept':>8} " + " ".join(f"{b:>12}" for b in curves))
    grid = sorted({int(n) for c in curves.values() for n in c.n_edges_kept}, reverse=True)
    for n in grid:
        row = []
        for c in curves.values():
            hit = np.flatnonzero(c.n_edges_kept == n)
            row.append(f"{c.loss[hit[0]]:12.3e}" if len(hit) else f"{'':>12}")
        print(f"{n:>8} " + " ".join(row))

    # compare at equal numbers of kept edges: interpolate each baseline in log-loss
    def at(c, n):
        order = np.argsort(c.n_edges_kept)
        return np.exp(np.interp(n, c.n_edges_kept[order], np.log(c.loss[order] + 1e-300)))

    nk = ref.n_edges_kept[(ref.n_edges_kept > 0) & (ref.n_edges_kept < ref.n_edges_total)]
    summary = {}
    for b in ("pca", "neuron"):
        lower = [ref.loss[ref.n_edges_kept == n][0] <= at(curves[b], n) for n in nk]
        summary[b] = float(np.mean(lower))
        print(f"interaction at or below {b} at {sum(lower)}/{len(nk)} interior points of its curve")
    graph_loss = {}
    for name, c in curves.items():
        below = c.n_edges_kept[c.loss < EPS]
        a = analyses[name]
        weak = [  # every edge the graph leaves out (w <= eps^1/2), removed jointly
            (f"{l}:{j}", f"{l + 1}:{i}")
            for l, w in enumerate(a.w)
            for i, j in (w <= a.graph.threshold).nonzero().tolist()
        ]
        y = ab.run_edge_ablated(net, a, x, weak)
        with torch.no_grad():
            graph_loss[name] = mg.loss.behavioral_loss(y, net(x))
        print(
            f"{name:>11}: fewest edges on the grid with loss < eps: {int(below.min())}; "
            f"loss keeping only the graph's {a.graph.n_edges} edges: {graph_loss[name]:.2e}"
        )

    # modules of the interaction graph, each removed and each kept alone
    modules = mg.find_modules(analyses["interaction"].graph, n_modules=N_TASKS, seed=SEED)
    abl = ab.module_ablation(net, analyses["interaction"], x, modules)
    io = ab.module_io(net, analyses["interaction"], x, modules)
    print(f"\n{modules.n_modules} interaction-basis modules (Leiden, n_modules=3):")
    for m, label in enumerate(abl.labels):
        print(
            f"  module {label}: {abl.n_nodes[m]:>3} nodes, loss removed {abl.loss_removed[m]:.3e},"
            f" kept alone {abl.loss_alone[m]:.3e}, writes outputs {io.written_by(m)},"
            f" reads inputs {io.read_by(m)}"
        )

    OUT.mkdir(exist_ok=True)
    ax = mg.plotting.plot_faithfulness(curves)
    ax.figure.savefig(OUT / "faithfulness.png", dpi=150)
    payload = {
        "curves": {b: c.to_dict() for b, c in curves.items()},
        "fraction_interaction_at_or_below": summary,
        "loss_graph_edges_only": graph_loss,
        "test_mse": test_mse,
        "modules": modules.to_dict(),
        "module_ablation": abl.to_dict(),
        "module_io": io.to_dict(),
    }
    tmp = OUT / ".faithfulness.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(OUT / "faithfulness.json")
    print(f"\nwrote {OUT / 'faithfulness.png'} and {OUT / 'faithfulness.json'}")


if __name__ == "__main__":
    main()

"""Benchmark: are the modules' number and significance calibrated, and do they have power?

Calibration: networks without modules (random dense ReLU MLPs of three architectures, He init,
untrained and trained briefly on a dense tanh target), analysed with the defaults. Each is
partitioned at the automatic number of modules and at every requested ``k`` in {2, 3, 4}, and
tested against the null model (``module_significance``; the automatic choice carries its own
Bonferroni-adjusted test). A calibrated test gives p <= 0.05 in at most about 5% of them, and
the automatic choice should come back as one module in at least 95%. The same networks are
tested again with eps raised until only their ``1.3 n`` strongest edges are left (sparse graphs,
at automatic k and k = 2).

Power and recovery: the hidden-modules cases (``modgraph.toys.planted.CASES``, K = 3..5 planted
modules hidden by permutation, mixing and rotation, with and without sub-eps^1/2 leaks, random
and trained modules, plus two K = 2 cases), each on ``--seeds`` seeds; tested at the planted K
and at the automatic number, which is scored against the planted modules (adjusted Rand index
over the nodes with edges). The same on ``--varied`` networks of other architectures
(``modgraph.toys.planted.varied_case``: 2-6 modules of unequal shapes, ReLU or tanh, 2-4 hidden
layers, some with a mixed bottleneck), none of which the module search was tuned on.

Prints, per method, the fraction with p <= 0.05, the spread of p, and the recovery rates, and
per set of planted networks the share of the graph's cost on edges between planted modules
(what the basis mixes; no partition can undo it).
Run: ``python benchmarks/bench_significance.py [--nets 10] [--seeds 3] [--varied 24]
[--first-varied 0] [--varied-samples 1000] [--n-null 20] [--verbose]`` (about 11 minutes on 2
cores with the defaults; ``--nets 2 --seeds 1 --varied 0`` for a quick look).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np
import torch
from torch import nn

import modgraph as mg
from modgraph.toys.planted import CASES, EPS, Case, make_case, true_modules, varied_case

ARCHITECTURES = ((8, 24, 24, 6), (12, 32, 16, 4), (16, 48, 48, 8))
KS = (2, 3, 4)
METHODS = ("spectral", "leiden")
#: Edges per node kept in the sparse calibration (the demo's graph has 1.8 per connected node).
SPARSE_EDGES_PER_NODE = 1.3
#: K = 2 cases added to the hidden-modules benchmark's K = 3..5.
EXTRA_CASES = (
    Case("K2", 2, "perm+mix+rot", seed=7),
    Case("K2-leak", 2, "perm+mix+rot", leak=2e-3, seed=8),
)


def random_net(widths, seed: int, *, trained: bool) -> tuple[nn.Sequential, torch.Tensor]:
    """A dense ReLU MLP (He init) and its inputs; ``trained``: 300 Adam steps on a dense target."""
    g = torch.Generator().manual_seed(seed)
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = nn.Linear(a, b).double()
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g, dtype=torch.float64) * (2 / a) ** 0.5)
            lin.bias.copy_(0.1 * torch.randn(b, generator=g, dtype=torch.float64))
        mods.append(lin)
        if i < len(widths) - 2:
            mods.append(nn.ReLU())
    net = nn.Sequential(*mods)
    x = torch.randn(1000, widths[0], generator=g, dtype=torch.float64)
    if trained:  # a dense target: every output depends on every input
        A = torch.randn(widths[0], widths[-1], generator=g, dtype=torch.float64)
        y = torch.tanh(x @ A / widths[0] ** 0.5)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(300):
            opt.zero_grad()
            (net(x) - y).pow(2).mean().backward()
            opt.step()
    return net.eval(), x


def p_at(graph, method: str, k: int, n_null: int) -> float:
    r = mg.find_modules(graph, method=method, n_modules=k, seed=0)
    return mg.module_significance(graph, r, n_null=n_null, seed=0).p_value


def sparse(graph: mg.InteractionGraph, per_node: float = SPARSE_EDGES_PER_NODE):
    """``graph`` at the eps that keeps only its ``per_node * n_nodes`` strongest edges."""
    w = np.sort(np.concatenate([x[x > 0] for x in graph.w]))[::-1]
    n = min(int(per_node * graph.n_nodes), len(w) - 1)
    return mg.InteractionGraph(graph.layer_names, graph.importance, graph.w, eps=w[n] ** 2)


def calibration(args) -> None:
    rows, sparse_rows = [], []
    for widths in ARCHITECTURES:
        for trained in (False, True):
            for s in range(args.nets):
                net, x = random_net(widths, s, trained=trained)
                g = mg.analyze(net, x, progress=False).graph
                rows.append(_calibration_row(g, KS, args.n_null))
                sparse_rows.append(_calibration_row(sparse(g), (2,), args.n_null))
    print(
        f"\nCalibration: {len(rows)} networks without modules "
        f"({len(ARCHITECTURES)} architectures x untrained/trained x {args.nets} seeds)"
    )
    _print_calibration(rows, KS)
    print(f"\nThe same networks, only their {SPARSE_EDGES_PER_NODE} x n strongest edges kept "
          "(eps raised)")  # fmt: skip
    _print_calibration(sparse_rows, (2,))


def _calibration_row(g, ks, n_null: int) -> dict:
    row = {}
    for method in METHODS:
        auto = mg.find_modules(g, method=method, seed=0, n_null=n_null)
        row[method, "auto"] = auto.significance.p_value
        row[method, "one module"] = float(auto.n_modules == 1)
        for k in ks:
            row[method, k] = p_at(g, method, k, n_null)
    return row


def _print_calibration(rows, ks) -> None:
    for method in METHODS:
        for k in ("auto", *ks):
            ps = np.nan_to_num(np.array([r[method, k] for r in rows]), nan=1.0)
            label = "auto" if k == "auto" else f"k={k}"
            print(
                f"  {method:<8} {label:<5} p<=0.05 in {np.mean(ps <= 0.05):5.1%} "
                f"({int(np.sum(ps <= 0.05))}/{len(ps)}); p quartiles "
                + " ".join(f"{q:.2f}" for q in np.quantile(ps, [0.25, 0.5, 0.75]))
            )
        one = np.mean([r[method, "one module"] for r in rows])
        print(f"  {method:<8} automatic number is one module in {one:5.1%}")


def power(args) -> None:
    cases = [
        dataclasses.replace(c, seed=c.seed + 100 * s)
        for c in (*CASES, *EXTRA_CASES)
        for s in range(args.first_seed, args.first_seed + args.seeds)
    ]
    recovery(
        args, [lambda c=c: make_case(c) for c in cases],
        f"{len(cases)} networks with planted modules (K = 2..5, {args.seeds} seeds per case)",
    )  # fmt: skip
    if args.varied > 0:
        n, seeds = args.varied_samples, range(args.first_varied, args.first_varied + args.varied)
        recovery(
            args, [lambda s=s: varied_case(s, n_samples=n) for s in seeds],
            f"{args.varied} networks of varied architectures (varied_case seeds {seeds.start}.."
            f"{seeds.stop - 1}, K = 2..6, {n} samples; none of them chosen for the above)",
        )  # fmt: skip


def recovery(args, builders, title: str) -> None:
    """Power and recovery on the planted networks ``builders`` make, printed under ``title``."""
    if not builders:
        return
    rows = {m: [] for m in METHODS}
    for build in builders:
        p = build()
        c = p.case
        # the planted leaks are sized against an absolute eps^1/2 (modgraph.toys.planted.EPS)
        a = mg.analyze(p.model, p.inputs, eps=EPS, eps_units="absolute", progress=False)
        g = a.graph
        truth = true_modules(p.model, a, p.inputs, p.output_groups)
        nodes = [n for n, ok in zip(g.nodes, g.connected_nodes) if ok]
        tr = [truth[n] for n in nodes]
        module_of = np.array([truth.get(n, -1) for n in g.nodes])
        e = g.edges
        cross = module_of[e.src] != module_of[e.dst]
        # how much of the graph's cost is on edges between planted modules: sampling noise in
        # the basis, which no partition can undo
        share = float(e.strength[cross].sum() / max(e.strength.sum(), 1e-300))
        for method in METHODS:
            auto = mg.find_modules(g, method=method, seed=0, n_null=args.n_null)
            at_k = mg.find_modules(g, method=method, n_modules=c.K, seed=0)
            p_k = mg.module_significance(g, at_k, n_null=args.n_null, seed=0).p_value
            ari = mg.partition.adjusted_rand_index(tr, [auto.membership[n] for n in nodes])
            ari_k = mg.partition.adjusted_rand_index(tr, [at_k.membership[n] for n in nodes])
            p_auto = auto.significance.p_value
            rows[method].append((c.K, auto.n_modules, ari, ari_k, p_auto, p_k, share))
            if args.verbose:
                print(
                    f"  {method:<8} {c.name:<15} seed {c.seed:<4} K={c.K} auto k="
                    f"{auto.n_modules} ARI {ari:.3f} (at K {ari_k:.3f}) p auto {p_auto:.2g}, "
                    f"at K {p_k:.2g}; cost between planted modules {share:.1%}"
                )
    print(f"\nPower and recovery: {title}")
    for method in METHODS:
        a = np.nan_to_num(np.array(rows[method], dtype=float), nan=1.0)
        K, k, ari, ari_k, p_auto, p_k, share = a.T
        hit = (k == K) & (ari >= 0.95)
        print(
            f"  {method:<8} p<=0.05 at K {np.mean(p_k <= 0.05):5.1%}, automatic "
            f"{np.mean(p_auto <= 0.05):5.1%}; automatic k == K in {np.mean(k == K):5.1%}, "
            f"with ARI >= 0.95 in {np.mean(hit):5.1%}; "
            f"ARI >= 0.95 at K in {np.mean(ari_k >= 0.95):5.1%} (the graph's ceiling); "
            f"median ARI automatic {np.median(ari):.3f}; automatic k below K in "
            f"{np.mean(k < K):5.1%}, above in {np.mean(k > K):5.1%}"
        )
        print(
            f"  {'':<8} share of the graph's cost between planted modules: median "
            f"{np.median(share):.1%} (max {share.max():.1%}), in its misses "
            + (f"{np.median(share[~hit]):.1%}" if (~hit).any() else "-")
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", type=int, default=10, help="networks per architecture and training")
    p.add_argument("--seeds", type=int, default=3, help="seeds per planted case")
    p.add_argument(
        "--first-seed", type=int, default=0,
        help="first seed per planted case (3: the next 3 seeds, held out from the defaults)",
    )  # fmt: skip
    p.add_argument(
        "--varied", type=int, default=24, help="networks of varied architectures (0: none)"
    )
    p.add_argument(
        "--first-varied", type=int, default=0,
        help="first varied network's seed (24: the next 24, held out from the defaults)",
    )  # fmt: skip
    p.add_argument("--varied-samples", type=int, default=1000, help="samples per varied network")
    p.add_argument("--n-null", type=int, default=20, help="null graphs per test")
    p.add_argument("--verbose", action="store_true", help="one line per planted network")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    warnings.simplefilter("ignore")  # the rotation's too-few-samples warnings on small data
    t0 = time.perf_counter()
    if args.nets > 0:
        calibration(args)
    power(args)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

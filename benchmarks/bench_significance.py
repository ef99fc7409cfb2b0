"""Benchmark: is the module significance test calibrated, and does it have power?

Calibration: networks without modules (random dense ReLU MLPs of two architectures, He init,
untrained and trained briefly on a dense tanh target), analysed with the defaults; each is
partitioned at every requested number of modules and at the automatic one, and tested with
``module_significance``. A calibrated test gives p <= 0.05 in about 5% of them.

Power: the hidden-modules benchmark cases (``modgraph.toys.planted.CASES``, K = 3..5 planted
modules hidden by permutation, mixing and rotation, with and without leaks), on their own seed
and on ``--seeds`` more, tested at the planted K and at the automatic number.

Prints, per method and number of modules, the fraction with p <= 0.05 and the spread of p.
Run: ``python benchmarks/bench_significance.py [--nets 10] [--n-null 19] [--seeds 1]``
(about 100 s on 2 cores with the defaults).
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
from modgraph.toys.planted import CASES, make_case

ARCHITECTURES = ((8, 24, 24, 6), (12, 32, 16, 4))
KS = (2, 3, 4)


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


def p_values(graph, ks, *, n_null: int) -> dict:
    """p of the Leiden and spectral partitions at each k (None: automatic), keyed (method, k)."""
    out = {}
    for method in ("leiden", "spectral"):
        for k in ks:
            try:
                r = mg.find_modules(graph, method=method, n_modules=k, seed=0)
            except mg.InputError:  # fewer connected nodes than k
                continue
            out[method, k] = mg.module_significance(graph, r, n_null=n_null, seed=0).p_value
    return out


def summarize(title: str, rows: list[dict]) -> None:
    print(f"\n{title} ({len(rows)} networks)")
    keys = sorted({k for r in rows for k in r}, key=lambda mk: (mk[0], mk[1] or 0))
    for method, k in keys:
        ps = np.array([r[method, k] for r in rows if (method, k) in r])
        label = "auto" if k is None else f"k={k}"
        print(
            f"  {method:<8} {label:<5} p<=0.05 in {np.mean(ps <= 0.05):5.1%} "
            f"({int(np.sum(ps <= 0.05))}/{len(ps)}); p quartiles "
            + " ".join(f"{q:.2f}" for q in np.quantile(ps, [0.25, 0.5, 0.75]))
        )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", type=int, default=10, help="networks per architecture and training")
    p.add_argument("--n-null", type=int, default=19, help="null graphs per test")
    p.add_argument("--seeds", type=int, default=1, help="extra seeds per planted case")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    warnings.simplefilter("ignore")  # the rotation's too-few-samples warnings on small data
    t0 = time.perf_counter()
    null_rows = []
    for widths in ARCHITECTURES:
        for trained in (False, True):
            for s in range(args.nets):
                net, x = random_net(widths, s, trained=trained)
                a = mg.analyze(net, x, progress=False)
                null_rows.append(p_values(a.graph, (*KS, None), n_null=args.n_null))
    summarize("Calibration: networks without modules", null_rows)
    planted_rows = []
    for case in CASES:
        for extra in range(args.seeds + 1):
            c = dataclasses.replace(case, seed=case.seed + 100 * extra)
            planted = make_case(c)
            a = mg.analyze(planted.model, planted.inputs, progress=False)
            planted_rows.append(p_values(a.graph, (c.K, None), n_null=args.n_null))
    # the planted K differs between cases: report it as "k=K"
    rows = [
        {(m, "K" if k is not None else None): v for (m, k), v in r.items()} for r in planted_rows
    ]
    print(f"\nPower: planted modules ({len(rows)} networks)")
    for method in ("leiden", "spectral"):
        for k, label in (("K", "k=K"), (None, "auto")):
            ps = np.array([r[method, k] for r in rows if (method, k) in r])
            print(f"  {method:<8} {label:<5} p<=0.05 in {np.mean(ps <= 0.05):5.1%} ({len(ps)})")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

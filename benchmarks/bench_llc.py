"""Run time of the LLC estimate (SGLD on the behavioral loss) for an MLP with ~1e5 parameters.

Prints seconds, SGLD steps per second, and, as a baseline measured in the same run, the time of
one forward + backward pass of the same model on one minibatch; the ratio says what one SGLD step
costs beyond the gradient it needs. Usage: ``python benchmarks/bench_llc.py [--steps N]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from modgraph.diagnostics import effective_parameter_count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(100, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU(), nn.Linear(300, 10)
    ).eval()
    n_params = sum(p.numel() for p in model.parameters())
    x = torch.randn(4096, 100)

    # Baseline: one forward + backward of the same model on one minibatch (median of 30).
    xb = x[: args.batch]
    times = []
    for _ in range(35):
        t0 = time.perf_counter()
        model.zero_grad()
        model(xb).pow(2).sum().backward()
        times.append(time.perf_counter() - t0)
    base = sorted(times[5:])[len(times[5:]) // 2]

    t0 = time.perf_counter()
    res = effective_parameter_count(
        model, x, eps=1e-3, method="llc", n_chains=args.chains, n_steps=args.steps,
        minibatch_size=args.batch, seed=0,
    )  # fmt: skip
    total = time.perf_counter() - t0
    steps = args.chains * args.steps
    per_step = total / steps
    print(f"model: 100-300-300-10 MLP, {n_params} parameters, float32, {args.threads} thread(s)")
    print(f"llc: {args.chains} chains x {args.steps} steps, minibatch {args.batch}")
    print(
        f"  total {total:.2f} s (includes step-size power iteration), {steps / total:.1f} steps/s"
    )
    print(f"  per step {per_step * 1e3:.2f} ms")
    print(f"baseline forward+backward on {args.batch} samples: {base * 1e3:.2f} ms")
    print(f"ratio (SGLD step / forward+backward): {per_step / base:.2f}")
    print(
        f"result: N_eff = {res.value:.1f} (ok={res.ok}, R-hat={res.llc.rhat:.2f}, "
        f"step={res.llc.step_size:.3g})"
    )


if __name__ == "__main__":
    main()

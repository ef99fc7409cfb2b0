"""Benchmark: ``analyze`` on an MLP 784-512-512-10 with 10,000 synthetic samples (CPU).

Prints samples/s for the statistics pass and the edge pass, the time of the basis fit, peak
resident memory, and the achieved FLOP rate of each pass as a ratio to a dense matmul measured in
the same run (these machines are noisy: compare ratios, not seconds).

Run: ``python benchmarks/bench_analyze.py [--samples 10000] [--variant global] [--rotation none]``
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from torch import nn

import modgraph as mg


def matmul_flops(dtype: torch.dtype, n: int = 1024, repeat: int = 20) -> float:
    """FLOP/s of a dense (4n x n) @ (n x n) matmul: the machine's attainable rate."""
    a = torch.randn(4 * n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b  # warm up
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return repeat * 2 * 4 * n * n * n / (time.perf_counter() - t0)


def count_flops(widths: list[int], kept: list[int], n: int) -> dict[str, float]:
    """Leading-order FLOPs of the global-variant passes (matmuls only)."""
    fwd = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    d_out = widths[-1]
    stats = n * (
        fwd  # forward
        + d_out * fwd  # one vjp per output direction
        + sum(2 * d_out * d * d for d in widths)  # M += J^T J
        + sum(2 * d * d for d in widths)
    )  # centered Gram
    edges = (
        n
        * (
            fwd
            + sum(
                k1 * (2 * a * b + 2 * a * k0)  # vjp per next-layer direction, @ C^+
                for a, b, k0, k1 in zip(widths[:-1], widths[1:], kept[:-1], kept[1:])
            )
        )
    )
    return {"statistics": stats, "edges": edges}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--variant", default="global", choices=["global", "local"])
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--rotation", default="sparse", choices=["sparse", "none"])
    args = p.parse_args()
    torch.manual_seed(0)
    widths = [784, 512, 512, 10]
    net = nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    ).eval()
    x = torch.randn(args.samples, 784)

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    a = mg.analyze(
        net,
        x,
        batch_size=args.batch_size,
        variant=args.variant,
        rotation=args.rotation,
        progress=False,
    )
    total = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ref32, ref64 = matmul_flops(torch.float32), matmul_flops(torch.float64)

    kept = [layer.k for layer in a.layers]
    flops = count_flops(widths, kept, args.samples)
    print(
        f"MLP {'-'.join(map(str, widths))}, {args.samples} samples, variant={args.variant}, "
        f"rotation={args.rotation}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"kept directions per layer: {kept}")
    print(
        f"dense matmul reference: float32 {ref32 / 1e9:.1f} GFLOP/s, "
        f"float64 {ref64 / 1e9:.1f} GFLOP/s"
    )
    for stage in ("statistics", "basis", "edges"):
        sec = a.timings[stage]
        line = f"{stage:<11} {sec:7.2f} s"
        if stage in flops:
            rate = flops[stage] / sec
            line += (
                f"  {args.samples / sec:9.0f} samples/s  {rate / 1e9:6.1f} GFLOP/s  "
                f"= {rate / ref32:.2f}x float32 matmul, {rate / ref64:.2f}x float64 matmul"
            )
        print(line)
    if "rotation" in a.timings:  # reads a fixed number of samples: compare with the edge pass
        sec = a.timings["rotation"]
        print(
            f"rotation    {sec:7.2f} s  = {sec / total:.1%} of analyze, "
            f"{sec / a.timings['edges']:.2f}x the edge pass"
        )
    print(f"total {total:.2f} s; peak RSS {peak_mib:.0f} MiB (before: {rss0 / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()

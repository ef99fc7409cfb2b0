"""Benchmark: ``analyze`` on a 1-layer modular-addition transformer (CPU).

Times the statistics + basis and the edge pass on all p^2 inputs (p = 64: 4096 inputs of 3
tokens), counts the FLOPs of the matmuls actually executed (torch.profiler with_flops)
and reports the FLOP rate
as a ratio to a dense matmul measured in the same run; then the scaling of the time with the
number of samples (exponent, expected 1) and with the width d_model (exponent), and the peak
memory for a small and a large dataset, each measured in a fresh process (it should not grow
with the dataset: the statistics stream).

The model is randomly initialised: training does not change the work done.
Run: ``python benchmarks/bench_transformer.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

import modgraph as mg
from modgraph.adapters import transformer_chain
from modgraph.toys import TinyTransformer, modular_addition_data


def matmul_rate(dtype=torch.float32, n=1024, repeat=20) -> float:
    a, b = torch.randn(4 * n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return repeat * 8 * n**3 / (time.perf_counter() - t0)


def setup(p: int, d_model: int, n: int | None = None):
    torch.manual_seed(0)
    model = TinyTransformer(p + 1, 3, d_model=d_model, n_heads=4, d_mlp=4 * d_model).eval()
    tokens, _ = modular_addition_data(p)
    if n is not None:
        tokens = tokens[torch.randint(0, len(tokens), (n,))]
    return transformer_chain(model), tokens


def run(p: int, d_model: int, n: int | None = None, count_flops: bool = False):
    chain, tokens = setup(p, d_model, n)
    if not count_flops:
        t0 = time.perf_counter()
        a = mg.analyze(chain, tokens, batch_size=512, progress=False)
        return a, time.perf_counter() - t0, None
    # the profiler counts the FLOPs of the matmul-like ops torch actually ran (vmapped included);
    # torch.utils.flop_counter's module tracker does not work under torch.func transforms
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        t0 = time.perf_counter()
        a = mg.analyze(chain, tokens, batch_size=512, progress=False)
        total = time.perf_counter() - t0
    flops = sum(e.flops for e in prof.events() if e.flops)
    return a, total, flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sweeps")
    ap.add_argument("--memory-probe", nargs=2, type=int, metavar=("N", "D"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_probe:  # child process: one run, report peak RSS
        n, d = args.memory_probe
        run(64, d, n)
        # VmHWM, not ru_maxrss: Linux carries a parent's ru_maxrss across fork and exec
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        print(json.dumps({"peak_mib": int(status.split()[0]) / 1024}))
        return

    ref = matmul_rate()
    a, total, _ = run(64, 128)
    t = a.timings
    print(
        f"1-layer transformer, p=64 (4096 inputs x 3 positions), d_model=128, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"kept directions: {[layer.k for layer in a.layers]}")
    print(
        f"statistics {t['statistics']:.2f} s, basis {t['basis']:.3f} s, edges {t['edges']:.2f} s, "
        f"total {total:.2f} s"
    )
    # the profiler keeps every event and slows the run: count the FLOPs on a 512-input subset,
    # time the same subset without it (the rate does not depend on the number of inputs)
    flops = run(64, 128, 512, count_flops=True)[2]
    sub_total = min(run(64, 128, 512)[1] for _ in range(2))
    print(
        f"FLOP rate (512 inputs): {flops / 1e9:.1f} GFLOP in {sub_total:.2f} s = "
        f"{flops / sub_total / 1e9:.1f} GFLOP/s = {flops / sub_total / ref:.2f}x a dense float32 "
        f"matmul ({ref / 1e9:.0f} GFLOP/s)"
    )

    ns = [256, 512, 1024] if args.quick else [512, 1024, 2048, 4096]
    times = [run(64, 128, n)[1] for n in ns]
    slope_n = np.polyfit(np.log(ns), np.log(times), 1)[0]
    print(
        "samples  "
        + "  ".join(f"{n}: {s:.2f} s" for n, s in zip(ns, times))
        + f"  -> time ~ n^{slope_n:.2f}"
    )
    ds = [32, 64, 128] if args.quick else [32, 64, 128, 256]
    times = [run(64, d, 1024)[1] for d in ds]
    slope_d = np.polyfit(np.log(ds), np.log(times), 1)[0]
    print(
        "d_model  "
        + "  ".join(f"{d}: {s:.2f} s" for d, s in zip(ds, times))
        + f"  -> time ~ d^{slope_d:.2f}"
    )

    peaks = {}
    for n in (512, 8192):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-probe", str(n), "128"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        peaks[n] = json.loads(out.splitlines()[-1])["peak_mib"]
    print(
        f"peak RSS: {peaks[512]:.0f} MiB at 512 inputs, {peaks[8192]:.0f} MiB at 8192 inputs "
        f"(ratio {peaks[8192] / peaks[512]:.2f})"
    )


if __name__ == "__main__":
    main()

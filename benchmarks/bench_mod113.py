"""Benchmark: the reference implementation's (``rib``'s) modular-addition comparison, without rib.

The LIB paper's code was compared with modgraph on its mod-113 one-layer transformer (issue #17):
d_model 128, 4 heads, d_mlp 512, the last position after attention, 3830 samples (its 30%
training split), float64, local variant, no rotation. This script rebuilds that setting from
scratch: a :class:`modgraph.toys.TinyTransformer` of the same layout trained on the same split
(300 full-batch AdamW steps, about a minute on 2 cores; the weights differ from rib's grokked
checkpoint, the work per sample does not), cut as rib cuts it
(:func:`modgraph.toys.grokking.lib_chain`): the embeddings at all 3 positions, then the
residual stream of the last position only after attention, after the MLP, and the logits.
(``transformer_chain(positions="last")`` keeps every position up to the logits, 4-5x the work:
165 s against 39 s for the local variant.)

Every configuration (variant local / global x rotation none / sparse x truncation default
``rtol=1e-10`` / matched ``rtol=1e-18``, rib keeping every direction above rounding) runs in a
fresh process of its own, so that its peak resident memory (VmHWM) is its own. It prints, per
configuration: the directions kept, the seconds of each stage (statistics, basis, rotation,
edges) and of the whole ``analyze``, the peak memory, and the FLOPs each stage executed (counted
by torch.profiler on a 64-sample subset, attributed to the stage by its ``modgraph.<stage>``
label) as a rate and as a fraction of a dense float64 matmul measured in the same process, the
share of each stage's profiled time spent in matrix products (``aten::mm``/``bmm``/``addmm``),
and the *FLOP floor*: the seconds the passes over all samples (statistics, basis, edges) would
take if all their FLOPs ran at the matmul rate. Then the ratios the issue asks about: global /
local, rotation / analyze, and the peak memory at 10x the samples (383 against 3830).
``--samples`` analyses fewer (a quick look).

Run: ``python benchmarks/bench_mod113.py [--configs local-none-default,...] [--steps 300]
[--device cuda] [--samples 300]``. Measured (2 CPU cores, torch 2.13, two runs; the figures
leave out one configuration that had a test run beside it): local 31-40 s, global 28-36 s,
rotation 2-5% of ``analyze``, peak 830-963 MiB, 1.06-1.08x at 10x the samples; the passes at
0.34-0.68x a float64 matmul, 1.9-2.5x their FLOP floor (README, "Speed on a transformer").
``--device cuda`` has not been run (no GPU was available).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import modgraph as mg
from modgraph.toys import TinyTransformer, modular_addition_data
from modgraph.toys.grokking import lib_chain

P, D_MODEL, HEADS, D_MLP, N_SAMPLES = 113, 128, 4, 512, 3830
TRUNCATION = {"default": 1e-10, "matched": 1e-18}
#: Samples of the FLOP count: torch.profiler records every vmapped op, which slows a run many
#: times over, so the FLOPs (and the times they are divided by) come from a subset, one batch
#: large enough that every layer keeps its full rank (at 64 samples the residual stream of the
#: last position has rank <= 64 and the FLOPs per sample are those of a smaller problem).
FLOP_SAMPLES = 256
STAGES = ("statistics", "basis", "rotation", "edges")
MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")


def train(steps: int, path: Path) -> None:
    """The model and its 3830 training samples, saved to ``path`` (float64)."""
    tokens, answers = modular_addition_data(P)
    g = torch.Generator().manual_seed(0)
    split = torch.randperm(len(tokens), generator=g)[:N_SAMPLES]
    torch.manual_seed(0)
    model = TinyTransformer(P + 1, 3, d_model=D_MODEL, n_heads=HEADS, d_mlp=D_MLP)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1.0)
    x, y = tokens[split], answers[split]
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x)[:, -1], y).backward()
        opt.step()
    model = model.double().eval()
    with torch.no_grad():
        acc = float((model(tokens)[:, -1].argmax(-1) == answers).float().mean())
    torch.save({"model": model, "tokens": x, "accuracy": acc}, path)


def matmul_rate(dtype: torch.dtype, device: str, n: int = 1024, repeat: int = 10) -> float:
    """FLOP/s of a dense (4n x n) @ (n x n) matmul of ``dtype``."""
    a = torch.randn(4 * n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    sync(device)
    return repeat * 8 * n**3 / (time.perf_counter() - t0)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def stage_profile(prof) -> tuple[dict[str, float], dict[str, float]]:
    """FLOPs of the ops under each ``modgraph.<stage>`` label, and the share of the stage's
    self CPU time spent in matrix products."""
    flops = dict.fromkeys(STAGES, 0.0)
    busy, matmul = dict.fromkeys(STAGES, 0.0), dict.fromkeys(STAGES, 0.0)
    for e in prof.events():
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith("modgraph."):
            parent = parent.cpu_parent
        if parent is None:
            continue
        stage = parent.name.removeprefix("modgraph.")
        flops[stage] += e.flops or 0
        busy[stage] += e.self_cpu_time_total
        if e.name in MATMULS:
            matmul[stage] += e.self_cpu_time_total
    return flops, {s: matmul[s] / busy[s] for s in STAGES if busy[s] > 0}


def child(config: dict, path: str) -> None:
    """One configuration: timings, kept directions, peak memory, FLOPs per stage (JSON)."""
    torch.set_num_threads(config["threads"])
    saved = torch.load(path, weights_only=False)
    chain = lib_chain(saved["model"])
    tokens = saved["tokens"][: config["samples"]]
    opts = dict(variant=config["variant"], rotation=config["rotation"],
                rtol=TRUNCATION[config["truncation"]], progress=False,
                device=config["device"], batch_size=256)  # fmt: skip
    t0 = time.perf_counter()
    a = mg.analyze(chain, tokens, **opts)
    total = time.perf_counter() - t0
    result = {"total": total, "timings": a.timings, "kept": [layer.k for layer in a.layers],
              "samples": len(tokens)}  # fmt: skip
    # VmHWM, not ru_maxrss: Linux carries a parent's ru_maxrss across fork and exec. Read before
    # the FLOP count, whose profiler holds every event it records.
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
    result["peak_mib"] = int(status.split()[0]) / 1024
    if config["flops"]:
        sub = tokens[: config["flop_samples"]]
        timed = mg.analyze(chain, sub, **opts).timings
        result["sub_timings"], result["flop_samples"] = timed, len(sub)
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            mg.analyze(chain, sub, **opts)
        result["sub_flops"], result["matmul_share"] = stage_profile(prof)
        result["matmul_rate"] = matmul_rate(torch.float64, config["device"])
    print(json.dumps(result))


def run_child(config: dict, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config), str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out.splitlines()[-1])


def describe(name: str, r: dict) -> str:
    t = r["timings"]
    parts = [f"{s} {t[s]:.1f} s" for s in STAGES if s in t]
    line = (f"{name:<24} kept {r['kept']}  analyze {r['total']:.1f} s ({', '.join(parts)}), "
            f"peak {r['peak_mib']:.0f} MiB")  # fmt: skip
    if "sub_flops" in r:
        rates = []
        for s in STAGES:
            if r["sub_timings"].get(s, 0) > 0.01:
                rate = r["sub_flops"][s] / r["sub_timings"][s]
                rates.append(f"{s} {rate / 1e9:.1f} GFLOP/s = {rate / r['matmul_rate']:.2f}x "
                             f"(matmul {r['matmul_share'].get(s, 0):.0%} of its time)")  # fmt: skip
        line += f"\n{'':<24} on {r['flop_samples']} samples: {'; '.join(rates)}; float64 matmul " \
            f"{r['matmul_rate'] / 1e9:.1f} GFLOP/s"  # fmt: skip
        # the passes over all samples (the rotation reads a fixed number of them)
        passes = [s for s in ("statistics", "basis", "edges") if s in t]
        flops = sum(r["sub_flops"][s] for s in passes) * r["samples"] / r["flop_samples"]
        floor, spent = flops / r["matmul_rate"], sum(t[s] for s in passes)
        line += f"\n{'':<24} FLOP floor of {' + '.join(passes)}: {floor:.1f} s at the matmul " \
            f"rate; they take {spent:.1f} s = {spent / floor:.1f}x"  # fmt: skip
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ["-".join(c) for c in itertools.product(("local", "global"), ("none", "sparse"),
                                                    TRUNCATION)]  # fmt: skip
    ap.add_argument("--configs", default=",".join(names),
                    help="comma-separated VARIANT-ROTATION-TRUNCATION")  # fmt: skip
    ap.add_argument("--steps", type=int, default=300, help="training steps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-flops", action="store_true", help="skip the FLOP counts")
    ap.add_argument("--samples", type=int, default=N_SAMPLES, help="samples analysed")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child[0]), args.child[1])
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mod113.pt"
        t0 = time.perf_counter()
        train(args.steps, path)
        acc = torch.load(path, weights_only=False)["accuracy"]
        print(f"mod-{P} transformer (d_model {D_MODEL}, {HEADS} heads, d_mlp {D_MLP}), trained "
              f"{args.steps} steps on {N_SAMPLES} samples in {time.perf_counter() - t0:.0f} s, "
              f"accuracy on all {P * P} pairs {acc:.3f}; torch {torch.__version__}, "
              f"{args.threads} threads, {args.device}")  # fmt: skip
        results = {}
        for name in args.configs.split(","):
            variant, rotation, truncation = name.split("-")
            config = dict(variant=variant, rotation=rotation, truncation=truncation,
                          samples=args.samples, device=args.device, threads=args.threads,
                          flops=not args.no_flops, flop_samples=FLOP_SAMPLES)  # fmt: skip
            results[name] = run_child(config, path)
            print(describe(name, results[name]), flush=True)
        for trunc in TRUNCATION:
            for rot in ("none", "sparse"):
                lo, gl = results.get(f"local-{rot}-{trunc}"), results.get(f"global-{rot}-{trunc}")
                if lo and gl:
                    print(f"global / local ({rot}, {trunc}): {gl['total'] / lo['total']:.2f}x")
            for var in ("local", "global"):
                r = results.get(f"{var}-sparse-{trunc}")
                if r:
                    print(f"rotation / analyze ({var}, {trunc}): "
                          f"{r['timings']['rotation'] / r['total']:.0%}")  # fmt: skip
        base = "local-none-matched" if "local-none-matched" in results else next(iter(results))
        variant, rotation, truncation = base.split("-")
        small = run_child(dict(variant=variant, rotation=rotation, truncation=truncation,
                               samples=args.samples // 10, device=args.device,
                               threads=args.threads, flops=False), path)  # fmt: skip
        print(f"peak memory {base}: {small['peak_mib']:.0f} MiB at {args.samples // 10} samples, "
              f"{results[base]['peak_mib']:.0f} MiB at {args.samples} "
              f"(ratio {results[base]['peak_mib'] / small['peak_mib']:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()

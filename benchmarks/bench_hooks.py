"""Benchmark: the hook path (any nn.Module, :class:`modgraph.HookedChain`) against the stage path
(``nn.Sequential``), and a 2-layer GPT-2 analysed through the Hugging Face adapter (CPU).

1. ``bench_analyze.py``'s MLP 784-512-512-10 on synthetic inputs, analysed through both paths in
   alternating runs in one process: time per stage and the ratio hook / stage (target <= 1.2),
   and the largest relative difference of the results (they agree to rounding).
2. ``GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=128, n_head=4))`` with random weights,
   ``vocab_size`` 512, 512 sequences of 64 tokens, ``output_probes=64``: time per stage and peak
   resident memory, in a subprocess of its own so that the peak is its own.

Run: ``python benchmarks/bench_hooks.py [--samples 10000] [--repeats 2] [--skip-gpt2]
[--sequences 512]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch import nn

import modgraph as mg


def mlp_part(samples: int, repeats: int) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    ).eval()
    x = torch.randn(samples, 784)
    paths = {"stage": net, "hook": mg.HookedChain(net, ["input", "1", "3"])}
    runs: dict[str, list] = {k: [] for k in paths}
    results = {}
    for _ in range(repeats):  # alternate, so that both see the same machine load
        for name, model in paths.items():
            t0 = time.perf_counter()
            a = mg.analyze(model, x, batch_size=500, progress=False)
            runs[name].append({"total": time.perf_counter() - t0, **a.timings})
            results[name] = a
    best = {k: {s: min(r[s] for r in v) for s in v[0]} for k, v in runs.items()}
    print(f"MLP 784-512-512-10, {samples} samples, float32, best of {repeats} alternating runs")
    print(f"{'stage':>12} {'stage path s':>13} {'hook path s':>12} {'hook/stage':>11}")
    for s in best["stage"]:
        a, b = best["stage"][s], best["hook"][s]
        print(f"{s:>12} {a:13.2f} {b:12.2f} {b / a:11.3f}")
    diff = max(
        float((p - q).abs().max() / p.abs().max())
        for p, q in zip(results["stage"].w, results["hook"].w)
    )
    print(f"largest relative difference of the edges between the paths: {diff:.1e}")


def gpt2_part(sequences: int) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=128, n_head=4, n_positions=64, vocab_size=512)
    cfg._attn_implementation = "eager"  # sdpa's backward has no batching rule in torch.func
    model = GPT2LMHeadModel(cfg).eval()
    tokens = torch.randint(0, 512, (sequences, 64))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    a = mg.analyze(mg.transformer_chain(model), tokens, output_probes=64, progress=False)
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {
        "total": total,
        "timings": a.timings,
        "peak_rss_gib": peak / 2**20,
        "rss_before_gib": rss0 / 2**20,
        "kept": [layer.k for layer in a.layers],
        "names": a.layer_names,
        "edges": a.graph.n_edges,
    }
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--skip-gpt2", action="store_true")
    p.add_argument("--sequences", type=int, default=512, help="GPT-2 sequences (default 512)")
    p.add_argument("--part", choices=["gpt2"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.part == "gpt2":
        gpt2_part(args.sequences)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    mlp_part(args.samples, args.repeats)
    if args.skip_gpt2:
        return
    run = subprocess.run(
        [sys.executable, __file__, "--part", "gpt2", "--sequences", str(args.sequences)],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(run.stdout.strip().splitlines()[-1])
    print(
        f"\nGPT-2 (HF, 2 layers, d_model 128, vocab 512), {args.sequences} sequences x 64 tokens, "
        "output_probes=64, float32"
    )
    print(f"layers {r['names']}, kept {r['kept']}, {r['edges']} edges")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in r["timings"].items())
    print(f"total {r['total']:.1f} s ({stages}); peak RSS {r['peak_rss_gib']:.2f} GiB "
          f"(after imports {r['rss_before_gib']:.2f} GiB)")  # fmt: skip


if __name__ == "__main__":
    main()

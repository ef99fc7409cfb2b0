"""Benchmark: position sources (``analyze(position_sources=S)``) on a trained small transformer.

A 2-layer :class:`~modgraph.toys.TinyTransformer` (d_model 64, 4 heads, vocabulary 32) is trained
for ``--train-seconds`` on generated text (a second-order Markov chain over the vocabulary, so
every position depends on the two before it), then analysed at every position
(``transformer_chain(positions="all")``, no rotation) on ``--sequences`` sequences of each length
in ``--lengths``, exactly and with ``S`` position sources for each ``S`` in ``--sources``.
Printed per length and ``S``: seconds per sequence of ``analyze`` and of its edge stage against
exact in the same process, and how close the graph is to the exact one: the relative error of
the edges above ``eps^1/2`` (median, 90th percentile) and the share of entries on the same side
of ``eps^1/2``. The sources also estimate ``M`` (no ``output_probes``), so the basis itself is an
estimate; the error falls as the data grows.

``--grokked``: the same comparison on the grokked modular-addition transformers of
``bench_real.py`` (primes 47, 53, 59 x seeds 0, 1, 2, trained there or read from its cache; the
three positions "a b =", every training sequence), a network trained on a real task.

Run: ``python benchmarks/bench_positions.py [--train-seconds 90] [--lengths 32,64]
[--sequences 8] [--sources 1,4] [--threads 1] [--grokked]``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import modgraph as mg
from modgraph.toys import TinyTransformer

VOCAB, D_MODEL = 32, 64


def markov_text(n: int, length: int, g: torch.Generator) -> torch.Tensor:
    """``n`` sequences of a random second-order Markov chain over ``VOCAB`` tokens."""
    P = torch.softmax(3 * torch.randn(VOCAB, VOCAB, VOCAB, generator=g), -1)
    x = torch.zeros(n, length, dtype=torch.long)
    x[:, :2] = torch.randint(0, VOCAB, (n, 2), generator=g)
    for t in range(2, length):
        x[:, t] = torch.multinomial(P[x[:, t - 2], x[:, t - 1]], 1, generator=g).squeeze(1)
    return x


def trained(seconds: float, length: int):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = TinyTransformer(VOCAB, length, d_model=D_MODEL, n_heads=4, d_mlp=4 * D_MODEL,
                            n_layers=2)  # fmt: skip
    data = markov_text(2000, length, g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    t0, steps = time.time(), 0
    while time.time() - t0 < seconds:
        xb = data[torch.randint(0, len(data), (32,))]
        logits = model(xb)[:, :-1].reshape(-1, VOCAB)
        loss = torch.nn.functional.cross_entropy(logits, xb[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    print(f"trained {steps} steps in {seconds:g} s: loss {loss.item():.3f} (uniform "
          f"{np.log(VOCAB):.3f})")  # fmt: skip
    return model.double().eval(), data


def compare(chain, x, sources, label: str) -> None:
    """Print time and closeness of ``analyze(position_sources=S)`` against exact, per ``S``."""
    options = {"rotation": "none", "progress": False, "n_examples": 0}
    mg.analyze(chain, x[:1], **options)  # warm-up
    t0 = time.perf_counter()
    exact = mg.analyze(chain, x, **options)
    t_exact = time.perf_counter() - t0
    thr = exact.graph.threshold
    for S in sources:
        t0 = time.perf_counter()
        est = mg.analyze(chain, x, position_sources=S, **options)
        t_est = time.perf_counter() - t0
        pairs = list(zip(exact.graph.w, est.graph.w, strict=True))
        err = np.concatenate([np.abs(b[a > thr] - a[a > thr]) / a[a > thr] for a, b in pairs])
        same = np.mean(np.concatenate([((b > thr) == (a > thr)).ravel() for a, b in pairs]))
        e_exact, e_est = exact.timings["edges"], est.timings["edges"]
        print(f"{label} S={S}: analyze {t_est / len(x):.3g} s per sequence against exact "
              f"{t_exact / len(x):.3g} ({t_exact / t_est:.1f}x); edges {e_est:.2f} s against "
              f"{e_exact:.2f} s ({e_exact / e_est:.1f}x); edges above eps^1/2 off by "
              f"{np.median(err):.2%} (median), {np.quantile(err, 0.9):.2%} (90th "
              f"percentile); {same:.2%} of entries on the same side of eps^1/2")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    ap.add_argument("--train-seconds", type=float, default=90.0)
    ap.add_argument("--lengths", type=ints, default=[32, 64])
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--sources", type=ints, default=[1, 4])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grokked", action="store_true", help="the grokked transformers instead")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    if args.grokked:
        from bench_real import grokked  # the same models and cache

        cache = Path.home() / ".cache" / "modgraph-bench"
        for p in (47, 53, 59):
            for seed in (0, 1, 2):
                g, _ = grokked(p, seed, cache)
                chain = mg.transformer_chain(g.model.double(), positions="all")
                compare(chain, g.train_tokens, args.sources, f"grokked p={p} seed={seed}")
        return
    model, data = trained(args.train_seconds, max(args.lengths))
    chain = mg.transformer_chain(model, positions="all")
    for length in args.lengths:
        compare(chain, data[: args.sequences, :length], args.sources, f"T={length}")


if __name__ == "__main__":
    main()

"""Benchmark: building and partitioning a dense 10-layer x 512-direction interaction graph.

Every adjacent-layer pair is fully connected (9 * 512^2 = 2.36M edges). Strengths carry 8 planted
modules (within-module edges stronger) so that both methods have a real answer to find; the
adjusted Rand index against the planted modules is printed as a sanity check.

Prints wall time of each stage and the process's peak resident memory after it, the numpy heap
peak of building the edge arrays and adjacency (tracemalloc, in a separate untimed pass), plus two
baselines
measured in the same run, each stage given as a ratio to them (these machines are noisy: compare
ratios, not seconds):

* ``sort``: ``np.sort`` of the 2.36M edge weights;
* ``matvec``: one symmetric sparse matrix-vector product with the strength adjacency.

The automatic number of modules (``find_modules`` without ``n_modules``: partition, ``--n-null``
null graphs and the scan over k) is also given as a ratio to one bare leidenalg run (modularity,
igraph built outside the timing) measured in the same run; the leidenalg runs made inside
``find_modules(method="leiden")`` are counted and timed (what its null graphs cost).

Run: ``python benchmarks/bench_partition.py [--layers 10] [--width 512] [--modules 8]``
(``--width 128`` for a graph of 147k edges on which the automatic number finishes in minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time
import tracemalloc

import numpy as np

from modgraph.graph import InteractionGraph
from modgraph.partition import adjusted_rand_index, cross_module_cost, find_modules


def planted_w(n_layers: int, width: int, n_modules: int, seed: int = 0):
    """Dense ``w``, every entry above eps^1/2 = 1: strength ~2 inside modules, ~0.05 across.

    Cross-module strengths must be far weaker than within-module ones: with all layer pairs
    fully connected, cutting the chain between layers cuts only a fraction of the edges, so
    weakly planted modules lose (on the paper's cost) to modules that are slices of depth.
    """
    rng = np.random.default_rng(seed)
    blocks = [rng.permutation(np.arange(width) % n_modules) for _ in range(n_layers)]
    w = []
    for l in range(n_layers - 1):
        same = blocks[l + 1][:, None] == blocks[l][None, :]
        w.append(np.exp(np.where(same, 2.0, 0.05) * rng.uniform(0.5, 1.5, same.shape)))
    return w, np.concatenate(blocks)


def bare_leiden(g):
    """One leidenalg run (modularity) on the strength-weighted graph, igraph built outside."""
    import leidenalg

    ig = g.to_igraph(directed=False)
    t0 = time.perf_counter()
    leidenalg.find_partition(ig, leidenalg.ModularityVertexPartition, weights="strength", seed=0)
    return time.perf_counter() - t0


@contextlib.contextmanager
def counted_leiden():
    """Count and time the leidenalg runs made inside the block: [(seconds, modules found)]."""
    import leidenalg

    runs, find = [], leidenalg.find_partition

    def wrapped(*args, **kwargs):
        t0 = time.perf_counter()
        part = find(*args, **kwargs)
        runs.append((time.perf_counter() - t0, len(part)))
        return part

    leidenalg.find_partition = wrapped
    try:
        yield runs
    finally:
        leidenalg.find_partition = find


def rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def timed(label: str, fn, results: dict):
    """Run ``fn`` untraced (tracemalloc slows the creation of Python objects many times over)."""
    t0 = time.perf_counter()
    out = fn()
    results[label] = (time.perf_counter() - t0, rss_mb())
    return out


def heap_peak_mb(fn) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--layers", type=int, default=10)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--modules", type=int, default=8)
    p.add_argument("--n-null", type=int, default=20, help="null graphs of the automatic k")
    args = p.parse_args()

    w, truth = planted_w(args.layers, args.width, args.modules)
    names = tuple(f"layer{l}" for l in range(args.layers))
    importance = tuple(np.ones(args.width) for _ in range(args.layers))
    res: dict[str, tuple[float, float]] = {}
    rss0 = rss_mb()

    g = timed("InteractionGraph(...)", lambda: InteractionGraph(names, importance, w, eps=1.0), res)
    e = timed("graph.edges", lambda: g.edges, res)
    A = timed("graph.adjacency()", lambda: g.adjacency(), res)
    timed("graph.to_igraph()", lambda: g.to_igraph(), res)
    # automatic number of modules: partition + null graphs + the scan over k
    n_null = args.n_null
    with counted_leiden() as runs:
        leiden = timed(
            "find_modules(leiden)", lambda: find_modules(g, method="leiden", n_null=n_null), res
        )
    spectral = timed(
        "find_modules(spectral)", lambda: find_modules(g, method="spectral", n_null=n_null), res
    )
    spectral_k = timed(
        "  same, n_modules given",
        lambda: find_modules(g, method="spectral", n_modules=args.modules),
        res,
    )
    leiden_k = timed(
        "  leiden, n_modules given",
        lambda: find_modules(g, method="leiden", n_modules=args.modules),
        res,
    )
    bare = timed("bare leidenalg run", lambda: bare_leiden(g), res)

    x = np.ones(g.n_nodes)
    base = {"sort": best_of(lambda: np.sort(e.w)), "matvec": best_of(lambda: A @ x)}
    fresh = InteractionGraph(names, importance, w, eps=1.0)
    heap = heap_peak_mb(lambda: (fresh.edges, fresh.adjacency()))

    print(f"graph: {g.n_nodes} nodes, {g.n_edges:,} edges, {args.modules} planted modules")
    print(f"baselines: np.sort(w) {base['sort'] * 1e3:.1f} ms, A @ x {base['matvec'] * 1e3:.2f} ms")
    print(f"{'stage':<26}{'seconds':>9}{'x sort':>9}{'x matvec':>10}{'peak RSS MB':>13}")
    for label, (dt, rss) in res.items():
        print(
            f"{label:<26}{dt:>9.3f}{dt / base['sort']:>9.1f}{dt / base['matvec']:>10.0f}"
            f"{rss:>13.0f}"
        )
    print(f"resident memory before building the graph: {rss0:.0f} MB")
    print(f"numpy heap peak of edges + adjacency: {heap:.0f} MB")
    print(f"planted   n_modules={args.modules:<3} cost={cross_module_cost(g, truth):<12.1f}")
    for r in (leiden, spectral, spectral_k, leiden_k):
        ari = adjusted_rand_index(r.membership_array, truth)
        print(f"{r.method:<9} n_modules={r.n_modules:<3} cost={r.cost:<12.1f} ARI={ari:.3f}")
    sec = [t for t, _ in runs]
    print(
        f"leidenalg runs inside find_modules(leiden): {len(runs)}, {min(sec):.2f}-{max(sec):.2f} s "
        f"each, {sum(sec):.1f} s in all; modules found: {sorted({k for _, k in runs})}"
    )
    print(
        f"automatic k (partition + {n_null} null graphs + scan) / one bare leidenalg run "
        f"({bare:.2f} s): leiden {res['find_modules(leiden)'][0] / bare:.1f}x, spectral "
        f"{res['find_modules(spectral)'][0] / bare:.1f}x"
    )


if __name__ == "__main__":
    main()

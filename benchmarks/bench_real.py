"""Benchmark: modules on real networks with a known mechanism, and quiet on networks without one.

**Grokked modular addition** (:mod:`modgraph.toys.grokking`): one-layer transformers trained from
scratch on ``(a + b) mod p`` until they grok, for every prime of ``--primes`` and seed of
``--seeds``, analysed in the LIB paper's cut (:func:`~modgraph.toys.grokking.lib_chain`) on their
training split with the defaults a user gets (``analyze``: global variant, sparse rotation, ``eps``
1e-3 of the output variance; ``find_modules``: automatic number, Leiden, spectral and the map
equation, ``method="infomap"``), and again at
the eps :func:`modgraph.choose_eps` picks from the task (accuracy within 0.001 on the training
split), and in the PCA basis at the default eps. The known labels: the *key frequencies* are
those of the token embedding's Fourier power (:func:`key_frequencies`); every direction of the
graph whose power is at least ``SINGLE`` at one frequency is labelled by it (a harmonic ``2k`` of
a key frequency ``k``, which the ReLU makes, by ``k``); the rest are mixtures and are left out of
the scores but counted.
Printed per model: what the user reads (number of modules, p), NMI / ARI / purity of the modules
against the labels, the share of labelled nodes, and the seconds of each step; then the fractions
the issue asks for.

**Networks without modules** (``--random N`` of each kind): dense ReLU MLPs (He init; three
architectures) and transformers with a residual stream (:class:`~modgraph.toys.TinyTransformer`,
2 layers, read by :func:`modgraph.transformer_chain` at the last position), each untrained and
trained on a dense target (MLPs: ``tanh`` of a random projection; transformers: a random table
of the whole sequence), at the defaults and *sparse* (eps set so that 1.5 edges per connected
node are left). Printed: the fraction called modular (``p <= 0.05`` at the automatic number).

Trained models are kept in ``--cache`` (default ``~/.cache/modgraph-bench``) and reused.
**The LIB paper's sparsity count** (``--sparsity``): per layer pair of each grokked model, the
edges needed to keep training accuracy within 0.001 (:func:`modgraph.edges_needed`), local
variant, no rotation, edges into the raw logits, interaction basis against PCA.

Run: ``python benchmarks/bench_real.py [--primes 47,53,59] [--seeds 0,1,2] [--random 40]
[--skip-grokked] [--skip-random] [--sparsity] [--verbose]``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from bench_significance import ARCHITECTURES as MLP_WIDTHS
from bench_significance import random_net  # the same networks without modules
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torch import nn

import modgraph as mg
from modgraph.toys import TinyTransformer
from modgraph.toys.grokking import frequency_labels, lib_chain, train_grokked

#: A direction is single-frequency when at least this share of its power is at one frequency.
SINGLE = 0.8
#: A key frequency holds at least this share of the embedding's Fourier power.
KEY_SHARE = 0.07
#: infomap first: what find_modules gives by default (method="auto" at an automatic number)
METHODS = ("infomap", "leiden", "spectral")
#: infomap's verdict is Leiden's scan (the same test), so calibration runs the other two only
CALIBRATION_METHODS = ("leiden", "spectral")
#: Edges per connected node left in the sparse calibration.
SPARSE_EDGES_PER_NODE = 1.5


# ---------------------------------------------------------------------------- grokked
def grokked(p: int, seed: int, cache: Path):
    path = cache / f"grokked-p{p}-s{seed}.pt"
    if path.exists():
        return torch.load(path, weights_only=False), 0.0
    t0 = time.perf_counter()
    g = train_grokked(p, seed=seed)
    seconds = time.perf_counter() - t0
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(g, path)
    return g, seconds


def key_frequencies(g) -> set:
    """The frequencies the model computes with: those holding at least ``KEY_SHARE`` of the token
    embedding's Fourier power (over the ``p`` number tokens, summed over ``d_model``; Nanda et
    al. 2023 read them off the embedding). The logits' principal directions can mix frequencies,
    so they cannot name them."""
    emb = g.model.embed.weight.detach()[: g.p].double()
    power = torch.fft.rfft(emb - emb.mean(0), dim=0).abs().pow(2).sum(1)[1:].numpy()
    return {int(f) + 1 for f in np.flatnonzero(power >= KEY_SHARE * power.sum())}


def known_labels(analysis, g) -> tuple[np.ndarray, set]:
    """Per node: its key frequency (harmonics folded onto theirs), -2 another frequency, -1 a
    mixture (share below SINGLE); and the key frequencies (:func:`key_frequencies`)."""
    freq, share = frequency_labels(analysis, g).nodes()
    key = key_frequencies(g)
    p = g.p
    harmonic = {min(2 * k % p, p - 2 * k % p): k for k in key}
    node = np.full(len(freq), -1, dtype=np.int64)
    for i, (f, s) in enumerate(zip(freq, share)):
        if s >= SINGLE:
            node[i] = f if f in key else harmonic.get(int(f), -2)
    return node, key


def scores(graph, result, labels) -> dict:
    conn = graph.connected_nodes
    m = np.asarray(graph.membership_array(result.membership))
    sel = conn & (labels != -1)
    if sel.sum() < 2:
        return {"nmi": float("nan"), "ari": float("nan"), "purity": float("nan"), "labelled": 0.0}
    t, mm = labels[sel], m[sel]
    purity = sum(np.bincount(t[mm == c] - t.min()).max() for c in np.unique(mm)) / len(t)
    return {
        "nmi": normalized_mutual_info_score(t, mm),
        "ari": adjusted_rand_score(t, mm),
        "purity": purity,
        "labelled": sel.sum() / conn.sum(),
    }


def run_grokked(args) -> None:
    rows = []
    print(
        "Grokked modular addition: p, seed, test accuracy, key frequencies; per setting and "
        "method: modules, p, NMI / ARI / purity on the labelled nodes (share labelled)"
    )
    for p in args.primes:
        for seed in args.seeds:
            g, t_train = grokked(p, seed, args.cache)
            chain = lib_chain(g.model)
            t0 = time.perf_counter()
            a = mg.analyze(chain, g.train_tokens, progress=False)
            t_analyze = time.perf_counter() - t0
            t0 = time.perf_counter()
            choice = mg.choose_eps(chain, a, g.train_tokens, "accuracy",
                                   labels=g.answers[g.train], tolerance=1e-3)  # fmt: skip
            t_choose = time.perf_counter() - t0
            labels, key = known_labels(a, g)
            pca = mg.analyze(chain, g.train_tokens, basis="pca", progress=False)
            pca_labels, _ = known_labels(pca, g)
            print(f"p={p} seed={seed}: test accuracy {g.test_accuracy:.4f}, {g.steps} steps, "
                  f"key frequencies {sorted(key)}; train {t_train:.0f} s, analyze "
                  f"{t_analyze:.1f} s, choose_eps {t_choose:.1f} s (eps {choice.eps_relative:.2g} "
                  f"of the output variance)")  # fmt: skip
            settings = (("default", a, labels), ("task", a.with_eps(choice.eps), labels),
                        ("pca", pca, pca_labels))  # fmt: skip
            for setting, b, labels in settings:
                graph = b.graph
                for method in METHODS:
                    t0 = time.perf_counter()
                    r = mg.find_modules(graph, method=method, seed=0)
                    t_modules = time.perf_counter() - t0
                    s = scores(graph, r, labels)
                    pv = r.significance.p_value
                    rows.append({"setting": setting, "method": method, "p": pv, **s,
                                 "n_modules": r.n_modules, "n_key": len(key),
                                 "t_modules": t_modules, "t_analyze": t_analyze})  # fmt: skip
                    print(f"  {setting:<7} {method:<8} {graph.n_edges:>4} edges, "
                          f"{int(graph.connected_nodes.sum()):>3} nodes: {r.n_modules} modules "
                          f"(p = {pv:.2g}), NMI {s['nmi']:.2f} ARI {s['ari']:.2f} purity "
                          f"{s['purity']:.2f} ({s['labelled']:.0%} labelled), "
                          f"{t_modules:.1f} s")  # fmt: skip
    print("\nSummary over the grokked models (NMI >= 0.8; significant p <= 0.05; modules as many "
          "as key frequencies; module stage / analyze):")  # fmt: skip
    for setting in ("default", "task", "pca"):
        for method in METHODS:
            rs = [r for r in rows if r["setting"] == setting and r["method"] == method]
            nmi = np.array([r["nmi"] for r in rs])
            sig = np.array([r["p"] <= 0.05 for r in rs])
            print(f"  {setting:<7} {method:<8} NMI >= 0.8 in {np.mean(nmi >= 0.8):.0%} "
                  f"(median {np.nanmedian(nmi):.2f}, min {np.nanmin(nmi):.2f}), significant in "
                  f"{np.mean(sig):.0%}, both in {np.mean(sig & (nmi >= 0.8)):.0%}, "
                  f"k = number of key frequencies in "
                  f"{np.mean([r['n_modules'] == r['n_key'] for r in rs]):.0%}, module stage "
                  f"{np.median([r['t_modules'] / r['t_analyze'] for r in rs]):.2f}x analyze "
                  "(median)")  # fmt: skip


def run_sparsity(args) -> None:
    """The LIB paper's sparsity count on the grokked models: per layer pair, the edges needed to
    keep training accuracy within 0.001 (:func:`modgraph.edges_needed`), in the paper's setting
    (local variant, no rotation, edges into the raw logits) and in the PCA basis."""
    print("\nEdges needed per layer pair (accuracy within 0.001; local variant, raw logits):")
    totals = []
    for p in args.primes:
        for seed in args.seeds:
            g, _ = grokked(p, seed, args.cache)
            chain, x, y = lib_chain(g.model), g.train_tokens, g.answers[g.train]
            counts = {}
            for basis in ("interaction", "pca"):
                a = mg.analyze(chain, x, basis=basis, variant="local", rotation="none",
                               output_basis="raw", progress=False)  # fmt: skip
                t0 = time.perf_counter()
                counts[basis] = mg.edges_needed(chain, a, x, "accuracy", labels=y, tolerance=1e-3)
                seconds = time.perf_counter() - t0
            i, q = counts["interaction"], counts["pca"]
            totals.append((i.n_needed, q.n_needed))
            print(f"  p={p} seed={seed}: interaction {list(i.needed)} = {i.n_needed}, PCA "
                  f"{list(q.needed)} = {q.n_needed}, ratio {i.n_needed / q.n_needed:.2f} "
                  f"({i.evaluations} ablated runs, {seconds:.0f} s for PCA)")  # fmt: skip
    ratios = [a / b for a, b in totals]
    print(f"  interaction / PCA: median {np.median(ratios):.2f}, range {min(ratios):.2f}-"
          f"{max(ratios):.2f} over {len(ratios)} models")  # fmt: skip


# ---------------------------------------------------------------------------- no modules
def random_transformer(seed: int, *, trained: bool, vocab: int = 16, n_ctx: int = 6):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TinyTransformer(vocab, n_ctx, d_model=32, n_heads=4, d_mlp=64, n_layers=2)
        tokens = torch.randint(0, vocab, (400, n_ctx))
        if trained:  # a random table of the whole sequence: no part of it is separable
            target = torch.randint(0, vocab, (400,))
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            for _ in range(200):
                opt.zero_grad()
                nn.functional.cross_entropy(model(tokens)[:, -1], target).backward()
                opt.step()
    model = model.double().eval()
    return mg.transformer_chain(model, positions="last"), tokens


def sparse(graph: mg.InteractionGraph, per_node: float = SPARSE_EDGES_PER_NODE):
    """``graph`` at the eps that keeps only its ``per_node`` x (connected nodes) strongest edges."""
    w = np.sort(np.concatenate([x[x > 0] for x in graph.w]))[::-1]
    n = min(int(per_node * graph.connected_nodes.sum()), len(w) - 1)
    return mg.InteractionGraph(graph.layer_names, graph.importance, graph.w, eps=w[n] ** 2)


def run_random(args) -> None:
    kinds = {
        "MLP": lambda s, t: random_net(MLP_WIDTHS[s % len(MLP_WIDTHS)], s, trained=t),
        "transformer": lambda s, t: random_transformer(s, trained=t),
    }
    print(f"\nNetworks without modules: {args.random} of each kind, half trained on a dense "
          "target; fraction called modular (p <= 0.05 at the automatic number)")  # fmt: skip
    for kind, make in kinds.items():
        called = {(d, m): [] for d in ("default", "sparse") for m in CALIBRATION_METHODS}
        epn = {"default": [], "sparse": []}
        t0 = time.perf_counter()
        for s in range(args.random):
            model, x = make(s, s % 2 == 1)
            graph = mg.analyze(model, x, progress=False).graph
            for density, gr in (("default", graph), ("sparse", sparse(graph))):
                epn[density].append(gr.n_edges / max(1, int(gr.connected_nodes.sum())))
                for method in CALIBRATION_METHODS:
                    r = mg.find_modules(gr, method=method, seed=0)
                    called[density, method].append(r.significance.p_value <= 0.05)
                    if args.verbose and called[density, method][-1]:
                        print(f"  {kind} {s} {density} {method}: {r.verdict}")
        for density in ("default", "sparse"):
            rates = ", ".join(f"{m} {np.mean(called[density, m]):.1%}" for m in CALIBRATION_METHODS)
            print(f"  {kind:<11} {density:<7} ({np.median(epn[density]):.1f} edges per node): "
                  f"{rates}")  # fmt: skip
        print(f"  ({time.perf_counter() - t0:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    ap.add_argument("--primes", type=ints, default=[47, 53, 59])
    ap.add_argument("--seeds", type=ints, default=[0, 1, 2])
    ap.add_argument("--random", type=int, default=40)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "modgraph-bench")
    ap.add_argument("--skip-grokked", action="store_true")
    ap.add_argument("--skip-random", action="store_true")
    ap.add_argument("--sparsity", action="store_true", help="the LIB paper's edge count too")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    if not args.skip_grokked:
        run_grokked(args)
    if args.sparsity:
        run_sparsity(args)
    if not args.skip_random:
        run_random(args)


if __name__ == "__main__":
    main()

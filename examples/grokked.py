"""The README's first picture: a grokked modular-addition transformer's modules, by frequency.

Trains a one-layer transformer on ``(a + b) mod 47`` from scratch until it groks
(:func:`modgraph.toys.grokking.train_grokked`), analyses it in the LIB
paper's cut with the defaults, finds its modules at the automatic number, and draws the
interaction graph colored by module, each module named by the key frequency most of its
single-frequency directions carry. Writes ``figures/grokked/graph.png`` and prints the modules'
frequency make-up.

Run: ``python examples/grokked.py [--p 47] [--seed 1] [--load FILE]`` (``--load``: a model saved
with ``torch.save(train_grokked(...), FILE)``, such as those ``benchmarks/bench_real.py`` keeps
in its cache, instead of training one).
"""

import argparse
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import modgraph as mg
from modgraph.toys.grokking import frequency_labels, lib_chain, train_grokked

OUT = Path(__file__).resolve().parent.parent / "figures" / "grokked"
#: A direction with at least this share of its power at one frequency is labelled by it.
SINGLE = 0.8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--p", type=int, default=47)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--load", type=Path, help="a saved Grokked instead of training")
    args = ap.parse_args()
    if args.load is not None:
        g = torch.load(args.load, weights_only=False)  # your own file: it runs pickled code
    else:
        g = train_grokked(args.p, seed=args.seed)
    print(f"p = {g.p}: test accuracy {g.test_accuracy:.4f} after {g.steps} steps")
    a = mg.analyze(lib_chain(g.model), g.train_tokens, progress=False)
    modules = mg.find_modules(a.graph, seed=0)
    print(modules.verdict)
    freq, share = frequency_labels(a, g).nodes()
    member = modules.membership_array
    names = {}
    for m in range(modules.n_modules):
        counts = Counter(int(f) for f, s, x in zip(freq, share, member) if x == m and s >= SINGLE)
        top = counts.most_common(1)
        names[m] = f"frequency {top[0][0]}" if top else "mixed"
        print(f"module {m}: {sum(member == m)} directions; single-frequency ones: {dict(counts)}")
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    mg.plot_graph(a, modules, ax=ax)
    legend = ax.get_legend()
    if legend is not None:
        for text in legend.get_texts():
            label = text.get_text()
            if label.startswith("module "):
                m = int(label.split()[1])
                text.set_text(f"{label}: {names.get(m, '')}")
    ax.set_xticks(ax.get_xticks(), [name.split(".")[-1] for name in a.layer_names])
    p_value = modules.significance.p_value
    ax.set_title(
        f"Grokked (a + b) mod {g.p}, defaults: {modules.n_modules} modules (p = {p_value:.2g})\n"
        f"eps = {a.eps_relative:g} of the output variance",
        fontsize=11,
    )
    OUT.mkdir(parents=True, exist_ok=True)
    mg.plotting.save_figure(fig, OUT / "graph", formats=("png",))
    print(f"wrote {OUT / 'graph.png'}")


if __name__ == "__main__":
    main()

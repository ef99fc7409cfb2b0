"""The hidden-modules benchmark: every planted case (:mod:`modgraph.toys.planted`) in every basis.

``python -m modgraph.toys.benchmark`` prints the table for the neuron and PCA baselines, the
paper's plain interaction basis (``rotation="none"``) and the default (``rotation="sparse"``), with
the time of the default relative to plain ``analyze`` in the same run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ..pipeline import analyze
from .planted import CASES, EPS, make_case, score_analysis

__all__ = ["METHODS", "run_benchmark", "format_table", "main"]


#: Columns of the table: (label, keyword arguments of ``analyze``).
METHODS = (
    ("neuron", dict(basis="neuron")),
    ("pca", dict(basis="pca")),
    ("plain", dict(basis="interaction", rotation="none")),
    ("default", dict()),  # rotation="sparse"
)


def run_benchmark(cases=CASES, methods=METHODS, *, eps: float = EPS) -> list[dict]:
    """Analyse and score every case with every method; one row (a dict) per case.

    ``eps`` is absolute: the cases' leaks are sized against ``EPS^1/2`` in the output's units.
    """
    rows = []
    for i, case in enumerate(cases):
        planted = make_case(case)
        if i == 0:  # warm up torch.func/vmap so that the first timing is not an outlier
            for _, kwargs in methods:
                analyze(planted.model, planted.inputs[:300], eps=eps, eps_units="absolute",
                        progress=False, **kwargs)  # fmt: skip
        row = dict(case=case.name, K=case.K, hiding=case.hiding, leak=case.leak)
        row["trained"] = case.trained
        for label, kwargs in methods:
            t0 = time.perf_counter()
            a = analyze(planted.model, planted.inputs, eps=eps, eps_units="absolute",
                        progress=False, **kwargs)  # fmt: skip
            row[f"t_{label}"] = time.perf_counter() - t0
            row[label] = score_analysis(planted, a)
        rows.append(row)
    return rows


def format_table(rows: list[dict], methods=METHODS) -> str:
    """The benchmark table as Markdown."""
    labels = [label for label, _ in methods]
    head = ["case", "K", "hiding", "leak", "trained", *(f"ARI {m}" for m in labels)]
    timed = "plain" in labels and "default" in labels
    if timed:
        head.append("time default/plain")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["case"],
            str(r["K"]),
            r["hiding"],
            f"{r['leak']:g}",
            "yes" if r["trained"] else "no",
        ]
        cells += [f"{r[m]:.3f}" for m in labels]
        if timed:
            cells.append(f"{r['t_default'] / r['t_plain']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        means = ["**mean**", "", "", "", ""] + [
            f"{np.mean([r[m] for r in rows]):.3f}" for m in labels
        ]
        if timed:
            ratio = sum(r["t_default"] for r in rows) / sum(r["t_plain"] for r in rows)
            means.append(f"{ratio:.2f}")
        lines.append("| " + " | ".join(means) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.cases or c.name in args.cases]
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(format_table(run_benchmark(cases)))


if __name__ == "__main__":
    main()

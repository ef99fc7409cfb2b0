"""Benchmark: where the module test stops being calibrated as interaction graphs get sparse.

Random dense ReLU MLPs (the first two architectures of ``bench_significance.py``, untrained and
trained, 5 seeds each: 20 networks without modules) are analysed with the defaults (3.0-7.1
edges per connected node), then eps is raised until only ``L x n_nodes`` of their strongest edges
are left, for each level ``L``; each sparse graph gets the automatic number of modules (spectral,
20 null graphs). Prints the share called modular (p <= 0.05) per level: a calibrated test stays
at or below about 5%. Measured: 35% at 2 edges per node, 0% at 3 (``bench_significance.py``: 70-72%
at 1.3); ``modgraph.partition.objective.CALIBRATED_EDGES_PER_NODE`` is set from it.

Run: ``python benchmarks/bench_sparse_null.py [--levels 2,3]`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from bench_significance import ARCHITECTURES, random_net, sparse

import modgraph as mg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", default="2,3", help="edges per node kept, comma-separated")
    args = p.parse_args()
    warnings.simplefilter("ignore")  # the rotation's too-few-samples warnings on small data
    graphs = []
    for widths in ARCHITECTURES[:2]:
        for trained in (False, True):
            for seed in range(5):
                net, x = random_net(widths, seed, trained=trained)
                graphs.append(mg.analyze(net, x, progress=False).graph)
    per_node = [g.n_edges / g.connected_nodes.sum() for g in graphs]
    print(f"{len(graphs)} networks without modules; at the defaults "
          f"{min(per_node):.1f}-{max(per_node):.1f} edges per connected node")  # fmt: skip
    for level in (float(v) for v in args.levels.split(",")):
        called = [mg.find_modules(sparse(g, level), method="spectral", seed=0).significance
                  for g in graphs]  # fmt: skip
        share = np.mean([s.p_value <= 0.05 for s in called])
        print(f"{level:g} edges per node: called modular (p <= 0.05) in {share:.0%}")


if __name__ == "__main__":
    main()

"""Run under torchrun by tests/test_distributed.py: each rank analyses its shard of the data.

usage: distributed_analyze.py OUT_DIR MODE   (MODE: "same" or "mismatch")
Each rank writes OUT_DIR/rank{r}.pt with its results, or OUT_DIR/rank{r}.err with the error.
"""

import os
import sys

import torch
import torch.distributed as dist
from torch import nn

import modgraph as mg
from modgraph.chain import LayerChain
from modgraph.data import Batches
from modgraph.rotation import sparse_rotation


def model(seed):
    torch.manual_seed(seed)
    return (
        nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))
        .double()
        .eval()
    )


def data():
    torch.manual_seed(123)
    return torch.randn(301, 5, dtype=torch.float64)


if __name__ == "__main__":
    out, mode = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    r, world = dist.get_rank(), dist.get_world_size()
    shard = data()[r::world]  # uneven shards: 151 and 150 samples
    net = model(0 if mode == "same" or r == 0 else 1)
    try:
        results = {}
        for variant, rotation in (("global", "none"), ("local", "none"), ("global", "sparse")):
            a = mg.analyze(
                net, shard, variant=variant, rotation=rotation, batch_size=37, progress=False
            )
            results[variant if rotation == "none" else "default"] = {
                "C": [l.C for l in a.layers],
                "lam": [l.eigenvalues for l in a.layers],
                "w": list(a.w),
                "n": a.n_samples,
                "exemplars": [
                    {s: vars(getattr(e, s)) for s in ("top", "bottom")} for e in a.exemplars
                ],
            }
        # the rotation on all 301 samples (analyze reads at most 256 per rank)
        plain = mg.analyze(net, shard, rotation="none", batch_size=37, progress=False)
        rotated = sparse_rotation(
            LayerChain.from_model(net),
            list(plain.layers),
            Batches(shard, batch_size=37, dtype=torch.float64),
            n=plain.n_samples,
            max_samples=512,
        )
        results["sparse"] = {"C": [l.C for l in rotated], "lam": [l.eigenvalues for l in rotated]}
        torch.save(results, os.path.join(out, f"rank{r}.pt"))
    except mg.InputError as err:
        with open(os.path.join(out, f"rank{r}.err"), "w") as fh:
            fh.write(str(err))
    # leave together: a rank tearing gloo down while the other still talks aborts (SIGABRT)
    dist.barrier()
    dist.destroy_process_group()
    # skip interpreter teardown: gloo's threads can abort in static destructors at exit
    sys.stdout.flush()
    os._exit(0)

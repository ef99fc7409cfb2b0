"""Data parallelism: 2 CPU processes under torchrun (gloo over loopback) equal one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import relative

import modgraph as mg
from modgraph.chain import LayerChain
from modgraph.data import Batches
from modgraph.rotation import sparse_rotation

WORKER = Path(__file__).parent / "workers" / "distributed_analyze.py"
sys.path.insert(0, str(WORKER.parent))
from distributed_analyze import data, model  # noqa: E402

pytestmark = pytest.mark.integration


def _torchrun(tmp_path, mode):
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(tmp_path),
        mode,
    ]
    # a hang would be a failure: a mismatch must raise on every rank
    # a limit only against a hang of the process group (30x its time alone), never for speed
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]


def test_two_ranks_equal_one_process(tmp_path):
    _torchrun(tmp_path, "same")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for variant in ("global", "local"):
        single = mg.analyze(model(0), data(), variant=variant, rotation="none", progress=False)
        for res in ranks:
            assert res[variant]["n"] == 301
            for layer, C, lam in zip(single.layers, res[variant]["C"], res[variant]["lam"]):
                assert relative(C, layer.C) < 1e-10
                assert relative(lam, layer.eigenvalues) < 1e-10
            for w1, w2 in zip(single.w, res[variant]["w"]):
                assert relative(w2, w1) < 1e-10
            # exemplars: numbered as if the shards were concatenated in rank order
            shards = mg.analyze(model(0), torch.cat([data()[0::2], data()[1::2]]),
                                variant=variant, rotation="none", progress=False)  # fmt: skip
            for e1, e2 in zip(shards.exemplars, res[variant]["exemplars"]):
                for side in ("top", "bottom"):
                    assert torch.equal(getattr(e1, side).samples, e2[side]["samples"])
                    assert relative(e2[side]["values"], getattr(e1, side).values) < 1e-10
    # the sparse rotation sums its standard errors and moments over ranks: the same rotations
    plain = mg.analyze(model(0), data(), rotation="none", progress=False)
    single = sparse_rotation(
        LayerChain.from_model(model(0)),
        list(plain.layers),
        Batches(data(), batch_size=64, dtype=torch.float64),
        n=301,
        max_samples=512,
    )
    assert any(not torch.equal(a.C, b.C) for a, b in zip(single, plain.layers))  # it acted
    for res in ranks:
        for layer, C, lam in zip(single, res["sparse"]["C"], res["sparse"]["lam"]):
            assert relative(C, layer.C) < 1e-10
            assert relative(lam, layer.eigenvalues) < 1e-10
    # the default analysis (rotation="sparse" on 256 of the 301 samples, chosen over all
    # ranks) is the single process's: the same samples whatever the sharding (issue #34)
    default = mg.analyze(model(0), data(), progress=False)
    assert any(not torch.equal(a.C, b.C) for a, b in zip(default.layers, plain.layers))
    for res in ranks:
        for layer, C in zip(default.layers, res["default"]["C"]):
            assert relative(C, layer.C) < 1e-8
        for w1, w2 in zip(default.w, res["default"]["w"]):
            assert relative(w2, w1) < 1e-8


def test_ranks_that_disagree_on_the_model_raise_instead_of_hanging(tmp_path):
    _torchrun(tmp_path, "mismatch")
    for r in range(2):
        message = (tmp_path / f"rank{r}.err").read_text()
        assert "ranks disagree on the model and options" in message

"""Data parallelism: 2 CPU processes under torchrun (gloo over loopback) equal one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import relative

import modgraph as mg

WORKER = Path(__file__).parent / "workers" / "distributed_analyze.py"
sys.path.insert(0, str(WORKER.parent))
from distributed_analyze import data, model  # noqa: E402


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
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
def test_two_ranks_equal_one_process(tmp_path):
    _torchrun(tmp_path, "same")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for key, variant, rotation in (
        ("global", "global", "none"),
        ("local", "local", "none"),
        ("sparse", "global", "sparse"),  # sums its moments over ranks: the same rotations
    ):
        single = mg.analyze(model(0), data(), variant=variant, rotation=rotation, progress=False)
        for res in ranks:
            assert res[key]["n"] == 301
            for layer, C, lam in zip(single.layers, res[key]["C"], res[key]["lam"]):
                assert relative(C, layer.C) < 1e-10
                assert relative(lam, layer.eigenvalues) < 1e-10
            for w1, w2 in zip(single.w, res[key]["w"]):
                assert relative(w2, w1) < 1e-10
    # the rotation did act on this model (else the comparison above would prove nothing)
    assert any(
        relative(a, b) > 1e-3 for a, b in zip(ranks[0]["sparse"]["C"], ranks[0]["global"]["C"])
    )


@pytest.mark.slow
def test_ranks_that_disagree_on_the_model_raise_instead_of_hanging(tmp_path):
    _torchrun(tmp_path, "mismatch")
    for r in range(2):
        message = (tmp_path / f"rank{r}.err").read_text()
        assert "ranks disagree on the model and options" in message

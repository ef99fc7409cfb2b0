"""The ``modgraph`` command end to end, and its errors."""

import json
import signal
import subprocess
import sys
import time

import igraph
import networkx as nx
import numpy as np
import pytest
import torch
from test_report import check_schema
from torch import nn

import modgraph as mg
from modgraph.atomic import default_mode
from modgraph.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def saved(tmp_path):
    """A small two-block network and its inputs, saved as a user would."""
    net = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 4))
    with torch.no_grad():  # inputs 0-3 -> hidden 0-5 -> outputs 0-1; inputs 4-7 -> 6-11 -> 2-3
        net[0].weight.mul_(torch.block_diag(torch.ones(6, 4), torch.ones(6, 4)))
        net[2].weight.mul_(torch.block_diag(torch.ones(2, 6), torch.ones(2, 6)))
        net[2].weight[2:].mul_(0.3)  # distinct scales: no ties between the blocks
    torch.save(net, tmp_path / "model.pt")
    x = torch.randn(400, 8)
    torch.save(x, tmp_path / "x.pt")
    np.save(tmp_path / "x.npy", x.numpy())
    return tmp_path


@pytest.mark.parametrize("data", ["x.pt", "x.npy"])
def test_analyze_writes_every_output(saved, data, capsys):
    out = saved / "out"
    code = main(
        [
            "analyze",
            str(saved / "model.pt"),
            str(saved / data),
            "--out",
            str(out),
            "--eps",
            "1e-4",
            "--quiet",
        ]
    )
    assert code == 0
    files = {p.name for p in out.iterdir()}
    assert {"summary.json", "interaction_graph.graphml", "analysis"} <= files
    assert len([f for f in files if f.endswith(".png")]) >= 3
    assert len([f for f in files if f.endswith(".svg")]) >= 3
    summary = json.loads((out / "summary.json").read_text())
    check_schema(summary)
    a = mg.load_analysis(out / "analysis")
    leiden = mg.find_modules(a.graph, method="leiden", seed=0)
    auto = mg.find_modules(a.graph, seed=0)  # the map equation's modules, the primary
    assert summary["modules"]["leiden"]["n_modules"] == leiden.n_modules
    assert summary["modules"]["primary"] == auto.method == "infomap"
    assert summary["modules"]["verdict"] == auto.verdict
    assert summary["layers"][0]["name"] == "input"
    g = nx.read_graphml(out / "interaction_graph.graphml")
    assert g.number_of_edges() == summary["graph"]["edges"]
    ig = igraph.Graph.Read_GraphML(str(out / "interaction_graph.graphml"))
    assert ig.ecount() == summary["graph"]["edges"]
    # every partition travels with the graph: the same membership as summary.json, both readers
    for method in ("infomap", "leiden", "spectral"):
        want = summary["modules"][method]["membership"]
        assert {n: d[f"module_{method}"] for n, d in g.nodes(data=True)} == want
        assert dict(zip(ig.vs["id"], (int(m) for m in ig.vs[f"module_{method}"]))) == want
    printed = capsys.readouterr().out
    assert f"modules (infomap): {auto.verdict}" in printed
    assert f"modules (leiden): {leiden.verdict}" in printed
    assert not [p for p in saved.iterdir() if p.name.startswith(".out.")]  # no temp left
    # published with ordinary permissions, not the private ones of temporary files
    assert out.stat().st_mode & 0o777 == default_mode(directory=True)
    assert (out / "graph.png").stat().st_mode & 0o777 == default_mode()
    assert (out / "interaction_graph.graphml").stat().st_mode & 0o777 == default_mode()


def test_rerun_replaces_an_earlier_result_only_with_overwrite(saved, capsys):
    out = saved / "out"
    args = ["analyze", str(saved / "model.pt"), str(saved / "x.pt"), "--out", str(out), "--quiet"]
    assert main(args) == 0
    first = sorted(p.name for p in out.iterdir())
    _fails(args + ["--eps", "1e-5"], capsys, "pass --overwrite")
    assert json.loads((out / "summary.json").read_text())["config"]["eps"] == 1e-3  # untouched
    assert main(args + ["--eps", "1e-5", "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["eps"] == 1e-5
    assert sorted(p.name for p in out.iterdir()) == first
    assert [p.name for p in saved.iterdir() if p.name.startswith(".")] == []


def test_a_users_files_are_never_deleted(saved, capsys):
    out = saved / "out"
    args = ["analyze", str(saved / "model.pt"), str(saved / "x.pt"), "--out", str(out), "--quiet"]
    assert main(args) == 0
    (out / "thesis.tex").write_text("mine")
    (out / "analysis" / "my_stats.csv").write_text("mine too")
    _fails(args + ["--overwrite"], capsys, "thesis.tex")
    assert (out / "thesis.tex").read_text() == "mine"
    assert (out / "analysis" / "my_stats.csv").read_text() == "mine too"
    assert json.loads((out / "summary.json").read_text())["config"]["eps"] == 1e-3
    # the same from the API: Analysis.save next to a user's file
    a = mg.load_analysis(_saved_analysis(saved))
    (saved / "work").mkdir()
    (saved / "work" / "notes.txt").write_text("mine")
    with pytest.raises(mg.InputError, match="notes.txt"):
        a.save(saved / "work", overwrite=True)
    assert (saved / "work" / "notes.txt").read_text() == "mine"


def _saved_analysis(saved):
    """A saved analysis of the test model, to load."""
    net = torch.load(saved / "model.pt", weights_only=False)
    x = torch.load(saved / "x.pt")
    return mg.analyze(net, x, rotation="none", progress=False).save(saved / "plain")


def test_output_location_is_checked_before_any_work(saved, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the demo was trained before --out was checked")

    monkeypatch.setattr("modgraph.toys.demo.make_demo", no_training)
    (saved / "f.txt").write_text("x")
    _fails(["demo", "--out", str(saved / "f.txt" / "sub"), "--quiet"], capsys, "is a file")
    model, x = str(saved / "model.pt"), str(saved / "x.pt")
    (saved / "file.txt").write_text("x")
    for out, match in (
        ("", "--out must name a directory"),
        (str(saved / "file.txt" / "sub"), "is a file"),
    ):
        _fails(["analyze", model, x, "--out", out, "--quiet"], capsys, match)
    _fails(
        ["analyze", model, x, "--out", str(saved / "file.txt"), "--quiet"],
        capsys,
        "not a directory",
    )


# The child runs the CLI with save_figure wrapped: after the first figure is in the temporary
# directory it touches a marker and waits, so SIGTERM lands mid-write on any machine load.
_PAUSED_CLI = """
import pathlib, sys, time
import modgraph.plotting as plotting
from modgraph.cli import main
save, marker = plotting.save_figure, pathlib.Path(sys.argv[1])
def paused(fig, path, **kw):
    written = save(fig, path, **kw)
    marker.touch()
    time.sleep(600)
    return written
plotting.save_figure = paused
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_while_writing_leaves_the_previous_result_or_none(saved):
    root = saved / "run"
    root.mkdir()
    out, marker = root / "out", saved / "writing"
    args = ["analyze", str(saved / "model.pt"), str(saved / "x.pt"), "--out", str(out), "--quiet"]
    for previous in (False, True):
        if previous:
            assert main(args) == 0
            before = (out / "summary.json").read_text()
        marker.unlink(missing_ok=True)
        cmd = [sys.executable, "-c", _PAUSED_CLI, str(marker), *args, "--overwrite"]
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.01)
        assert any(p.name.startswith(".out.") for p in root.iterdir())  # mid-write
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
        assert [p.name for p in root.iterdir()] == (["out"] if previous else [])
        if previous:
            assert (out / "summary.json").read_text() == before


def _fails(args, capsys, match):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


def test_missing_files(saved, capsys):
    _fails(
        ["analyze", str(saved / "nope.pt"), str(saved / "x.pt"), "--out", str(saved / "o")],
        capsys,
        "MODEL",
    )
    _fails(
        ["analyze", str(saved / "model.pt"), str(saved / "nope.pt"), "--out", str(saved / "o")],
        capsys,
        "DATA",
    )
    assert not (saved / "o").exists()


def test_file_that_is_not_a_model(saved, capsys):
    (saved / "junk.pt").write_bytes(b"not a model")
    _fails(
        ["analyze", str(saved / "junk.pt"), str(saved / "x.pt"), "--out", str(saved / "o")],
        capsys,
        "not a saved torch model",
    )
    _fails(
        ["analyze", str(saved / "x.pt"), str(saved / "x.pt"), "--out", str(saved / "o")],
        capsys,
        "not an nn.Module",
    )


def test_data_that_does_not_fit(saved, capsys):
    torch.save(torch.randn(10, 7), saved / "bad.pt")
    _fails(
        [
            "analyze",
            str(saved / "model.pt"),
            str(saved / "bad.pt"),
            "--out",
            str(saved / "o"),
            "--quiet",
        ],
        capsys,
        "does not fit the model",
    )
    assert not (saved / "o").exists()


def test_output_directory_that_is_a_file(saved, capsys):
    (saved / "o").write_text("x")
    _fails(
        [
            "analyze",
            str(saved / "model.pt"),
            str(saved / "x.pt"),
            "--out",
            str(saved / "o"),
            "--quiet",
        ],
        capsys,
        "is not a directory",
    )
    assert (saved / "o").read_text() == "x"


def test_torchscript_model(saved):
    net = torch.load(saved / "model.pt", weights_only=False)
    with pytest.warns(DeprecationWarning):  # torch 2.13 deprecates TorchScript
        torch.jit.script(net).save(str(saved / "scripted.pt"))
    assert (
        main(
            [
                "analyze",
                str(saved / "scripted.pt"),
                str(saved / "x.pt"),
                "--out",
                str(saved / "o"),
                "--quiet",
            ]
        )
        == 0
    )


def test_help_for_every_command(capsys):
    # the entry point once in a process of its own, each command's help in this one
    r = subprocess.run([sys.executable, "-m", "modgraph.cli", "--help"], capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0 and "usage: modgraph" in r.stdout
    for cmd in ("demo", "analyze"):
        with pytest.raises(SystemExit) as exit_:
            main([cmd, "--help"])
        assert exit_.value.code == 0 and f"usage: modgraph {cmd}" in capsys.readouterr().out


def test_demo_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    check_schema(summary)  # planted, demo and timings keys documented too
    ari = summary["planted"]["adjusted_rand_index"]
    assert summary["planted"]["n_planted"] == 3
    assert max(ari.values()) > 0.8
    # the interaction basis is sparser than the neuron and PCA bases on the same model
    edges = {b: v["edges"] for b, v in summary["bases"].items()}
    assert edges["interaction"] < edges["neuron"] < edges["pca"]
    # the total counts every stage, training included (no wall-time bound: that is a benchmark's)
    t = summary["timings"]
    assert t["train"] == summary["demo"]["train_seconds"]
    assert t["total"] >= t["train"] + t["analyze_all"] + t["modules"] + t["figures"]


def test_analyze_chooses_eps_from_a_metric(saved, capsys):
    out = saved / "task"
    model = torch.load(saved / "model.pt", weights_only=False)
    labels = model(torch.load(saved / "x.pt")).argmax(-1)
    torch.save(labels, saved / "y.pt")
    args = ["analyze", str(saved / "model.pt"), str(saved / "x.pt"), "--out", str(out), "--quiet"]
    code = main(args + ["--metric", "accuracy", "--labels", str(saved / "y.pt")])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    check_schema(summary)
    choice = summary["eps_choice"]
    assert summary["eps"] == choice["eps"] and choice["metric"] == "accuracy"
    assert choice["reference"] == 1.0 and abs(choice["value"] - 1.0) <= choice["tolerance"] == 1e-3
    a = mg.load_analysis(out / "analysis")
    assert a.eps == choice["eps"]  # the saved analysis is the one reported
    other = ["analyze", str(saved / "model.pt"), str(saved / "x.pt"), "--out", str(saved / "o2")]
    _fails(other + ["--quiet", "--tolerance", "0.1"], capsys, "pass --metric too")

"""A researcher's first hour (issue #37): the API, CLI, report and figures as a new user meets
them. Each test fails on the code before it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import modgraph as mg


class MLP(nn.Module):
    def __init__(self, d_in=8):
        super().__init__()
        self.fc1, self.act1 = nn.Linear(d_in, 16), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(16, 16), nn.ReLU()
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        return self.out(self.act2(self.fc2(self.act1(self.fc1(x)))))


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    return MLP().eval(), torch.randn(400, 8)


@pytest.mark.integration  # slow: the unit tier stays fast
def test_write_report_takes_the_model_the_analysis_used(mlp, tmp_path):
    net, x = mlp
    a = mg.analyze(net, x, layers=["act1", "act2"], rotation="none", progress=False)
    summary = mg.write_report(a, tmp_path / "out", data=x, model=net, n_null=3)
    assert "report.html" in summary["files"]
    assert "drives outputs" in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(300, 7), r"each of shape \(7,\).*module 'fc1' \(Linear, needs a last "
         r"dimension of 8\).*pass samples with 8 features"),
        (torch.randint(0, 3, (300, 8)), r"dtype int64.*module 'fc1'.*need an nn.Embedding first"),
    ],
    ids=["wrong width", "integer data"],
)  # fmt: skip
def test_data_that_does_not_fit_names_the_module_and_what_it_needs(mlp, x, match, tmp_path,
                                                                  capsys):  # fmt: skip
    net, _ = mlp
    with pytest.raises(mg.InputError, match=match):
        mg.analyze(net, x, progress=False)
    # the CLI: one line, status 2
    from modgraph.cli import main

    torch.save(net, tmp_path / "model.pt")
    torch.save(x, tmp_path / "x.pt")
    code = main(["analyze", str(tmp_path / "model.pt"), str(tmp_path / "x.pt"), "--out",
                 str(tmp_path / "out"), "--quiet", "--import", "test_first_hour"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "module 'fc1'" in err, err


@pytest.mark.integration  # slow: the unit tier stays fast
def test_a_custom_module_is_cut_like_the_same_sequential(mlp):
    net, x = mlp
    seq = nn.Sequential(net.fc1, net.act1, net.fc2, net.act2, net.out)
    a = mg.analyze(net, x, progress=False)
    b = mg.analyze(seq, x, progress=False)
    assert a.layer_names == ["input", "act1", "act2", "output"]
    assert len(a.w) == len(b.w)
    for wa, wb in zip(a.w, b.w):
        assert torch.allclose(wa, wb, rtol=0, atol=1e-6 * float(wb.max()))


@pytest.mark.integration  # slow: the unit tier stays fast
def test_cli_options_for_the_module_stage_and_the_machine(mlp, tmp_path, capsys):
    from modgraph.cli import main

    net, x = mlp
    torch.save(net, tmp_path / "model.pt")
    torch.save(x, tmp_path / "x.pt")
    args = ["analyze", str(tmp_path / "model.pt"), str(tmp_path / "x.pt"), "--import",
            "test_first_hour", "--rotation", "none"]  # fmt: skip
    threads = torch.get_num_threads()
    try:
        code = main(args + ["--out", str(tmp_path / "out"), "--no-baselines", "--n-modules", "2",
                            "--n-null", "3", "--threads", "1", "--method", "spectral"])  # fmt: skip
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # no progress bars when stderr is not a terminal (a log file)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary["bases"]) == ["interaction"]
    assert summary["modules"]["leiden"]["n_modules"] == 2
    assert summary["modules"]["spectral"]["n_modules"] == 2
    page = (tmp_path / "out" / "report.html").read_text()
    assert '["spectral","leiden"]' in page  # the partition menu starts at --method
    assert main(args + ["--out", str(tmp_path / "o2"), "--threads", "0"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.integration  # slow: the unit tier stays fast
def test_formats_partitions_in_networkx_and_igraph_and_a_versioned_summary(mlp, tmp_path):
    import importlib.resources

    net, x = mlp
    a = mg.analyze(net, x, rotation="none", progress=False)
    r = mg.find_modules(a.graph, n_modules=2)
    g = a.graph.to_networkx(modules={"leiden": r.membership})
    assert {type(d["module_leiden"]) for _, d in g.nodes(data=True)} == {int}
    ig = a.graph.to_igraph(modules={"leiden": r.membership})
    assert {type(v) for v in ig.vs["module_leiden"]} == {int}
    summary = mg.write_report(a, tmp_path / "out", n_null=3)
    assert summary["format_version"] == mg.report.SUMMARY_VERSION == 1
    assert importlib.resources.files("modgraph").joinpath("py.typed").is_file()


def _long_names_graph():
    import numpy as np

    rng = np.random.default_rng(0)
    names = tuple(["hook_embed"] + [f"blocks.{i}.hook_resid_post" for i in range(6)] + ["unembed"])
    w = tuple(np.abs(rng.normal(size=(6, 6))) * (rng.random((6, 6)) < 0.4) for _ in names[1:])
    return mg.InteractionGraph(names, tuple(np.ones(6) for _ in names), w, eps=1e-2)


def test_figures_read_at_the_size_a_user_sees_them(mlp):
    """Layer names do not run together; counts agree with their nouns; each verdict once."""
    g = _long_names_graph()
    ax = mg.plot_graph(g, mg.find_modules(g, n_modules=1))
    boxes = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()]
    assert len(boxes) == 8 and all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))
    assert "1 module (" in ax.get_title() and "1 modules" not in ax.get_title()

    net, x = mlp
    a = mg.analyze(net, x, progress=False)
    found = [mg.find_modules(a.graph, method=m, n_null=4) for m in ("leiden", "spectral")]
    curves = {r.method: mg.partition.CostCurve.from_scan(r) for r in found if r.info.get("scan")}
    ax = mg.plot_cost_curve(curves or mg.cost_curve(a.graph, n_null=3), chosen=found)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    for r in found:
        assert sum(r.verdict in t.replace("\n", " ") for t in texts) <= 1, texts
    fig = mg.plot_spectra(a)
    titles = " ".join(x.get_title() for x in fig.axes)
    assert "of G dropped" not in titles and "directions kept" in titles


@pytest.mark.integration  # slow: the unit tier stays fast
def test_flat_images_are_shown_as_images_given_their_shape(tmp_path, capsys):
    from sklearn.datasets import load_digits

    from modgraph.cli import main

    torch.manual_seed(0)
    x = torch.tensor(load_digits().data[:300] / 16.0, dtype=torch.float32)  # flat: (300, 64)
    net = nn.Sequential(nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 4)).eval()
    torch.save(net, tmp_path / "model.pt")
    torch.save(x, tmp_path / "x.pt")
    args = ["analyze", str(tmp_path / "model.pt"), str(tmp_path / "x.pt"), "--no-baselines",
            "--n-null", "3", "--quiet"]  # fmt: skip
    assert main(args + ["--out", str(tmp_path / "flat")]) == 0
    assert main(args + ["--out", str(tmp_path / "img"), "--sample-shape", "8,8"]) == 0
    flat = (tmp_path / "flat" / "report.html").read_text()
    img = (tmp_path / "img" / "report.html").read_text()
    thumbs = "data:image/png;base64,"  # (bokeh's own bundle holds a few)
    assert img.count(thumbs) > flat.count(thumbs) + 10
    with pytest.raises(SystemExit):
        main(args + ["--out", str(tmp_path / "bad"), "--sample-shape", "8,x"])
    assert "expected positive ints such as 8,8" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "bad"), "--sample-shape", "7,7"]) == 2
    assert "sample_shape (7, 7) holds 49 values but each sample has 64" in capsys.readouterr().err

"""Tests of the report figures: each returns a labelled Figure that draws what the graph holds."""

import io
import json
import math
import warnings
from dataclasses import fields

import matplotlib
import numpy as np
import pytest
import torch
from conftest import mlp
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure

import modgraph as mg
from modgraph.errors import InputError
from modgraph.partition import cost_curve, module_interactions
from modgraph.plotting import (
    plot_basis_comparison,
    plot_cost_curve,
    plot_graph,
    plot_module_heatmap,
    plot_spectra,
    save_figure,
)
from modgraph.plotting.style import MAX_LEGEND_MODULES
from modgraph.report import SUMMARY_SCHEMA

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def analyses():
    torch.manual_seed(0)
    net = mlp(6, 12, 12, 4)
    x = torch.randn(500, 6, dtype=torch.float64)
    return {
        basis: mg.analyze(net, x, eps=1e-4, basis=basis, progress=False)
        for basis in ("neuron", "pca", "interaction")
    }


@pytest.fixture(scope="module")
def a(analyses):
    return analyses["interaction"]


@pytest.fixture(scope="module")
def modules(a):
    return mg.find_modules(a.graph, method="spectral", n_modules=3)


def check_labelled(fig):
    assert isinstance(fig, Figure)
    assert fig.axes
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), ax


# ---------------------------------------------------------------------------- graph
def drawn_nodes(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def drawn_edges(ax) -> int:
    return sum(len(c.get_segments()) for c in ax.collections if isinstance(c, LineCollection))


def test_plot_graph_draws_every_node_and_edge(a, modules):
    g = a.graph
    ax = plot_graph(a, modules)
    check_labelled(ax.figure)
    assert drawn_nodes(ax) == g.n_nodes
    assert drawn_edges(ax) == g.n_edges > 0
    assert f"all {g.n_edges} edges" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == list(g.layer_names)


def test_plot_graph_caps_edges_at_the_strongest(a):
    g = a.graph
    ax = plot_graph(g, max_edges=5)  # a bare graph works too
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lines.get_segments()) == 5
    assert f"strongest 5 of {g.n_edges}" in ax.get_title()
    # the drawn edges are the five strongest: their widths are the five largest
    widths = np.sort(lines.get_linewidths())
    s = np.sort(g.edges.strength)[-5:]
    np.testing.assert_allclose(widths, 0.3 + 2.7 * s / s[-1])


def test_plot_graph_nodes_are_placed_by_layer_then_module_then_importance(a, modules):
    g = a.graph
    ax = plot_graph(a, modules)
    labels = np.where(g.connected_nodes, modules.membership_array, -1)
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    present = np.unique(labels)  # one scatter per module, in label order, nodes in node order
    assert len(scatters) == len(present) >= 2
    xy = np.empty((g.n_nodes, 2))
    for m, sc in zip(present, scatters):
        xy[labels == m] = sc.get_offsets()
    np.testing.assert_array_equal(xy[:, 0], g.node_layer)
    for l in range(len(g.layer_sizes)):
        idx = np.flatnonzero(g.node_layer == l)
        key = np.where(labels[idx] == -1, np.iinfo(np.int64).max, labels[idx])
        want = idx[np.lexsort((-g.node_importance[idx], key))]
        assert np.all(np.diff(xy[want, 1]) < 0)  # top to bottom in that order


def test_plot_graph_legend_is_capped(a):
    n = min(a.graph.connected_nodes.sum(), MAX_LEGEND_MODULES + 3)
    many = mg.find_modules(a.graph, method="spectral", n_modules=int(n))
    ax = plot_graph(a, many)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    module_entries = [t for t in texts if t.startswith("module ")]
    assert len(module_entries) == min(many.n_modules, MAX_LEGEND_MODULES)
    if many.n_modules > MAX_LEGEND_MODULES:
        assert any(t.startswith("+ ") for t in texts)
    # largest first, as the CLI and summary.json list the sizes
    sizes = [int(t.split("(")[1].split()[0]) for t in module_entries]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes == sorted((len(m) for m in many.modules), reverse=True)[: len(sizes)]


def test_plot_graph_into_given_axes(a):
    fig = Figure()
    ax = fig.subplots()
    assert plot_graph(a, ax=ax) is ax and ax.figure is fig
    assert drawn_nodes(ax) == a.graph.n_nodes


# ---------------------------------------------------------------------------- spectra
def test_plot_spectra_one_panel_per_layer_with_thresholds(a):
    fig = plot_spectra(a)
    check_labelled(fig)
    assert len(fig.axes) == len(a.layers)
    for ax, layer in zip(fig.axes, a.layers):
        assert ax.get_yscale() == "log"
        assert layer.name in ax.get_title()
        ys = [line.get_ydata()[0] for line in ax.get_lines() if len(line.get_xdata()) == 2]
        rtol = a.config["rtol"]
        assert any(math.isclose(y, rtol * float(layer.gram_spectrum[0])) for y in ys)
        if len(layer.lambda_spectrum):
            assert any(math.isclose(y, a.eps) for y in ys)


def test_plot_spectra_shows_zero_eigenvalues_on_a_floor(a):
    # layer "3" feeds a 4-d output linearly: the whitened M has rank 4 of 12, zeros clamped.
    fig = plot_spectra(a)
    n_zero = sum(int((layer.lambda_spectrum <= 0).sum()) for layer in a.layers)
    titles = " ".join(ax.get_title() for ax in fig.axes)
    if n_zero:
        assert "zero, at the bottom" in titles
    # one floor for every panel, a decade below the lowest threshold: no axis down to 1e-48
    bottoms = {ax.get_ylim()[0] for ax in fig.axes}
    assert len(bottoms) == 1
    lowest = min(1e-10 * float(layer.gram_spectrum[0]) for layer in a.layers)
    assert lowest / 1e3 <= bottoms.pop() <= lowest
    for ax, layer in zip(fig.axes, a.layers):
        # every eigenvalue is drawn at a finite, positive height
        n_points = sum(
            int(np.sum(np.asarray(line.get_ydata()) > 0))
            for line in ax.get_lines()
            if line.get_linestyle() == "None"
        )
        assert n_points == len(layer.gram_spectrum) + len(layer.lambda_spectrum)


# ---------------------------------------------------------------------------- cost curve
def test_plot_cost_curve_with_null_band(a):
    cs = cost_curve(a.graph, method="spectral", ks=range(1, 5), n_null=4)
    cl = cost_curve(a.graph, method="leiden", ks=range(1, 5), n_null=4)
    auto = mg.find_modules(a.graph, method="spectral", n_null=5)
    ax = plot_cost_curve({"spectral": cs, "Leiden": cl}, chosen=auto)
    check_labelled(ax.figure)
    texts = [" ".join(t.get_text().split()) for t in ax.get_legend().get_texts()]  # wrapped
    assert any(auto.verdict in t for t in texts) and sum("null graphs" in t for t in texts) == 2
    band = [c for c in ax.collections if not isinstance(c, LineCollection)][0]
    y = band.get_paths()[0].vertices[:, 1]
    mean, sd = cs.null_mean[1:], cs.null_std[1:]  # k = 1 has no band (every partition scores 0)
    low = np.maximum(mean - 2 * sd, 0.25 * mean)
    np.testing.assert_allclose([y.min(), y.max()], [low.min(), (mean + 2 * sd).max()])
    found = [l for l in ax.get_lines() if l.get_label() == "spectral: found"][0]
    np.testing.assert_allclose(found.get_ydata(), cs.ncut[cs.ncut > 0])  # a log axis
    assert ax.get_yscale() == "log"


def test_plot_cost_curve_keeps_a_long_verdict_inside_the_figure(a):
    """A verdict with its caution is ~150 characters: on one legend line it was wider than the
    figure, and constrained layout collapsed the axes (the demo's cost curve, session 7)."""
    cs = cost_curve(a.graph, method="spectral", ks=range(1, 4), n_null=2)
    auto = mg.find_modules(a.graph, method="spectral", n_null=2)

    class Long(type(auto)):
        verdict = ("3 modules, significant: p = 0.00041 (alpha = 0.05, Bonferroni over 9 k; also "
                   "significant: k = 2); caution: 1.8 edges per node, and below 3 the test is not "
                   "calibrated")  # fmt: skip

    long = Long(**{f.name: getattr(auto, f.name) for f in fields(auto)})
    ax = plot_cost_curve(cs, chosen=[long, long])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "constrained_layout not applied ..."
        ax.figure.savefig(io.BytesIO(), format="png")
    box, page = ax.get_legend().get_window_extent(), ax.figure.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0
    assert ax.get_position().width > 0.5 and ax.get_position().height > 0.3


def test_plot_cost_curve_rejects_bad_input(a):
    cs = cost_curve(a.graph, method="spectral", ks=range(1, 4), n_null=0)
    with pytest.raises(InputError, match="curves"):
        plot_cost_curve([])
    with pytest.raises(InputError, match="curves"):
        plot_cost_curve([cs, "spectral"])
    with pytest.raises(InputError, match="chosen"):
        plot_cost_curve(cs, chosen="leiden")


# ---------------------------------------------------------------------------- heatmap
def test_module_interactions_equal_brute_force(a, modules):
    g = a.graph
    labels = modules.membership_array
    blocks = module_interactions(a, modules)
    assert len(blocks) == len(g.layer_sizes) - 1
    total = 0.0
    for l, (rows, cols, S) in enumerate(blocks):
        for ai, r in enumerate(rows):
            for bi, c in enumerate(cols):
                want = sum(
                    s
                    for src, dst, s in zip(g.edges.src, g.edges.dst, g.edges.strength)
                    if g.node_layer[src] == l and labels[src] == r and labels[dst] == c
                )
                assert math.isclose(S[ai, bi], want, rel_tol=1e-12, abs_tol=1e-12)
        total += S.sum()
    assert math.isclose(total, g.edges.strength.sum(), rel_tol=1e-12)


def test_plot_module_heatmap_draws_those_sums(a, modules):
    fig = plot_module_heatmap(a, modules)
    check_labelled(fig)
    blocks = module_interactions(a, modules)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == len(blocks)
    for ax, (_, _, S) in zip(panels, blocks):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), S)
    (cbar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert "ln(w/eps" in cbar.get_ylabel()


# ---------------------------------------------------------------------------- comparison
def test_plot_basis_comparison_bars_are_graph_counts(analyses):
    mods = {k: mg.find_modules(v.graph) for k, v in analyses.items()}
    fig = plot_basis_comparison(analyses, modules=mods)
    check_labelled(fig)
    assert len(fig.axes) == 3
    heights = [[p.get_height() for p in ax.patches] for ax in fig.axes]
    assert heights[0] == [v.graph.n_edges for v in analyses.values()]
    np.testing.assert_allclose(
        heights[1], [v.graph.edges.strength.sum() for v in analyses.values()]
    )
    np.testing.assert_allclose(heights[2], [m.cost for m in mods.values()])
    assert len(plot_basis_comparison(analyses).axes) == 2


def test_plot_basis_comparison_rejects_bad_input(analyses, a, modules):
    with pytest.raises(
        InputError, match="'analyses' parameter of plot_basis_comparison must be a non-empty dict"
    ):
        plot_basis_comparison({})
    with pytest.raises(InputError, match="analyses"):
        plot_basis_comparison([a])
    with pytest.raises(InputError, match=r"analyses\['x'\]"):
        plot_basis_comparison({"x": a.graph})
    with pytest.raises(InputError, match="not in analyses"):
        plot_basis_comparison(analyses, modules={"other": modules})
    # a partition of the interaction graph does not fit the neuron basis' graph
    with pytest.raises(InputError, match=r"modules\['neuron'\]"):
        plot_basis_comparison(analyses, modules={"neuron": modules})


# ---------------------------------------------------------------------------- input checks
def test_modules_for_a_different_graph_are_rejected(a, analyses, modules):
    with pytest.raises(InputError, match="modules does not match"):
        plot_graph(analyses["neuron"], modules)
    # same node ids, different edges (another eps): caught through the partition's cost
    other = a.with_eps(1e-2)
    assert other.graph.nodes == a.graph.nodes
    with pytest.raises(InputError, match="different graph"):
        plot_module_heatmap(other, modules)
    with pytest.raises(InputError, match="modules"):
        plot_module_heatmap(a, [0, 1])
    with pytest.raises(InputError, match="analysis_or_graph"):
        plot_graph("graph")
    with pytest.raises(InputError, match="analysis"):
        plot_spectra(a.graph)
    with pytest.raises(InputError, match="max_edges"):
        plot_graph(a, max_edges=-1)
    with pytest.raises(InputError, match="ax"):
        plot_spectra(a, ax=Figure().subplots())


# ---------------------------------------------------------------------------- saving
def test_save_figure_writes_every_format_atomically(tmp_path, a):
    fig = plot_graph(a).figure
    paths = save_figure(fig, tmp_path / "sub" / "graph.v2")
    assert [p.name for p in paths] == ["graph.v2.png", "graph.v2.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in paths[1].read_bytes()[:500]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["graph.v2.png", "graph.v2.svg"]


def test_save_figure_rejects_bad_input_and_leaves_no_temp_file(tmp_path, a):
    fig = plot_graph(a).figure
    with pytest.raises(InputError, match="formats"):
        save_figure(fig, tmp_path / "x", formats=("png", "docx"))
    with pytest.raises(InputError, match="formats"):
        save_figure(fig, tmp_path / "x", formats=())
    with pytest.raises(InputError, match="fig"):
        save_figure("figure", tmp_path / "x")

    class Boom(RuntimeError):
        pass

    def fail(*args, **kwargs):
        raise Boom

    fig.savefig = fail  # a failure mid-write must not leave a temporary file behind
    with pytest.raises(Boom):
        save_figure(fig, tmp_path / "y")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- write_report
def check_schema(summary: dict) -> None:
    """``summary`` follows modgraph/summary.schema.json (which forbids undocumented keys)."""
    import jsonschema

    schema = json.loads(SUMMARY_SCHEMA.read_text())
    jsonschema.validate(summary, schema)
    undocumented = {**summary, "modules": {**summary["modules"], "new_key": 1}}
    with pytest.raises(jsonschema.ValidationError, match="new_key"):
        jsonschema.validate(undocumented, schema)


@pytest.mark.integration  # slow: the unit tier stays fast
def test_write_report_from_the_api(tmp_path, analyses, a, caplog):
    baselines = {"neuron": analyses["neuron"], "pca": analyses["pca"]}
    with caplog.at_level("INFO", logger="modgraph"):
        summary = mg.write_report(a, tmp_path / "out", baselines=baselines, n_null=3)
    out = tmp_path / "out"
    check_schema(summary)
    assert sorted(p.name for p in out.iterdir()) == summary["files"]
    assert json.loads((out / "summary.json").read_text())["modules"] == summary["modules"]
    assert summary["graph"]["edges"] == a.graph.n_edges
    assert set(summary["bases"]) == {"interaction", "neuron", "pca"}
    assert summary["modules"]["n_null"] == 3
    leiden = mg.find_modules(a.graph, method="leiden", seed=0, n_null=3)
    m = summary["modules"]["leiden"]
    assert m["membership"] == leiden.membership and m["verdict"] == leiden.verdict
    auto = mg.find_modules(a.graph, seed=0, n_null=3)  # method "auto": the map equation here
    assert summary["modules"]["primary"] == auto.method == "infomap"
    assert summary["modules"]["verdict"] == auto.verdict
    assert summary["modules"]["infomap"]["membership"] == auto.membership
    assert [t["k"] for t in m["scan"]] == list(range(2, 2 + len(m["scan"])))
    assert "finding modules" in caplog.text
    assert mg.load_analysis(out / "analysis").graph.n_edges == a.graph.n_edges
    # a number of modules of one's own: Leiden's modules first ("auto"), refused with infomap
    given = mg.write_report(a, tmp_path / "k2", n_null=3, n_modules=2)
    assert given["modules"]["primary"] == "leiden" and "infomap" not in given["modules"]
    with pytest.raises(InputError, match="'n_modules' parameter of write_report must be None "
                       "with method='infomap'"):  # fmt: skip
        mg.write_report(a, tmp_path / "bad", method="infomap", n_modules=2)
    assert not (tmp_path / "bad").exists()
    # a file in the way: refused before anything is written
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="out .*file.* exists and is not a directory"):
        mg.write_report(a, tmp_path / "file")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_heatmap_cut_of_a_perfect_partition_is_exactly_zero():
    w = np.kron(np.eye(2), np.array([[0.3, 7.1], [2.9, 0.7]]))  # two blocks, odd strengths
    g = mg.InteractionGraph(("a", "b"), (np.ones(4), np.ones(4)), (w,), eps=1e-2)
    fig = plot_module_heatmap(g, {"0:0": 0, "0:1": 0, "1:0": 0, "1:1": 0, "0:2": 1, "0:3": 1,
                                  "1:2": 1, "1:3": 1})  # fmt: skip
    (panel,) = [ax for ax in fig.axes if ax.images]
    assert panel.get_title().endswith("(cut 0)")

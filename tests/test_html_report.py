"""report.html: self-contained, and it responds in a real browser (headless Chromium).

The browser tests need Debian's chromium (``apt-get install chromium``; `.ci/run` installs it) and
the playwright package; without them they are skipped, except under CI (``CI`` set), where a
missing browser is a failure.
"""

import base64
import io
import json
import math
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

import modgraph as mg
from modgraph.plotting import samples as views

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def digits_report(tmp_path_factory):
    """An MLP on 8x8 digit images (2-D samples: thumbnails), reported with data and model."""
    torch.manual_seed(0)
    x = torch.tensor(load_digits().images[:400] / 16.0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 4))
    net = net.double().eval()
    a = mg.analyze(net, x, progress=False)
    out = tmp_path_factory.mktemp("rep") / "out"
    summary = mg.write_report(a, out, n_null=3, data=x, model=net)
    return a, out, summary


@pytest.mark.integration  # slow: the unit tier stays fast
def test_the_page_is_one_file_that_needs_no_network(digits_report):
    a, out, summary = digits_report
    assert "report.html" in summary["files"]
    text = (out / "report.html").read_text()
    assert not re.search(r"<script[^>]+src=", text)  # every script inline
    assert not re.search(r"""<(link|img)[^>]+(src|href)=["']https?://""", text)
    # (bokeh's bundle names MathJax's CDN, fetched only for LaTeX labels: the browser test
    # checks that the page asks the network for nothing)
    assert text.count("data:image/png;base64,") > 10  # thumbnails of the top samples
    assert "report_html" in summary["timings"]


def test_sample_views():
    img = np.arange(12.0).reshape(3, 4)
    assert views.sample_kind(img) == "image"
    assert views.sample_kind(np.zeros((3, 8, 8))) == "image"
    assert views.sample_kind(np.arange(5)) == "tokens"
    assert views.sample_kind(np.zeros(7)) == "vector"
    png = re.search(r"base64,([^\"]+)", views.sample_html(img, "image")).group(1)
    thumb = Image.open(io.BytesIO(base64.b64decode(png)))
    assert thumb.size == (4, 3) and thumb.getpixel((3, 2)) == 255 and thumb.getpixel((0, 0)) == 0
    text = views.sample_html(np.arange(20), "tokens", 12, decode=lambda t: f"<t{t}>")
    assert text.startswith("... &lt;t4&gt;") and "<b>&lt;t12&gt;</b>" in text  # escaped
    assert views.sample_html(np.array([0.1, -3.0, 2.0]), "vector") == "x[1]=-3, x[2]=2, x[0]=0.1"


def test_edges_beyond_the_page_limit_are_left_out_with_a_note(digits_report):
    a, _, _ = digits_report
    parts = {"leiden": mg.find_modules(a.graph, method="leiden", n_modules=2)}
    doc = mg.plotting.interactive_report(a, parts, max_edges=10)
    store = doc.get_model_by_name("all_edges").data
    assert len(store["w"]) == 10 and np.all(np.diff(store["w"]) <= 0)
    assert "10 strongest of" in doc.get_model_by_name("header").text


def _browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium for the report test (apt-get install chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    return sync_api.sync_playwright()


def _model(page, name, attr="data"):
    return page.evaluate(f"Bokeh.documents[0].get_model_by_name('{name}').{attr}")


@pytest.mark.integration
def test_the_page_loads_and_responds_in_chromium(digits_report):
    a, out, summary = digits_report
    g = a.graph
    with _browser() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])  # fmt: skip
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        errors, requests = [], []
        page.on("request", lambda r: None if r.url.startswith("file:") else requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "report.html").as_uri())
        ready = "window.Bokeh && Bokeh.documents.length && "
        page.wait_for_function(ready + "Bokeh.documents[0].get_model_by_name('count').text")
        assert len(_model(page, "nodes")["x"]) == g.n_nodes
        assert len(_model(page, "edges")["x0"]) == g.n_edges  # at the analysis' eps

        # eps slider: 10x eps shows exactly the edges the graph has at 10x eps
        log_eps = math.log10(a.eps) + 1
        page.evaluate(f"Bokeh.documents[0].get_model_by_name('eps').value = {log_eps}")
        assert len(_model(page, "edges")["x0"]) == a.with_eps(10**log_eps).graph.n_edges
        page.evaluate(f"Bokeh.documents[0].get_model_by_name('eps').value = {math.log10(a.eps)}")

        # a module selected in the table of the page's first partition (the primary method's):
        # its members stay, the rest fade
        primary = summary["modules"]["primary"]
        first = summary["modules"][primary]["membership"]
        table = _model(page, f"modules_{primary}")
        page.evaluate(f"Bokeh.documents[0].get_model_by_name('modules_{primary}')"
                      ".selected.indices = [0]")  # fmt: skip
        chosen = table["module"][0]
        alpha = _model(page, "nodes")["alpha"]
        for node, a_node in zip(g.nodes, alpha):
            assert a_node == (1.0 if first[node] == chosen else 0.15), node
        info = _model(page, "info", "text")
        assert f"module {chosen} ({primary}): {table['size'][0]} directions" in info
        assert "samples that drive it most" in info and "<img" in info
        page.evaluate(f"Bokeh.documents[0].get_model_by_name('modules_{primary}')"
                      ".selected.indices = []")  # fmt: skip

        # a node clicked: its edges, outputs and examples (thumbnails)
        hub = int(np.argmax(np.bincount(np.r_[g.edges.src, g.edges.dst], minlength=g.n_nodes)))
        page.evaluate(f"Bokeh.documents[0].get_model_by_name('nodes').selected.indices=[{hub}]")
        info = _model(page, "info", "text")
        assert f"node {g.nodes[hub]}" in info and "strongest in-edges" in info
        assert "drives outputs" in info and info.count("<img") >= 8
        assert "{{s:" not in info  # every sample placeholder filled

        # the partition menu shows that partition's table
        page.evaluate("Bokeh.documents[0].get_model_by_name('partition').value = 'spectral'")
        assert _model(page, "table_spectral", "visible") and not _model(
            page, f"table_{primary}", "visible")  # fmt: skip
        browser.close()
    assert errors == [] and requests == []


HOSTILE = '<img src=x onerror="window.__pwned=1">'

# The DataTable headers whose title is wider than its column (they live in shadow roots).
_CUT_HEADERS = """(() => {
  const out = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.classList && el.classList.contains('slick-column-name')
          && el.scrollWidth > el.parentElement.clientWidth + 1) out.push(el.textContent);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return out;
})()"""


@pytest.mark.integration
def test_names_from_a_shared_analysis_run_no_script(digits_report, tmp_path):
    """Layer names from a model or a shared analysis' meta.json are shown as text in every
    view: no script runs when a node or a module is clicked (issue #34)."""
    a, _, _ = digits_report
    path = a.save(tmp_path / "shared")
    meta = json.loads((path / "meta.json").read_text())
    for i, layer in enumerate(meta["layers"]):
        layer["name"] = f"{HOSTILE}{i}"
    (path / "meta.json").write_text(json.dumps(meta))
    hostile = mg.load_analysis(path)
    out = tmp_path / "rep"
    mg.write_report(hostile, out, n_null=3)
    g = hostile.graph
    with _browser() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])  # fmt: skip
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto((out / "report.html").as_uri())
        ready = "window.Bokeh && Bokeh.documents.length && "
        page.wait_for_function(ready + "Bokeh.documents[0].get_model_by_name('count').text")
        hub = int(np.argmax(np.bincount(np.r_[g.edges.src, g.edges.dst], minlength=g.n_nodes)))
        shown = []
        for select in (
            f"get_model_by_name('nodes').selected.indices = [{hub}]",
            "get_model_by_name('nodes').selected.indices = []",
            "get_model_by_name('modules_infomap').selected.indices = [0]",
        ):
            page.evaluate("Bokeh.documents[0]." + select)
            page.wait_for_timeout(200)  # let the browser load (and fire) any injected image
            shown.append(_model(page, "info", "text"))
        assert all("&lt;img src=x" in text for text in shown[::2]), shown
        assert page.evaluate("window.__pwned") is None
        assert page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
        browser.close()


@pytest.mark.integration
def test_the_page_as_a_new_user_meets_it(digits_report):
    """A module row clicked after a node shows the module; the details are in view; no table
    column is cut; nodes can be found, pinned several at a time and exported (issue #37)."""
    a, out, summary = digits_report
    g = a.graph
    with _browser() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])  # fmt: skip
        page = browser.new_page(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "report.html").as_uri())
        ready = "window.Bokeh && Bokeh.documents.length && "
        page.wait_for_function(ready + "Bokeh.documents[0].get_model_by_name('count').text")
        doc = "Bokeh.documents[0].get_model_by_name"
        page.evaluate(f"{doc}('nodes').selected.indices = [0]")
        assert summary["modules"]["primary"] == "infomap"  # the page's first partition
        page.evaluate(f"{doc}('modules_infomap').selected.indices = [0]")
        info = _model(page, "info", "text")
        assert info.startswith('<h3 style="margin:4px 0">module '), info[:80]
        assert _model(page, "nodes", "selected.indices") == []
        # the details box starts within the first screen
        title = re.compile(r"^module \d+ \(infomap\): \d+ directions")
        box = page.get_by_text(title).bounding_box()
        assert box is not None and box["y"] + box["height"] < 1000, box
        # table headers: every title fits its column
        assert page.evaluate(_CUT_HEADERS) == []
        # find: a layer name selects its nodes; ids pin several
        page.evaluate(f"{doc}('find').value = '{g.nodes[0]}, {g.nodes[1]}'")
        assert sorted(_model(page, "nodes", "selected.indices")) == [0, 1]
        assert "2 nodes pinned" in _model(page, "info", "text")
        with page.expect_download() as dl:
            page.get_by_role("button", name="export the selection (JSON)").click()
        exported = json.loads(open(dl.value.path()).read())
        assert [n["id"] for n in exported["nodes"]] == list(g.nodes[:2])
        assert exported["partition"] == "infomap" and exported["eps"] == a.eps
        page.evaluate(f"{doc}('find').value = 'module 0'")
        members = [i for i, m in enumerate(summary["modules"]["infomap"]["membership"].values())
                   if m == 0]  # fmt: skip
        assert sorted(_model(page, "nodes", "selected.indices")) == members
        browser.close()
    assert errors == []

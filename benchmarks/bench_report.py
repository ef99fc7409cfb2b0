"""Benchmark: report.html at the size the issue names, ~2,000 directions and ~50,000 edges.

A synthetic analysis (5 layers of 400 directions, log-normal interaction strengths, 8 planted
blocks so that the modules are real) is partitioned at k = 8 (Leiden and spectral, untested:
this measures the page, not the module search) and written as report.html. Then, in headless
Chromium (Debian's ``chromium``, the ``playwright`` package): the time until the page is drawn,
and the time of one redraw after moving the eps slider, after selecting a module and after
clicking a node (the one ``CustomJS`` callback, up to the second animation frame after it: the
canvas drawn), each the median of 5 that each change the state, measured in the page with
``performance.now()``. Printed
with the page's size and the time to build it, and, as the baseline of the same run, the time
Chromium takes to load and draw a page with one edge.

Run: ``python benchmarks/bench_report.py [--layers 5] [--width 400] [--edges 50000]``
(about 30 s). Measured on a 2-core machine without a GPU (WebGL in software): drawn after 2.6 s
(1.6x the baseline), every redraw 0.9-1.2 s at 50,000 edges, 0.4 s at 10,000, 0.2 s at 2,000,
26-30 ms for the baseline.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import modgraph as mg
from modgraph.basis import LayerBasis
from modgraph.statistics import LayerStatistics


def synthetic(n_layers: int, width: int, n_edges: int, seed: int = 0) -> mg.Analysis:
    rng = np.random.default_rng(seed)
    blocks = np.arange(width) * 8 // width
    layers, w = [], []
    for l in range(n_layers):
        lam = torch.tensor(np.sort(rng.lognormal(0, 1, width))[::-1].copy())
        eye = torch.eye(width, dtype=torch.float64)
        layers.append(LayerBasis(f"layer{l}", l, eye, eye, torch.zeros(width), lam, lam, lam))
    per_pair = n_edges // (n_layers - 1)
    for _ in range(n_layers - 1):
        same = blocks[:, None] == blocks[None, :]
        scale = np.where(same, 1.0, 0.05)
        m = rng.lognormal(-2, 1, (width, width)) * scale
        cut = np.sort(m, axis=None)[-per_pair]  # about per_pair edges above the threshold
        w.append(torch.tensor(np.where(m >= cut, m, 0.0)))
    eps = float(np.min([x[x > 0].min() for x in w])) ** 2 * 0.999
    stats = tuple(LayerStatistics(1000, torch.zeros(width), torch.eye(width)) for _ in layers)
    return mg.Analysis(tuple(layers), tuple(w), stats, eps)


def timed_page(browser, path: Path) -> dict:
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    t0 = time.perf_counter()
    page.goto(path.as_uri())
    model = "Bokeh.documents[0].get_model_by_name"
    page.wait_for_function(f"window.Bokeh && Bokeh.documents.length && {model}('count').text",
                           timeout=300_000)  # fmt: skip
    out = {"load_s": time.perf_counter() - t0, "errors": errors}
    n = page.evaluate(f"{model}('nodes').data.x.length")
    # each run changes the state (a repeated selection is a no-op bokeh does not redraw)
    actions = {
        "slider": lambda i: f"{model}('eps').value = {model}('eps').value + {(-1) ** i * 0.05}",
        "module": lambda i: (
            f"{model}('modules_leiden').selected.indices = "
            f"[Math.min({i % 2}, {model}('modules_leiden').data.module.length - 1)]"
        ),
        "node": lambda i: f"{model}('nodes').selected.indices = [{min(3 + i % 2, n - 1)}]",
    }
    for name, js in actions.items():
        # the callback, then two animation frames: the canvas has been drawn
        runs = [page.evaluate(f"(async () => {{ const t = performance.now(); {js(i)}; "
                              "await new Promise(r => requestAnimationFrame(() => "
                              "requestAnimationFrame(r))); return performance.now() - t; })()")
                for i in range(1, 6)]  # fmt: skip
        out[name + "_ms"] = float(np.median(runs))
    page.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--width", type=int, default=400)
    p.add_argument("--edges", type=int, default=50_000)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    a = synthetic(args.layers, args.width, args.edges)
    small = synthetic(2, 1, 1)
    g = a.graph
    with tempfile.TemporaryDirectory() as tmp:
        pages = {}
        for name, x in (("baseline (1 edge)", small), ("large", a)):
            t0 = time.perf_counter()
            parts = {m: mg.find_modules(x.graph, method=m, n_modules=min(8, x.graph.n_nodes - 1)
                                        or 1) for m in ("leiden", "spectral")}  # fmt: skip
            t_modules = time.perf_counter() - t0
            t0 = time.perf_counter()
            doc = mg.plotting.interactive_report(x, parts)
            path = mg.plotting.save_html(doc, Path(tmp) / f"{len(pages)}.html")
            pages[name] = (path, t_modules, time.perf_counter() - t0)
        print(f"large graph: {g.n_nodes} nodes, {g.n_edges} edges")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking"])  # fmt: skip
            timings = {name: timed_page(browser, path) for name, (path, _, _) in pages.items()}
            browser.close()
        base = timings["baseline (1 edge)"]["load_s"]
        for name, (path, t_mod, t_build) in pages.items():
            t = timings[name]
            print(f"{name}: {path.stat().st_size / 2**20:.1f} MiB, partitions {t_mod:.1f} s, "
                  f"page built in {t_build:.1f} s; in Chromium: drawn after {t['load_s']:.2f} s "
                  f"({t['load_s'] / base:.1f}x the baseline), redraw after slider "
                  f"{t['slider_ms']:.0f} ms, module {t['module_ms']:.0f} ms, node "
                  f"{t['node_ms']:.0f} ms; page errors {t['errors']}")  # fmt: skip


if __name__ == "__main__":
    main()

"""Regenerate figures/demo/: the built-in demo's figures, summary, graph and interactive report.

Run: ``python examples/demo_figures.py`` (about the time of ``modgraph demo``).
Keeps the PNGs, summary.json, the GraphML and report.html (report.html is not tracked: 2 MB,
regenerated here; SVGs, the saved analysis and the
manifest are left out of the repository to keep it small; ``modgraph demo --out DIR`` writes
them), and takes ``report.png``: a screenshot of report.html in headless Chromium (Debian's
``chromium`` and the ``playwright`` package) with the most connected direction clicked.
"""

import shutil
import tempfile
from pathlib import Path

import numpy as np

import modgraph as mg
from modgraph.atomic import MANIFEST
from modgraph.cli import main

OUT = Path(__file__).resolve().parent.parent / "figures" / "demo"


def screenshot(html: Path, png: Path, node: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(html.as_uri())
        model = "Bokeh.documents[0].get_model_by_name"
        page.wait_for_function(f"window.Bokeh && Bokeh.documents.length && {model}('count').text")
        page.evaluate(f"{model}('nodes').selected.indices = [{node}]")
        page.wait_for_timeout(500)
        page.screenshot(path=str(png), full_page=True)
        browser.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        if main(["demo", "--out", tmp, "--quiet"]) != 0:
            raise SystemExit(1)
        OUT.mkdir(parents=True, exist_ok=True)
        for f in Path(tmp).iterdir():
            if f.suffix in (".png", ".json", ".graphml", ".html") and f.name != MANIFEST:
                shutil.copy(f, OUT / f.name)
        g = mg.load_analysis(Path(tmp) / "analysis").graph
        hub = int(np.argmax(np.bincount(np.r_[g.edges.src, g.edges.dst], minlength=g.n_nodes)))
        screenshot(OUT / "report.html", OUT / "report.png", hub)
    print(f"figures written to {OUT}")

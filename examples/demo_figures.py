"""Regenerate figures/demo/: the built-in demo's figures, summary and graph.

Run: ``python examples/demo_figures.py`` (about the time of ``modgraph demo``).
Keeps the PNGs, summary.json and the GraphML (SVGs and the saved analysis are left out of the
repository to keep it small; ``modgraph demo --out DIR`` writes them).
"""

import shutil
import tempfile
from pathlib import Path

from modgraph.cli import main

OUT = Path(__file__).resolve().parent.parent / "figures" / "demo"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        if main(["demo", "--out", tmp, "--quiet"]) != 0:
            raise SystemExit(1)
        OUT.mkdir(parents=True, exist_ok=True)
        for f in Path(tmp).iterdir():
            if f.suffix in (".png", ".json", ".graphml"):
                shutil.copy(f, OUT / f.name)
    print(f"figures written to {OUT}")

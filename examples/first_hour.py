"""A new user's first hour: from a trained, saved model to a report, through the CLI and the API.

An MLP is trained on scikit-learn's bundled 8x8 digits (seconds), saved the safe way (its
state_dict, and a function here that builds it), and analysed twice:

1. the CLI: ``modgraph analyze first_hour:build x.pt --weights weights.pt --sample-shape 8,8``
   (the state_dict is read with ``weights_only=True``: no code from the file runs);
2. the API: ``mg.analyze`` then ``mg.write_report(..., data=x, model=model, sample_shape=(8, 8))``.

Both write report.html (the top digits of every direction as thumbnails), the figures, the
GraphML and summary.json. Run: ``python examples/first_hour.py [--out first-hour]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

import modgraph as mg


def build() -> nn.Module:
    """The architecture, for ``modgraph analyze first_hour:build --weights ...``."""
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, 10))  # fmt: skip


def train(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``build()`` trained on the digits (full batch, Adam); returns it and 1,000 test images."""
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    torch.manual_seed(seed)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:797]), y[:797]).backward()
        opt.step()
    model.eval()
    accuracy = (model(x[797:]).argmax(1) == y[797:]).float().mean().item()
    print(f"trained: held-out accuracy {accuracy:.3f}")
    return model, x[797:], y[797:]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model, x, y = train()
    torch.save(model.state_dict(), out / "weights.pt")
    torch.save(x, out / "x.pt")
    torch.save(y, out / "y.pt")

    # 1. the CLI, from the saved files (run where this file is, so that first_hour imports)
    cmd = [sys.executable, "-m", "modgraph.cli", "analyze", "first_hour:build",
           str((out / "x.pt").resolve()), "--weights", str((out / "weights.pt").resolve()),
           "--sample-shape", "8,8", "--metric", "accuracy", "--labels",
           str((out / "y.pt").resolve()), "--out", str((out / "cli").resolve()), "--overwrite",
           "--quiet"]  # fmt: skip
    subprocess.run(cmd, cwd=Path(__file__).parent, check=True)

    # 2. the API, the same model in memory
    a = mg.analyze(model, x, progress=False)
    choice = mg.choose_eps(model, a, x, "accuracy", labels=y, tolerance=1e-3)
    print(choice.reason)
    summary = mg.write_report(a, out / "api", data=x, model=model, sample_shape=(8, 8),
                              eps_choice=choice, overwrite=True)  # fmt: skip
    for method in ("leiden", "spectral"):
        print(f"{method}: {summary['modules'][method]['verdict']}")
    print(f"open {out / 'api' / 'report.html'} (and {out / 'cli' / 'report.html'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("first-hour"))
    main(parser.parse_args().out)

"""A researcher's first hour (issue #37): the API, CLI, report and figures as a new user meets
them. Each test fails on the code before it."""

from __future__ import annotations

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

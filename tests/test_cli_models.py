"""`modgraph analyze` on the models researchers bring: custom modules (--import, --layers,
--output), a residual network, a CNN, TransformerLens and Hugging Face transformers."""

import json
import sys
import textwrap

import pytest
import torch
from test_adapters import _gpt2, _lens3
from test_hooked import Residual, _digits_cnn
from torch import nn

from modgraph.cli import main

pytestmark = pytest.mark.integration

CUSTOM = """
import torch
from torch import nn

class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.enc(x))

class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return (self.head(h), h)
"""


def _analyze(tmp_path, capsys, model_file, data, *options) -> dict:
    torch.save(data, tmp_path / "x.pt")
    out = tmp_path / "out"
    argv = ["analyze", str(model_file), str(tmp_path / "x.pt"), "--out", str(out), "--quiet"]
    code = main([*argv, *options])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "wrote" in captured.out
    return json.loads((out / "summary.json").read_text())


@pytest.fixture
def custom(tmp_path, monkeypatch):
    """A module file in the working directory, as a user's project has it."""
    name = f"user_models_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(CUSTOM))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    yield name, module
    sys.modules.pop(name, None)


def test_a_custom_module_with_import_and_layers(tmp_path, capsys, custom):
    name, module = custom
    torch.manual_seed(0)
    torch.save(module.Encoder().eval(), tmp_path / "model.pt")
    sys.modules.pop(name)  # a fresh process: the class is found only through --import
    x = torch.randn(500, 6)
    options = ["--import", name, "--layers", "enc.1,enc"]
    s = _analyze(tmp_path, capsys, tmp_path / "model.pt", x, *options)
    assert [layer["name"] for layer in s["layers"]] == ["input", "enc.1", "enc", "output"]


def test_a_tuple_output_through_output(tmp_path, capsys, custom):
    name, module = custom
    torch.save(module.Pair().eval(), tmp_path / "model.pt")
    x = torch.randn(500, 6)
    s = _analyze(tmp_path, capsys, tmp_path / "model.pt", x, "--import", name, "--output", "0")
    assert [layer["name"] for layer in s["layers"]] == ["input", "body", "output"]


def test_a_class_that_cannot_be_imported_is_named(tmp_path, capsys, custom):
    name, module = custom
    torch.save(module.Encoder().eval(), tmp_path / "model.pt")
    sys.modules.pop(name)
    torch.save(torch.randn(50, 6), tmp_path / "x.pt")
    (tmp_path / f"{name}.py").rename(tmp_path / "elsewhere.py")
    code = main(["analyze", str(tmp_path / "model.pt"), str(tmp_path / "x.pt"), "--out", "o"])
    err = capsys.readouterr().err
    assert code == 2
    assert "class of the saved model cannot be imported" in err and "--import MODULE" in err
    assert f"No module named '{name}'" in err
    code = main(["analyze", "model.pt", "x.pt", "--out", "o", "--import", "no_such_module_x"])
    assert code == 2 and "--import 'no_such_module_x' failed" in capsys.readouterr().err


def test_a_residual_network_at_block_outputs(tmp_path, capsys):
    # Residual lives in tests/test_hooked.py, importable here as the tests' own module
    torch.save(Residual().eval(), tmp_path / "model.pt")
    x = torch.randn(500, 4)
    s = _analyze(tmp_path, capsys, tmp_path / "model.pt", x, "--layers", "embed,blocks.0,blocks.1")
    assert [layer["name"] for layer in s["layers"]][1:4] == ["embed", "blocks.0", "blocks.1"]
    code = main(["analyze", str(tmp_path / "model.pt"), str(tmp_path / "x.pt"), "--out",
                 str(tmp_path / "o2"), "--layers", "embed,blocks.0.mlp.0", "--quiet"])  # fmt: skip
    assert code == 2 and "enclosing module 'blocks.0'" in capsys.readouterr().err


def test_the_digits_cnn(tmp_path, capsys):
    cnn, x, _ = _digits_cnn()
    torch.save(cnn.float(), tmp_path / "model.pt")
    s = _analyze(tmp_path, capsys, tmp_path / "model.pt", x[:800].float(), "--rotation", "none")
    assert [layer["width"] for layer in s["layers"]] == [1, 6, 32, 16, 10]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("make", [_lens3, _gpt2], ids=["transformer_lens_3", "gpt2"])
def test_transformers_at_the_residual_stream(tmp_path, capsys, make):
    model = make()
    torch.save(model, tmp_path / "model.pt")
    tokens = torch.randint(0, 10, (120, 6))
    s = _analyze(tmp_path, capsys, tmp_path / "model.pt", tokens, "--output-probes", "4")
    names = [layer["name"] for layer in s["layers"]]
    assert names[-1] == "logits" and len(names) == 4
    assert s["config"]["output_probes"] == 4


def test_a_device_this_machine_lacks_is_named(tmp_path, capsys):
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    torch.save(net, tmp_path / "model.pt")
    torch.save(torch.randn(50, 4), tmp_path / "x.pt")
    code = main(["analyze", str(tmp_path / "model.pt"), str(tmp_path / "x.pt"), "--out",
                 str(tmp_path / "o"), "--device", "cuda:7", "--quiet"])  # fmt: skip
    assert code == 2 and "'device' parameter of analyze" in capsys.readouterr().err

"""A catalogue of bad and awkward inputs, as a hostile user would try them.

Each case asserts the exception type and that the message names the argument, the layer or the
file at fault. (Parameter types and ranges of every public function are covered separately, by
generated values, in test_validation.py.)
"""

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import mlp
from torch import nn

import modgraph as mg
from modgraph.errors import NonFiniteError


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch.manual_seed(0)
    net = mlp(3, 6, 2)
    x = torch.randn(300, 3, dtype=torch.float64)
    a = mg.analyze(net, x, rotation="none", eps=1e-4, progress=False)
    root = tmp_path_factory.mktemp("bad")
    saved = a.save(root / "analysis")
    graphml = a.graph.to_graphml(root / "g.graphml")
    return dict(net=net, x=x, a=a, root=root, saved=saved, graphml=graphml)


def analyze(net, x, **kw):
    return mg.analyze(net, x, progress=False, **kw)


#: Inputs that make every output NaN.
NAN_X = torch.full((20, 3), float("nan"), dtype=torch.float64)


class Flaky:
    """Re-iterable data that yields 600 new random samples on its first two passes and 300 on
    later ones (the fingerprints of the samples differ from the first batch of the second pass;
    tests/test_safety.py has passes of the same samples that only shrink)."""

    def __init__(self):
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        n = 600 if self.passes <= 2 else 300
        return iter(torch.randn(n, 3, dtype=torch.float64).split(100))


class TupleOut(nn.Module):
    def forward(self, x):
        return x, x


def _broken_copy(ctx, name, content):
    d = ctx["root"] / name
    d.mkdir()
    for f in ctx["saved"].iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    for fname, text in content.items():
        (d / fname).write_bytes(text)
    return d


def _meta_of_other(ctx):
    """A meta.json from another analysis (one layer fewer) next to these tensors."""
    meta = json.loads((ctx["saved"] / "meta.json").read_text())
    meta["layers"] = meta["layers"][:-1]
    return json.dumps(meta).encode()


CASES = [
    # data
    ("one sample", lambda c: analyze(c["net"], c["x"][:1]), mg.InputError, "1 sample"),
    (
        "one sample, plain",
        lambda c: analyze(c["net"], c["x"][:1], rotation="none"),
        mg.InputError,
        "1 sample",
    ),
    (
        "identical rows",
        lambda c: analyze(c["net"], c["x"][:1].repeat(100, 1)),
        mg.InputError,
        "layer 'input' has zero variance",
    ),
    (
        "identical rows, plain",
        lambda c: analyze(c["net"], c["x"][:1].repeat(100, 1), rotation="none"),
        mg.InputError,
        "layer 'input' has zero variance",
    ),
    ("empty tensor", lambda c: analyze(c["net"], c["x"][:0]), mg.InputError, "data is empty"),
    ("empty list", lambda c: analyze(c["net"], []), mg.InputError, "data is empty"),
    ("None data", lambda c: analyze(c["net"], None), mg.InputError, "'data' parameter of analyze"),
    (
        "a number as data",
        lambda c: analyze(c["net"], 3),
        mg.InputError,
        "'data' parameter of analyze",
    ),
    (
        "generator",
        lambda c: analyze(c["net"], (b for b in c["x"].split(10))),
        mg.InputError,
        "one-shot iterator",
    ),
    (
        "passes of different data",
        lambda c: analyze(c["net"], Flaky()),
        mg.InputError,
        "data changed between passes",
    ),
    (
        "wrong width",
        lambda c: analyze(c["net"], c["x"][:, :2]),
        mg.InputError,
        "each of shape (2,), dtype float64) does not fit the model: module '0' (Linear, needs a "
        "last dimension of 3)",
    ),
    (
        "NaN input",
        lambda c: analyze(c["net"], torch.full((50, 3), float("nan"), dtype=torch.float64)),
        NonFiniteError,
        "layer 'input'",
    ),
    ("inputs of 1e200", lambda c: analyze(c["net"], c["x"] * 1e200), NonFiniteError, "layer"),
    (
        "complex inputs",
        lambda c: analyze(c["net"], c["x"].to(torch.complex128)),
        mg.InputError,
        "complex values",
    ),
    (
        "inputs on the meta device",
        lambda c: analyze(c["net"], c["x"].to("meta")),
        mg.InputError,
        "'data' parameter of analyze",
    ),
    (
        "ragged batch",
        lambda c: analyze(c["net"], [[torch.randn(4, 3), torch.randn(5, 3)]]),
        mg.InputError,
        "data batch 0",
    ),
    # models
    (
        "a model that is a dict",
        lambda c: analyze({"a": 1}, c["x"]),
        mg.InputError,
        "'model' parameter of analyze",
    ),
    (
        "empty Sequential",
        lambda c: analyze(nn.Sequential(), c["x"]),
        mg.InputError,
        "model has no modules",
    ),
    (
        "dropout in training mode",
        lambda c: analyze(nn.Sequential(nn.Linear(3, 2), nn.Dropout()), c["x"]),
        mg.InputError,
        "training mode",
    ),
    (
        "a module returning a tuple",
        lambda c: analyze([nn.Linear(3, 4).double(), TupleOut()], c["x"]),
        mg.InputError,
        "returned a tuple",
    ),
    (
        "token ids beyond the embedding",
        lambda c: analyze(
            nn.Sequential(nn.Embedding(5, 4), nn.Flatten(), nn.Linear(8, 2)),
            torch.randint(0, 9, (30, 2)),
        ),
        mg.InputError,
        "embedding has 5 rows",
    ),
    (
        "integers into a Linear",
        lambda c: analyze(
            nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), torch.randint(0, 3, (30, 3))
        ),
        mg.InputError,
        "integer values",
    ),
    (
        "model on the meta device",
        lambda c: analyze(nn.Sequential(nn.Linear(3, 2)).to("meta"), c["x"]),
        mg.InputError,
        "meta device",
    ),
    (
        "unknown layer name",
        lambda c: analyze(c["net"], c["x"], layers=["nope"]),
        mg.InputError,
        "unknown layer name 'nope'",
    ),
    # options
    (
        "device that does not exist",
        lambda c: analyze(c["net"], c["x"], device="bogus"),
        mg.InputError,
        "'device' parameter of analyze",
    ),
    (
        "CUDA without a GPU",
        lambda c: analyze(c["net"], c["x"], device="cuda"),
        mg.InputError,
        "no CUDA here",
    ),
    (
        "rtol below zero",
        lambda c: analyze(c["net"], c["x"], rtol=-1),
        mg.InputError,
        "'rtol' parameter of analyze",
    ),
    (
        "rtol NaN",
        lambda c: analyze(c["net"], c["x"], rtol=float("nan")),
        mg.InputError,
        "'rtol' parameter of analyze",
    ),
    (
        "no output probes",
        lambda c: analyze(c["net"], c["x"], output_probes=0),
        mg.InputError,
        "'output_probes' parameter of analyze",
    ),
    (
        "seed as a string",
        lambda c: analyze(c["net"], c["x"], seed="a"),
        mg.InputError,
        "'seed' parameter of analyze",
    ),
    (
        "huge seed for Leiden",
        lambda c: mg.find_modules(c["a"].graph, seed=2**63),
        mg.InputError,
        "'seed' parameter of find_modules",
    ),
    (
        "batch size zero",
        lambda c: analyze(c["net"], c["x"], batch_size=0),
        mg.InputError,
        "'batch_size' parameter of analyze",
    ),
    # graphs and modules
    (
        "k above the connected nodes",
        lambda c: mg.find_modules(c["a"].graph, method="spectral", n_modules=10_000),
        mg.InputError,
        "'n_modules' parameter of find_modules",
    ),
    (
        "significance of a graph without edges",
        lambda c: mg.module_significance(c["a"].with_eps(1e6).graph, mg.find_modules(c["a"].graph)),
        mg.InputError,
        "graph has no edges",
    ),
    (
        "modules without edges",
        lambda c: mg.find_modules(c["a"].with_eps(1e6).graph),
        mg.InputError,
        "graph has no edges",
    ),
    (
        "modules of another graph",
        lambda c: mg.plot_graph(c["a"].with_eps(1e-2), mg.find_modules(c["a"].graph, n_modules=3)),
        mg.InputError,
        "different graph",
    ),
    # circuits
    (
        "ablation on NaN data",
        lambda c: mg.circuits.module_ablation(
            c["net"],
            c["a"],
            NAN_X,
            mg.find_modules(c["a"].graph),
        ),
        NonFiniteError,
        "data batch 0",
    ),
    (
        "smallest circuit on NaN data",
        lambda c: mg.circuits.smallest_circuit(
            c["net"],
            c["a"],
            NAN_X,
            mg.find_modules(c["a"].graph),
        ),
        NonFiniteError,
        "data batch 0",
    ),
    (
        "unknown node",
        lambda c: mg.circuits.run_ablated(c["net"], c["a"], c["x"], ["9:0"]),
        mg.InputError,
        "unknown node id '9:0'",
    ),
    (
        "a model other than the analysed one",
        lambda c: mg.circuits.run_ablated(mlp(3, 5, 2), c["a"], c["x"], []),
        mg.InputError,
        "does not match analysis",
    ),
    (
        "layer ranks of one sample",
        lambda c: mg.diagnostics.layer_ranks(c["net"], c["x"][:1], threshold=1e-9),
        mg.InputError,
        "1 sample",
    ),
    # files
    (
        "load a directory without an analysis",
        lambda c: mg.load_analysis(c["root"]),
        mg.InputError,
        "is not a saved analysis",
    ),
    (
        "load an empty tensors file",
        lambda c: mg.load_analysis(_broken_copy(c, "empty", {"tensors.pt": b""})),
        mg.InputError,
        "tensors.pt",
    ),
    (
        "load a truncated tensors file",
        lambda c: mg.load_analysis(
            _broken_copy(
                c, "cut", {"tensors.pt": c["saved"].joinpath("tensors.pt").read_bytes()[:100]}
            )
        ),
        mg.InputError,
        "tensors.pt",
    ),
    (
        "load garbage meta.json",
        lambda c: mg.load_analysis(_broken_copy(c, "garbage", {"meta.json": b"{not json"})),
        mg.InputError,
        "meta.json",
    ),
    (
        "load meta.json without a version",
        lambda c: mg.load_analysis(_broken_copy(c, "noversion", {"meta.json": b"{}"})),
        mg.InputError,
        "meta.json",
    ),
    (
        "load meta.json of another analysis",
        lambda c: mg.load_analysis(_broken_copy(c, "other", {"meta.json": _meta_of_other(c)})),
        mg.InputError,
        "do not match",
    ),
    (
        "GraphML that is not XML",
        lambda c: mg.InteractionGraph.from_graphml(_text(c, "bad.graphml", "hello")),
        mg.InputError,
        "bad.graphml",
    ),
    (
        "GraphML that does not exist",
        lambda c: mg.InteractionGraph.from_graphml(c["root"] / "none.graphml"),
        mg.InputError,
        "none.graphml",
    ),
    (
        "save over a user's file",
        lambda c: c["a"].save(_text(c, "a_file", "mine")),
        mg.InputError,
        "a_file",
    ),
    (
        "save into a user's directory",
        lambda c: c["a"].save(_user_dir(c), overwrite=True),
        mg.InputError,
        "notes.txt",
    ),
    (
        "report into a user's directory",
        lambda c: mg.write_report(c["a"], _user_dir(c, "rep"), overwrite=True),
        mg.InputError,
        "notes.txt",
    ),
]


def _text(c, name, text):
    p = c["root"] / name
    p.write_text(text)
    return p


def _user_dir(c, name="user"):
    d = c["root"] / name
    d.mkdir(exist_ok=True)
    (d / "notes.txt").write_text("mine")
    return d


def test_the_catalogue_is_large():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name, call, kind, match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(ctx, name, call, kind, match):
    if name == "CUDA without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the rotation's too-few-samples warning
        with pytest.raises(kind) as err:
            call(ctx)
    assert match in str(err.value), str(err.value)


def test_users_files_survive_the_refusals(ctx):
    user_file = _text(ctx, "survivor.txt", "mine")
    user_dir = _user_dir(ctx, "survivors")
    for refused in (
        lambda: ctx["a"].save(user_file),
        lambda: ctx["a"].save(user_dir, overwrite=True),
        lambda: mg.write_report(ctx["a"], user_dir, overwrite=True),
    ):
        with pytest.raises(mg.InputError):
            refused()
    for p in (user_file, user_dir / "notes.txt"):
        assert p.read_text() == "mine"
    assert [p.name for p in user_dir.iterdir()] == ["notes.txt"]
    assert not [p for p in ctx["root"].iterdir() if p.name.startswith(".")]  # no temporaries


def test_eps_without_edges_warns_with_the_largest_w(ctx):
    with pytest.warns(UserWarning, match=r"eps=1e\+30 leaves no edge.*strongest interaction is w="):
        a = analyze(ctx["net"], ctx["x"], eps=1e30, rotation="none")
    assert a.graph.n_edges == 0
    assert np.isfinite(max(float(w.max()) for w in a.w))

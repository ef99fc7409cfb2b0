"""Hostile but fair input: files that are not modgraph's, names that carry scripts, data and
models that would give silent wrong results (issue #34). Each test fails on the code before it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

import modgraph as mg
from modgraph import atomic
from modgraph.atomic import MANIFEST, atomic_directory


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4)).double().eval()
    x = torch.randn(300, 6, dtype=torch.float64)
    return net, x, mg.analyze(net, x, rotation="none", progress=False)


# ---------------------------------------------------------------- ownership by record
def _files(d):
    files = sorted(p for p in d.rglob("*") if p.is_file())
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in files}


@pytest.mark.parametrize(
    "names",
    [("summary.json", "graph.png"), ("meta.json", "tensors.pt")],
    ids=["report names", "analysis names"],
)
def test_files_named_like_ours_are_not_ours(tmp_path, small, names):
    """A user's files with the names modgraph writes, even a meta.json with a format_version,
    are never replaced: ownership is the manifest's record, not the name."""
    a = small[2]
    d = tmp_path / "mine"
    d.mkdir()
    for name in names:
        (d / name).write_text(json.dumps({"format_version": 1, "mine": True}))
    before = _files(d)
    for write in (lambda: a.save(d, overwrite=True), lambda: mg.write_report(a, d, overwrite=True)):
        with pytest.raises(mg.InputError) as err:
            write()
        assert all(n in str(err.value) for n in names)
        assert "overwrite" not in str(err.value)  # never advised for files that are not ours
    assert _files(d) == before


def test_an_edited_output_is_no_longer_ours(tmp_path, small):
    a = small[2]
    path = a.save(tmp_path / "a")
    (path / "meta.json").write_text((path / "meta.json").read_text() + " ")
    with pytest.raises(mg.InputError, match="meta.json"):
        a.save(path, overwrite=True)
    assert (path / "meta.json").read_text().endswith(" ")


def test_a_file_arriving_during_the_swap_is_kept_and_named(tmp_path, small, monkeypatch):
    a = small[2]
    path = a.save(tmp_path / "a")
    real = atomic._modes

    def late(directory):  # after the last check, before the old copy moves aside
        if directory == path:
            (path / "late.txt").write_text("mine")
        return real(directory)

    monkeypatch.setattr(atomic, "_modes", late)
    with pytest.warns(UserWarning, match="late.txt"):
        a.with_eps(1e-2).save(path, overwrite=True)
    assert mg.load_analysis(path).eps == 1e-2
    (kept,) = [p for p in tmp_path.rglob("late.txt")]
    assert kept.read_text() == "mine"


def test_replaced_outputs_keep_their_permissions(tmp_path, small):
    a = small[2]
    path = a.save(tmp_path / "a")
    os.chmod(path, 0o700)
    os.chmod(path / "meta.json", 0o600)
    a.with_eps(1e-2).save(path, overwrite=True)
    assert path.stat().st_mode & 0o777 == 0o700
    assert (path / "meta.json").stat().st_mode & 0o777 == 0o600
    assert (path / "tensors.pt").stat().st_mode & 0o777 == atomic.default_mode()


def test_the_manifest_never_reaches_outside(tmp_path, small):
    """A forged manifest that lists ../outside does not make modgraph delete it: deletion walks
    the directory and consults the manifest, never the other way round."""
    a = small[2]
    path = a.save(tmp_path / "a")
    outside = tmp_path / "outside.txt"
    outside.write_text("mine")
    m = json.loads((path / MANIFEST).read_text())
    m["files"]["../outside.txt"] = {"size": 4, "sha256": atomic._digest(outside)}
    (path / MANIFEST).write_text(json.dumps(m))
    a.save(path, overwrite=True)
    assert outside.read_text() == "mine"


def test_an_unwritable_destination_fails_before_any_work(tmp_path, monkeypatch):
    """A read-only file system is found by a probe, not by permission bits (root has all)."""
    from modgraph.cli import main

    def read_only(path, mode=0o777):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(atomic.os, "mkdir", read_only)
    monkeypatch.setattr("modgraph.toys.demo.make_demo", lambda *a, **k: pytest.fail("ran"))
    assert main(["demo", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    with pytest.raises(mg.InputError, match="Read-only file system"):
        with atomic_directory(tmp_path / "x"):
            pytest.fail("ran")


# ---------------------------------------------------------------- code that runs unasked
_BUILD = """
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4))

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(6, 12), nn.ReLU(inplace=True), nn.Linear(12, 4)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))

def build_inplace():
    torch.manual_seed(0)
    return Net()
"""


class _Payload:
    """Unpickling this runs code (as a hostile file's would)."""

    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('RAN').write_text('x')",))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "leidenalg.py").write_text("raise SystemExit('the stray leidenalg.py ran')\n")
    (tmp_path / "netbuild.py").write_text(_BUILD)
    torch.save(torch.randn(200, 6), tmp_path / "x.pt")
    return tmp_path


def test_the_working_directory_is_on_the_path_only_with_import(workdir):
    import sys

    from modgraph.cli import import_modules

    import_modules([])
    assert str(workdir) not in sys.path
    import_modules(["netbuild"])
    assert sys.path[-1] == str(workdir)  # last: nothing installed is shadowed


@pytest.mark.integration  # slow: the unit tier stays fast
def test_weights_are_read_without_running_code(workdir, capsys):
    from modgraph.cli import main

    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4))
    torch.save(net.state_dict(), workdir / "sd.pt")
    args = ["analyze", "netbuild:build", "x.pt", "--quiet", "--rotation", "none"]
    assert main(args + ["--weights", "sd.pt", "--out", "out"]) == 0
    a = mg.load_analysis(workdir / "out" / "analysis")
    b = mg.analyze(net.eval(), torch.load(workdir / "x.pt"), rotation="none", progress=False)
    assert torch.allclose(a.w[0], b.w[0])  # the weights loaded, not the built model's own
    torch.save({"w": _Payload()}, workdir / "evil.pt")
    assert main(args + ["--weights", "evil.pt", "--out", "out2"]) == 2
    assert "--weights 'evil.pt' is not a state_dict of tensors" in capsys.readouterr().err
    assert not (workdir / "RAN").exists()
    assert main(args[:1] + ["sd.pt"] + args[2:] + ["--out", "out3"]) == 2
    assert "--weights" in capsys.readouterr().err  # a state_dict as MODEL: the remedy named


def test_the_help_says_a_pickled_model_runs_code(capsys):
    from modgraph.cli import main

    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "runs any code in the file" in text and "--weights" in text


# ---------------------------------------------------------------- data that changes
class _Passes:
    """A re-iterable whose passes are given by ``make(pass_number)``."""

    def __init__(self, make):
        self.make, self.n = make, 0

    def __iter__(self):
        self.n += 1
        return iter(self.make(self.n).split(50))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x: _Passes(lambda k: x + 0.01 * torch.randn_like(x)), "did not have"),
        (lambda x: _Passes(lambda k: x if k == 1 else x[:150]), "300 samples on its first"),
    ],
    ids=["random augmentation", "600 then 300"],
)
def test_data_whose_passes_differ_is_refused(small, make, match):
    net, x, _ = small
    with pytest.raises(mg.InputError, match=match):
        mg.analyze(net, make(x), rotation="none", progress=False)


def test_a_shuffled_loader_gives_the_statistics_but_no_sample_numbers(small):
    """The statistics do not need the order; the report's top samples do: they are left out,
    with the reason, instead of being shown for the wrong samples."""
    net, x, a = small
    loader = torch.utils.data.DataLoader(x, batch_size=50, shuffle=True)
    with pytest.warns(UserWarning, match="another order on each pass"):
        b = mg.analyze(net, loader, rotation="none", progress=False)
    assert a.exemplars is not None and b.exemplars is None
    assert torch.allclose(a.w[1], b.w[1], rtol=0, atol=1e-12 * float(a.w[1].max()))


def test_a_loader_in_order_gives_the_tensors_result(small):
    net, x, a = small
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=64)
    b = mg.analyze(net, loader, rotation="none", progress=False)
    assert b.n_samples == len(x)
    assert torch.allclose(a.w[1], b.w[1], rtol=0, atol=1e-12 * float(a.w[1].max()))


def test_a_model_that_writes_into_its_input_never_changes_the_users_data():
    class Scales(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            x.mul_(0.5)  # in place, into the input
            return self.fc(x)

    torch.manual_seed(0)
    x = torch.randn(100, 5)
    before = x.clone()
    net = Scales().eval()
    try:
        mg.analyze(net, x, layers=["fc"], rotation="none", progress=False)
    except mg.InputError:
        pass  # refusing it is fine; changing the data is not
    assert torch.equal(x, before)


# ---------------------------------------------------------------- models that are not one function
class _Net(nn.Module):
    def __init__(self, act=None, extra=None):
        super().__init__()
        self.fc1, self.act, self.fc2, self.extra = (
            nn.Linear(6, 8),
            act or nn.ReLU(),
            nn.Linear(8, 3),
            extra,
        )

    def forward(self, x):
        h = self.act(self.fc1(x))
        if self.extra == "dropout":
            h = nn.functional.dropout(h, 0.5, training=True)
        if self.extra == "standardise":
            h = (h - h.mean(0)) / (h.std(0) + 1e-5)
        return self.fc2(h)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.head = (
            nn.MultiheadAttention(6, 2, dropout=0.5, batch_first=True),
            nn.Linear(6, 3),
        )

    def forward(self, x):
        x = x.view(-1, 1, 6)
        return self.head(self.attn(x, x, x)[0][:, 0])


class _Instance(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 1)
        self.norm = nn.InstanceNorm1d(4, track_running_stats=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        return self.head(self.norm(self.conv(x.view(-1, 2, 3))).flatten(1))


@pytest.mark.parametrize(
    "make, layers, match",
    [
        (lambda: _Net(nn.RReLU()), None, "same batch twice"),
        (lambda: _Net(extra="dropout").eval(), None, "same batch twice"),
        (lambda: _Attention(), ["attn[0]"], "same batch twice"),
        (lambda: _Net(extra="standardise").eval(), None, "different batches"),
        (lambda: _Instance(), ["conv", "norm"], "buffers"),
        (lambda: _Net(nn.ReLU(inplace=True)).eval(), ["fc1", "act"], "changed in place"),
        (
            lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(inplace=True), nn.Linear(8, 3)).eval(),
            ["0"],
            "changed in place",
        ),
    ],
    ids=["RReLU", "F.dropout", "MultiheadAttention dropout", "batch standardisation",
         "InstanceNorm running stats", "ReLU(inplace) hooked", "ReLU(inplace) Sequential"],
)  # fmt: skip
def test_models_that_are_not_one_function_of_each_sample_are_named(make, layers, match):
    """Judged by behaviour, not by class; never reported as a residual bypass."""
    torch.manual_seed(0)
    net, x = make(), torch.randn(200, 6)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(mg.InputError, match=match) as err:
        mg.analyze(net, x, layers=layers, rotation="none", progress=False)
    assert "bypass" not in str(err.value)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())  # put back


def test_modules_named_input_and_output_get_layers_of_their_own():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.input, self.act, self.output, self.head = (
                nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3), nn.Tanh())  # fmt: skip

        def forward(self, x):
            return self.head(self.output(self.act(self.input(x))))

    torch.manual_seed(0)
    net, x = Net().eval(), torch.randn(200, 6)
    a = mg.analyze(net, x, layers=["input", "act", "output"], rotation="none", progress=False)
    assert a.layer_names == ["(input)", "input", "act", "output", "(output)"]
    assert [la.d for la in a.layers] == [6, 8, 8, 3, 3]
    # the circuit tools cut the model where the analysis did, from its names alone
    out = mg.circuits.run_ablated(net, a, x, nodes=[])
    assert torch.allclose(out, net(x), atol=1e-6)


# ---------------------------------------------------------------- foreign files
def _graphml(tmp_path, small, edit):
    import networkx as nx

    path = tmp_path / "g.graphml"
    small[2].graph.to_graphml(path)
    g = nx.read_graphml(path)
    edit(g)
    nx.write_graphml(g, path)
    return path


def _move(g, node, **attrs):
    g.nodes[node].update(attrs)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda g: _move(g, "0:0", layer=-1), "non-negative int"),
        (lambda g: _move(g, "0:1", index=10**12), "nodes 0..k-1"),
        (lambda g: _move(g, "0:1", index=0), "duplicate"),
        (lambda g: g.add_edge("0:0", "2:0", w=1.0, strength=1.0), "layer l to l \\+ 1"),
        (lambda g: g.add_edge("1:0", "2:0", w=float("nan"), strength=1.0), "finite w > 0"),
        (lambda g: g.graph.update(layer_names='["input", "1", "2", "extra"]'), "'extra'"),
        (lambda g: g.graph.update(layer_names='["input", "1", "1"]'), "distinct"),
        (lambda g: g.graph.update(eps=-1.0), "eps must be"),
    ],
    ids=["negative layer", "huge index", "duplicate node", "edge skips a layer", "nan w",
         "extra layer name", "repeated layer name", "negative eps"],
)  # fmt: skip
def test_foreign_graphml_is_refused_naming_the_file(tmp_path, small, edit, match):
    path = _graphml(tmp_path, small, edit)
    with pytest.raises(mg.InputError, match=match) as err:
        mg.InteractionGraph.from_graphml(path)
    assert "g.graphml" in str(err.value)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("n_samples", "lots", "n_samples must be an int"),
        ("eps", -1, "eps must be a finite number"),
        ("layers", [], "layers must be a list"),
        ("config", None, "config must be an object"),
    ],
)
def test_foreign_meta_json_is_refused_naming_the_file(tmp_path, small, key, value, match):
    path = small[2].save(tmp_path / "a")
    meta = json.loads((path / "meta.json").read_text())
    meta[key] = value
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(mg.InputError, match=match) as err:
        mg.load_analysis(path)
    assert "meta.json" in str(err.value)


def test_an_untestable_significance_is_said(small):
    g = mg.InteractionGraph(
        ("a", "b"), (np.ones(2), np.ones(2)), (np.array([[1.0, 0], [0, 0]]),), eps=1e-4
    )
    with pytest.warns(UserWarning, match="p_value is nan, cannot test"):
        s = mg.module_significance(g, mg.find_modules(g, n_modules=1))
    assert np.isnan(s.p_value)


def test_channels_last_images_are_said():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 3)).eval()
    with pytest.warns(UserWarning, match=r"channels-last .* x.permute\(0, 3, 1, 2\)"):
        mg.analyze(net, torch.randn(60, 8, 8, 3), rotation="none", progress=False)


def test_everyday_hostile_cases_through_the_cli(workdir, capsys):
    """A results folder reused for the user's own files; ReLU(inplace=True): one line, exit 2,
    the real cause named, nothing of the user's touched."""
    from modgraph.cli import main

    base = ["analyze", "netbuild:build", "x.pt", "--quiet", "--rotation", "none"]
    (workdir / "mine").mkdir()
    (workdir / "mine" / "summary.json").write_text("{}")
    assert main(base + ["--out", "mine", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "summary.json" in err and "--overwrite" not in err
    assert (workdir / "mine" / "summary.json").read_text() == "{}"
    inplace = ["analyze", "netbuild:build_inplace", "x.pt", "--quiet", "--layers", "fc1,act"]
    assert main(inplace + ["--out", "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "changed in place" in err and "bypass" not in err

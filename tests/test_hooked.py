"""Any nn.Module through hooks: the same numbers as the stage path, the chain assumption checked,
feature maps, tuple outputs, and ablations on hooked chains and sequence layers."""

import pytest
import torch
from torch import nn

import modgraph as mg
from modgraph.circuits import ablation as ab
from modgraph.hooked import HookedChain


def _same_analysis(a, b, rtol=1e-10, skip=0):
    """``b`` equals ``a`` without its first ``skip`` layers: basis, eigenvalues and edges."""
    assert len(a.layers) - skip == len(b.layers)
    for p, q in zip(a.layers[skip:], b.layers):
        assert p.k == q.k
        for x, y in ((p.C, q.C), (p.eigenvalues, q.eigenvalues)):
            assert float((x - y).abs().max()) <= rtol * float(x.abs().max())
    for p, q in zip(a.w[skip:], b.w):
        assert float((p - q).abs().max()) <= rtol * float(p.abs().max())


@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("variant", ["global", "local"])
@pytest.mark.parametrize("attribution", ["gradient", "integrated"])
def test_hook_path_equals_the_stage_path(variant, attribution):
    net = nn.Sequential(
        nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 3)
    ).double().eval()  # fmt: skip
    x = torch.randn(600, 5, dtype=torch.float64)
    opts = dict(progress=False, variant=variant, attribution=attribution, n_steps=3)
    staged = mg.analyze(net, x, **opts)
    hooked = mg.analyze(HookedChain(net, ["input", "1", "3"]), x, **opts)
    assert hooked.layer_names == ["input", "1", "3", "output"]
    _same_analysis(staged, hooked)
    # and the circuit tools give the same outputs through either chain
    nodes, edges = ["1:0", "2:1"], [("0:1", "1:2"), ("2:0", "3:1")]
    want = ab.run_ablated(net, staged, x, nodes, edges=edges)
    got = ab.run_ablated(HookedChain(net, ["input", "1", "3"]), hooked, x, nodes, edges=edges)
    assert (want - got).abs().max() <= 1e-12 * want.abs().max()


class TwoPath(nn.Module):
    """A custom module: forward calls self.enc then self.head."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.enc(x))


@pytest.mark.integration  # slow: the unit tier stays fast
def test_a_custom_module_is_cut_at_module_paths():
    m = TwoPath().double().eval()
    x = torch.randn(400, 4, dtype=torch.float64)
    a = mg.analyze(m, x, progress=False)  # default: its top-level modules, in call order
    assert a.layer_names == ["input", "enc", "output"]
    b = mg.analyze(m, x, progress=False, layers=["enc.1", "enc"])
    assert b.layer_names == ["input", "enc.1", "enc", "output"]
    same = mg.analyze(nn.Sequential(*m.enc, m.head), x, progress=False, layers=["1", "3"])
    _same_analysis(same, b)
    curve = mg.circuits.faithfulness_curve(m, b, x, n_points=4)
    assert curve.loss[0] == 0 and curve.loss[-1] > 0


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))

    def forward(self, h):
        return h + self.mlp(self.ln(h))


class Residual(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.embed = nn.Linear(4, d)
        self.blocks = nn.ModuleList([Block(d), Block(d)])
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def test_a_residual_network_cut_at_block_outputs():
    m = Residual().double().eval()
    x = torch.randn(300, 4, dtype=torch.float64)
    a = mg.analyze(m, x, progress=False, layers=["embed", "blocks.0", "blocks.1"])
    assert a.layer_names == ["input", "embed", "blocks.0", "blocks.1", "output"]
    chain = HookedChain(m, ["input", "embed", "blocks.0", "blocks.1"])
    acts = chain.forward(x[:10])
    h = m.embed(x[:10])
    for want, got in zip([x[:10], h, m.blocks[0](h), m.blocks[1](m.blocks[0](h))], acts):
        assert torch.equal(want, got)
    assert torch.equal(acts[-1], m(x[:10]))
    mg.circuits.faithfulness_curve(m, a, x, n_points=3)


def test_a_cut_inside_a_residual_branch_is_named_with_the_cut_to_use():
    m = Residual().double().eval()
    x = torch.randn(64, 4, dtype=torch.float64)
    with pytest.raises(mg.InputError) as err:
        mg.analyze(m, x, progress=False, layers=["embed", "blocks.0.mlp.0", "blocks.1"])
    msg = str(err.value)
    assert "'blocks.0.mlp.0' does not carry everything" in msg
    assert "the output of 'embed'" in msg  # the skip connection's source
    assert "enclosing module 'blocks.0'" in msg  # where to cut instead


class Skip(nn.Module):
    """A deliberate bypass: the input reaches the head around layer 'mid'."""

    def __init__(self):
        super().__init__()
        self.pre, self.mid, self.head = nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)
        self.side = nn.Linear(4, 3)

    def forward(self, x):
        s = self.side(x)
        return self.head(self.mid(self.pre(x))) + s


def test_a_deliberate_bypass_is_detected_and_named():
    m = Skip().double().eval()
    x = torch.randn(32, 4, dtype=torch.float64)
    with pytest.raises(mg.InputError, match="the output of 'side' reaches later layers"):
        mg.analyze(m, x, progress=False, layers=["pre", "mid"])
    # without the bypass the same cut is fine
    m.side.weight.data.zero_()
    m.side.bias.data.zero_()
    mg.analyze(m, x, progress=False, layers=["pre", "mid"])


class Tupled(nn.Module):
    """Modules that return tuples and dicts, as Hugging Face blocks and outputs do."""

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 6)

        def forward(self, x):
            h = torch.tanh(self.lin(x))
            return h, h.sum()  # (hidden, an auxiliary value)

    def __init__(self):
        super().__init__()
        self.inner, self.head = Tupled.Inner(), nn.Linear(6, 2)

    def forward(self, x):
        h, _ = self.inner(x)
        return {"logits": self.head(h), "aux": h}


def test_tuple_and_dict_outputs_through_selectors():
    m = Tupled().double().eval()
    x = torch.randn(200, 4, dtype=torch.float64)
    with pytest.raises(mg.InputError, match=r"returned a tuple.*layers=\['inner\[0\]'\]"):
        mg.analyze(HookedChain(m, ["inner"], output="logits"), x, progress=False)
    with pytest.raises(mg.InputError, match="returned a dict"):
        mg.analyze(HookedChain(m, ["inner[0]"]), x, progress=False)
    chain = HookedChain(m, ["inner[0]"], output="logits", output_name="logits")
    a = mg.analyze(chain, x, progress=False)
    assert a.layer_names == ["input", "inner[0]", "logits"]
    seq = nn.Sequential(m.inner.lin, nn.Tanh(), m.head)
    _same_analysis(mg.analyze(seq, x, progress=False, layers=["1"]), a)
    # replacing a tuple element reaches the rest of the model
    f = torch.zeros(5, 6, dtype=torch.float64)
    assert torch.allclose(chain.stage(1, x[:5])(f), m.head(f))
    with pytest.raises(mg.InputError, match=r"drop the selector \[0\]"):
        HookedChain(m, ["inner.lin[0]"]).forward(x[:3])


def test_bad_layers_are_named():
    m = TwoPath().double().eval()
    x = torch.randn(8, 4, dtype=torch.float64)
    with pytest.raises(mg.InputError, match=r"no module 'encc'.*did you mean \['enc'"):
        HookedChain(m, ["encc"])
    with pytest.raises(mg.InputError, match="in the order the forward computes them"):
        HookedChain(m, ["enc.3", "enc.1"]).forward(x)
    shared = nn.ReLU()
    twice = nn.Sequential(nn.Linear(4, 4), shared, nn.Linear(4, 4), shared)
    with pytest.raises(mg.InputError, match="runs more than once"):
        HookedChain(twice, ["1"]).forward(x.float())
    with pytest.raises(mg.InputError, match="did not run"):
        HookedChain(Residual().eval(), ["blocks"]).forward(x.float())
    with pytest.raises(mg.InputError, match="'input' can only be the first"):
        HookedChain(m, ["enc", "input"])
    drop = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
    with pytest.raises(mg.InputError, match="training mode"):
        HookedChain(drop.train(), ["0"])
    with pytest.raises(mg.InputError, match="'layers' parameter of HookedChain"):
        HookedChain(m, "enc")


# ---------------------------------------------------------------------------- feature maps
def _digits_cnn():
    """A CNN trained briefly on scikit-learn's bundled 8x8 digits (float64)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float64)[:, None]
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10),
    ).double()  # fmt: skip
    perm = torch.randperm(len(x))
    x, y = x[perm], y[perm]  # the bundled order runs through the writers
    opt = torch.optim.Adam(cnn.parameters(), 1e-2)
    for _ in range(300):
        idx = torch.randint(0, 1400, (128,))
        loss = nn.functional.cross_entropy(cnn(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    cnn.eval()
    with torch.no_grad():
        accuracy = float((cnn(x[1400:]).argmax(1) == y[1400:]).double().mean())
    return cnn, x, accuracy


@pytest.fixture(scope="module")
def digits():
    return _digits_cnn()


@pytest.mark.integration  # slow: the unit tier stays fast
def test_feature_maps_count_positions_as_samples(digits):
    cnn, x, accuracy = digits
    assert accuracy > 0.9
    a = mg.analyze(cnn, x[:600], progress=False, rotation="none")
    assert a.layer_names == ["input", "2", "6", "8", "9"]
    assert [layer.d for layer in a.layers] == [1, 6, 32, 16, 10]  # channels are the features
    # layer "2" (the first pooled maps): G is the covariance over (sample, position) pairs
    maps = cnn[:3](x[:600]).detach()
    rows = maps.permute(0, 2, 3, 1).reshape(-1, 6)
    assert a.layers[1].d == 6 and rows.shape[0] == 600 * 16
    G = torch.cov(rows.T, correction=0)
    assert torch.allclose(a.statistics[1].G, G, atol=1e-12)
    flat = mg.analyze(cnn, x[:600], progress=False, rotation="none", feature_maps="flatten")
    assert [layer.d for layer in flat.layers] == [64, 96, 32, 16, 10]
    # the same CNN written as a custom module with a forward(): the same numbers through hooks
    hooked = HookedChain(cnn, ["input", "2", "6", "8"])
    _same_analysis(a, mg.analyze(hooked, x[:600], progress=False, rotation="none"))
    curve = mg.circuits.faithfulness_curve(cnn, a, x[:600], n_points=3)
    assert curve.loss[0] == 0


# ---------------------------------------------------------------------------- sequences
def _rows(t):
    return t.reshape(-1, t.shape[-1])


def test_ablations_on_sequence_layers_match_brute_force():
    from modgraph.toys import TinyTransformer

    model = TinyTransformer(vocab=7, n_ctx=4, d_model=12, n_heads=2, d_mlp=16).double().eval()
    tokens = torch.randint(0, 7, (150, 4))
    chain = mg.transformer_chain(model, positions="all")
    a = mg.analyze(chain, tokens, progress=False, rotation="none")
    assert torch.allclose(ab.run_ablated(chain, a, tokens), model(tokens), atol=1e-12)
    # every direction of the first block's output replaced by its mean, at every position
    l, basis = 1, a.layers[1]
    y = ab.run_ablated(chain, a, tokens, [f"{l}:{i}" for i in range(basis.k)])
    f = chain.forward(tokens)[l]
    r = (f - basis.mean) - ((f - basis.mean) @ basis.C.T) @ basis.C_pinv.T
    assert (y - chain.run_from(l, basis.mean + r, tokens)).abs().max() < 1e-10
    # one edge removed: its target recomputed with the source at its mean, at every position
    src, dst = a.layers[1], a.layers[2]
    y = ab.run_edge_ablated(chain, a, tokens, [("1:0", "2:1")])
    nxt = chain.stage(1, tokens)(f)
    moved = chain.stage(1, tokens)(f - ((f - src.mean) @ src.C[0])[..., None] * src.C_pinv[:, 0])
    new_hat = (_rows(moved) - dst.mean) @ dst.C[1]
    old_hat = (_rows(nxt) - dst.mean) @ dst.C[1]
    g = nxt + ((new_hat - old_hat)[:, None] * dst.C_pinv[:, 1]).reshape(nxt.shape)
    assert (y - chain.run_from(2, g, tokens)).abs().max() < 1e-10
    assert (y - model(tokens)).abs().max() > 1e-6
    linear = ab.run_edge_ablated(chain, a, tokens, [("1:0", "2:1")], method="linear")
    assert (linear - model(tokens)).abs().max() > 1e-6
    mg.circuits.faithfulness_curve(chain, a, tokens, n_points=3)
    modules = mg.find_modules(a.graph, n_modules=2, seed=0)
    circuit = mg.circuits.smallest_circuit(chain, a, tokens, modules)
    assert 1 <= len(circuit.modules) <= 2


def test_a_transformer_through_hooks_equals_its_stage_chain():
    """TinyTransformer cut at its blocks through hooks, against transformer_chain's stages (the
    hook path has no layer at the inline embedding sum; the layers after it agree in the plain
    basis: the sparse rotation also weighs the edges to the layer the hook path lacks)."""
    from modgraph.toys import TinyTransformer

    model = TinyTransformer(vocab=7, n_ctx=4, d_model=12, n_heads=2, d_mlp=16).double().eval()
    tokens = torch.randint(0, 7, (150, 4))
    staged = mg.analyze(mg.transformer_chain(model), tokens, progress=False, rotation="none")
    chain = HookedChain(model, ["blocks.0"], output=lambda out: out[:, -1], output_name="logits")
    hooked = mg.analyze(chain, tokens, progress=False, rotation="none")
    assert hooked.layer_names == ["blocks.0", "logits"]
    assert staged.layer_names[1:] == ["blocks.0.resid_post", "logits"]
    _same_analysis(staged, hooked, skip=1)

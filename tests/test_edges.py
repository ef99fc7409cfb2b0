"""Interaction strengths against brute force; integrated gradients; block structure."""

import pytest
import torch
from conftest import mlp, relative, sample_jacobian

import modgraph as mg
from modgraph.chain import LayerChain
from modgraph.edges import quadrature


def _brute_w(net, a, x, l, alphas=(1.0,), weights=(1.0,)):
    chain = LayerChain.from_model(net)
    src, dst = a.layers[l], a.layers[l + 1]
    total = 0
    for xi in x:
        f = chain.forward(xi[None], upto=l)[-1]
        f_hat = src.transform(f)[0]
        along = (f_hat @ src.C_pinv.T)[None]
        grad = 0
        for al, wq in zip(alphas, weights):
            J = sample_jacobian(chain.stages[l], f - (1 - al) * along)
            grad = grad + wq * dst.C @ J @ src.C_pinv
        total = total + (grad * f_hat[None, :]) ** 2
    return (total / len(x)).sqrt()


@pytest.mark.parametrize("basis", ["interaction", "pca", "neuron"])
def test_edges_match_per_sample_brute_force(basis):
    net = mlp(4, 6, 5, 3)
    x = torch.randn(30, 4, dtype=torch.float64)
    a = mg.analyze(net, x, basis=basis, batch_size=8, progress=False)
    for l in range(3):
        assert relative(a.w[l], _brute_w(net, a, x, l)) < 1e-12


def test_integrated_gradients_match_brute_force_on_relu_net():
    net = mlp(4, 6, 3)
    x = torch.randn(20, 4, dtype=torch.float64)
    a = mg.analyze(net, x, attribution="integrated", n_steps=5, progress=False)
    al, wq = quadrature(5)
    for l in range(2):
        assert relative(a.w[l], _brute_w(net, a, x, l, al, wq)) < 1e-12


def test_integrated_gradients_equal_gradients_on_linear_maps():
    net = mlp(5, 4, 3, relu_after=())
    x = torch.randn(50, 5, dtype=torch.float64)
    g = mg.analyze(net, x, progress=False)
    for rule in ("gauss-legendre", "trapezoid"):
        ig = mg.analyze(net, x, attribution="integrated", n_steps=3, rule=rule, progress=False)
        for a, b in zip(g.w, ig.w):
            assert relative(b, a) < 1e-12, rule


def test_integrated_gradients_are_complete():
    # the attributions of one sample sum to the change of the output coordinate along the path
    net = mlp(3, 5, 2)
    x = torch.randn(1, 3, dtype=torch.float64)
    a = mg.analyze(net, torch.randn(200, 3, dtype=torch.float64), progress=False)
    chain = LayerChain.from_model(net)
    src, dst = a.layers[1], a.layers[2]
    f = chain.forward(x, upto=1)[-1]
    f_hat = src.transform(f)[0]
    along = (f_hat @ src.C_pinv.T)[None]
    al, wq = quadrature(64)
    grad = sum(
        w * dst.C @ sample_jacobian(chain.stages[1], f - (1 - t) * along) @ src.C_pinv
        for t, w in zip(al, wq)
    )
    change = dst.transform(chain.stages[1](f)) - dst.transform(chain.stages[1](f - along))
    assert torch.allclose((grad * f_hat).sum(1), change[0], atol=1e-10)


def test_linear_block_diagonal_network_has_no_cross_block_edges():
    net = mlp(6, 6, 6, relu_after=())
    with torch.no_grad():
        for lin in (net[0], net[1]):
            lin.weight.copy_(
                torch.block_diag(*[torch.randn(3, 3, dtype=torch.float64) for _ in range(2)])
            )
    # independent inputs per block, scaled so the blocks' Lambda differ (no ties to rotate)
    x = torch.randn(2000, 6, dtype=torch.float64) * torch.tensor([1, 1, 1, 5, 5, 5.0]).double()
    a = mg.analyze(net, x, progress=False)
    for l, w in enumerate(a.w):
        src_block = _block_of(a.layers[l])
        dst_block = _block_of(a.layers[l + 1])
        cross = w[dst_block[:, None] != src_block[None, :]]
        assert cross.max() / w.max() < 1e-10


def _block_of(layer):
    """Which half of the neurons a basis direction lives in."""
    half = layer.C.shape[1] // 2
    mass = layer.C[:, :half].abs().sum(1) > layer.C[:, half:].abs().sum(1)
    return mass.long()


def test_quadrature_rules():
    for rule in ("gauss-legendre", "trapezoid"):
        a, w = quadrature(6, rule)
        assert abs(w.sum() - 1) < 1e-14 and a.min() >= 0 and a.max() <= 1
    with pytest.raises(mg.InputError, match="'rule' parameter of quadrature must be one of"):
        quadrature(3, "simpson")
    with pytest.raises(mg.InputError, match="'n_steps' parameter of quadrature must be an int"):
        quadrature(0)


# ---------------------------------------------------------------------------- position sources
def _sequence_chain(T=6, d=5):
    """Stages mixing positions (a causal linear map over time, then a position-wise ReLU MLP)."""
    torch.manual_seed(1)

    class Causal(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = torch.nn.Parameter(torch.tril(torch.randn(T, T)).double())
            self.lin = torch.nn.Linear(d, d).double()

        def forward(self, f):  # (B, T, d)
            return self.lin(torch.einsum("ts,bsd->btd", self.mix, f))

    mlp_stage = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.ReLU()).double()
    stages = (Causal().eval(), mlp_stage.eval())
    x = torch.randn(30, T, d, dtype=torch.float64)
    return LayerChain(stages, ("input", "causal", "mlp")), x


def _edges(chain, x, **kw):
    return mg.analyze(chain, x, rotation="none", eps=1e-8, eps_units="absolute", progress=False,
                      n_examples=0, **kw).graph.w  # fmt: skip


def test_position_sources_are_exact_where_positions_do_not_mix_and_when_enough():
    chain, x = _sequence_chain()
    exact = _edges(chain, x)
    one = _edges(chain, x, position_sources=1, seed=3)
    # the position-wise stage: sum_t phi_t a_ts has the single term t = s, so it is exact
    assert relative(torch.as_tensor(one[1]), torch.as_tensor(exact[1])) < 1e-12
    # the stage that mixes positions is only estimated with one source
    assert relative(torch.as_tensor(one[0]), torch.as_tensor(exact[0])) > 1e-6
    # as many sources as positions: every position its own row again
    six = _edges(chain, x, position_sources=6)
    for a, b in zip(six, exact):
        assert relative(torch.as_tensor(a), torch.as_tensor(b)) < 1e-12


def test_position_sources_are_unbiased_for_the_squared_edges():
    chain, x = _sequence_chain()
    exact = torch.as_tensor(_edges(chain, x)[0]) ** 2
    runs = [torch.as_tensor(_edges(chain, x, position_sources=2, seed=s)[0]) ** 2
            for s in range(60)]  # fmt: skip
    mean = torch.stack(runs).mean(0)
    spread = torch.stack(runs).std(0) / len(runs) ** 0.5
    big = exact > 1e-3 * exact.max()
    # within 4 standard errors of the mean everywhere (a biased estimator drifts out)
    assert torch.all((mean - exact).abs()[big] <= 4 * spread[big] + 1e-12)
    # and the single runs do vary: the estimate is random, not the exact value
    assert float(torch.stack(runs).std(0)[big].max()) > 1e-6


def test_position_sources_draw_the_same_signs_on_every_quadrature_point():
    chain, x = _sequence_chain()
    lin = LayerChain(chain.stages[:1], chain.names[:2])  # linear: integrated = gradient
    g = _edges(lin, x, position_sources=2, seed=5)
    i = _edges(lin, x, position_sources=2, seed=5, attribution="integrated", n_steps=3)
    assert relative(torch.as_tensor(i[0]), torch.as_tensor(g[0])) < 1e-12


def test_position_sources_are_checked():
    chain, x = _sequence_chain()
    with pytest.raises(mg.InputError, match="'position_sources' parameter of analyze"):
        _edges(chain, x, position_sources=0)


@pytest.mark.integration  # slow: the unit tier stays fast
def test_position_sources_estimate_m_without_bias_and_exactly_when_enough():
    chain, x = _sequence_chain()

    def m(**kw):
        a = mg.analyze(chain, x, rotation="none", progress=False, n_examples=0, **kw)
        return a.statistics[0].M

    exact = m()
    assert relative(m(position_sources=6), exact) < 1e-12  # one source per position
    runs = torch.stack([m(position_sources=1, seed=s) for s in range(60)])
    assert relative(runs[0], exact) > 1e-6
    spread = runs.std(0) / len(runs) ** 0.5
    assert torch.all((runs.mean(0) - exact).abs() <= 4 * spread + 1e-10 * exact.abs().max())

"""The interaction basis: paper identities and invariances, in float64."""

import copy

import pytest
import torch
from conftest import mlp, relative
from torch import nn

import modgraph as mg


def _transitions(net, a):
    """C_{l+1} W_l C_l^+ for a chain of Linear layers (biases drop out of the transition)."""
    return [
        a.layers[l + 1].C @ net[l].weight.detach() @ a.layers[l].C_pinv for l in range(len(net))
    ]


@pytest.mark.parametrize("variant", ["global", "local"])
def test_deep_linear_transitions_are_unit_diagonal(variant):
    # appendix A, eq. 45: for a deep linear net the importance-scaled basis performs an SVD and
    # every transition is diagonal with unit entries, up to the order and sign of directions
    net = mlp(6, 9, 5, 7, 4, relu_after=())
    x = torch.randn(400, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    a = mg.analyze(net, x, variant=variant, progress=False)
    assert [layer.k for layer in a.layers] == [4, 4, 4, 4, 4]
    for T in _transitions(net, a):
        P = T.abs()
        perm = P.argmax(1)
        assert sorted(perm.tolist()) == list(range(T.shape[1]))
        assert torch.allclose(
            P[torch.arange(len(perm)), perm], torch.ones(len(perm), dtype=torch.float64), atol=1e-9
        )
        off = P.clone()
        off[torch.arange(len(perm)), perm] = 0
        assert off.max() < 1e-9


def test_deep_linear_whitened_scale_is_diagonal_not_unit():
    net = mlp(5, 6, 3, relu_after=())
    a = mg.analyze(net, torch.randn(300, 5, dtype=torch.float64), scale="whitened", progress=False)
    for T in _transitions(net, a):
        assert (T - torch.diag(T.diagonal())).abs().max() < 1e-9
    # into the output (a PCA rotation) the whitened scale leaves Lambda^1/2 on the diagonal
    assert not torch.allclose(T.diagonal().abs(), torch.ones(3, dtype=torch.float64))


def test_deep_linear_bottleneck_keeps_rank():
    # hidden width 2 < all others: every layer keeps exactly 2 directions
    net = mlp(6, 2, 5, relu_after=())
    a = mg.analyze(net, torch.randn(300, 6, dtype=torch.float64), progress=False)
    assert [layer.k for layer in a.layers] == [2, 2, 2]


def _coords(a, net, x):
    chain = mg.LayerChain.from_model(net)
    with torch.no_grad():
        acts = chain.forward(x)
    return [layer.transform(f) for layer, f in zip(a.layers, acts)]


def _equal_up_to_sign(A, B, tol):
    assert A.shape == B.shape
    signs = torch.sign((A * B).sum(0))
    assert relative(A * signs, B) < tol


@pytest.mark.parametrize("variant", ["global", "local"])
def test_invariant_to_invertible_map_of_linear_layer(variant):
    # sec. 6.2: f -> R f on a linear layer (weights compensated) leaves basis activations unchanged
    net = (
        nn.Sequential(
            nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)
        )
        .double()
        .eval()
    )
    x = torch.randn(600, 6, dtype=torch.float64)
    a = mg.analyze(net, x, variant=variant, progress=False)
    assert a.layer_names == ["input", "1", "2", "4", "5"]
    R = torch.randn(5, 5, dtype=torch.float64) + 3 * torch.eye(5, dtype=torch.float64)
    mixed = copy.deepcopy(net)
    with torch.no_grad():
        mixed[2].weight.copy_(R @ net[2].weight)
        mixed[2].bias.copy_(R @ net[2].bias)
        mixed[3].weight.copy_(net[3].weight @ torch.linalg.inv(R))
    b = mg.analyze(mixed, x, variant=variant, progress=False)
    assert [layer.k for layer in a.layers] == [layer.k for layer in b.layers]
    for fa, fb in zip(_coords(a, net, x), _coords(b, mixed, x)):
        _equal_up_to_sign(fa, fb, 1e-8)


@pytest.mark.integration  # slow: the unit tier stays fast
def test_invariant_to_relu_permutation_and_positive_rescaling():
    net = mlp(5, 7, 6, 3)
    x = torch.randn(600, 5, dtype=torch.float64)
    perm = torch.randperm(7)
    s = torch.rand(7, dtype=torch.float64) * 3 + 0.2
    hidden = copy.deepcopy(net)
    with torch.no_grad():
        hidden[0].weight.copy_(s[:, None] * net[0].weight[perm])
        hidden[0].bias.copy_(s * net[0].bias[perm])
        hidden[2].weight.copy_(net[2].weight[:, perm] / s[None, :])
    for variant in ("global", "local"):
        a = mg.analyze(net, x, variant=variant, progress=False)
        b = mg.analyze(hidden, x, variant=variant, progress=False)
        for fa, fb in zip(_coords(a, net, x), _coords(b, hidden, x)):
            _equal_up_to_sign(fa, fb, 1e-8)


def test_kept_directions_equal_activation_rank():
    net = mlp(6, 8, 4)
    basis = torch.randn(3, 6, dtype=torch.float64)
    x = torch.randn(500, 3, dtype=torch.float64) @ basis  # inputs span 3 dimensions
    a = mg.analyze(net, x, progress=False)
    assert a.layers[0].k == 3
    assert int((a.layers[0].gram_spectrum > 1e-10 * a.layers[0].gram_spectrum[0]).sum()) == 3


def test_kept_directions_equal_jacobian_rank():
    net = mlp(6, 8, 4)
    with torch.no_grad():  # the readout has rank 2: the hidden layer matters in 2 directions
        net[2].weight.copy_(
            torch.randn(4, 2, dtype=torch.float64) @ torch.randn(2, 8, dtype=torch.float64)
        )
    a = mg.analyze(net, torch.randn(500, 6, dtype=torch.float64), progress=False)
    assert [layer.k for layer in a.layers] == [6, 2, 2]


@pytest.mark.parametrize("basis", ["pca", "neuron"])
def test_baselines(basis):
    net = mlp(5, 7, 3)
    x = torch.randn(300, 5, dtype=torch.float64)
    a = mg.analyze(net, x, basis=basis, progress=False)
    for layer, s in zip(a.layers, a.statistics):
        assert torch.allclose(layer.C @ layer.C_pinv, torch.eye(layer.k, dtype=torch.float64))
        assert s.M is None
        if basis == "neuron":
            assert torch.equal(layer.C, torch.eye(layer.d, dtype=torch.float64))
        else:  # PCA: orthonormal rows, variances as importance, descending
            assert torch.allclose(layer.C @ layer.C.T, torch.eye(layer.k, dtype=torch.float64))
            assert torch.allclose(layer.C @ s.G @ layer.C.T, torch.diag(layer.eigenvalues))


def test_basis_identities_on_relu_net():
    # the paper's plain basis (rotation="sparse" relaxes C^+T M C^+ = I to within sampling
    # error on undetermined pairs: tests/test_rotation.py)
    net = mlp(5, 9, 6, 3)
    x = torch.randn(800, 5, dtype=torch.float64)
    a = mg.analyze(net, x, rotation="none", progress=False)
    for layer, s in zip(a.layers[:-1], a.statistics):
        eye = torch.eye(layer.k, dtype=torch.float64)
        assert torch.allclose(layer.C @ layer.C_pinv, eye, atol=1e-10)
        # importance scaling: basis activations have covariance Lambda ...
        assert torch.allclose(layer.C @ s.G @ layer.C.T, torch.diag(layer.eigenvalues), atol=1e-9)
        # ... and unit Jacobian Gram: C^+T M C^+ = I (appendix A)
        assert torch.allclose(layer.C_pinv.T @ s.M @ layer.C_pinv, eye, atol=1e-9)
        assert torch.all(layer.eigenvalues[:-1] >= layer.eigenvalues[1:])


def test_ties_are_reported():
    # two identical independent paths: Lambda comes in equal pairs
    net = mlp(2, 2, 2, relu_after=())
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[1].weight.copy_(torch.eye(2))
    x = torch.cat([torch.tensor([[1.0, 1], [-1, -1], [1, -1], [-1, 1]])] * 10).double()
    a = mg.analyze(net, x, progress=False)
    assert a.layers[0].ties == ((0, 1),)
    assert a.layers[1].ties == ((0, 1),)

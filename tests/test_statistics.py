"""Streamed statistics against one-pass and brute-force references; bad input."""

import pytest
import torch
from conftest import mlp, relative, sample_jacobian
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import modgraph as mg
from modgraph.chain import LayerChain
from modgraph.data import Batches
from modgraph.statistics import activation_statistics, global_statistics, jacobian_gram


def _brute_M(chain, x, layer, readout=None):
    """E[J^T J] from an explicit per-sample loop over torch.autograd.functional.jacobian."""
    M = 0
    for xi in x:
        f = chain.forward(xi[None], upto=layer)[-1]
        if readout is None:
            J = sample_jacobian(lambda f: chain.run_from(layer, f), f)
        else:
            J = readout @ sample_jacobian(chain.stages[layer], f)
        M = M + J.T @ J
    return M / len(x)


def test_global_jacobian_gram_matches_brute_force():
    net = mlp(4, 6, 5, 3)
    chain = LayerChain.from_model(net)
    x = torch.randn(40, 4, dtype=torch.float64)
    stats = global_statistics(chain, Batches(x, batch_size=7, dtype=torch.float64))
    for l in range(len(chain)):
        assert relative(stats[l].M, _brute_M(chain, x, l)) < 1e-12
        f = chain.forward(x, upto=l)[-1]
        assert relative(stats[l].G, torch.cov(f.T.detach(), correction=0)) < 1e-12


def test_local_jacobian_gram_matches_brute_force():
    net = mlp(4, 6, 5, 3)
    chain = LayerChain.from_model(net)
    x = torch.randn(40, 4, dtype=torch.float64)
    readout = torch.randn(2, 5, dtype=torch.float64)
    M = jacobian_gram(chain, 1, readout, Batches(x, batch_size=9, dtype=torch.float64))
    assert relative(M, _brute_M(chain, x, 1, readout)) < 1e-12


def test_chunking_over_output_directions_does_not_change_M():
    net = mlp(4, 6, 5)
    chain = LayerChain.from_model(net)
    x = torch.randn(30, 4, dtype=torch.float64)
    full = global_statistics(chain, Batches(x, batch_size=30, dtype=torch.float64))
    tiny = global_statistics(
        chain, Batches(x, batch_size=30, dtype=torch.float64), jacobian_budget=1
    )  # one output direction at a time
    for a, b in zip(full, tiny):
        assert relative(b.M, a.M) < 1e-13


@pytest.mark.parametrize("variant", ["global", "local"])
def test_any_batch_split_gives_the_same_statistics_and_basis(variant):
    net = mlp(5, 8, 6, 3)
    x = torch.randn(64, 5, dtype=torch.float64) * 3 + 10  # offset: stresses the centered update
    one = mg.analyze(net, x, batch_size=64, variant=variant, progress=False)
    uneven = [x[:1], x[1:8], x[8:9], x[9:40], x[40:]]
    loader = DataLoader(TensorDataset(x, torch.zeros(64)), batch_size=5)
    for data in (uneven, list(x[:, None]), loader):
        b = mg.analyze(net, data, variant=variant, progress=False)
        for sa, sb, la, lb in zip(one.statistics, b.statistics, one.layers, b.layers):
            assert relative(sb.mean, sa.mean) < 1e-10
            assert relative(sb.G, sa.G) < 1e-10
            assert relative(sb.M, sa.M) < 1e-10
            assert relative(lb.C, la.C) < 1e-10
        for wa, wb in zip(one.w, b.w):
            assert relative(wb, wa) < 1e-10


def test_activation_statistics_upto():
    chain = LayerChain.from_model(mlp(3, 4, 2))
    accs = activation_statistics(
        chain, Batches(torch.randn(10, 3, dtype=torch.float64), dtype=torch.float64), upto=1
    )
    assert len(accs) == 2 and accs[0].n == 10


# ---------------------------------------------------------------------------- bad input
def test_empty_data():
    with pytest.raises(mg.InputError, match="data is empty"):
        mg.analyze(mlp(3, 2), torch.zeros(0, 3), progress=False)
    with pytest.raises(mg.InputError, match="data is empty"):
        mg.analyze(mlp(3, 2), [], progress=False)


def test_one_shot_iterator_is_refused():
    gen = (torch.randn(4, 3) for _ in range(2))
    with pytest.raises(mg.InputError, match="one-shot iterator"):
        mg.analyze(mlp(3, 2), gen, progress=False)


def test_shape_mismatch_names_the_batch():
    match = r"data batch 0 \(a batch of 5 samples, each of shape \(4,\)"
    with pytest.raises(mg.InputError, match=match):
        mg.analyze(mlp(3, 2), torch.randn(5, 4), progress=False)


def test_non_finite_activations_name_layer_and_batch():
    x = torch.randn(20, 3, dtype=torch.float64)
    x[13, 1] = float("nan")
    with pytest.raises(mg.NonFiniteError, match=r"activations at layer 'input' in data batch 1"):
        mg.analyze(mlp(3, 4, 2), x, batch_size=10, progress=False)


def test_finite_values_whose_sum_overflows_are_finite():
    from modgraph.statistics import check_finite

    big = torch.full((3, 4), 3e38, dtype=torch.float32)  # the sum overflows to inf
    check_finite(big, "activations", "input", 0)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = big.clone()
        x[1, 2] = bad
        with pytest.raises(mg.NonFiniteError, match="non-finite activations at layer 'input'"):
            check_finite(x, "activations", "input", 0)
    x = torch.ones(3, 4)
    x[0, 0], x[0, 1] = float("inf"), -float("inf")  # sum nan
    with pytest.raises(mg.NonFiniteError):
        check_finite(x, "activations", "input", 0)


def test_non_finite_jacobian_names_layer():
    class Sqrt(nn.Module):  # d sqrt|x|/dx is not finite at 0 while the activation is
        def forward(self, x):
            return x.abs().sqrt()

    net = nn.Sequential(nn.Linear(3, 4, bias=False), Sqrt(), nn.Linear(4, 2)).double()
    x = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(mg.NonFiniteError, match="non-finite Jacobian at layer 'input'"):
        mg.analyze(net, x, progress=False)


def test_unknown_layer_name():
    with pytest.raises(mg.InputError, match="unknown layer name 'fc9'"):
        mg.analyze(mlp(3, 4, 2), torch.randn(5, 3), layers=["fc9"], progress=False)


@pytest.mark.parametrize("eps", [0, -0.1, float("nan"), "1e-3"])
def test_bad_eps(eps):
    with pytest.raises(
        mg.InputError, match="'eps' parameter of analyze must be a positive finite float"
    ):
        mg.analyze(mlp(3, 2), torch.randn(5, 3), eps=eps, progress=False)


@pytest.mark.parametrize(
    "arg,value", [("variant", "glob"), ("scale", "x"), ("basis", "svd"), ("attribution", "shap")]
)
def test_bad_choices_name_the_argument(arg, value):
    with pytest.raises(
        mg.InputError, match=f"'{arg}' parameter of analyze must be one of .* Got '{value}' instead"
    ):
        mg.analyze(mlp(3, 2), torch.randn(5, 3), progress=False, **{arg: value})


@pytest.mark.parametrize("module", [nn.Dropout(0.1), nn.BatchNorm1d(4)])
def test_training_mode_is_refused(module):
    net = nn.Sequential(nn.Linear(3, 4), module, nn.Linear(4, 2)).train()
    with pytest.raises(mg.InputError, match=r"in training mode.*model.eval\(\)"):
        mg.analyze(net, torch.randn(5, 3), progress=False)
    mg.analyze(net.eval(), torch.randn(5, 3), progress=False)


def test_layer_selection():
    net = nn.Sequential(
        nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 4), nn.Tanh()), nn.Linear(4, 2)
    )
    chain = LayerChain.from_model(net)
    assert chain.names == ("input", "1", "2.1", "3")
    assert LayerChain.from_model(net, layers="2.0").names == ("input", "2.0", "3")
    assert LayerChain.from_model(net, layers=lambda n: n.startswith("2")).names == (
        "input",
        "2.0",
        "2.1",
        "3",
    )
    assert LayerChain.from_model([nn.Linear(3, 4), nn.ReLU()]).names == ("input", "0", "1")
    x = torch.randn(6, 3)
    assert torch.allclose(chain.forward(x)[-1], net(x))
    with pytest.raises(mg.InputError, match="model must be"):
        LayerChain.from_model(lambda x: x)

"""eps relative to the output's variance, and eps chosen from a task metric (choose_eps)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import modgraph as mg


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 4))
    net = net.double().eval()
    with torch.no_grad():
        net[-1].weight.mul_(30.0)  # outputs of variance ~1e2: absolute and relative eps differ
    x = torch.randn(600, 5, dtype=torch.float64)
    return net, x


@pytest.mark.integration  # slow: the unit tier stays fast
def test_relative_eps_is_a_fraction_of_the_output_variance(mlp):
    net, x = mlp
    a = mg.analyze(net, x, eps=1e-3, progress=False)
    with torch.no_grad():
        y = net(x)
    variance = float(((y - y.mean(0)) ** 2).sum(1).mean())  # the loss of always answering the mean
    assert a.output_variance == pytest.approx(variance, rel=1e-10)
    assert variance > 10  # the case where units matter
    assert a.eps == pytest.approx(1e-3 * variance, rel=1e-12)
    assert a.eps_relative == pytest.approx(1e-3, rel=1e-12)
    assert a.config["eps"] == 1e-3 and a.config["eps_units"] == "relative"
    b = mg.analyze(net, x, eps=a.eps, eps_units="absolute", progress=False)
    assert b.eps == a.eps and b.graph.n_edges == a.graph.n_edges
    for wa, wb in zip(a.w, b.w):
        torch.testing.assert_close(wa, wb, rtol=0, atol=0)
    assert a.with_eps(1e-2, units="relative").eps == pytest.approx(1e-2 * variance, rel=1e-12)
    assert a.with_eps(0.5).eps == 0.5
    assert "of the output variance" in a.summary()


@pytest.mark.integration  # slow: the unit tier stays fast
def test_eps_units_is_checked(mlp):
    net, x = mlp
    with pytest.raises(mg.InputError, match="eps_units"):
        mg.analyze(net, x, eps_units="percent", progress=False)
    a = mg.analyze(net, x, progress=False)
    with pytest.raises(mg.InputError, match="units"):
        a.with_eps(1e-3, units="percent")


def _removed(a, n):
    """The n weakest edges of positive strength, as choose_eps orders them."""
    entries = sorted(
        (float(w[i, j]), l, int(j), int(i))
        for l, w in enumerate(a.w)
        for i, j in zip(*np.nonzero(w.numpy() > 0))
    )
    return [(f"{l}:{j}", f"{l + 1}:{i}") for _, l, j, i in entries[:n]], entries


def test_choose_eps_stops_at_the_first_edge_the_metric_notices(mlp):
    net, x = mlp
    a = mg.analyze(net, x, progress=False)
    ref = net(x).detach()
    tol = 1e-2 * a.output_variance
    c = mg.choose_eps(net, a, x, "behavioral", tolerance=tol)
    edges, entries = _removed(a, c.edges_removed)
    assert 0 < c.edges_removed < len(entries) == c.edges_total
    # the removed edges keep the behavioral loss within the tolerance; one more does not
    inside = mg.loss.behavioral_loss(mg.circuits.run_edge_ablated(net, a, x, edges), ref)
    assert inside <= tol and inside == pytest.approx(c.value, rel=1e-12)
    more, _ = _removed(a, c.edges_removed + 1)
    assert mg.loss.behavioral_loss(mg.circuits.run_edge_ablated(net, a, x, more), ref) > tol
    # eps is the strength of the last edge removed, squared: the graph leaves out exactly those
    assert c.eps == pytest.approx(entries[c.edges_removed - 1][0] ** 2, rel=1e-12)
    assert a.with_eps(c.eps).graph.n_edges == len(entries) - c.edges_removed
    assert c.eps_relative == pytest.approx(c.eps / a.output_variance)
    assert len(c.evaluations) <= math.ceil(math.log2(len(entries))) + 1
    assert "behavioral" in c.reason and f"{c.edges_removed} of {c.edges_total}" in c.reason


def test_choose_eps_with_accuracy_and_labels(mlp):
    net, x = mlp
    a = mg.analyze(net, x, progress=False)
    labels = net(x).argmax(-1)
    c = mg.choose_eps(net, a, x, "accuracy", labels=labels, tolerance=0.0)
    assert c.reference == 1.0 and c.value == 1.0
    loose = mg.choose_eps(net, a, x, "accuracy", labels=labels, tolerance=1.0)
    assert loose.edges_removed == loose.edges_total  # everything may go
    assert loose.eps >= c.eps
    with pytest.raises(mg.InputError, match="needs labels"):
        mg.choose_eps(net, a, x, "accuracy")
    with pytest.raises(mg.InputError, match="labels"):
        mg.choose_eps(net, a, x, "accuracy", labels=torch.rand(600))
    with pytest.raises(mg.InputError, match="metric"):
        mg.choose_eps(net, a, x, "f1", labels=labels)


def test_edges_needed_per_pair_stops_at_the_first_edge_the_metric_notices(mlp):
    """The LIB paper's count: per layer pair alone, the weakest edges removable within the
    tolerance; the rest are needed. Checked by ablating the pair's edges directly."""
    net, x = mlp
    a = mg.analyze(net, x, progress=False)
    ref = net(x).detach()
    tol = 1e-3 * a.output_variance
    count = mg.edges_needed(net, a, x, "behavioral", tolerance=tol)
    assert count.pairs == tuple(f"{p} -> {q}" for p, q in zip(a.layer_names, a.layer_names[1:]))
    for l, (needed, total) in enumerate(zip(count.needed, count.total)):
        w = a.w[l].numpy()
        entries = sorted((float(w[i, j]), int(j), int(i)) for i, j in zip(*np.nonzero(w > 0)))
        assert total == len(entries)
        gone = [(f"{l}:{j}", f"{l + 1}:{i}") for _, j, i in entries[: total - needed]]
        assert mg.loss.behavioral_loss(mg.circuits.run_edge_ablated(net, a, x, gone), ref) <= tol
        if needed:
            more = [(f"{l}:{j}", f"{l + 1}:{i}") for _, j, i in entries[: total - needed + 1]]
            assert mg.loss.behavioral_loss(mg.circuits.run_edge_ablated(net, a, x, more), ref) > tol
    assert 0 < count.n_needed < sum(count.total)


@pytest.mark.integration  # slow: the unit tier stays fast
def test_a_raw_output_keeps_its_own_coordinates(mlp):
    """output_basis="raw": one node per output unit (C = I) even after the rotation; the edges
    into it are the PCA output's turned back (same column norms), the rest unchanged."""
    net, x = mlp
    for rotation in ("none", "sparse"):
        raw = mg.analyze(net, x, output_basis="raw", rotation=rotation, progress=False)
        out = raw.layers[-1]
        assert torch.equal(out.C, torch.eye(out.d, dtype=out.C.dtype))
        assert raw.config["output_basis"] == "raw"
    pca = mg.analyze(net, x, rotation="none", progress=False)
    raw = mg.analyze(net, x, output_basis="raw", rotation="none", progress=False)
    for wa, wb in zip(pca.w[:-1], raw.w[:-1]):
        torch.testing.assert_close(wa, wb, rtol=1e-12, atol=0)
    torch.testing.assert_close((raw.w[-1] ** 2).sum(0), (pca.w[-1] ** 2).sum(0), rtol=1e-10,
                               atol=0)  # fmt: skip
    with pytest.raises(mg.InputError, match="output_basis"):
        mg.analyze(net, x, output_basis="logits", progress=False)

"""Tests of modgraph.diagnostics.sparsify (paper sec. 4): planted rank drops and synchronized
blocks must become absent interactions, the rewritten network must reproduce the original
outputs (to 1e-10 in float64 for exact degeneracies), and approximate rewrites must report a
behavioral loss below their stated bound.

The planted network (input 7 -> 8 ReLU -> 6 ReLU -> 3):

- the input spans 6 of its 7 dimensions (x_6 = x_4 + 2 x_5 - 1): 8 weights of W_0 are free;
- hidden neurons 0, 1, 2 fire exactly when x_0 > 0, with preactivations of rank 3 (9 degrees of
  freedom); neuron 4 is twice neuron 3 (a block of rank 1, and a rank drop of layer 1: 6 weights
  of W_1 free); neurons 5-7 are generic;
- second-layer neurons 0, 1 fire exactly when the first block does (rank 2, 4 degrees of freedom).

Weights are otherwise dense, so every zero of the rewritten network was made by the construction.
"""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from modgraph.diagnostics import BlockGate, sparsify, synchronized_blocks
from modgraph.errors import InputError

F64 = torch.float64


def planted(n=400, seed=0, dup_noise=0.0, flip=False):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=F64)

    def u(*s):
        return torch.rand(*s, generator=g, dtype=F64)

    sign = torch.where(u(n) < 0.5, -1.0, 1.0).to(F64)
    z = torch.stack([sign * (1 + u(n)), *(0.2 * u(3, n) - 0.1), *r(2, n)], 1)
    x = torch.cat([z, (z[:, 4] + 2 * z[:, 5] - 1)[:, None]], 1)
    net = nn.Sequential(
        nn.Linear(7, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)
    ).double()
    with torch.no_grad():
        W1, b1 = r(8, 7), 0.5 * r(8)
        W1[:3] = 0.01 * r(3, 7)
        W1[:3, 0] = 1.0
        W1[:3, 1:4] += 0.5 * r(3, 3)
        b1[:3] = 0.2 * (u(3) - 0.5)
        if flip:  # neuron 2 also fires on a few inputs with x_0 just below -1
            b1[2] = 1.04
        W1[4], b1[4] = 2 * W1[3], 2 * b1[3]
        W1[4] += dup_noise * r(7)
        W2, b2 = r(6, 8), 0.5 * r(6)
        W2[:2] = 0.01 * r(2, 8)
        W2[:2, 0] += 2 * u(2) + 1
        W2[:2, 1] += u(2) + 0.5
        b2[:2] = -0.3
        net[0].weight.copy_(W1)
        net[0].bias.copy_(b1)
        net[2].weight.copy_(W2)
        net[2].bias.copy_(b2)
        net[4].weight.copy_(r(3, 6))
    return net.eval(), x


@pytest.fixture(scope="module")
def exact():
    net, x = planted()
    return net, x, sparsify(net, x, eps=1e-10)


# ------------------------------------------------------------------------------ exact degeneracies
def test_planted_structure_is_what_the_diagnostics_see():
    net, x = planted()
    assert synchronized_blocks(net, x, 1).blocks[:2] == ((0, 1, 2), (3, 4))
    assert synchronized_blocks(net, x, 1).ranks[:2] == (3, 1)
    assert synchronized_blocks(net, x, 2).blocks[0] == (0, 1)
    assert synchronized_blocks(net, x, 2).ranks[0] == 2


def test_exact_rewrite_reproduces_outputs(exact):
    net, x, s = exact
    with torch.no_grad():
        err = (s.model(x) - net(x)).abs().max().item()
    assert err < 1e-10
    assert s.behavioral_loss < 1e-20
    assert isinstance(s.model[1], BlockGate) and isinstance(s.model[3], BlockGate)


def test_exact_rewrite_meets_lower_bound(exact):
    _, _, s = exact
    l0, l1, l2 = s.layers
    # step 1: one absent interaction per weight freed by an activation rank drop
    assert (l0.activation_rank, l0.dof_rank, l0.zeroed_rank) == (6, 8, 8)
    assert (l1.activation_rank, l1.dof_rank, l1.zeroed_rank) == (7, 6, 6)
    # step 2: blocks of ranks (3, 1) + 3 singletons, and (2,) + 4 singletons
    assert (l0.dof_sync, l0.rescalings, l0.zeroed_sync, l0.unit_sync) == (13, 7, 6, 7)
    assert (l1.dof_sync, l1.rescalings, l1.zeroed_sync, l1.unit_sync) == (8, 6, 2, 6)
    # step 3: the incoming weights of the merged duplicate (its column 5 is already zero)
    assert l0.zeroed_dead_ends == 6
    assert s.meets_bound and all(r.meets_bound for r in s.layers)
    for r, W in zip(s.layers, s.weights):
        assert r.absent_before == 0
        assert r.absent_after == int((W == 0).sum()) == r.zeroed
    assert s.blocks[1] == ((0, 1, 2), (3, 4)) and s.blocks[2] == ((0, 1),)


def test_bases_map_old_neurons_to_new(exact):
    """f~_l = C_l f_l on the data, and the stored weights are the model's."""
    net, x, s = exact
    with torch.no_grad():
        old = [x, net[:2](x), net[:4](x)]
        new = [x, s.model[:2](x), s.model[:4](x)]
    for l, (f_old, f_new) in enumerate(zip(old, new)):
        live = (s.weights[l] != 0).any(0)  # disconnected neurons carry no constraint
        want = (f_old @ s.bases[l].T)[:, live]
        assert torch.allclose(f_new[:, live], want, atol=1e-10, rtol=0), l
    for k, W in enumerate(s.weights):
        assert torch.equal(s.model[2 * k].weight.detach(), W)


def test_graph_is_rms_contribution_per_edge(exact):
    """Reference: an explicit per-sample loop over the data."""
    _, x, s = exact
    g = s.graph
    assert g.layer_sizes == (7, 8, 6, 3)
    with torch.no_grad():
        fs = [x, s.model[:2](x), s.model[:4](x)]
    for l, f in enumerate(fs):
        W = s.weights[l]
        ref = np.zeros(tuple(W.shape))
        for xi in f:
            ref += (W * xi[None, :]).square().numpy()
        np.testing.assert_allclose(g.w[l], np.sqrt(ref / len(f)), rtol=1e-12, atol=0)
        assert (g.w[l][(W == 0).numpy()] == 0).all()
    assert g.n_edges < s.original_graph.n_edges
    assert s.original_graph.n_edges == sum(int((w > 1e-5).sum()) for w in s.original_graph.w)


def test_counts_invariant_under_hidden_reparametrization(exact):
    """Permuting and positively rescaling hidden neurons hides nothing from the construction."""
    net, x, s = exact
    g = torch.Generator().manual_seed(3)
    hidden = copy.deepcopy(net)
    with torch.no_grad():
        for lin_in, lin_out in ((hidden[0], hidden[2]), (hidden[2], hidden[4])):
            d = lin_in.out_features
            perm = torch.randperm(d, generator=g)
            c = torch.rand(d, generator=g, dtype=F64) + 0.5
            lin_in.weight.copy_(c[perm, None] * lin_in.weight[perm])
            lin_in.bias.copy_(c[perm] * lin_in.bias[perm])
            lin_out.weight.copy_(lin_out.weight[:, perm] / c[perm][None, :])
        assert (hidden(x) - net(x)).abs().max() < 1e-12
    s2 = sparsify(hidden.eval(), x, eps=1e-10)
    keys = ("zeroed_rank", "dof_rank", "zeroed_sync", "dof_sync", "zeroed_dead_ends")
    for a, b in zip(s.layers, s2.layers):
        assert [getattr(a, k) for k in keys] == [getattr(b, k) for k in keys]
    assert (s2.model(x) - net(x)).abs().max() < 1e-10


def test_generic_network_has_nothing_to_zero():
    """No planted degeneracy: only the per-neuron rescalings, which zero nothing."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).double().eval()
    x = torch.randn(300, 4, dtype=F64)
    s = sparsify(net, x, eps=1e-10)
    r0 = s.layers[0]
    assert (r0.dof_rank, r0.zeroed_rank, r0.zeroed_sync) == (0, 0, 0)
    assert r0.dof_sync == r0.rescalings == r0.unit_sync == 5
    assert s.graph.n_edges == s.original_graph.n_edges
    assert (s.model(x) - net(x)).abs().max() < 1e-12
    assert "ok" in s.report() and "behavioral loss" in s.report()


# ------------------------------------------------------------------------------ approximate
def test_approximate_rewrite_reports_loss_below_bound():
    net, x = planted(dup_noise=1e-3, flip=True)
    exact_ = sparsify(net, x, eps=1e-12)
    approx = sparsify(net, x, eps=1e-4, mismatch=0.05, rank_rtol=1e-2)
    # exact mode sees neither the near-duplicate nor the near-synchronized neuron 2
    assert (0, 1, 2) not in exact_.blocks[1] and (3, 4) in exact_.blocks[1]
    assert (0, 1, 2) in approx.blocks[1]
    assert approx.layers[1].activation_rank == 7 and exact_.layers[1].activation_rank == 8
    assert sum(r.zeroed for r in approx.layers) > sum(r.zeroed for r in exact_.layers)
    # the approximations cost something, measured, and no more than the stated bound
    assert 1e-12 < approx.behavioral_loss <= approx.loss_bound
    with torch.no_grad():
        measured = float((approx.model(x) - net(x)).square().sum(1).mean())
    assert measured == pytest.approx(approx.behavioral_loss, rel=1e-12)
    assert approx.layers[0].loss_bound_sync > 0  # the flipped neuron and the near-duplicate


# ------------------------------------------------------------------------------ bad input
def test_bad_input_is_named():
    net, x = planted()
    with pytest.raises(
        InputError, match=r"'eps' parameter of sparsify must be a positive finite float. Got -1"
    ):
        sparsify(net, x, eps=-1.0)
    with pytest.raises(InputError, match=r"'mismatch' parameter of sparsify .* \[0, 1\]. Got 2"):
        sparsify(net, x, eps=1e-10, mismatch=2)
    with pytest.raises(InputError, match=r"data has 3 features per sample .* reads 7"):
        sparsify(net, x[:, :3], eps=1e-10)
    with pytest.raises(InputError, match=r"got Tanh at position 1"):
        sparsify(nn.Sequential(nn.Linear(7, 2), nn.Tanh(), nn.Linear(2, 1)).eval(), x, eps=1e-9)
    with pytest.raises(InputError, match="must end with an nn.Linear"):
        sparsify(nn.Sequential(nn.Linear(7, 2), nn.ReLU()).eval(), x, eps=1e-9)
    with pytest.raises(InputError, match="eval mode"):
        sparsify(nn.Sequential(nn.Linear(7, 2)).train(), x, eps=1e-9)
    with pytest.raises(InputError, match="nn.Sequential"):
        sparsify(nn.Linear(7, 2), x, eps=1e-9)

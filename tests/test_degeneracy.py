"""Tests of modgraph.diagnostics: known answers (linear models, the paper's toy losses), reference
computations (brute-force Jacobians and Hessians, float64, rtol 1e-8), planted synchronized ReLUs,
and bad input.

Known answers used:

- regular linear model ``y = W x + b``, data spanning the input: ``N_eff = d_out (d_in + 1)``;
- deep linear network ``y = W2 W1 x``, hidden width ``h <= min(d_in, d_out)``, full-rank weights:
  ``N_eff = h (d_in + d_out) - h^2`` (the ``GL(h)`` orbit ``W2 A^-1, A W1`` is free);
- ``L = c^2 w^2 + w^4``: ``lambda(eps) = 1/4`` for ``eps >> c^4``, ``1/2`` for ``eps << c^4``
  (sec. 2.2.2);
- ``L = w1^2 w2^2`` (Figure 1, N_eff = 1): lambda = 1/2 only as eps -> 0, with a ``1/log(1/eps)``
  correction from the multiplicity 2 (V(eps) ~ eps^1/2 log 1/eps), so the sampler is checked against
  a quadrature of the same tempered posterior instead.
"""

import math

import numpy as np
import pytest
import torch
from conftest import sample_jacobian
from scipy import integrate
from torch import nn

from modgraph.diagnostics import (
    effective_parameter_count,
    layer_ranks,
    llc_estimate,
    synchronized_blocks,
)
from modgraph.errors import InputError
from modgraph.plotting import plot_degeneracy

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors gain nothing from threads, and oversubscribed cores slow them 10x.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _regular(d_in=6, d_out=3):
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(d_in, d_out)).double().eval()


def _deep_linear(d_in=6, h=2, d_out=5):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(d_in, h, bias=False), nn.Linear(h, d_out, bias=False)).double()
    with torch.no_grad():  # O(1) singular values, so the GL(h) orbit stays full rank nearby
        net[0].weight.mul_(3.0)
        net[1].weight.mul_(3.0)
    return net.eval()


def _inputs(n=512, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("eps", [0.0, -0.1, float("nan"), float("inf"), "1e-3", True])
def test_eps_must_be_positive_finite(eps):
    net, x = _regular(), _inputs()
    for call, name in (
        (lambda: layer_ranks(net, x, threshold=eps), "'threshold' parameter of layer_ranks"),
        (
            lambda: effective_parameter_count(net, x, eps=eps),
            "'eps' parameter of effective_parameter_count",
        ),
        (
            lambda: llc_estimate(lambda w: (w**2).sum(), torch.zeros(2), eps=eps),
            "'eps' parameter of llc_estimate",
        ),
    ):
        with pytest.raises(
            InputError, match=rf"{name} must be a positive finite float. Got"
        ) as err:
            call()
        assert repr(eps) in str(err.value)


def test_method_and_temperature_arguments_checked():
    with pytest.raises(
        InputError,
        match="'method' parameter of effective_parameter_count must be one of .*Got 'fisher'",
    ):
        effective_parameter_count(_regular(), _inputs(), eps=1e-3, method="fisher")
    with pytest.raises(InputError, match="either eps .* or beta"):
        llc_estimate(lambda w: (w**2).sum(), torch.zeros(2), eps=1e-3, beta=0.5)
    with pytest.raises(InputError, match="needs eps"):
        llc_estimate(lambda w: (w**2).sum(), torch.zeros(2))
    with pytest.raises(
        InputError, match=r"'n_burnin' parameter of llc_estimate .* \[0, 9\]. Got 10"
    ):
        llc_estimate(lambda w: (w**2).sum(), torch.zeros(2), eps=1.0, n_steps=10, n_burnin=10)


def test_synchronized_blocks_refuses_a_layer_without_relu():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = _inputs(32, 3)
    with pytest.raises(InputError, match="layer '2' is not the output of a ReLU"):
        synchronized_blocks(net, x, "2")
    with pytest.raises(InputError, match="layer 'input' is not the output of a ReLU"):
        synchronized_blocks(net, x, 0)


# ------------------------------------------------------------------------------ layer ranks
def test_grams_match_brute_force():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double().eval()
    x = _inputs(40, 4)
    res = layer_ranks(net, x, threshold=1e-12, batch_size=7)  # uneven batches: streamed == one-shot
    h = net[1](net[0](x)).detach()
    g_ref = np.cov(h.numpy().T, bias=True)
    np.testing.assert_allclose(
        res.layers[1].activation_eigenvalues, np.linalg.eigvalsh(g_ref)[::-1], rtol=1e-8, atol=1e-12
    )
    m_ref = torch.zeros(5, 5, dtype=F64)
    for xi in h:  # explicit per-sample loop
        J = sample_jacobian(net[2], xi[None])
        m_ref += J.T @ J
    np.testing.assert_allclose(
        res.layers[1].jacobian_eigenvalues,
        np.linalg.eigvalsh((m_ref / len(x)).numpy())[::-1],
        rtol=1e-8,
        atol=1e-12,
    )


def test_planted_rank_drops_free_the_right_parameters():
    # Inputs span 3 of 5 dimensions; W2 has 2 rows, so M at the hidden layer has rank 2.
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(5, 6), nn.Linear(6, 2)).double().eval()
    z = _inputs(300, 3)
    x = z @ torch.randn(3, 5, dtype=F64)
    res = layer_ranks(net, x, threshold=1e-9)
    inp, hid, out = res.layers
    assert (inp.activation_rank, hid.activation_rank, hid.jacobian_rank) == (3, 3, 2)
    assert inp.freed_by_activations == (5 - 3) * 6  # d_{l+1} per dropped activation dimension
    assert hid.freed_by_jacobians == (6 - 2) * (5 + 1)  # d_l (+ bias) per dropped Jacobian dim
    assert inp.double_counted == (5 - 3) * (6 - 2)
    # W1 with bias: (d_in + 1) d_out weights, of which only (r_G + 1) r_M matter.
    freed_w1 = inp.freed_by_activations + hid.freed_by_jacobians - inp.double_counted
    assert freed_w1 == 6 * 6 - (3 + 1) * 2
    assert hid.freed_by_activations == (6 - 3) * 2
    assert res.total_freed == freed_w1 + 6
    # Rank drops are a lower bound: N_eff (the Hessian rank) is an affine map 3 -> 2 here, 8.
    n_eff = effective_parameter_count(net, x, eps=1e-9).value
    assert n_eff == 8
    assert res.total_freed <= res.n_params - n_eff
    assert "total freed: 34 of 50" in res.table()
    assert res.to_dict()["activation_rank"] == [3, 3, 2]


def test_preactivation_jacobian_sees_dead_relus():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    with torch.no_grad():
        net[0].bias[:2] = -100.0  # two dead neurons
    res = layer_ranks(net, _inputs(200, 3), threshold=1e-9)
    hidden = res.layers[1]
    assert hidden.activation_rank == 2 and hidden.preactivation_rank == 2
    assert hidden.freed_by_jacobians == 2 * (3 + 1)  # the dead neurons' incoming weights
    assert hidden.freed_by_activations == 2 * 2  # and their outgoing weights


# ------------------------------------------------------------------------------ Hessian
def test_exact_hessian_matches_autograd_hessian():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double().eval()
    x = _inputs(30, 3)
    res = effective_parameter_count(net, x, eps=1e-12)
    y_star = net(x).detach()
    params = [p.detach() for p in net.parameters()]
    sizes = [p.numel() for p in params]

    def loss(w):
        ps = [c.view(p.shape) for c, p in zip(w.split(sizes), params)]
        out = torch.tanh(x @ ps[0].T + ps[1]) @ ps[2].T + ps[3]
        return ((out - y_star) ** 2).sum(1).mean()  # eq. 6: no factor 1/2

    H = torch.autograd.functional.hessian(loss, torch.cat([p.reshape(-1) for p in params]))
    ref = np.linalg.eigvalsh(H.numpy())[::-1]
    np.testing.assert_allclose(res.eigenvalues, ref, rtol=1e-8, atol=1e-10)
    assert res.approximation == "exact"


def test_hessian_known_answers_exact_and_kfac():
    x = _inputs()
    reg = effective_parameter_count(_regular(), x, eps=1e-6)
    assert reg.value == reg.n_params == 3 * (6 + 1)
    deep = effective_parameter_count(_deep_linear(), x, eps=1e-6)
    assert deep.n_params == 2 * (6 + 5)
    assert deep.value == 2 * (6 + 5) - 2**2
    # One Linear: the Kronecker factorization (eq. 37) is exact.
    reg_k = effective_parameter_count(_regular(), x, eps=1e-6, exact_max_params=0)
    assert (reg_k.approximation, reg_k.value) == ("kfac", reg.value)
    np.testing.assert_allclose(reg_k.eigenvalues, reg.eigenvalues, rtol=1e-8, atol=1e-10)
    # Across layers it drops the GL(h) symmetry and counts every weight (documented).
    assert effective_parameter_count(_deep_linear(), x, eps=1e-6, exact_max_params=0).value == 22


def test_hessian_threshold_is_eps_scale():
    x = _inputs()
    net = _regular()
    res = effective_parameter_count(net, x, eps=1e-6)
    h = res.eigenvalues
    eps_mid = float(h[-1]) / 2 * 1.01  # just above half the smallest eigenvalue
    # H = 2 I_3 (x) E[[x;1][x;1]^T]: each input direction comes once per output, so 3 drop out.
    assert effective_parameter_count(net, x, eps=eps_mid).value == res.value - 3
    assert effective_parameter_count(net, x, eps=eps_mid).threshold == pytest.approx(2 * eps_mid)


# ------------------------------------------------------------------------------ LLC: toy losses
def _quadrature_lambda(loss, nbeta, gamma, bound):
    """n beta E[L] under exp(-n beta L - gamma/2 w^2), 1-d, by quadrature."""
    f = lambda w: math.exp(-nbeta * loss(w) - gamma * w * w / 2)  # noqa: E731
    z = integrate.quad(f, -bound, bound, limit=400)[0]
    return nbeta * integrate.quad(lambda w: f(w) * loss(w), -bound, bound, limit=400)[0] / z


def test_llc_regular_quadratic():
    est = llc_estimate(
        lambda W: (W**2).sum(1), torch.zeros(3, dtype=F64), eps=1e-2, gamma=0.0, vectorized=True,
        n_chains=8, n_steps=3000, seed=0,
    )  # fmt: skip
    assert est.ok and est.converged
    assert est.value == pytest.approx(1.5, rel=0.05)


@pytest.mark.parametrize("eps,known", [(1e-1, 0.25), (1e-7, 0.5)])
def test_llc_quartic_crossover(eps, known):
    # L = c^2 w^2 + w^4, c^4 = 1e-4: quartic-dominated above, quadratic below (sec. 2.2.2).
    c = 0.1
    step = 1e-3 if eps > 1e-4 else None  # auto step uses the Hessian 2c^2 at w* = 0
    est = llc_estimate(
        lambda W: c**2 * W[:, 0] ** 2 + W[:, 0] ** 4, torch.zeros(1, dtype=F64), eps=eps,
        gamma=0.01, step_size=step, vectorized=True, n_chains=32, n_steps=6000, seed=0,
    )  # fmt: skip
    assert est.ok
    assert est.value == pytest.approx(known, rel=0.15)
    scale = min(eps**0.25, math.sqrt(eps) / c)
    ref = _quadrature_lambda(lambda w: c**2 * w**2 + w**4, 1 / eps, 0.01, 30 * scale)
    assert est.value == pytest.approx(ref, rel=0.10)


@pytest.mark.integration
def test_llc_w1w2_matches_tempered_posterior():
    # Figure 1: L = w1^2 w2^2, lambda -> 1/2 only logarithmically. Compare with quadrature: given
    # w1, w2 is Gaussian with precision 2 n beta w1^2 + gamma, so the reference is a 1-d integral.
    nbeta, gamma = 1e3, 10.0
    f = lambda w: math.exp(-gamma * w * w / 2) / math.sqrt(2 * nbeta * w * w + gamma)  # noqa: E731
    num = integrate.quad(lambda w: f(w) * nbeta * w * w / (2 * nbeta * w * w + gamma), 0, 20)[0]
    ref = num / integrate.quad(f, 0, 20, points=[1 / math.sqrt(nbeta)])[0]
    assert 0.28 < ref < 0.30  # far below 1/2 at this scale: the multiplicity-2 log correction
    est = llc_estimate(
        lambda W: W[:, 0] ** 2 * W[:, 1] ** 2, torch.zeros(2, dtype=F64), eps=1 / nbeta,
        gamma=gamma, step_size=5e-5, vectorized=True, n_chains=32, n_steps=20000, seed=0,
    )  # fmt: skip
    assert est.ok and est.rhat < 1.1
    assert est.value == pytest.approx(ref, rel=0.10)


def test_llc_devinterp_temperature_and_vmap_path():
    # Without eps: n beta = n / log n. loss_fn not vectorized: vmap(grad_and_value) path.
    est = llc_estimate(
        lambda w: (w**2).sum(), torch.zeros(2, dtype=F64), n=1000, gamma=0.0, n_steps=800, seed=0
    )
    assert est.nbeta == pytest.approx(1000 / math.log(1000))
    assert math.isnan(est.eps)
    assert est.value == pytest.approx(1.0, rel=0.15)


def test_llc_is_deterministic_given_seed():
    kw = dict(eps=1e-2, gamma=0.0, n_steps=200, vectorized=True)
    a = llc_estimate(lambda W: (W**2).sum(1), torch.zeros(2, dtype=F64), seed=3, **kw)
    b = llc_estimate(lambda W: (W**2).sum(1), torch.zeros(2, dtype=F64), seed=3, **kw)
    np.testing.assert_array_equal(a.loss_trace, b.loss_trace)


def test_diverging_chains_give_nan_not_a_number():
    est = llc_estimate(
        lambda W: (W**2).sum(1), torch.zeros(2, dtype=F64), eps=1e-2, step_size=1.0,
        vectorized=True, n_steps=400,
    )  # fmt: skip
    assert not est.ok and math.isnan(est.value) and not est.converged
    assert "diverged" in est.reason and "step_size" in est.reason
    assert est.loss_trace.shape == (4, 400) and np.isfinite(est.loss_trace[:, 0]).all()
    res = effective_parameter_count(
        _regular(), _inputs(), eps=1e-3, method="llc", step_size=1.0, n_steps=200
    )
    assert not res.ok and math.isnan(res.value) and res.llc.loss_trace.shape == (4, 200)


# ------------------------------------------------------------------------------ LLC: models
@pytest.mark.integration
@pytest.mark.parametrize("which", ["regular", "deep"])
def test_llc_linear_models_within_15_percent(which):
    net = _regular() if which == "regular" else _deep_linear()
    known = 21 if which == "regular" else 2 * (6 + 5) - 4
    res = effective_parameter_count(net, _inputs(), eps=1e-3, method="llc", n_steps=1500, seed=0)
    assert res.ok and res.llc.rhat < 1.1
    assert res.value == pytest.approx(known, rel=0.15)
    assert res.llc.init_loss == 0.0  # behavioral loss at theta*


# ------------------------------------------------------------------------------ synchronized ReLUs
def _planted_sync(perm):
    """Linear(3, 9) + ReLU with planted blocks, neurons shuffled by ``perm``.

    Inputs: x0 in +-[1, 2], |x1|, |x2| < 0.5, so the sign of every planted preactivation is set by
    x0 (or by a large bias). Unshuffled: {0, 1, 2} fire when x0 > 0 and are positive multiples
    (rank 1); {3, 4} fire when x0 < 0 with rank 2; {5, 7} always fire (one linear block, rank 2);
    6 is dead; 8 fires when x0 > 1.05, off block {0, 1, 2} on a few inputs only.
    """
    W = torch.tensor(
        [[1, 0, 0], [2, 0, 0], [0.5, 0, 0], [-1, 0.5, 0], [-2, 0, -0.3],
         [0.1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=F64,
    )  # fmt: skip
    b = torch.tensor([0, 0, 0, 0, 0, 5, -5, 5, -1.05], dtype=F64)
    lin = nn.Linear(3, 9).double()
    out = nn.Linear(9, 2).double()
    with torch.no_grad():
        lin.weight.copy_(W[perm])
        lin.bias.copy_(b[perm])
    g = torch.Generator().manual_seed(0)
    x0 = (1 + torch.rand(400, generator=g, dtype=F64)) * torch.where(
        torch.rand(400, generator=g) < 0.5, -1.0, 1.0
    ).double()
    x = torch.stack([x0, *(torch.rand(2, 400, generator=g, dtype=F64) - 0.5)], 1)
    return nn.Sequential(lin, nn.ReLU(), out).eval(), x


def test_planted_synchronized_blocks_recovered_exactly():
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(7))
    inv = {int(p): i for i, p in enumerate(perm)}  # planted neuron -> shuffled position
    net, x = _planted_sync(perm)
    res = synchronized_blocks(net, x, "1")
    expect = {
        frozenset(inv[i] for i in block): rank
        for block, rank in [((0, 1, 2), 1), ((3, 4), 2), ((5, 7), 2), ((8,), 1)]
    }
    got = {frozenset(b): r for b, r in zip(res.blocks, res.ranks)}
    assert got == expect
    assert res.dead == (inv[6],)
    assert set(res.always_on) == {inv[5], inv[7]}
    assert res.degrees_of_freedom == 1 + 4 + 4 + 1  # sum_a s_a^2 (eq. 22)
    assert len(res.synchronized) == 3


def test_approximate_synchronization_with_mismatch():
    net, x = _planted_sync(torch.arange(9))
    frac = float(((x[:, 0] > 0) & (x[:, 0] <= 1.05)).double().mean())
    assert 0 < frac < 0.06
    res = synchronized_blocks(net, x, 1, mismatch=0.06)
    assert (0, 1, 2, 8) in res.blocks
    assert res.ranks[res.blocks.index((0, 1, 2, 8))] == 2  # bias -1.05 adds a direction
    assert (0, 1, 2) in synchronized_blocks(net, x, 1, mismatch=frac / 2).blocks


# ------------------------------------------------------------------------------ figure
def test_plot_degeneracy(tmp_path):
    net, x = _planted_sync(torch.arange(9))
    ranks = layer_ranks(net, x, threshold=1e-9)
    llc = effective_parameter_count(_regular(), _inputs(), eps=1e-3, method="llc", n_steps=200)
    fig = plot_degeneracy(ranks, llc)
    a, b = fig.axes[:2]
    assert a.get_title() and a.get_ylabel() and a.get_legend() is not None
    assert "SGLD" in b.get_title() and b.get_xlabel() == "SGLD step"
    assert len(b.get_lines()) >= 4  # one line per chain
    fig.savefig(tmp_path / "degeneracy.png")
    assert (tmp_path / "degeneracy.png").stat().st_size > 0
    assert len(plot_degeneracy(ranks).axes) == 1

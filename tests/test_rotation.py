"""Sparse rotations of undetermined pairs (modgraph.rotation): gains on planted modules, and the
basis properties that must survive them."""

import copy
from functools import partial

import numpy as np
import pytest
import torch
from conftest import mlp, relative
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import modgraph as mg
from modgraph import rotation
from modgraph.chain import LayerChain
from modgraph.data import Batches
from modgraph.rotation import (
    _directions,
    _jacobian,
    _orient,
    _Samples,
    _turn,
    mixing_error,
    sparse_rotation,
)
from modgraph.toys.planted import EPS, Case, make_case, score_analysis

# K = 4 random modules, bottleneck mixed, inputs rotated: the plain basis mixes modules here
HIDDEN = Case("hidden", 4, "perm+mix+rot", seed=1)
#: The planted cases are built against an absolute eps (their leaks below its square root).
ABS = {"eps": EPS, "eps_units": "absolute"}


@pytest.fixture(scope="module")
def hidden():
    planted = make_case(HIDDEN)
    plain = mg.analyze(planted.model, planted.inputs, **ABS, rotation="none", progress=False)
    sparse = mg.analyze(planted.model, planted.inputs, **ABS, rotation="sparse", progress=False)
    return planted, plain, sparse


def test_sparse_rotation_recovers_modules_the_plain_basis_mixes(hidden):
    planted, plain, sparse = hidden
    assert sparse.config["rotation"] == "sparse" and plain.config["rotation"] == "none"
    # the default; on too few samples for standard errors it warns and keeps the plain basis
    with pytest.warns(UserWarning, match="the data has 50 samples, fewer than the 256"):
        few = mg.analyze(planted.model, planted.inputs[:50], progress=False)
    assert few.config["rotation"] == "sparse"
    few_plain = mg.analyze(planted.model, planted.inputs[:50], rotation="none", progress=False)
    assert all(torch.equal(a.C, b.C) for a, b in zip(few.layers, few_plain.layers))
    assert score_analysis(planted, plain) < 0.5
    assert score_analysis(planted, sparse) == 1.0
    # the mixed directions' edges into other modules are gone
    assert sparse.graph.n_edges < plain.graph.n_edges


def test_rotated_basis_keeps_its_identities(hidden):
    _, plain, sparse = hidden
    changed = 0
    for lp, ls, s in zip(plain.layers, sparse.layers, sparse.statistics):
        eye = torch.eye(ls.k, dtype=torch.float64)
        assert ls.k == lp.k
        assert torch.allclose(ls.C @ ls.C_pinv, eye, atol=1e-10)
        # activation covariance stays exactly diagonal, with the importance on the diagonal
        cov = ls.C @ s.G @ ls.C.T
        assert torch.allclose(cov.diagonal(), ls.eigenvalues)
        if s.M is not None and ls.position < len(sparse.layers) - 1:
            assert torch.allclose(cov, torch.diag(ls.eigenvalues), atol=1e-9 * float(cov.max()))
        else:  # the output's PCA basis: a rotated pair keeps a small correlation
            corr = cov / torch.outer(cov.diagonal(), cov.diagonal()).sqrt()
            assert (corr - eye).abs().max() < 0.1
        assert torch.all(ls.eigenvalues[:-1] >= ls.eigenvalues[1:])
        # the same subspace is kept: a rotation, not a new basis
        assert torch.allclose(ls.C_pinv @ ls.C @ lp.C_pinv, lp.C_pinv, atol=1e-9)
        if s.M is not None and ls.position < len(sparse.layers) - 1:
            Mh = ls.C_pinv.T @ s.M @ ls.C_pinv
            # unit Jacobian Gram on the diagonal; off it, only what the data cannot resolve (the
            # bound itself, z standard errors per pair of the composed rotation, is checked in
            # test_composed_rotation_stays_within_z_standard_errors; here 0.287 at most)
            assert torch.allclose(Mh.diagonal(), torch.ones(ls.k, dtype=torch.float64))
            assert (Mh - eye).abs().max() < 0.3
        changed += not torch.equal(ls.C, lp.C)
    assert changed >= 3


def test_same_seed_same_basis(hidden):
    planted, _, sparse = hidden
    again = mg.analyze(planted.model, planted.inputs, **ABS, rotation="sparse", progress=False)
    for a, b in zip(sparse.layers, again.layers):
        assert torch.equal(a.C, b.C) and torch.equal(a.eigenvalues, b.eigenvalues)


def test_determined_basis_is_left_exactly_as_fitted():
    # a deep linear net: every pair is determined or already sparse -> bit-identical bases,
    # so the transitions stay unit-diagonal
    net = mlp(6, 9, 5, 7, 4, relu_after=())
    x = torch.randn(400, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    a = mg.analyze(net, x, rotation="sparse", progress=False)
    b = mg.analyze(net, x, progress=False)
    for la, lb in zip(a.layers, b.layers):
        assert torch.equal(la.C, lb.C) and torch.equal(la.C_pinv, lb.C_pinv)


def test_invariant_to_invertible_map_of_the_bottleneck(hidden):
    planted, _, sparse = hidden
    net = planted.model
    R = torch.randn(12, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    R = R + 4 * torch.eye(12, dtype=torch.float64)
    mixed = copy.deepcopy(net)
    with torch.no_grad():
        mixed[2].weight.copy_(R @ net[2].weight)
        mixed[2].bias.copy_(R @ net[2].bias)
        mixed[3].weight.copy_(net[3].weight @ torch.linalg.inv(R))
    b = mg.analyze(mixed, planted.inputs, **ABS, rotation="sparse", progress=False)
    chain_a, chain_b = LayerChain.from_model(net), LayerChain.from_model(mixed)
    with torch.no_grad():
        acts_a, acts_b = chain_a.forward(planted.inputs), chain_b.forward(planted.inputs)
    for la, lb, fa, fb in zip(sparse.layers, b.layers, acts_a, acts_b):
        ca, cb = la.transform(fa), lb.transform(fb)
        signs = torch.sign((ca * cb).sum(0))
        assert float((ca * signs - cb).norm() / cb.norm()) < 1e-6


@pytest.mark.integration  # slow: the unit tier stays fast
def test_mixing_error_predicts_the_spread_of_fitted_directions():
    # reference: refit a 2-d input basis on 60 independent data sets; the spread of the angle
    # between the fitted and the population direction matches the predicted standard error
    torch.manual_seed(0)
    net = mlp(2, 6, 2)
    with torch.no_grad():
        net[2].weight.mul_(torch.tensor([[1.0], [1.1]], dtype=torch.float64))
    ref = mg.analyze(
        net, torch.randn(200_000, 2, dtype=torch.float64), rotation="none", progress=False
    ).layers[0]
    angles, predicted = [], []
    chain = LayerChain.from_model(net)
    for seed in range(60):
        x = torch.randn(400, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        a = mg.analyze(net, x, rotation="none", progress=False)
        b0 = a.layers[0]
        # angle of the first fitted direction from the population one, in whitened coordinates
        u = torch.nn.functional.normalize(b0.C[0] @ ref.C_pinv * ref.eigenvalues.sqrt(), dim=0)
        angles.append(float(torch.atan2(u[1], u[0].abs())) * float(torch.sign(u[0])))
        B = _jacobian(
            x, partial(chain.run_from, 0), torch.eye(2, dtype=torch.float64), b0.C_pinv, 2**21
        )
        coords = b0.transform(x)
        B = B[:, :, 0].transpose(0, 1)  # (rows, output, k)
        predicted.append(float(mixing_error(coords, b0.eigenvalues, 400, B)[0, 1]))
    spread, se = float(np.std(angles)), float(np.median(predicted))
    assert 0.8 < spread / se < 1.25


def test_bad_rotation_option_is_an_input_error():
    net = mlp(3, 4, 2)
    with pytest.raises(mg.InputError, match="'rotation' parameter of analyze must be one of"):
        mg.analyze(net, torch.randn(50, 3, dtype=torch.float64), rotation="varimax", progress=False)


def _plain(planted, x):
    return mg.analyze(planted.model, x, **ABS, rotation="none", progress=False).layers


def test_sequences_rotate_like_their_positions_as_samples(hidden):
    # the hidden network applied position-wise to (batch, 2, d) inputs: positions are samples
    # and the Jacobian couples no positions, so the analysis must equal the flattened one
    # (256 rows: the rotation reads them all either way, so its choice of samples, made per
    # sequence there and per row here, does not enter)
    planted, _, _ = hidden
    flat = planted.inputs[:256]
    sparse = mg.analyze(planted.model, flat, **ABS, batch_size=128, progress=False)
    x = flat.reshape(-1, 2, flat.shape[1])
    seq = mg.analyze(planted.model, x, **ABS, batch_size=64, progress=False)
    assert seq.config["rotation"] == "sparse" and seq.n_samples == flat.shape[0]
    assert any(not torch.equal(s.C, p.C) for s, p in zip(sparse.layers, _plain(planted, flat)))
    for ls, lf in zip(seq.layers, sparse.layers):
        assert torch.allclose(ls.C, lf.C, atol=1e-8) and torch.allclose(
            ls.eigenvalues, lf.eigenvalues
        )
    for ws, wf in zip(seq.w, sparse.w):
        assert torch.allclose(ws, wf, atol=1e-8)


def test_rotation_warns_and_keeps_the_basis_when_too_few_samples_fit_its_budget():
    net = mlp(6, 16, 3)
    x = torch.randn(600, 6, dtype=torch.float64)
    chain = LayerChain.from_model(net)
    a = mg.analyze(net, x, rotation="none", progress=False)
    with pytest.warns(UserWarning, match="samples fit max_samples and memory_budget"):
        out = sparse_rotation(
            chain,
            list(a.layers),
            Batches(x, batch_size=100, dtype=torch.float64),
            n=600,
            memory_budget=200 * 50,
        )
    assert all(o is l for o, l in zip(out, a.layers))  # left as fitted


def test_the_order_of_the_data_changes_nothing(hidden):
    # the rotation reads 256 of the 1000 samples: which ones must not depend on their order
    planted = hidden[0]
    perm = torch.randperm(len(planted.inputs), generator=torch.Generator().manual_seed(3))
    shuffled = mg.analyze(planted.model, planted.inputs[perm], **ABS, progress=False)
    loader = DataLoader(TensorDataset(planted.inputs), batch_size=100, shuffle=True)
    from_loader = mg.analyze(planted.model, loader, **ABS, progress=False)
    _, plain, sparse = hidden
    assert any(not torch.equal(a.C, b.C) for a, b in zip(sparse.layers, plain.layers))
    for other in (shuffled, from_loader):
        for la, lb in zip(sparse.layers, other.layers):
            assert relative(lb.C, la.C) < 1e-10 and relative(lb.eigenvalues, la.eigenvalues) < 1e-10
        for wa, wb in zip(sparse.w, other.w):
            assert relative(wb, wa) < 1e-10
        assert other.graph.n_edges == sparse.graph.n_edges


def test_oriented_jacobians_read_and_turn_like_the_plain_layout():
    """The sweeps keep each Jacobian with the rotated layer's directions outermost; reading
    and rotating slices must give what indexing the (rows, P, k_next, k_prev) layout gives."""
    g = torch.Generator().manual_seed(0)
    J = [torch.randn(6, 2, 5, 4, generator=g), torch.randn(6, 2, 4, 5, generator=g)]
    read = [t.permute(2, 0, 1, 3).contiguous() for t in J]  # as read: next-layer rows outermost
    data = _Samples(a=[], J=read, count=[6, 6], psi2=[], major=["next", "next"])
    idx = torch.tensor([3, 0])
    pairs = torch.tensor([[3, 0], [1, 2]])
    c = torch.randn(2, 2, 2, generator=g)
    for m in (0, 1, 2, 1, 0):  # every orientation, and back
        _orient(data, m, 2)
        for l in range(2):
            rows, cols = J[l][:, :, idx].movedim(2, 0), J[l][..., idx].movedim(3, 0)
            assert torch.equal(_directions(data, l, "next", idx, "y0"), rows)
            assert torch.equal(_directions(data, l, "prev", idx, "y0"), cols)
    _turn(data, 0, "prev", pairs, c)  # columns of J[0]: y_p, y_q -> c y
    _turn(data, 1, "next", pairs, c)  # rows of J[1], in the other layout
    for l, dim in ((0, 3), (1, 2)):
        want = J[l].clone()
        for u, (p, q) in enumerate(pairs.tolist()):
            yp, yq = J[l].select(dim, p), J[l].select(dim, q)
            want.select(dim, p).copy_(c[u, 0, 0] * yp + c[u, 0, 1] * yq)
            want.select(dim, q).copy_(c[u, 1, 0] * yp + c[u, 1, 1] * yq)
        side = "prev" if dim == 3 else "next"
        got = _directions(data, l, side, torch.arange(want.shape[dim]), "y0")
        torch.testing.assert_close(got, want.movedim(dim, 0), rtol=1e-6, atol=1e-6)


@pytest.mark.integration  # slow: the unit tier stays fast
def test_turning_units_chunk_by_chunk_gives_the_same_basis(hidden, monkeypatch):
    """The units of a round are disjoint, so each chunk is turned as soon as its angles are
    found, with the Jacobian slices its moments gathered; one unit per chunk must give the
    basis that one chunk per round gives (only batched kernels' rounding may differ)."""
    planted, plain, sparse = hidden
    monkeypatch.setattr(rotation, "CHUNK_ELEMENTS", 1)
    one = mg.analyze(planted.model, planted.inputs, **ABS, rotation="sparse", progress=False)
    moved = 0
    for a, b, fitted in zip(sparse.layers, one.layers, plain.layers):
        assert relative(b.C, a.C) < 1e-12 and relative(b.eigenvalues, a.eigenvalues) < 1e-12
        moved += relative(a.C, fitted.C) > 1e-3
    assert moved >= 3  # the rotation did turn this basis


@pytest.mark.parametrize("kind", ["importance", "pca"])
def test_composed_excess_reads_each_pairs_angle_from_the_composed_rotation(kind):
    # Q = exp(A) built by hand; the excess is max |A_ij| / limit_ij over pairs i != j
    g = torch.Generator().manual_seed(0)
    k = 6
    A = 0.3 * torch.randn(k, k, generator=g, dtype=torch.float64)
    A = A - A.T
    Q = torch.linalg.matrix_exp(A)
    lam = torch.sort(torch.rand(k, generator=g, dtype=torch.float64) + 0.1, descending=True)[0]
    Mz = Q @ torch.diag(lam) @ Q.T
    R = Q if kind == "pca" else Mz.diagonal().sqrt()[:, None] * Q / lam.sqrt()
    limit = torch.rand(k, k, generator=g, dtype=torch.float64) + 0.05
    limit = limit + limit.T
    want = float((A.abs() / limit).fill_diagonal_(0).max())
    assert rotation._composed_excess(Mz, R, lam, limit, kind) == pytest.approx(want, rel=1e-10)
    # turned back to exp(A / 2): every composed angle halves, Q Lambda Q^T and R follow
    Mz_half, R_half = rotation._scaled_back(Mz, R, lam, kind, 0.5)
    Q_half = torch.linalg.matrix_exp(A / 2)
    torch.testing.assert_close(Mz_half, Q_half @ torch.diag(lam) @ Q_half.T, rtol=0, atol=1e-12)
    got = rotation._composed_excess(Mz_half, R_half, lam, limit, kind)
    assert got == pytest.approx(want / 2, rel=1e-10)
    eye = torch.eye(k, dtype=torch.float64)
    assert rotation._composed_excess(torch.diag(lam), eye, lam, limit, kind) == 0.0


def test_composed_rotation_stays_within_z_standard_errors(hidden, monkeypatch):
    """With every pair that is not tied up to 12 partners, two sweeps move some pair of the
    hidden case beyond its bound at first; the sweeps are run again with smaller bounds until no
    pair moved further than z standard errors, and the basis is still turned."""
    planted, plain, _ = hidden
    seen = []

    def recorded(*args):
        seen.append(excess(*args))
        return seen[-1]

    excess = rotation._composed_excess
    monkeypatch.setattr(rotation, "_composed_excess", recorded)
    wide = sparse_rotation(
        LayerChain.from_model(planted.model), list(plain.layers),
        Batches(planted.inputs, batch_size=500, dtype=torch.float64), n=len(planted.inputs),
        angle_se=0.02, max_partners=12,
    )  # fmt: skip
    n_layers = len(plain.layers)
    tries = [seen[i : i + n_layers] for i in range(0, len(seen), n_layers)]
    assert len(tries) >= 2 and max(tries[0]) > 1.01  # the first sweeps went too far
    assert max(tries[-1]) <= 1 + rotation.EXCESS_RTOL
    assert sum(relative(w.C, p.C) > 1e-3 for w, p in zip(wide, plain.layers)) >= 3


def test_after_the_last_try_a_layer_is_turned_back_within_its_bounds(hidden, monkeypatch):
    """No retries: a layer of its own whose pairs moved too far gets every composed angle
    scaled back (exp(t A)), so that its most-moved pair sits exactly at its bound."""
    planted, plain, _ = hidden
    seen, turned_back = {}, []
    undetermined, scaled_back = rotation._undetermined, rotation._scaled_back

    def record_se(*args):
        seen["se"], limit, bounds = undetermined(*args)
        return seen["se"], limit, bounds

    def record_back(Mz, R_tot, lam, kind, t):
        out = scaled_back(Mz, R_tot, lam, kind, t)
        turned_back.append((*out, lam, kind))
        return out

    monkeypatch.setattr(rotation, "_undetermined", record_se)
    monkeypatch.setattr(rotation, "_scaled_back", record_back)
    monkeypatch.setattr(rotation, "MAX_SHRINKS", 0)
    # layers linked through a linear stage cannot be turned back alone: left as fitted
    with pytest.warns(UserWarning, match=r"left layers \[1, 2\] as fitted"):
        out = sparse_rotation(
            LayerChain.from_model(planted.model), list(plain.layers),
            Batches(planted.inputs, batch_size=500, dtype=torch.float64), n=len(planted.inputs),
        )  # fmt: skip
    assert out[1] is plain.layers[1] and out[2] is plain.layers[2]
    assert turned_back  # the input layer's first sweeps go too far (1.07 times a bound)
    for Mz, R, lam, kind in turned_back:
        l = next(i for i, b in enumerate(plain.layers) if torch.equal(b.eigenvalues.double(), lam))
        limit = (3.0 * seen["se"][l]).clamp(max=np.pi / 4)
        excess = rotation._composed_excess(Mz, R, lam, limit, kind)
        assert excess == pytest.approx(1.0, abs=1e-9)


def test_batches_of_different_sequence_lengths():
    """Lengths may differ between batches: the rotation's per-batch Jacobians have different
    numbers of output positions (the missing ones are zero blocks), as tracr's programs give."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(5, 6), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    net = net.double().eval()
    data = [torch.randint(0, 5, (60, 3)), torch.randint(0, 5, (60, 4))]
    a = mg.analyze(net, data, progress=False)
    b = mg.analyze(net, data[::-1], progress=False)
    assert a.n_samples == 420 and a.graph.n_edges > 0
    for wa, wb in zip(a.w, b.w):  # the batches' order changes nothing
        torch.testing.assert_close(wa, wb, rtol=1e-8, atol=1e-12)

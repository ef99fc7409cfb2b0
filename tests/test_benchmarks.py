"""The hidden-modules benchmark: its cases are what they claim, and its table prints."""

import dataclasses

import pytest
import torch

import modgraph as mg
from modgraph.toys.benchmark import format_table, run_benchmark
from modgraph.toys.planted import (
    CASES,
    D_IN,
    D_OUT,
    EPS,
    Case,
    make_case,
    true_modules,
    varied_case,
)


def test_cases_are_modular_functions_of_their_input_groups():
    # permutation, rescaling and mixing hide the blocks but keep the function: output group k
    # depends only on input group k (the inputs are left unrotated here to read the groups)
    planted = make_case(Case("t", 3, "perm+mix", seed=7, n_samples=20))
    assert planted.output_groups == ((0, 1), (2, 3), (4, 5))
    J = torch.autograd.functional.jacobian(lambda x: planted.model(x).sum(0), planted.inputs)
    J = J.abs().sum(1)  # (outputs, inputs)
    for k in range(3):
        own = [j for j in range(3 * D_IN) if j // D_IN == k]
        others = [j for j in range(3 * D_IN) if j // D_IN != k]
        block = J[k * D_OUT : (k + 1) * D_OUT]
        assert block[:, others].max() < 1e-10 * block[:, own].max()  # round-off of R^-1 only
        assert block[:, own].min() > 0


def test_case_is_deterministic():
    a, b = make_case(CASES[2]), make_case(CASES[2])
    assert torch.equal(a.inputs, b.inputs)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.integration  # slow: the unit tier stays fast
def test_table_scores_a_case():
    case = dataclasses.replace(CASES[0], n_samples=400)  # permuted/rescaled only
    methods = (
        ("neuron", dict(basis="neuron")),
        ("plain", dict(rotation="none")),
        ("default", dict()),
    )
    rows = run_benchmark([case], methods)
    assert rows[0]["neuron"] == 1.0  # the neuron basis sees through permutations alone
    table = format_table(rows, methods)
    assert "| case | K | hiding | leak | trained | ARI neuron | ARI plain | ARI default |" in table
    assert "time default/plain" in table and "**mean**" in table


@pytest.mark.integration  # slow: the unit tier stays fast
def test_default_recovers_the_modules_the_plain_basis_mixes():
    # the goal on two of the hardest cases: five mixed modules, and trained modules
    # with leaks; the plain basis mixes them, the default (rotation="sparse") does not
    cases = [c for c in CASES if c.name in ("mix-rot-K5", "trained-leak")]
    rows = run_benchmark(cases, (("plain", dict(rotation="none")), ("default", dict())))
    for row in rows:
        assert row["plain"] < 0.5
        assert row["default"] >= 0.95


@pytest.mark.integration  # slow: the unit tier stays fast
def test_varied_cases_are_independent_modules_and_deterministic():
    # rows of different modules' input Jacobians are orthogonal: disjoint inputs, then an
    # orthogonal rotation; the hiding maps keep the function (no leak in these seeds)
    for seed in (2, 3, 10, 13):
        planted = varied_case(seed, n_samples=16)
        assert planted.case.leak == 0.0 and planted.case.K == len(planted.output_groups)
        x = planted.inputs
        model = planted.model
        J = torch.autograd.functional.jacobian(lambda z, m=model: m(z).sum(0), x)  # (o, n, d)
        for k, own in enumerate(planted.output_groups):
            for j, other in enumerate(planted.output_groups):
                if j != k:
                    cross = torch.einsum("ond,pnd->op", J[list(own)], J[list(other)])
                    assert cross.abs().max() < 1e-10 * J.abs().max() ** 2
        again = varied_case(seed, n_samples=16)
        assert torch.equal(again.inputs, x) and again.case == planted.case
        for pa, pb in zip(planted.model.parameters(), again.model.parameters()):
            assert torch.equal(pa, pb)
    names = {varied_case(s, n_samples=8).case.name.split("-")[1][:4] for s in range(8)}
    assert names == {"relu", "tanh"}


@pytest.mark.integration  # slow: the unit tier stays fast
@pytest.mark.parametrize("method", ["spectral", "leiden"])
def test_varied_case_with_a_bottleneck_gives_its_five_modules(method):
    # 5 unequal ReLU modules with a mixed bottleneck and leaks: the merged-down Leiden split of
    # the scan cut two modules in half (3 modules, ARI 0.08) before the whole graph's split
    # was also searched and Leiden's own partition grouped
    planted = varied_case(12)
    assert planted.case.K == 5 and planted.case.leak > 0
    a = mg.analyze(planted.model, planted.inputs, eps=EPS, eps_units="absolute", progress=False)
    truth = true_modules(planted.model, a, planted.inputs, planted.output_groups)
    nodes = [n for n, ok in zip(a.graph.nodes, a.graph.connected_nodes) if ok]
    found = mg.find_modules(a.graph, method=method, seed=0)
    assert found.n_modules == 5
    ari = mg.partition.adjusted_rand_index(
        [truth[n] for n in nodes], [found.membership[n] for n in nodes]
    )
    assert ari == 1.0

"""The hidden-modules benchmark: its cases are what they claim, and its table prints."""

import dataclasses

import torch

from modgraph.benchmarks import CASES, D_IN, D_OUT, Case, format_table, make_case, run_benchmark


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


def test_table_scores_a_case():
    case = dataclasses.replace(CASES[0], n_samples=400)  # permuted/rescaled only
    methods = (
        ("neuron", dict(basis="neuron")),
        ("plain", dict(rotation="none")),
        ("sparse", dict(rotation="sparse")),
    )
    rows = run_benchmark([case], methods)
    assert rows[0]["neuron"] == 1.0  # the neuron basis sees through permutations alone
    table = format_table(rows, methods)
    assert "| case | K | hiding | leak | trained | ARI neuron | ARI plain | ARI sparse |" in table
    assert "time sparse/plain" in table and "**mean**" in table

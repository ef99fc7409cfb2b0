"""Names that moved or were renamed keep working for one release, with a DeprecationWarning."""

import importlib

import pytest
import torch

import modgraph as mg
from modgraph import circuits, diagnostics, plotting
from modgraph.adapters import transformer_chain
from modgraph.toys import TinyTransformer, planted


@pytest.mark.parametrize(
    "old, name, new",
    [
        ("modgraph.ablation", "run_ablated", circuits.run_ablated),
        ("modgraph.ablation", "behavioural_loss", mg.behavioral_loss),
        ("modgraph.ablation", "plot_faithfulness", plotting.plot_faithfulness),
        ("modgraph.degeneracy", "layer_ranks", diagnostics.layer_ranks),
        ("modgraph.degeneracy", "plot_degeneracy", plotting.plot_degeneracy),
        ("modgraph.llc", "effective_parameter_count", diagnostics.effective_parameter_count),
        ("modgraph.llc", "llc_estimate", diagnostics.llc_estimate),
        ("modgraph.sparsify", "sparsify", diagnostics.sparsify),
        ("modgraph.benchmarks", "make_case", planted.make_case),
        ("modgraph.transformer", "transformer_chain", transformer_chain),
        ("modgraph.transformer", "TinyTransformer", TinyTransformer),
        ("modgraph.report", "plot_graph", plotting.plot_graph),
        ("modgraph.report", "MODULE_COLOURS", plotting.MODULE_COLORS),
        ("modgraph", "behavioural_loss", mg.behavioral_loss),
    ],
)
def test_moved_names_resolve_with_a_warning(old, name, new):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{old}.{name} is deprecated"):
        assert getattr(module, name) is new


def test_old_modules_do_not_pose_as_packages():
    module = importlib.import_module("modgraph.degeneracy")
    assert not hasattr(module, "__path__")
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        module.nothing  # noqa: B018


def test_renamed_parameters_and_attributes_still_work():
    loss = lambda w: (w**2).sum()  # noqa: E731
    with pytest.warns(DeprecationWarning, match="'num_steps' parameter of llc_estimate"):
        est = mg.llc_estimate(loss, torch.zeros(2), eps=1e-2, num_steps=40, seed=0)
    assert est.n_burnin == 10
    with pytest.warns(DeprecationWarning, match="LLCEstimate.num_burnin"):
        assert est.num_burnin == 10
    with pytest.raises(TypeError, match="both 'num_steps' and its new name 'n_steps'"):
        mg.llc_estimate(loss, torch.zeros(2), eps=1e-2, num_steps=40, n_steps=40)

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    net = net.double().eval()
    x = torch.randn(50, 3, dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="'eps' parameter of layer_ranks"):
        ranks = mg.layer_ranks(net, x, eps=1e-9)
    with pytest.warns(DeprecationWarning, match="LayerRanks.eps"):
        assert ranks.eps == ranks.threshold == 1e-9
    with pytest.warns(DeprecationWarning, match="'tol' parameter of synchronized_blocks"):
        sync = mg.synchronized_blocks(net, x, 1, tol=0.0)
    with pytest.warns(DeprecationWarning, match="SynchronizedBlocks.tol"):
        assert sync.tol == sync.mismatch == 0.0
    with pytest.warns(DeprecationWarning, match="'tol' parameter of sparsify"):
        s = mg.sparsify(net, x, eps=1e-10, tol=0.0)
    with pytest.warns(DeprecationWarning, match="SparsifiedModel.behavioural_loss"):
        assert s.behavioural_loss == s.behavioral_loss

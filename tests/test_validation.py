"""Every public function checks its declared parameters, and every message names the parameter.

For each public function a valid call is written down once (``CALLS``); the test then replaces one
parameter at a time by values its annotation rules out (a float for an int, a string for a number,
NaN for a float, an unknown word for a choice, a string for a bool) and requires an
:class:`~modgraph.InputError` whose message names that parameter and the function, in the one
template of :mod:`modgraph._validation`. A new public parameter is covered as soon as it has an
annotation; a parameter without a checkable annotation must be listed in ``UNCHECKED``.
"""

import inspect
import math
import types
import typing

import pytest
import torch
from conftest import mlp

import modgraph as mg
from modgraph.toys import TinyTransformer


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    torch.manual_seed(0)
    net = mlp(4, 6, 3)
    x = torch.randn(64, 4, dtype=torch.float64)
    a = mg.analyze(net, x, rotation="none", eps=1e-4, progress=False)
    r = mg.find_modules(a.graph, method="spectral", n_modules=2)
    curve = mg.cost_curve(a.graph, ks=[1, 2])
    sig = mg.module_significance(a.graph, r, n_null=2)
    ranks = mg.diagnostics.layer_ranks(net, x, threshold=1e-9)
    faith = mg.circuits.faithfulness_curve(net, a, x, n_points=2)
    return dict(
        net=net,
        x=x,
        a=a,
        r=r,
        curve=curve,
        sig=sig,
        ranks=ranks,
        faith=faith,
        out=tmp_path_factory.mktemp("report") / "out",
    )


#: name -> (positional arguments, keyword arguments) of a valid call, built from the case.
CALLS = {
    "analyze": lambda c: ((c["net"], c["x"]), {}),
    "fit_basis": lambda c: ((c["a"].statistics[0],), {"name": "input", "position": 0}),
    "find_modules": lambda c: ((c["a"].graph,), {}),
    "cross_module_cost": lambda c: ((c["a"].graph, c["r"]), {}),
    "normalized_cut": lambda c: ((c["a"].graph, c["r"]), {}),
    "cost_curve": lambda c: ((c["a"].graph,), {}),
    "module_significance": lambda c: ((c["a"].graph, c["r"]), {}),
    "adjusted_rand_index": lambda c: (([0, 1], [0, 1]), {}),
    "write_report": lambda c: ((c["a"], c["out"]), {}),
    "behavioral_loss": lambda c: ((c["x"], c["x"]), {}),
    "run_ablated": lambda c: ((c["net"], c["a"], c["x"]), {}),
    "run_edge_ablated": lambda c: ((c["net"], c["a"], c["x"], []), {}),
    "module_ablation": lambda c: ((c["net"], c["a"], c["x"], c["r"]), {}),
    "module_io": lambda c: ((c["net"], c["a"], c["x"], c["r"]), {}),
    "smallest_circuit": lambda c: ((c["net"], c["a"], c["x"], c["r"]), {}),
    "faithfulness_curve": lambda c: ((c["net"], c["a"], c["x"]), {}),
    "choose_eps": lambda c: ((c["net"], c["a"], c["x"], "behavioral"), {}),
    "edges_needed": lambda c: ((c["net"], c["a"], c["x"], "behavioral"), {}),
    "layer_ranks": lambda c: ((c["net"], c["x"]), {"threshold": 1e-9}),
    "synchronized_blocks": lambda c: ((c["net"], c["x"], 1), {}),
    "effective_parameter_count": lambda c: ((c["net"], c["x"]), {"eps": 1e-6}),
    "llc_estimate": lambda c: ((lambda w: (w**2).sum(), torch.zeros(2)), {"eps": 1e-2}),
    "sparsify": lambda c: ((c["net"], c["x"]), {"eps": 1e-10}),
    "plot_graph": lambda c: ((c["a"],), {}),
    "plot_spectra": lambda c: ((c["a"],), {}),
    "plot_cost_curve": lambda c: ((c["curve"],), {}),
    "plot_module_heatmap": lambda c: ((c["a"], c["r"]), {}),
    "plot_basis_comparison": lambda c: (({"interaction": c["a"]},), {}),
    "plot_degeneracy": lambda c: ((c["ranks"],), {}),
    "plot_faithfulness": lambda c: (({"interaction": c["faith"]},), {}),
    "save_figure": lambda c: ((mg.plot_spectra(c["a"]), c["out"] / "fig"), {}),
    "transformer_chain": lambda c: ((TinyTransformer(5, 3, d_model=8, n_heads=2, d_mlp=8),), {}),
    "load_analysis": lambda c: ((c["out"],), {}),
}

#: Where the public functions live: the top level, the side areas' subpackages, and the basis and
#: loss modules for the two stage functions the top level leaves out.
HOMES = (mg, mg.circuits, mg.diagnostics, mg.partition, mg.plotting, mg.adapters, mg.basis, mg.loss)


def public(name: str):
    return next(getattr(h, name) for h in HOMES if name in getattr(h, "__all__", ()))


#: Parameters whose type is not a plain scalar, checked by dedicated tests elsewhere.
UNCHECKED = {"device", "progress"}

#: Parameters of each scalar type: values the annotation rules out.
BAD = {
    float: ["bogus", math.nan],
    int: ["bogus", 2.5, True],
    bool: ["yes", 1],
    str: [42],
}


def _scalar(annotation):
    """The scalar type a parameter is declared as (``float | None`` -> float), else None."""
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        scalars = [a for a in args if a in BAD]
        return scalars[0] if len(scalars) == 1 and len(args) <= 2 else None
    return annotation if annotation in BAD else None


def cases():
    out = []
    for name, build in CALLS.items():
        fn = public(name)
        hints = typing.get_type_hints(inspect.unwrap(fn))
        for p in inspect.signature(fn).parameters.values():
            kind = _scalar(hints.get(p.name))
            if p.kind is not inspect.Parameter.KEYWORD_ONLY or kind is None:
                continue
            if p.name in UNCHECKED:
                continue
            for value in BAD[kind]:
                out.append(
                    pytest.param(name, build, p.name, value, id=f"{name}-{p.name}-{value!r}")
                )
    return out


def test_every_public_function_has_a_valid_call():
    functions = {n for n in mg.__all__ if inspect.isfunction(getattr(mg, n))}
    assert functions <= set(CALLS)
    assert all(inspect.isfunction(public(n)) for n in CALLS)


def test_there_are_many_generated_cases():
    assert len(cases()) > 150


@pytest.mark.parametrize("name, build, param, value", cases())
def test_invalid_value_names_the_parameter(case, name, build, param, value):
    args, kwargs = build(case)
    with pytest.raises(mg.InputError) as err:
        public(name)(*args, **{**kwargs, param: value})
    message = str(err.value)
    assert f"The {param!r} parameter of {name} must be" in message, message
    assert f"Got {value!r} instead." in message, message

"""The shape of the package: layers import only downwards, no private names cross files.

Read from the source with ``ast`` (nothing is imported), so a violation is caught even in code
that no test runs. The layers, bottom to top:

- base: errors, _validation, _linalg, _version, atomic, distributed, loss;
- pipeline stages, in order: chain, hooked, data, statistics, basis, rotation, edges, exemplars,
  graph, analysis, pipeline, partition/;
- side areas: diagnostics/, circuits/, adapters/, toys/ (each may use its own files);
- plotting/ (draws the results of all of the above);
- report, cli (the end of the pipeline: everything).
"""

import ast
import inspect
import typing
from pathlib import Path

import pytest

import modgraph as mg

PACKAGE = Path(mg.__file__).parent

BASE = ["errors", "_validation", "_linalg", "_version", "atomic", "distributed"]
BASE += ["loss"]
STAGES = ["chain", "hooked", "data", "statistics", "basis", "rotation", "edges", "exemplars"]
STAGES += ["graph"]
STAGES += ["analysis", "pipeline", "partition"]
SIDE = ["diagnostics", "circuits", "adapters", "toys"]
RANK = {name: 0 for name in BASE}
RANK.update({name: 1 + i for i, name in enumerate(STAGES)})
RANK.update({name: 20 for name in SIDE})
RANK.update({"plotting": 30, "report": 40, "cli": 50, "__init__": 60, "__main__": 60})


def modules():
    """(dotted name, path) of every module in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports(name: str, path: Path):
    """(imported module, imported names, line) of every import in a module, resolved."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = base[: len(base) - node.level + 1] + ([node.module] if node.module else [])
                module = ".".join(target)
            else:
                module = node.module or ""
            if not module.startswith("modgraph"):
                continue
            names = [a.name for a in node.names]
            subs = [n for n in names if submodule_of(module, n)]  # from . import distributed
            for n in subs:
                yield f"{module}.{n}", [], node.lineno
            if len(subs) < len(names):
                yield module, [n for n in names if n not in subs], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("modgraph"):
                    yield a.name, [], node.lineno


def area(module: str) -> str:
    """The layer key of a module: its top-level file or folder under the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def submodule_of(module: str, name: str) -> bool:
    folder = PACKAGE.parent / module.replace(".", "/")
    return (folder / f"{name}.py").exists() or (folder / name / "__init__.py").exists()


ALL = list(modules())


def test_every_module_has_a_layer():
    assert {area(name) for name, _ in ALL} <= set(RANK)


@pytest.mark.parametrize("name, path", ALL, ids=[n for n, _ in ALL])
def test_imports_go_down_the_layers_and_never_take_private_names(name, path):
    here = area(name)
    for module, names, line in imports(name, path):
        there = area(module)
        where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        assert module != "modgraph" or here == "__init__", f"{where}: the package itself"
        if there == here and here in SIDE + ["plotting", "partition"]:
            pass  # the files of one folder may use each other
        elif here in SIDE and there in SIDE:
            raise AssertionError(f"{where}: a side area importing another side area")
        else:
            assert RANK[there] < RANK[here] or (RANK[there] == RANK[here] == 0), (
                f"{where}: {there} is not below {here}"
            )
        for n in names:
            if n.startswith("_") and not (n.startswith("__") and n.endswith("__")):
                raise AssertionError(f"{where}: private name {n}")


def test_no_import_cycles():
    graph = {name: {m for m, _, _ in imports(name, path)} for name, path in ALL}
    state: dict[str, int] = {}

    def visit(n, trail):
        if state.get(n) == 1:
            raise AssertionError(f"import cycle: {' -> '.join(trail + [n])}")
        if state.get(n) == 2 or n not in graph:
            return
        state[n] = 1
        for m in graph[n]:
            visit(m, trail + [n])
        state[n] = 2

    for n in graph:
        visit(n, [])


# ---------------------------------------------------------------------------- public API
#: The top level and the side areas' subpackages: every public name is in one of them.
PUBLIC = (mg, mg.circuits, mg.diagnostics, mg.partition, mg.plotting, mg.adapters, mg.toys)


def public_functions():
    return [
        (f"{pkg.__name__}.{n}", pkg, obj)
        for pkg in PUBLIC
        for n, obj in vars(pkg).items()
        if n in pkg.__all__ and inspect.isfunction(obj)
    ]


def test_the_top_level_is_small_and_the_side_areas_are_subpackages():
    assert len(mg.__all__) <= 25
    for pkg in PUBLIC[1:]:
        assert getattr(mg, pkg.__name__.rsplit(".", 1)[1]) is pkg  # mg.circuits, mg.toys, ...
        for n in pkg.__all__:
            assert getattr(pkg, n) is not None
    # nothing at the top level is exported twice under another subpackage's list
    assert not {"faithfulness_curve", "layer_ranks", "TinyTransformer"} & set(mg.__all__)


FUNCTIONS = public_functions()


@pytest.mark.parametrize("name, pkg, fn", FUNCTIONS, ids=[n for n, *_ in FUNCTIONS])
def test_every_result_type_is_exported(name, pkg, fn):
    hints = typing.get_type_hints(inspect.unwrap(fn))
    ret = hints.get("return")
    for t in typing.get_args(ret) or (ret,):
        if isinstance(t, type) and t.__module__.startswith("modgraph"):
            homes = [p for p in (pkg, mg) if getattr(p, t.__name__, None) is t]
            assert homes, f"{name} returns {t.__name__}, exported neither beside it nor on top"


PLOTS = [n for n in mg.plotting.__all__ if n.startswith("plot_")]


@pytest.mark.parametrize("name", PLOTS)
def test_every_plot_takes_ax_and_says_what_it_returns(name):
    fn = getattr(mg.plotting, name)
    params = inspect.signature(fn).parameters
    assert "ax" in params and params["ax"].default is None
    assert params["ax"].kind is inspect.Parameter.KEYWORD_ONLY
    returns = inspect.getdoc(fn).split("Returns\n-------\n", 1)[1].splitlines()[0]
    assert returns in ("matplotlib.axes.Axes", "matplotlib.figure.Figure"), returns

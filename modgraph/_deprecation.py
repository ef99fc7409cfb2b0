"""Names that moved or were renamed keep working for one release, with a DeprecationWarning.

Three kinds of alias, each listed in CHANGELOG.md under the release that made it:

- :func:`renamed_parameters`: a keyword argument renamed (``num_chains`` -> ``n_chains``);
- :func:`moved_names`: a module-level ``__getattr__`` for names that moved to another module;
- :data:`MOVED_MODULES` with :func:`install_module_aliases`: old module paths
  (``modgraph.ablation``) import the module's new home (``modgraph.circuits``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = [
    "warn_renamed",
    "renamed_parameters",
    "moved_names",
    "MOVED_MODULES",
    "install_module_aliases",
]

REMOVED_IN = "0.3"


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``."""
    warnings.warn(
        f"{old} is deprecated and will be removed in modgraph {REMOVED_IN}; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed_parameters(**renames: str):
    """Decorator: accept each old keyword (``old="new"``), warn, and pass it on as the new one."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{fn.__name__}() got both {old!r} and its new name {new!r}"
                        )
                    warn_renamed(f"the {old!r} parameter of {fn.__name__}", f"{new!r}")
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return inner

    return wrap


def moved_names(module: str, moved: dict[str, str]):
    """A module ``__getattr__`` resolving ``moved[name] = "package.module:new_name"`` lazily."""

    def __getattr__(name: str):
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, _, new = moved[name].partition(":")
        warn_renamed(f"{module}.{name}", f"{target}.{new}")
        return getattr(importlib.import_module(target), new)

    return __getattr__


#: Old module path -> the module that now holds its public names.
MOVED_MODULES = {
    "modgraph.ablation": "modgraph.circuits",
    "modgraph.degeneracy": "modgraph.diagnostics",
    "modgraph.llc": "modgraph.diagnostics.llc",
    "modgraph.sparsify": "modgraph.diagnostics.sparsify",
    "modgraph.demo": "modgraph.toys.demo",
    "modgraph.benchmarks": "modgraph.toys.planted",
    "modgraph.transformer": "modgraph.toys.transformer",
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as its new module, with a warning."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        warn_renamed(f"the module {spec.name}", MOVED_MODULES[spec.name], stacklevel=8)
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module):
        pass  # the new module is already executed


def install_module_aliases() -> None:
    """Make the old module paths importable (once per interpreter)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())

"""Names that moved or were renamed keep working for one release, with a DeprecationWarning.

Three kinds of alias, each listed in CHANGELOG.md under the release that made it:

- :func:`renamed_parameters`: a keyword argument renamed (``num_chains`` -> ``n_chains``);
- :class:`renamed_attribute`: an attribute of a result renamed (``LLCEstimate.num_burnin``);
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
import types
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
    """Warn that ``old`` is deprecated in favor of ``new``."""
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


class renamed_attribute:
    """Class attribute: ``old = renamed_attribute("new")`` reads ``new``, with a warning."""

    def __init__(self, new: str):
        self.new = new

    def __set_name__(self, owner, name):
        self.old = f"{owner.__name__}.{name}"

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        warn_renamed(self.old, f"{owner.__name__}.{self.new}")
        return getattr(obj, self.new)


def moved_names(module: str, moved: dict[str, str]):
    """A module ``__getattr__`` resolving ``moved[name] = "package.module:new_name"`` lazily."""

    def __getattr__(name: str):
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, _, new = moved[name].partition(":")
        warn_renamed(f"{module}.{name}", f"{target}.{new}")
        return getattr(importlib.import_module(target), new)

    return __getattr__


#: Old module path -> the modules that now hold its public names, searched in order.
MOVED_MODULES = {
    "modgraph.ablation": ("modgraph.circuits", "modgraph.loss", "modgraph.plotting"),
    "modgraph.degeneracy": ("modgraph.diagnostics", "modgraph.plotting"),
    "modgraph.llc": ("modgraph.diagnostics",),
    "modgraph.sparsify": ("modgraph.diagnostics.sparsify",),
    "modgraph.demo": ("modgraph.toys.demo",),
    "modgraph.benchmarks": ("modgraph.toys.planted", "modgraph.toys.benchmark"),
    "modgraph.transformer": ("modgraph.adapters", "modgraph.toys.transformer"),
}
#: Names renamed to US spelling, looked up under their new name.
RENAMED = {"behavioural_loss": "behavioral_loss", "MODULE_COLOURS": "MODULE_COLORS"}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as a module that finds each name in its new home (warning
    at each name, so that ``import modgraph.ablation as ab`` warns where ``ab.x`` is used)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        old, homes = module.__name__, MOVED_MODULES[module.__name__]

        def __getattr__(name: str):
            new = RENAMED.get(name, name)
            for home in homes if not name.startswith("__") else ():
                mod = importlib.import_module(home)
                if hasattr(mod, new):
                    warn_renamed(f"{old}.{name}", f"{home}.{new}")
                    return getattr(mod, new)
            raise AttributeError(f"module {old!r} has no attribute {name!r}")

        module.__getattr__ = __getattr__


class _Package(types.ModuleType):
    """The ``modgraph`` package: importing an old module path such as ``modgraph.sparsify`` must
    not replace the function ``modgraph.sparsify`` (the import system sets the child module as
    an attribute of its parent after loading it)."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and value.__name__ in MOVED_MODULES:
            if name in self.__dict__:
                return
        super().__setattr__(name, value)


def install_module_aliases(package: str) -> None:
    """Make the old module paths importable (once per interpreter)."""
    sys.modules[package].__class__ = _Package
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())

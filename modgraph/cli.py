"""The ``modgraph`` command: ``demo`` on the built-in default, ``analyze`` on a user's model.

Both run the whole pipeline (basis, graph, modules, significance, ablation check) and write into
``--out``: figures (PNG and SVG), the graph as GraphML, the analysis, and ``summary.json``.
Everything is written under a temporary name first and moved into place at the end, so a failure
never leaves a half-written output. Bad input exits with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pickle
import re
import signal
import sys
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from ._version import __version__
from .atomic import check_replaceable
from .chain import FEATURE_MAPS
from .circuits.eps import METRICS, choose_eps
from .errors import InputError
from .hooked import as_chain
from .partition.find import AUTO, METHODS
from .pipeline import analyze
from .report import write_report

__all__ = ["main", "build_parser", "load_model", "load_data"]


_log = logging.getLogger("modgraph")


def _run(model, data, args, *, truth=None, extra: dict | None = None, **options) -> dict:
    """The whole pipeline: the interaction basis and the neuron and PCA baselines, then the report.

    ``options`` go to :func:`modgraph.analyze` (``rotation`` acts on the interaction basis only).
    """
    out = Path(args.out)
    _log.info(
        "analysing: interaction basis"
        + ("" if args.no_baselines else ", then the neuron and PCA baselines")
        + " ..."
    )
    t0 = time.perf_counter()
    # progress bars only on a terminal: in a log file they are \r fragments
    common = dict(eps=args.eps, eps_units=args.eps_units, rotation=args.rotation,
                  progress=not args.quiet and sys.stderr.isatty(), **options)  # fmt: skip
    bases = ("interaction",) if args.no_baselines else ("interaction", "neuron", "pca")
    analyses = {b: analyze(model, data, basis=b, **common) for b in bases}
    a = analyses.pop("interaction")
    extra = dict(extra or {})
    extra["timings"] = {**extra.get("timings", {}), "analyze_all": time.perf_counter() - t0}
    maps = options.get("feature_maps", "positions")
    chain = as_chain(model, options.get("layers"), feature_maps=maps)  # for the outputs driven
    choice = None
    metric, labels, tolerance = (getattr(args, k, None) for k in ("metric", "labels", "tolerance"))
    if metric is not None:
        tolerance = 1e-3 if tolerance is None else tolerance
        _log.info(f"choosing eps from {metric} (tolerance {tolerance:g}) ...")
        t0 = time.perf_counter()
        labels = None if labels is None else load_data(labels)
        choice = choose_eps(chain, a, data, metric, labels=labels, tolerance=tolerance)
        extra["timings"]["choose_eps"] = time.perf_counter() - t0
        _log.info(choice.reason)
    elif labels is not None or tolerance is not None:
        raise InputError("--labels and --tolerance choose eps from a task: pass --metric too")
    if (a if choice is None else a.with_eps(choice.eps)).graph.n_edges == 0:
        raise InputError(
            f"no interaction is stronger than eps^1/2 = {a.eps**0.5:g}: lower --eps "
            f"(got {args.eps:g}, {args.eps_units})"
        )
    return write_report(
        a,
        out,
        baselines=analyses,
        seed=args.seed,
        truth=truth,
        extra=extra,
        overwrite=args.overwrite,
        data=data,
        model=chain,
        eps_choice=choice,
        n_modules=args.n_modules,
        alpha=args.alpha,
        n_null=args.n_null,
        sample_shape=args.sample_shape,
        method=args.method,
    )


# ---------------------------------------------------------------------------- loading
def import_modules(names: list[str]) -> None:
    """Import the modules the user named (``--import``, ``MODULE:FUNCTION``), found on the path
    or in the working directory. The working directory goes last on the path, and only when a
    module is named: a stray ``leidenalg.py`` there never shadows an installed library."""
    if not names:
        return
    if str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:
            raise InputError(f"--import {name!r} failed: {type(err).__name__}: {err}") from None


def load_model(path: str, weights: str | None = None) -> torch.nn.Module:
    """A saved module (``torch.save(model)``, any ``nn.Module`` whose class can be imported), a
    TorchScript ``nn.Sequential``, or ``MODULE:FUNCTION``, a function called without arguments
    that builds the model, in eval mode.

    A pickled module is unpickled (``torch.load(weights_only=False)``), which runs whatever code
    the file holds: load only files you trust. The safe routes: a TorchScript file, or
    ``MODULE:FUNCTION`` with ``weights``, a state_dict read with ``weights_only=True`` (tensors
    only, no code) and loaded strictly into the built model.
    """
    p = Path(path)
    if not p.exists() and re.fullmatch(r"[\w.]+:\w+", path):
        model = _built(path)
        return model if weights is None else _with_weights(model, weights)
    if weights is not None:
        raise InputError(
            f"--weights is loaded into a model built by MODULE:FUNCTION; MODEL {path!r} is a "
            "file: pass MODULE:FUNCTION (a function that builds the model) instead"
        )
    if not p.is_file():
        raise InputError(f"MODEL {path!r} does not exist")
    try:
        if _is_torchscript(p):
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; still read it
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(p), map_location="cpu")
        else:
            model = torch.load(p, map_location="cpu", weights_only=False)
    except (AttributeError, ModuleNotFoundError, pickle.UnpicklingError) as err:
        if isinstance(err, pickle.UnpicklingError):
            raise InputError(f"MODEL {path!r} is not a saved torch model ({err})") from None
        raise InputError(
            f"MODEL {path!r}: the class of the saved model cannot be imported ({err}); "
            "torch.save stores a module's class by name, so the code that defines it must be "
            "importable: pass --import MODULE (a module on the path or in the working "
            "directory that defines the class; a class defined in a script's __main__ cannot "
            "be found from here: move it into a module file)"
        ) from None
    except Exception as err:
        raise InputError(f"MODEL {path!r} is not a saved torch model ({err})") from None
    if isinstance(model, dict):
        raise InputError(
            f"MODEL {path!r} holds a {type(model).__name__} (a state_dict?), not an nn.Module: "
            "pass MODULE:FUNCTION, a function that builds the model, with --weights "
            f"{path!r}"
        )
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"MODEL {path!r} holds a {type(model).__name__}, not an nn.Module")
    if isinstance(model, torch.jit.ScriptModule):
        if model.original_name != "Sequential":
            raise InputError(
                f"MODEL {path!r} is a scripted {model.original_name}; "
                "modgraph reads scripted nn.Sequential models"
            )
        from collections import OrderedDict

        model = torch.nn.Sequential(OrderedDict(model.named_children()))
    return model.eval()


def _built(spec: str) -> torch.nn.Module:
    name, _, func = spec.partition(":")
    import_modules([name])
    build = getattr(sys.modules[name], func, None)
    if not callable(build):
        raise InputError(f"MODEL {spec!r}: module {name!r} has no function {func!r}")
    model = build()
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"MODEL {spec!r} returned a {type(model).__name__}, not an nn.Module")
    return model.eval()


def _with_weights(model: torch.nn.Module, weights: str) -> torch.nn.Module:
    """``model`` with the state_dict in the file ``weights`` (tensors only: no code runs)."""
    p = Path(weights)
    if not p.is_file():
        raise InputError(f"--weights {weights!r} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(
            f"--weights {weights!r} is not a state_dict of tensors ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); save it with "
            "torch.save(model.state_dict(), path)"
        ) from None
    if not isinstance(state, dict):
        raise InputError(f"--weights {weights!r} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(
            f"--weights {weights!r} does not fit the built model: {str(err).splitlines()[1:3]}"
        ) from None
    return model.eval()


def _is_torchscript(p: Path) -> bool:
    if not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as z:
        return any(n.endswith("constants.pkl") for n in z.namelist())


def load_data(path: str) -> torch.Tensor:
    """Inputs from a ``.pt`` tensor or a ``.npy`` array."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"DATA {path!r} does not exist")
    try:
        if p.suffix == ".npy":
            data = torch.from_numpy(np.load(p, allow_pickle=False))
        else:
            data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(f"DATA {path!r} is not a .pt tensor or .npy array ({err})") from None
    if not isinstance(data, torch.Tensor):
        raise InputError(f"DATA {path!r} holds a {type(data).__name__}, not a tensor")
    return data


# ---------------------------------------------------------------------------- commands
def _demo(args) -> dict:
    from .toys.demo import make_demo, true_modules

    _log.info(f"training the demo MLP on 3 independent sub-tasks (seed {args.seed}) ...")
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    problem = make_demo(args.seed)
    t_train = time.perf_counter() - t0
    x = problem.analysis_inputs
    return _run(
        problem.model,
        x,
        args,
        batch_size=512,
        truth=lambda a: true_modules(problem.model, a, x, problem.output_groups),
        extra={
            "demo": {
                "seed": args.seed,
                "n_tasks": problem.n_tasks,
                "train_loss": problem.train_loss,
                "test_loss": problem.test_loss,
                "train_seconds": t_train,
                "analysis_samples": len(x),
            },
            "timings": {"train": t_train},  # so that the printed total includes training
        },
    )


def _analyze(args) -> dict:
    from .adapters import is_transformer, transformer_chain
    from .hooked import HookedChain

    import_modules(args.imports)
    model = load_model(args.model, args.weights)
    data = load_data(args.data)
    layers = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
    if args.output is not None:  # an element of a tuple or dict output: an int index or a key
        key = int(args.output) if args.output.lstrip("-").isdigit() else args.output
        model, layers = HookedChain(model, layers, output=key), None
    elif layers is None and is_transformer(model):
        model = transformer_chain(model)
    return _run(
        model,
        data,
        args,
        variant=args.variant,
        scale=args.scale,
        layers=layers,
        batch_size=args.batch_size,
        device=args.device,
        output_probes=args.output_probes,
        position_sources=args.position_sources,
        feature_maps=args.feature_maps,
    )


def _print_summary(s: dict, out: str) -> None:
    mods = s["modules"]
    kept = " ".join(f"{l['name']}:{l['kept']}/{l['width']}" for l in s["layers"])
    print(f"layers (kept/width): {kept}")
    print(
        f"graph: {s['graph']['nodes']} nodes, {s['graph']['edges']} edges above eps^1/2 "
        f"(eps={s['eps']:g})"
    )
    for method in (m for m in mods if m in METHODS):  # the primary first, as written
        m = mods[method]
        if method == "spectral" and mods["same_partition"]:
            print("modules (spectral): the same partition as Leiden")
            continue
        print(
            f"modules ({method}): {m['verdict']}; sizes {m['sizes']}, normalized cut "
            f"{m['ncut']:.3f}, cross-module cost {m['cost']:.2f}"
        )
    b = s["bases"]
    print("edges above eps^1/2 by basis: " + ", ".join(f"{k} {v['edges']}" for k, v in b.items()))
    if "planted" in s:
        ari = s["planted"]["adjusted_rand_index"]
        print(
            "match with the planted sub-tasks (adjusted Rand index): "
            + ", ".join(f"{k} {v:.3f}" for k, v in ari.items())
        )
    print(f"wrote {len(s['files'])} outputs to {out}/ in {s['timings']['total']:.1f} s")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected positive ints such as 8,8, got {text!r}")
    return shape


def _eps_units(parser, default: str) -> None:
    parser.add_argument(
        "--eps-units",
        choices=["relative", "absolute"],
        default=default,
        help=f"eps as a fraction of the output's variance, or in the output's squared units "
        f"(default {default})",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modgraph",
        description="Find modules in neural networks through the interaction basis "
        "(Bushnaq et al. 2024, arXiv 2405.10927).",
    )
    p.add_argument("--version", action="version", version=f"modgraph {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(q):
        q.add_argument(
            "--out",
            required=True,
            help="output directory: new, empty, or an earlier result with --overwrite",
        )
        q.add_argument(
            "--overwrite",
            action="store_true",
            help="replace an earlier result in --out (never files modgraph did not write)",
        )
        q.add_argument("--seed", type=int, default=0, help="seed for partitioning (default 0)")
        q.add_argument("--quiet", action="store_true", help="no progress bars or messages")
        q.add_argument(
            "--n-modules",
            type=int,
            help="number of modules for Leiden and spectral (default: chosen and tested "
            "automatically)",
        )
        q.add_argument(
            "--method",
            choices=[AUTO, *METHODS],
            default=AUTO,
            help="the partition the figures draw and report.html shows first (auto, the "
            "default: the map equation's modules, or Leiden's with --n-modules; Leiden and "
            "spectral modules are always found, tested and written to summary.json)",
        )
        q.add_argument(
            "--alpha",
            type=float,
            default=0.05,
            help="significance level of the automatic number of modules (default 0.05)",
        )
        q.add_argument(
            "--n-null",
            type=int,
            default=20,
            help="null graphs per test of the automatic number of modules (default 20; fewer "
            "is faster and coarser)",
        )
        q.add_argument(
            "--no-baselines",
            action="store_true",
            help="skip the neuron and PCA bases that the report compares with (a third of "
            "the time)",
        )
        q.add_argument(
            "--sample-shape",
            type=_shape,
            metavar="SHAPE",
            help="show each input sample in report.html in this shape, e.g. 8,8 or 3,32,32 for "
            "images stored flat (thumbnails instead of their largest entries)",
        )
        q.add_argument(
            "--threads",
            type=int,
            help="CPU threads torch uses (default: torch's, one per core); on a machine "
            "shared with other work give the cores that are free: oversubscribed threads run "
            "several times slower",
        )

    d = sub.add_parser(
        "demo",
        help="train the built-in default and analyse it",
        description="Train a small MLP on independent synthetic sub-tasks, find "
        "its modules, and compare them with the sub-tasks.",
    )
    common(d)
    d.add_argument(
        "--eps",
        type=float,
        default=1e-4,
        help="noise scale eps, absolute (default 1e-4, about 1%% of the demo model's test loss; "
        "at 1e-3 its graph falls apart and no significant structure is found: see the README's "
        "'Choosing eps')",
    )
    _eps_units(d, "absolute")
    d.add_argument(
        "--rotation",
        choices=["sparse", "none"],
        default="sparse",
        help="rotate statistically undetermined pairs of interaction directions "
        "towards sparse edges (default: sparse; 'none' is the paper's plain basis)",
    )
    d.set_defaults(run=_demo)

    a = sub.add_parser(
        "analyze",
        help="analyse a saved model on saved inputs",
        description="Analyse a saved model (torch.save of any nn.Module, or a TorchScript "
        "nn.Sequential) on inputs from a .pt tensor or .npy array. An nn.Sequential is cut "
        "before every module with parameters; TransformerLens and Hugging Face GPT-2 models at "
        "the residual stream; other modules at --layers (module paths) or at their top-level "
        "modules.",
    )
    a.add_argument(
        "model",
        help="saved model (.pt from torch.save, or TorchScript), or MODULE:FUNCTION, a "
        "function that builds it. A torch.save'd model is unpickled, which runs any code in "
        "the file: load only files you trust; the safe route is MODULE:FUNCTION with --weights",
    )
    a.add_argument("data", help="inputs: .pt tensor or .npy array of shape (n_samples, ...)")
    common(a)
    a.add_argument(
        "--eps",
        type=float,
        default=1e-3,
        help="noise scale eps: output changes of mean square below eps times the output's "
        "variance count as none (default 1e-3; see --eps-units, and --metric to choose it "
        "from the task instead)",
    )
    _eps_units(a, "relative")
    a.add_argument(
        "--metric",
        choices=list(METRICS),
        help="choose eps from the task: the largest eps whose left-out edges, removed from "
        "the model together, keep this metric within --tolerance (accuracy and cross_entropy "
        "need --labels; behavioral compares with the model's own outputs)",
    )
    a.add_argument("--labels", help="class index of every sample (.pt or .npy), for --metric")
    a.add_argument(
        "--tolerance",
        type=float,
        help="largest change of --metric (default 1e-3: accuracy within 0.1%%)",
    )
    a.add_argument(
        "--variant",
        choices=["global", "local"],
        default="global",
        help="Jacobian of the final output (global, default) or of the next layer's basis "
        "coordinates (local, appendix A)",
    )
    a.add_argument(
        "--scale",
        choices=["importance", "whitened"],
        default="importance",
        help="scale basis directions by Lambda^1/2 (importance, default) or its inverse",
    )
    a.add_argument(
        "--rotation",
        choices=["sparse", "none"],
        default="sparse",
        help="rotate statistically undetermined pairs of interaction directions "
        "towards sparse edges (default: sparse; 'none' is the paper's plain basis)",
    )
    a.add_argument(
        "--layers",
        help="comma-separated module paths whose outputs are the layers, e.g. "
        "'encoder.3,blocks.1' or 'h.0[0]' for element 0 of a tuple output",
    )
    a.add_argument(
        "--output",
        help="element or key of the model's output to analyse as the final layer "
        "(e.g. 'logits' or 0), for models that return a tuple or dict",
    )
    a.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE before loading MODEL, for the classes a saved model needs "
        "(repeatable; the working directory is on the path)",
    )
    a.add_argument(
        "--weights",
        metavar="FILE",
        help="a state_dict (torch.save(model.state_dict(), FILE)) loaded into the model that "
        "MODEL=MODULE:FUNCTION builds, read with weights_only=True: tensors only, no code runs",
    )
    a.add_argument(
        "--feature-maps",
        choices=FEATURE_MAPS,
        default="positions",
        help="activations of shape (batch, C, H, W): each spatial position a sample with C "
        "features (positions, default) or one sample of C*H*W features (flatten)",
    )
    a.add_argument(
        "--batch-size", type=int, default=512, help="samples per batch (default 512; bounds memory)"
    )
    a.add_argument("--device", help="torch device to run on, e.g. cuda:0 (default: the model's)")
    a.add_argument(
        "--output-probes",
        type=int,
        help="estimate M from this many random output probes per sample instead of one "
        "backward pass per output dimension (for large outputs such as a vocabulary)",
    )
    a.add_argument(
        "--position-sources",
        type=int,
        help="sequence layers: estimate the sums over output positions (edges and M) with this "
        "many random-sign sources per direction (linear instead of quadratic in the length)",
    )
    a.set_defaults(run=_analyze)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    _log.addHandler(handler)
    _log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    # SIGTERM unwinds like Ctrl-C: every temporary output is removed on the way out
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise InputError(f"--threads must be at least 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        _check_out(args)  # before hours of work (training the demo, analysing), not after
        summary = args.run(args)
    except (InputError, OSError) as err:
        print(f"modgraph {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        _log.removeHandler(handler)
    _print_summary(summary, args.out)
    return 0


def _check_out(args) -> None:
    if not args.out:
        raise InputError("--out must name a directory, got ''")
    check_replaceable(Path(args.out), overwrite=args.overwrite, what="--out")


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())

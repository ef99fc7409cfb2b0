"""The ``modgraph`` command: ``demo`` on the built-in default, ``analyze`` on a user's model.

Both run the whole pipeline (basis, graph, modules, significance, ablation check) and write into
``--out``: figures (PNG and SVG), the graph as GraphML, the analysis, and ``summary.json``.
Everything is written under a temporary name first and moved into place at the end, so a failure
never leaves a half-written output. Bad input exits with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .atomic import default_mode
from .errors import InputError
from .partition import cost_curve, cross_module_cost, find_modules, module_significance
from .pipeline import Analysis, analyze

__all__ = ["main", "write_report"]


def _log(quiet: bool, *msg) -> None:
    if not quiet:
        print(*msg, file=sys.stderr, flush=True)


def write_report(
    model,
    data,
    out: str | os.PathLike,
    *,
    eps: float,
    variant: str = "global",
    scale: str = "importance",
    rotation: str = "sparse",
    layers=None,
    batch_size: int = 512,
    seed: int = 0,
    n_null: int = 20,
    quiet: bool = False,
    truth: Callable[[Analysis], dict[str, int]] | None = None,
    extra: dict | None = None,
) -> dict:
    """Run the pipeline on ``model`` and ``data`` and write every output into ``out``.

    Parameters
    ----------
    eps, variant, scale, rotation, layers, batch_size :
        Passed to :func:`modgraph.analyze` (``rotation`` acts on the interaction basis only).
    truth : callable, optional
        Maps the interaction-basis analysis to the planted module of each node; when given, the
        summary scores the found modules against it (adjusted Rand index).
    extra : dict, optional
        Added to ``summary.json`` (e.g. training losses of the demo model).

    Returns
    -------
    dict
        The summary that was written to ``summary.json``.
    """
    from . import report
    from .demo import score

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} exists and is not a directory")
    t_start = time.perf_counter()
    common = dict(
        eps=eps,
        variant=variant,
        scale=scale,
        rotation=rotation,
        layers=layers,
        batch_size=batch_size,
        progress=not quiet,
    )
    _log(quiet, "analysing: interaction basis, then the neuron and PCA baselines ...")
    analyses = {
        b: analyze(model, data, basis=b, **common) for b in ("interaction", "neuron", "pca")
    }
    a = analyses["interaction"]
    graph = a.graph
    if graph.n_edges == 0:
        raise InputError(
            f"no interaction is stronger than eps^1/2 = {eps**0.5:g}: lower --eps (got {eps:g})"
        )

    _log(quiet, f"finding modules in {graph.n_nodes} nodes, {graph.n_edges} edges ...")
    t0 = time.perf_counter()
    leiden = find_modules(graph, method="leiden", seed=seed)
    spectral = find_modules(graph, method="spectral", n_modules=leiden.n_modules, seed=seed)
    significance = [
        module_significance(graph, r, n_null=n_null, seed=seed) for r in (leiden, spectral)
    ]
    curves = [
        cost_curve(graph, method="leiden", seed=seed),
        cost_curve(graph, method="spectral", seed=seed),
    ]
    baseline_modules = {
        b: find_modules(x.graph, method="leiden", seed=seed)
        for b, x in analyses.items()
        if x.graph.n_edges
    }
    t_modules = time.perf_counter() - t0

    summary = {
        "layers": [
            {"name": l.name, "width": l.d, "kept": l.k, "ties": len(l.ties)} for l in a.layers
        ],
        "eps": eps,
        "config": a.config,
        "graph": {
            "nodes": graph.n_nodes,
            "edges": graph.n_edges,
            "connected_nodes": int(graph.connected_nodes.sum()),
        },
        "modules": {
            "leiden": _modules_json(leiden),
            "spectral": _modules_json(spectral),
            "significance": {
                name: {
                    "z": _finite(sig.z),
                    "p_value": sig.p_value,
                    "n_null": n_null,
                    "null_cost_mean": float(np.mean(sig.null_costs)),
                }
                for name, sig in zip(("leiden", "spectral"), significance)
            },
        },
        "bases": {
            b: {
                "edges": x.graph.n_edges,
                "total_strength": float(x.graph.edges.strength.sum()),
                "kept": [l.k for l in x.layers],
                "leiden_cost": baseline_modules[b].cost if b in baseline_modules else None,
                "leiden_modules": baseline_modules[b].n_modules if b in baseline_modules else None,
            }
            for b, x in analyses.items()
        },
    }
    if truth is not None:
        planted = truth(a)
        connected = [n for n, c in zip(graph.nodes, graph.connected_nodes) if c]
        n_planted = len(set(planted.values()))
        # the automatic choice of the number of modules is the hard part; also score the
        # partitions at the planted number, which isolates how well the graph encodes the tasks
        at_k = {
            m: find_modules(graph, method=m, n_modules=n_planted, seed=seed)
            for m in ("leiden", "spectral")
        }
        summary["planted"] = {
            "n_planted": n_planted,
            "planted_cost": cross_module_cost(graph, planted),
            "adjusted_rand_index": {
                "leiden": score(planted, leiden.membership, connected),
                "spectral": score(planted, spectral.membership, connected),
                **{
                    f"{m}_k={n_planted}": score(planted, r.membership, connected)
                    for m, r in at_k.items()
                },
            },
            "cost_at_planted_k": {m: r.cost for m, r in at_k.items()},
        }
    if extra:
        summary.update(extra)

    _log(quiet, "drawing figures ...")
    t0 = time.perf_counter()
    figures = {
        "graph": report.plot_graph(a, leiden),
        "spectra": report.plot_spectra(a),
        "cost_curve": report.plot_cost_curve(
            curves, chosen=[leiden, spectral], significance=significance
        ),
        "module_heatmap": report.plot_module_heatmap(a, leiden),
        "basis_comparison": report.plot_basis_comparison(
            {"neuron": analyses["neuron"], "PCA": analyses["pca"], "interaction": a},
            modules={
                "neuron": baseline_modules.get("neuron"),
                "PCA": baseline_modules.get("pca"),
                "interaction": leiden,
            },
        ),
    }
    t_figures = time.perf_counter() - t0

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        written = []
        for name, fig in figures.items():
            written += report.save_figure(fig, tmp / name)
        graph.to_graphml(tmp / "interaction_graph.graphml")
        a.save(tmp / "analysis")
        summary["timings"] = {
            **{f"analyze_{k}": v for k, v in a.timings.items()},
            "modules": t_modules,
            "figures": t_figures,
            "total": time.perf_counter() - t_start,
        }
        summary["versions"] = a.versions
        summary["files"] = sorted(
            [p.name for p in written] + ["interaction_graph.graphml", "analysis", "summary.json"]
        )
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _modules_json(r) -> dict:
    sizes = sorted((len(m) for m in r.modules), reverse=True)
    return {"n_modules": r.n_modules, "cost": r.cost, "sizes": sizes, "membership": r.membership}


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished outputs from ``tmp`` into ``out`` (each entry replaced atomically)."""
    if not out.exists():
        os.chmod(tmp, default_mode(directory=True))
        os.replace(tmp, out)
        return
    for entry in tmp.iterdir():
        target = out / entry.name
        if target.is_dir() and entry.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)


# ---------------------------------------------------------------------------- loading
def load_model(path: str) -> torch.nn.Module:
    """A saved ``nn.Sequential`` (``torch.save(model)``) or TorchScript module, in eval mode."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"MODEL {path!r} does not exist")
    try:
        if _is_torchscript(p):
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; still read it
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(p), map_location="cpu")
        else:
            model = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as err:
        raise InputError(f"MODEL {path!r} is not a saved torch model ({err})") from None
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
    from .demo import make_demo, true_modules

    _log(args.quiet, f"training the demo MLP on {3} independent sub-tasks (seed {args.seed}) ...")
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    problem = make_demo(args.seed)
    t_train = time.perf_counter() - t0
    x = problem.analysis_inputs
    summary = write_report(
        problem.model,
        x,
        args.out,
        eps=args.eps,
        rotation=args.rotation,
        seed=args.seed,
        quiet=args.quiet,
        truth=lambda a: true_modules(problem.model, a, x, problem.output_groups),
        extra={
            "demo": {
                "seed": args.seed,
                "n_tasks": problem.n_tasks,
                "train_loss": problem.train_loss,
                "test_loss": problem.test_loss,
                "train_seconds": t_train,
                "analysis_samples": len(x),
            }
        },
    )
    return summary


def _analyze(args) -> dict:
    model = load_model(args.model)
    data = load_data(args.data)
    layers = args.layers.split(",") if args.layers else None
    return write_report(
        model,
        data,
        args.out,
        eps=args.eps,
        variant=args.variant,
        scale=args.scale,
        rotation=args.rotation,
        layers=layers,
        batch_size=args.batch_size,
        seed=args.seed,
        quiet=args.quiet,
    )


def _print_summary(s: dict, out: str) -> None:
    m = s["modules"]["leiden"]
    sig = s["modules"]["significance"]["leiden"]
    kept = " ".join(f"{l['name']}:{l['kept']}/{l['width']}" for l in s["layers"])
    print(f"layers (kept/width): {kept}")
    print(
        f"graph: {s['graph']['nodes']} nodes, {s['graph']['edges']} edges above eps^1/2 "
        f"(eps={s['eps']:g})"
    )
    z = "n/a" if sig["z"] is None else f"{sig['z']:.1f}"
    print(
        f"modules (leiden): {m['n_modules']} of sizes {m['sizes']}, cross-module cost "
        f"{m['cost']:.2f}; shuffled-null z={z}, p={sig['p_value']:.3f}"
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modgraph",
        description="Find modules in neural networks through the interaction basis "
        "(Bushnaq et al. 2024, arXiv 2405.10927).",
    )
    p.add_argument("--version", action="version", version=f"modgraph {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(q):
        q.add_argument("--out", required=True, help="output directory (created if missing)")
        q.add_argument("--seed", type=int, default=0, help="seed for partitioning (default 0)")
        q.add_argument("--quiet", action="store_true", help="no progress bars or messages")

    d = sub.add_parser(
        "demo",
        help="train the built-in default and analyse it",
        description="Train a small MLP on independent synthetic sub-tasks, find "
        "its modules, and compare them with the sub-tasks.",
    )
    common(d)
    d.add_argument("--eps", type=float, default=1e-4, help="noise scale eps (default 1e-4)")
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
        description="Analyse a saved nn.Sequential (torch.save) or TorchScript "
        "model on inputs from a .pt tensor or .npy array.",
    )
    a.add_argument("model", help="saved model (.pt)")
    a.add_argument("data", help="inputs: .pt tensor or .npy array of shape (n_samples, ...)")
    common(a)
    a.add_argument("--eps", type=float, default=1e-3, help="noise scale eps (default 1e-3)")
    a.add_argument("--variant", choices=["global", "local"], default="global")
    a.add_argument("--scale", choices=["importance", "whitened"], default="importance")
    a.add_argument(
        "--rotation",
        choices=["sparse", "none"],
        default="sparse",
        help="rotate statistically undetermined pairs of interaction directions "
        "towards sparse edges (default: sparse; 'none' is the paper's plain basis)",
    )
    a.add_argument("--layers", help="comma-separated layer names (module paths)")
    a.add_argument("--batch-size", type=int, default=512)
    a.set_defaults(run=_analyze)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = args.run(args)
    except (InputError, OSError) as err:
        print(f"modgraph {args.command}: error: {err}", file=sys.stderr)
        return 2
    _print_summary(summary, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

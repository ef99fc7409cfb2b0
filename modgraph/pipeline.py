"""``analyze``: model + data -> layer chain -> statistics -> basis -> rotation -> edges.

The whole flow of the library on one screen; every step lives in its own module, and the graph,
modules and report follow from the returned :class:`~modgraph.analysis.Analysis`
(:func:`modgraph.write_report` runs those).
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import Tensor, nn

from . import distributed
from ._validation import check_choice, check_int, check_real, check_seed, invalid
from .analysis import EPS_UNITS, Analysis, output_variance, versions
from .basis import BASES, SCALES, LayerBasis, fit_basis
from .chain import (
    FEATURE_MAPS,
    Chain,
    LayerSelector,
    check_behaviour,
    data_error,
    device_and_dtype,
)
from .data import Batches
from .edges import ATTRIBUTIONS, RULES, PositionSources, interaction_strengths
from .errors import InputError, NonFiniteError
from .exemplars import ExemplarTracker
from .hooked import HookedChain, as_chain
from .rotation import ROTATIONS, sparse_rotation
from .statistics import (
    DEFAULT_JACOBIAN_BUDGET,
    LayerStatistics,
    activation_statistics,
    global_statistics,
    jacobian_gram,
)

__all__ = ["analyze", "VARIANTS", "EPS_UNITS"]

VARIANTS = ("global", "local")
#: A layer whose standard deviation is below this fraction of its mean's size is constant.
CONSTANT_RTOL = 1e-10


#: The output layer's coordinates: its PCA rotation, or its own (the raw logits, as the LIB
#: reference code counts edges into them).
OUTPUT_BASES = ("pca", "raw")


def analyze(  # noqa: PLR0913 (the paper's knobs, keyword-only)
    model: nn.Module | list | Chain,
    data,
    *,
    eps: float = 1e-3,
    eps_units: str = "relative",
    variant: str = "global",
    scale: str = "importance",
    basis: str = "interaction",
    rotation: str = "sparse",
    layers: LayerSelector = None,
    batch_size: int = 256,
    device=None,
    progress: bool = True,
    rtol: float = 1e-10,
    tie_rtol: float = 1e-3,
    attribution: str = "gradient",
    n_steps: int = 8,
    rule: str = "gauss-legendre",
    output_probes: int | None = None,
    position_sources: int | None = None,
    seed: int = 0,
    jacobian_budget: int = DEFAULT_JACOBIAN_BUDGET,
    feature_maps: str = "positions",
    n_examples: int = 8,
    output_basis: str = "pca",
) -> Analysis:
    """Convert a model to the interaction basis and build its interaction graph.

    Parameters
    ----------
    model : nn.Module, list of nn.Module, LayerChain or HookedChain
        The model, in eval mode. An ``nn.Sequential`` or a list of modules is cut into stage
        modules (:meth:`LayerChain.from_model`); any other ``nn.Module`` is read through forward
        hooks at the module paths ``layers`` (:class:`HookedChain`; its output is the last
        layer; wrap it in a ``HookedChain`` to select a tuple element or ``logits``).
    data : tensor, array, or re-iterable of batches
        Inputs only (a DataLoader's labels are ignored): everything is defined by the model's own
        behavior. Read once (global variant, baselines) or once per layer (local variant), plus
        once for the edges.
    eps : float
        Behavioral-loss noise scale (sec. 2, 5): interactions of strength ``w <= eps**0.5`` are
        indistinguishable from noise at that scale and are left out of the graph. By default a
        fraction of the output's variance (see ``eps_units``), so that one value means the same
        for logits of variance 10^4 and for outputs of unit scale; :func:`choose_eps` picks it
        from a task metric instead.
    eps_units : {"relative", "absolute"}
        ``"relative"`` (default): ``eps`` times the output's total variance
        (:attr:`Analysis.output_variance`, the mean squared distance of the output from its
        mean: the behavioral loss of a model that always outputs the mean) is the noise scale.
        ``"absolute"``: ``eps`` is the noise scale in the output's squared units.
        ``Analysis.eps`` is always absolute; ``Analysis.eps_relative`` is the relative value.
    variant : {"global", "local"}
        ``J = d(final output)/d f_l`` (sec. 6) or ``J = d(next layer's basis coords)/d f_l``
        (appendix A; computed from the output backwards).
    scale : {"importance", "whitened"}
        ``S = Lambda^{1/2}`` (appendix A, default) or ``(Lambda^{1/2})^+`` (sec. 6 text).
    basis : {"interaction", "pca", "neuron"}
        The paper's basis, or a baseline.
    rotation : {"sparse", "none"}
        Interaction basis with ``scale="importance"`` only. ``"sparse"`` (default): pairs of
        directions whose rotation the data leaves undetermined (angle standard error above
        0.02 rad, from the sampling error of ``G`` and ``M``) are rotated to make the
        interactions sparse, the composed rotation of each layer moving no pair by more than 3
        of its standard errors; this keeps modules apart where their ``Lambda`` values
        are close (the hidden-modules benchmark, :mod:`modgraph.toys.benchmark`), at the price of
        ``C^+T M C^+ = I`` holding only to within that sampling error on rotated pairs (see
        :mod:`modgraph.rotation`). Where every pair is determined the basis is the plain one, bit
        for bit. ``"none"``: the paper's plain basis.
    layers : None, str, list of str, or callable
        Layer boundaries: module paths whose outputs are layers (``"encoder.3"``,
        ``"blocks.1"``, ``"h.0[0]"`` for element 0 of a tuple output). For an ``nn.Sequential``
        (see :meth:`LayerChain.from_model`) also a predicate on the names; default: before every
        module with parameters. For other modules the default is the top-level modules, in call
        order. Every layer must carry all that later layers read from earlier ones (checked on
        the first batch: a skip connection around a layer is an error that names it).
    batch_size : int
        Batch size used to cut a tensor of inputs.
    device : torch device, optional
        Where to run; defaults to the model's device. Statistics accumulate in float64 there.
    progress : bool
        Show progress bars.
    rtol : float
        Eigenvalues of ``G`` and of the whitened ``M`` below ``rtol`` times the largest are zero.
    tie_rtol : float
        Relative gap under which neighboring eigenvalues are reported as tied.
    attribution : {"gradient", "integrated"}
        Edge attribution (see :mod:`modgraph.edges`); the latter with ``n_steps`` quadrature
        points of ``rule`` ("gauss-legendre" or "trapezoid").
    output_probes : int, optional
        Estimate ``M`` from this many random (Rademacher) probes of the output per sample and
        position instead of one backward pass per output dimension: unbiased, relative error
        ~ 1/sqrt(output_probes); for large outputs such as a vocabulary. ``None`` (default):
        exact. Seeded by ``seed``.
    position_sources : int, optional
        Sequence layers: estimate the sums over output positions in the edges and in ``M``
        with this many random-sign sources per direction (:class:`~modgraph.edges.PositionSources`)
        instead of one backward pass per output position: linear instead of quadratic in the
        sequence length, unbiased for ``w**2`` and ``M`` (with ``output_probes`` M is linear
        already: each probe covers every position). ``None`` (default): exact. Seeded by
        ``seed``.
    jacobian_budget : int
        Most Jacobian-row elements held at once; bounds memory.
    feature_maps : {"positions", "flatten"}
        Activations of shape (batch, C, H, W): every spatial position a sample with C features
        (the convention of sequences, default), or one sample of C*H*W features.
    n_examples : int
        For every basis direction keep the indices and values of its ``n_examples`` top and
        bottom activating samples (positions), exactly, during the edges pass
        (:mod:`modgraph.exemplars`; the report shows them). 0: none.
    output_basis : {"pca", "raw"}
        The final output's coordinates: its PCA rotation (default; eigenvalues of ``G`` as
        importances), or its own (``"raw"``: one node per output unit, e.g. per logit, as the
        LIB paper counts the edges into the output).

    Returns
    -------
    Analysis

    Notes
    -----
    *Sequences*: activations of shape (batch, positions, d) count each position as a sample;
    Jacobians couple positions, so ``M`` and the edges sum over output positions (see
    :mod:`modgraph.statistics`). Integer inputs (token ids) start the analysis at the output
    of the model's first stage, the embedding (:meth:`LayerChain.for_inputs`).

    *Distributed*: when a ``torch.distributed`` process group is initialised, each rank passes
    its own shard of the data; the statistics and edges are combined over ranks and every rank
    returns what one process would return for all shards together. Ranks must pass the same
    model and options (checked: a mismatch raises on every rank instead of hanging).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> a = analyze(net, torch.randn(500, 4), progress=False)
    >>> [layer.name for layer in a.layers], [layer.k for layer in a.layers]
    (['input', '1', '2'], [4, 2, 2])
    """
    check_real("analyze", "eps", eps, low=0, low_open=True)
    check_choice("analyze", "eps_units", eps_units, EPS_UNITS)
    config = _config(locals())
    chain = as_chain(model, layers, feature_maps=feature_maps)
    device, dtype = _place(chain, device)
    batches = Batches(  # every progress bar says which analysis it belongs to
        data, batch_size=batch_size, device=device, dtype=dtype, progress=progress,
        desc=f"{basis} basis", where="analyze",
    )  # fmt: skip
    first = _first_batch(batches.labelled(f"{batches.desc}: reading the data"))
    chain = _chain_for_inputs(chain, first)
    config.update(world_size=distributed.world_size(), device=str(device))
    config["dtype"] = str(dtype).removeprefix("torch.")
    if distributed.active():  # the fingerprint reads every parameter: only when it matters
        same = {k: v for k, v in config.items() if k != "device"}  # cuda:0, cuda:1, ...
        distributed.check_same("model and options", (chain.fingerprint(), eps, same))
    timings: dict[str, float] = {}

    with _timed(timings, "statistics"):
        stats = _statistics(chain, batches, config, jacobian_budget)
    _check_variance(chain, stats)
    if eps_units == "relative":  # the noise scale in the output's units (see Analysis.eps)
        eps = eps * output_variance(stats[-1])
    with _timed(timings, "basis"):
        bases = _fit_bases(chain, batches, stats, config, jacobian_budget)
    if basis == "interaction" and rotation == "sparse":  # see modgraph.rotation
        with _timed(timings, "rotation"):
            rotated = sparse_rotation(
                chain,
                bases,
                batches.labelled(f"{batches.desc}: rotation"),
                n=stats[0].n,
                variant=variant,
                scale=scale,
                tie_rtol=tie_rtol,
                jacobian_budget=jacobian_budget,
            )
            # a raw output keeps its own coordinates (its transition need not be diagonal)
            bases = rotated if output_basis == "pca" else [*rotated[:-1], bases[-1]]
    tracker = ExemplarTracker(bases, stats, n_examples) if n_examples else None
    with _timed(timings, "edges"):
        w = interaction_strengths(
            chain,
            bases,
            batches.labelled(f"{batches.desc}: edges"),
            attribution=attribution,
            n_steps=n_steps,
            rule=rule,
            jacobian_budget=jacobian_budget,
            sources=None if position_sources is None else PositionSources(position_sources, seed),
            on_batch=None if tracker is None else tracker.update,
        )
        exemplars = None if tracker is None else tracker.result()
    reordered = float(batches.reordered)  # any rank's: every rank keeps or drops them alike
    if exemplars is not None and distributed.all_sum(torch.tensor(reordered)) > 0:
        exemplars = None
        warnings.warn(
            "data came in another order on each pass (a DataLoader with shuffle=True?): the "
            "statistics, basis and edges do not depend on the order, but the top and bottom "
            "samples of each direction cannot be numbered, so the analysis has none (pass "
            "shuffle=False to have them)",
            stacklevel=2,
        )
    _check_strengths(chain, w, eps, eps / config["eps"] if eps_units == "relative" else 1.0)
    return Analysis(
        tuple(bases), tuple(w), tuple(stats), eps, config, timings, versions(), exemplars
    )


def _place(chain: Chain, device) -> tuple[torch.device, torch.dtype]:
    """Move the chain to ``device`` (checked; default the model's); the analysis dtype."""
    device, dtype = device_and_dtype(chain, None if device is None else _check_device(device))
    if any(p.is_meta for p in chain.parameters()):
        raise InputError("model has parameters on the meta device (shapes only, no values)")
    for module in chain.modules():
        if any(t.device != device for t in (*module.parameters(), *module.buffers())):
            module.to(device)  # (some libraries print a line on every move)
    return device, dtype


def _check_device(device) -> torch.device:
    """``device`` as a torch.device that exists here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise invalid("analyze", "device", "None or a torch device", device) from None
    if dev.type == "meta":
        raise invalid("analyze", "device", "a device that holds data (not 'meta')", device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise invalid("analyze", "device", "a device this machine has (no CUDA here)", device)
    return dev


def _check_variance(chain: Chain, stats) -> None:
    """Refuse data that cannot define a basis: one sample, or a layer without any variance."""
    n = stats[0].n
    if n < 2:
        raise InputError(f"data has {n} sample; the interaction basis needs at least 2")
    for name, s in zip(chain.names, stats):
        if not torch.isfinite(s.G).all() or (s.M is not None and not torch.isfinite(s.M).all()):
            raise NonFiniteError(f"the statistics of layer {name!r} overflowed (inf or NaN)")
        # zero up to rounding: a standard deviation below CONSTANT_RTOL times the mean's size
        scale = float(s.mean.abs().max()) if s.mean.numel() else 0.0
        top = float(s.G.diagonal().max()) if s.G.numel() else 0.0
        if top <= (CONSTANT_RTOL * scale) ** 2:
            raise InputError(
                f"layer {name!r} has zero variance over the {n} samples (are they all the "
                "same?): there is no direction to analyse"
            )


def _check_strengths(chain: Chain, w, eps: float, unit: float) -> None:
    """Refuse strengths that overflowed; warn when ``eps`` (absolute; the user gave it in units
    of ``unit``) leaves no edge."""
    for l, wl in enumerate(w):
        if not torch.isfinite(wl).all():
            raise NonFiniteError(
                f"the interaction strengths between layers {chain.names[l]!r} and "
                f"{chain.names[l + 1]!r} overflowed (inf or NaN); rescale the inputs"
            )
    top = max((float(wl.max()) for wl in w if wl.numel()), default=0.0)
    if top <= eps**0.5:
        warnings.warn(
            f"eps={eps / unit:g} leaves no edge in the graph: the strongest interaction is "
            f"w={top:.3g}, at most eps^1/2 = {eps**0.5:.3g} (lower eps, e.g. below "
            f"{top**2 / unit:.3g})",
            stacklevel=3,
        )


def _config(options: dict) -> dict:
    """The checked options of :func:`analyze` that define its result (stored with it)."""
    where = "analyze"
    for name, choices in (
        ("variant", VARIANTS),
        ("scale", SCALES),
        ("basis", BASES),
        ("rotation", ROTATIONS),
        ("attribution", ATTRIBUTIONS),
        ("rule", RULES),
        ("output_basis", OUTPUT_BASES),
    ):
        check_choice(where, name, options[name], choices)
    check_int(where, "batch_size", options["batch_size"], low=1)
    check_real(where, "rtol", options["rtol"], low=0, high=1, high_open=True)
    check_real(where, "tie_rtol", options["tie_rtol"], low=0)
    check_int(where, "n_steps", options["n_steps"], low=1)
    for name in ("output_probes", "position_sources"):
        if options[name] is not None:
            check_int(where, name, options[name], low=1)
    check_seed(where, options["seed"])
    check_int(where, "jacobian_budget", options["jacobian_budget"], low=1)
    check_choice(where, "feature_maps", options["feature_maps"], FEATURE_MAPS)
    check_int(where, "n_examples", options["n_examples"], low=0)
    keys = ("eps", "eps_units", "variant", "scale", "basis", "rotation", "rtol", "tie_rtol")
    keys += ("attribution",)
    keys += ("n_steps", "rule", "output_probes", "seed", "batch_size", "feature_maps")
    keys += ("n_examples", "output_basis", "position_sources")
    return {k: options[k] for k in keys}


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    """Add the seconds spent in the ``with`` block to ``timings[stage]``.

    The block is also labelled ``modgraph.<stage>`` for torch.profiler (which attributes the
    FLOPs of each stage by it, see benchmarks/bench_mod113.py); without a profiler the label is
    a no-op of microseconds, once per stage.
    """
    t0 = time.perf_counter()
    with torch.profiler.record_function(f"modgraph.{stage}"):
        yield
    timings[stage] = time.perf_counter() - t0


def _statistics(chain: Chain, batches: Batches, config: dict, budget: int):
    """Per-layer statistics: G (and the global M, in one pass) for every layer."""
    if config["basis"] == "interaction" and config["variant"] == "global":
        return global_statistics(
            chain,
            batches.labelled(f"{batches.desc}: statistics (G, M)"),
            jacobian_budget=budget,
            probes=config["output_probes"],
            position_sources=config["position_sources"],
            seed=config["seed"],
        )
    accs = activation_statistics(chain, batches.labelled(f"{batches.desc}: statistics (G)"))
    return [LayerStatistics(a.n, a.mean, a.gram()) for a in accs]


def _fit_bases(chain, batches, stats: list, config: dict, budget: int) -> list[LayerBasis]:
    """Bases from the output backwards; the local variant's M of layer l needs basis l + 1.

    ``stats`` gains the local variant's M in place (it is part of the returned Analysis).
    """
    L = len(chain) - 1
    local = config["basis"] == "interaction" and config["variant"] == "local"
    fit = {k: config[k] for k in ("basis", "scale", "rtol", "tie_rtol")}
    if local:  # the output's Jacobian with respect to itself is the identity
        d_out = stats[L].G.shape[0]
        eye = torch.eye(d_out, dtype=torch.float64, device=stats[L].G.device)
        stats[L] = replace(stats[L], M=eye)
    bases: list = [None] * (L + 1)
    out_fit = {**fit, "basis": "neuron"} if config["output_basis"] == "raw" else fit
    bases[L] = fit_basis(stats[L], name=chain.names[L], position=L, is_output=True, **out_fit)
    for l in reversed(range(L)):
        if local:
            M = jacobian_gram(
                chain,
                l,
                bases[l + 1].C,
                batches.labelled(f"{batches.desc}: M local {l}/{L}"),
                jacobian_budget=budget,
                probes=config["output_probes"],
                position_sources=config["position_sources"],
                seed=config["seed"],
            )
            stats[l] = replace(stats[l], M=M)
        bases[l] = fit_basis(stats[l], name=chain.names[l], position=l, **fit)
    return bases


def _chain_for_inputs(chain: Chain, first: Tensor) -> Chain:
    """The chain for inputs like ``first``; a hooked chain's layers checked on it (every rank
    learns of a failure on any rank, as for every other step)."""
    error = None
    try:
        try:
            chain = chain.for_inputs(first)  # a hooked chain runs the model to find its layers
        except (RuntimeError, IndexError) as err:
            run = getattr(chain, "call_model", chain.forward)
            raise data_error(chain.modules(), run, first, 0, err) from err
        _warn_channels_last(chain, first)
        check_behaviour(chain, first)
        if isinstance(chain, HookedChain):
            chain.check(first)
    except Exception as err:
        error = err
    distributed.settle(error)
    return chain


def _warn_channels_last(chain: Chain, x: Tensor) -> None:
    """Images stored (N, H, W, C) fit a convolution whose in_channels happen to equal H; torch
    reads (N, C, H, W), so the analysis would be of a scrambled input. Said, not refused: the
    shape alone cannot prove it."""
    s = tuple(x.shape)
    convs = [m for model in chain.modules() for m in model.modules() if isinstance(m, nn.Conv2d)]
    if convs and x.ndim == 4 and s[1] == s[2] != s[3] and s[3] in (1, 3, 4):
        warnings.warn(
            f"data of shape {s} looks like images stored channels-last (N, H, W, C) with "
            f"{s[3]} channels, but the model's convolutions read (N, C, H, W) and take its "
            f"{s[1]} rows as channels: if so, pass x.permute(0, 3, 1, 2)",
            stacklevel=4,
        )


def _first_batch(batches: Batches) -> Tensor:
    """The first batch on this rank (a probe for the input type); every rank must have one."""
    first, error = None, None
    try:
        first = batches.first()
        if first is None:
            raise InputError("data is empty: it yielded no samples")
    except Exception as err:  # every rank must learn of it before the next collective
        error = err
    distributed.settle(error)
    return first

"""The layer chain: which activations are the "layers", and the maps between them.

A model is read as a chain of stages ``f_{l+1} = g_l(f_l)``: ``f_0`` is the input, ``f_L`` the
final output. Everything downstream (statistics, basis, edges, ablations) reads a model only
through the small :class:`Chain` interface, so any model that can be cut into such a chain can be
analysed. :class:`LayerChain` holds the stages as modules (an ``nn.Sequential`` cut at
boundaries); :class:`~modgraph.hooked.HookedChain` reads any ``nn.Module`` through forward hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ._validation import check_choice, invalid
from .errors import InputError

__all__ = ["Chain", "LayerChain", "LayerSelector", "INPUT", "FEATURE_MAPS", "device_and_dtype"]

INPUT = "input"
#: How an activation of shape (batch, channels, *spatial) is read: every spatial position a
#: sample with ``channels`` features (``"positions"``, the convention of sequences), or one
#: sample of ``channels * prod(spatial)`` features (``"flatten"``).
FEATURE_MAPS = ("positions", "flatten")

#: Picks layer boundaries by name: ``None`` (default boundaries), one name, a list of names, or a
#: predicate called on each candidate name.
LayerSelector = None | str | Sequence[str] | Callable[[str], bool]


def _flatten(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Leaf children of (nested) ``nn.Sequential`` containers, named by module path."""
    out = []
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            out.extend(_flatten(child, path + "."))
        else:
            out.append((path, child))
    return out


class FeatureMaps:
    """Reads module outputs of shape (batch, C, *spatial) as layers, and writes layers back.

    Activations of rank 2 (batch, d) and 3 (batch, positions, d) are layers as they are. A feature
    map (rank 4 or more, channels first as ``nn.Conv2d`` writes them) becomes (batch, H*W, C) with
    ``mode="positions"`` or (batch, C*H*W) with ``"flatten"``. The per-sample shape of every layer
    read is remembered, so that :meth:`write` can turn a layer back into the module's shape.

    Examples
    --------
    >>> maps = FeatureMaps("positions")
    >>> t = torch.randn(2, 3, 4, 5)
    >>> maps.read(0, t).shape
    torch.Size([2, 20, 3])
    >>> bool((maps.write(0, maps.read(0, t)) == t).all())
    True
    """

    def __init__(self, mode: str = "positions"):
        self.mode = check_choice("FeatureMaps", "feature_maps", mode, FEATURE_MAPS)
        self.shapes: dict[int, tuple[int, ...]] = {}

    def read(self, l: int, t: Tensor) -> Tensor:
        if not isinstance(t, Tensor) or t.ndim < 4:
            return t
        self.shapes[l] = tuple(t.shape[1:])
        return t.flatten(1) if self.mode == "flatten" else t.flatten(2).transpose(1, 2)

    def write(self, l: int, f: Tensor) -> Tensor:
        shape = self.shapes.get(l)
        if shape is None:
            return f
        if self.mode == "flatten":
            return f.reshape(f.shape[0], *shape)
        return f.transpose(1, 2).reshape(f.shape[0], *shape)


class Chain:
    """What every layer chain offers: ``names`` (layer ``0..L``), ``forward(x, upto)``,
    ``stage(l, x)``, ``run_from(l, f, x)``, ``perturbed(x, deltas, first)``, ``for_inputs(x)``
    and ``modules()``; the rest of the library reads a model only through these."""

    names: tuple[str, ...]

    def __len__(self) -> int:
        """Number of layers (stages + 1)."""
        return len(self.names)

    def index(self, layer: int | str) -> int:
        """Position of a layer given by position (negative counts from the end) or name."""
        if isinstance(layer, bool) or not isinstance(layer, (int, str)):
            raise invalid("index", "layer", "an int position or a str name", layer)
        if isinstance(layer, int):
            if not -len(self) <= layer < len(self):
                raise InputError(f"layer position {layer} out of range for {len(self)} layers")
            return layer % len(self)
        if layer not in self.names:
            raise InputError(f"unknown layer name {layer!r}; the layers are {list(self.names)}")
        return self.names.index(layer)

    def parameters(self) -> Iterator[nn.Parameter]:
        for module in self.modules():
            yield from module.parameters()

    def fingerprint(self) -> tuple:
        """Layer names and every parameter's shape and sums: equal on equal models."""
        params = []
        for p in self.parameters():
            p64 = p.detach().to(torch.float64)
            params.append((tuple(p.shape), float(p64.sum()), float(p64.square().sum())))
        return (self.names, tuple(params))


@dataclass(frozen=True)
class LayerChain(Chain):
    """A model cut into stages ``g_0 .. g_{L-1}`` at named layer boundaries.

    Attributes
    ----------
    stages : tuple of nn.Module
        ``stages[l]`` maps layer ``l`` to layer ``l + 1``.
    names : tuple of str
        ``L + 1`` layer names: ``"input"`` first, then the module path of the module whose output
        each later layer is (the final output is named after the model's last module).
    embed : nn.Module or None
        Applied to the raw input before layer 0, for inputs that are not a vector space (token
        ids): layer 0 is then the embedding's output. See :meth:`for_inputs`.
    feature_maps : {"positions", "flatten"}
        How activations of shape (batch, C, H, W) are read (see :class:`FeatureMaps`).
    """

    stages: tuple[nn.Module, ...]
    names: tuple[str, ...]
    embed: nn.Module | None = None
    feature_maps: str = "positions"
    maps: FeatureMaps = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if len(self.names) != len(self.stages) + 1:
            raise InputError(
                f"a chain of {len(self.stages)} stages needs {len(self.stages) + 1} layer names, "
                f"got {len(self.names)}"
            )
        object.__setattr__(self, "maps", FeatureMaps(self.feature_maps))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(
        cls, model, layers: LayerSelector = None, *, feature_maps: str = "positions"
    ) -> LayerChain:
        """Build the chain of a model.

        Parameters
        ----------
        model : nn.Sequential, list of nn.Module, or LayerChain
            An ``nn.Sequential`` (nested ``Sequential`` containers are flattened and their children
            named by path, e.g. ``"encoder.0"``), or a list of modules applied in order (named
            ``"0"``, ``"1"``, ...; each is one stage unless ``layers`` says otherwise). A
            ``LayerChain`` is returned as it is.
        layers : None, str, list of str, or callable
            Which boundaries between modules are layers. A boundary is named after the module whose
            output it is. ``None``: before every module that has parameters, plus the final output.
            The input and the final output are always layers.
        feature_maps : {"positions", "flatten"}
            How activations of shape (batch, C, H, W) are read (see :class:`FeatureMaps`).

        Examples
        --------
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> LayerChain.from_model(net).names
        ('input', '1', '2')
        >>> LayerChain.from_model(net, layers=["0"]).names
        ('input', '0', '2')
        """
        if isinstance(model, LayerChain):
            if layers is not None:
                raise InputError("layers cannot be given together with a ready-made LayerChain")
            return model
        if isinstance(model, nn.Sequential):
            children = _flatten(model)
        elif isinstance(model, (list, tuple)) and all(isinstance(m, nn.Module) for m in model):
            children = [(str(i), m) for i, m in enumerate(model)]
        else:
            raise InputError(
                "model must be an nn.Sequential, a list of nn.Module or a LayerChain, "
                f"got {type(model).__name__} (this reads a model as stage modules; analyze() "
                "and the circuit tools read any nn.Module through hooks: HookedChain)"
            )
        if not children:
            raise InputError("model has no modules to analyse")
        check_eval_mode(children)

        names = [name for name, _ in children]
        if layers is None and not isinstance(model, nn.Sequential):  # a list: one stage each
            cut = set(range(1, len(children)))
        elif layers is None:
            cut = {i for i, (_, m) in enumerate(children) if i > 0 and _has_params(m)}
        else:
            chosen = _select(names, layers)
            cut = {names.index(n) + 1 for n in chosen if names.index(n) + 1 < len(names)}
        bounds = [0, *sorted(cut), len(children)]
        stages = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            part = [m for _, m in children[a:b]]
            stages.append(part[0] if len(part) == 1 else nn.Sequential(*part))
        layer_names = [INPUT] + [names[b - 1] for b in bounds[1:]]
        return cls(tuple(stages), tuple(layer_names), feature_maps=feature_maps)

    # ------------------------------------------------------------------ use
    def for_inputs(self, x: Tensor) -> LayerChain:
        """The chain to analyse on inputs like ``x``.

        Integer inputs (token ids) have no basis: the first stage becomes the :attr:`embed`
        prefix, so the analysis starts at its output. A chain that already has one is kept.
        """
        if x.is_complex():
            raise InputError(
                f"data holds complex values (dtype {x.dtype}); modgraph analyses real-valued "
                "inputs and activations"
            )
        if x.is_floating_point() or self.embed is not None:
            return self
        if len(self.stages) < 2:
            raise InputError(
                f"data holds integer values (dtype {x.dtype}, e.g. token ids); the model needs an "
                "embedding stage followed by at least one more stage"
            )
        return LayerChain(
            self.stages[1:], self.names[1:], embed=self.stages[0], feature_maps=self.feature_maps
        )

    def forward(self, x: Tensor, upto: int | None = None) -> list[Tensor]:
        """Activations ``[f_0, ..., f_upto]`` (all layers by default) for a batch of inputs."""
        upto = len(self.stages) if upto is None else upto
        first = x if self.embed is None else one_tensor(self.embed(x), self.names[0])
        acts = [self.maps.read(0, first)]
        for l in range(upto):
            acts.append(self.stage(l, x)(acts[-1]))
        return acts

    def stage(self, l: int, x: Tensor | None = None) -> Callable[[Tensor], Tensor]:
        """The map ``g_l`` from layer ``l`` to layer ``l + 1`` (``x``, the batch's input, is
        not needed here: every stage is a module; :class:`~modgraph.HookedChain` needs it)."""
        stage, name, maps = self.stages[l], self.names[l + 1], self.maps

        def g(f: Tensor) -> Tensor:
            version = f._version
            out = maps.read(l + 1, one_tensor(stage(maps.write(l, f)), name))
            if f._version != version:
                raise inplace_error(self.names[l])
            return out

        return g

    def run_from(self, layer: int, f: Tensor, x: Tensor | None = None) -> Tensor:
        """The final output computed from the activations ``f`` of layer ``layer``."""
        for l in range(layer, len(self.stages)):
            f = self.stage(l, x)(f)
        return f

    def perturbed(self, x: Tensor, deltas: Sequence[Tensor], first: int) -> Tensor:
        """The final output with ``deltas[i]`` added to layer ``first + i`` (``i < len(deltas)``).

        With zero ``deltas``, the vjp with respect to them is the vjp with respect to the
        activations of every layer at once (one backward pass per output row).
        """
        f = self.forward(x, upto=0)[0]
        f = f + deltas[0] if first == 0 else f
        for l in range(len(self.stages)):
            f = self.stage(l, x)(f)
            if first <= l + 1 < first + len(deltas):
                f = f + deltas[l + 1 - first]
        return f

    def modules(self) -> list[nn.Module]:
        """The modules the chain runs (embedding first)."""
        return [m for m in (self.embed, *self.stages) if m is not None]


def one_tensor(out, layer: str) -> Tensor:
    """A layer's value, which must be one tensor."""
    if not isinstance(out, Tensor):
        raise InputError(
            f"layer {layer!r} is the output of a module that returned a {type(out).__name__}, "
            "not a tensor; modgraph reads one tensor per layer: select it by module path and "
            f"element, e.g. layers=['{layer}[0]'] for element 0 of a tuple or "
            f"['{layer}[logits]'] for a key (see HookedChain)"
        )
    return out


def data_error(
    modules: Sequence[nn.Module], run: Callable, x: Tensor, batch: int, err: Exception
) -> InputError:
    """The error for data that does not fit a model: ``run(x)`` failed with ``err``; it is run
    again with pre-hooks to name the module that failed, what it received and what it needs."""
    seen: list[tuple[str, nn.Module, tuple]] = []
    handles = [
        m.register_forward_pre_hook(lambda mod, args, n=n: seen.append((n, mod, args)))
        for root in modules
        for n, m in root.named_modules()
    ]
    try:
        with torch.no_grad():
            run(x)
    except Exception:  # noqa: S110 (the failure is reported below, once)
        pass
    finally:
        for h in handles:
            h.remove()
    sample = tuple(x.shape[1:])
    head = (f"data batch {batch} (a batch of {len(x)} samples, each of shape {sample}, dtype "
            f"{str(x.dtype).removeprefix('torch.')}) does not fit the model")  # fmt: skip
    if not seen:
        return InputError(f"{head}: {err}")
    name, module, args = seen[-1]  # the innermost module entered last is the one that failed
    got = next((a for a in args if isinstance(a, Tensor)), None)
    what = (
        ""
        if got is None
        else (f", received shape {tuple(got.shape)} dtype {str(got.dtype).removeprefix('torch.')}")
    )
    need, fix = _needs(module, got)
    return InputError(
        f"{head}: module {name or type(module).__name__!r} ({type(module).__name__}{need})"
        f"{what} and failed ({str(err).splitlines()[0]}){fix}"
    )


def _needs(module: nn.Module, got: Tensor | None) -> tuple[str, str]:
    """What a common module needs of its input, and what to do about it."""
    weight = getattr(module, "weight", None)
    if got is not None and isinstance(weight, Tensor) and not got.is_floating_point() and (
        not isinstance(module, nn.Embedding)):  # fmt: skip
        return (f", needs {str(weight.dtype).removeprefix('torch.')}",
                ": integer inputs (token ids) need an nn.Embedding first; other data: "
                "pass floating-point values (x.float())")  # fmt: skip
    if isinstance(module, nn.Linear):
        return (f", needs a last dimension of {module.in_features}",
                f": pass samples with {module.in_features} features")  # fmt: skip
    if isinstance(module, nn.modules.conv._ConvNd):
        c = module.in_channels
        return (f", needs {c} channels in dimension 1",
                f": pass samples of shape ({c}, ...) (channels first)")  # fmt: skip
    if isinstance(module, nn.Embedding):
        return (f", needs int ids below {module.num_embeddings}",
                f": pass token ids in [0, {module.num_embeddings})")  # fmt: skip
    return "", ""


def inplace_error(layer: str) -> InputError:
    """The error for a layer that the model changes in place after computing it."""
    return InputError(
        f"layer {layer!r} is changed in place after the model computes it (an in-place op such "
        "as ReLU(inplace=True), x += ... or x.mul_() in what reads it), so the value modgraph "
        "reads is not the one the rest of the model sees: turn in-place ops off (for m in "
        "model.modules(): m.inplace = False where m has that attribute), or cut after the op"
    )


@torch.no_grad()
def check_behaviour(chain: Chain, x: Tensor) -> None:
    """Raise unless the chain is a fixed function of each sample, judged by behaviour on ``x``.

    The interaction basis is a property of one deterministic map, so (whatever modules a model
    uses: dropout called as ``F.dropout`` in ``forward``, RReLU, normalisation by batch
    statistics) the same batch twice must give the same layers, a batch cut in two must give
    the same layers as whole, and running the model must leave its parameters and buffers as
    they were. Buffers it changed (running statistics) are put back before the error.
    """
    models = chain.modules()
    buffers = [b for m in models for b in m.buffers()]
    saved = [b.clone() for b in buffers]
    before = chain.fingerprint()
    problem = None
    try:
        try:
            first = chain.forward(x)
        except InputError:
            raise
        except Exception:  # a model that fails on x is explained where the statistics run it
            return
        if any(f.is_floating_point() and not torch.isfinite(f).all() for f in first):
            return  # NaN != NaN: non-finite layers are named where the statistics read them
        if not _all_same(chain.forward(x), first):
            problem = "gives different outputs on the same batch twice (randomness in forward)"
        elif len(x) >= 2:
            h = len(x) // 2
            parts = [chain.forward(x[:h]), chain.forward(x[h:])]
            whole = [torch.cat([a, b]) for a, b in zip(*parts)]
            if not _all_same(whole, first):
                problem = (
                    "gives a sample different outputs in different batches (its outputs depend "
                    "on the other samples: batch statistics)"
                )
    finally:
        changed = [b for b, s in zip(buffers, saved) if not torch.equal(b, s)]
        for b, s in zip(buffers, saved):
            b.copy_(s)
    if changed:
        problem = "changes its own buffers when it runs (running statistics; put back as they were)"
    elif chain.fingerprint() != before:
        problem = "changes its own parameters when it runs"
    if problem:
        training = [n or type(m).__name__ for model in models
                    for n, m in model.named_modules() if m.training]  # fmt: skip
        hint = f" Modules in training mode: {training[:5]}." if training else ""
        raise InputError(
            f"model {problem}; modgraph analyses one deterministic function of each sample: "
            "call model.eval(), and keep dropout, sampling and batch statistics out of "
            f"forward.{hint}"
        )


def close(a: Tensor, b: Tensor, rtol: float | None = None) -> bool:
    """``a`` equals ``b`` to ``rtol`` times ``b``'s largest value (default: the square root of
    the dtype's resolution, the rounding a different batch size can give); ints exactly."""
    if a.shape != b.shape:
        return False
    if rtol is None:
        rtol = torch.finfo(b.dtype).eps ** 0.5 if b.is_floating_point() else 0.0
    if not b.numel():
        return True
    return float((a - b).abs().max()) <= rtol * max(float(b.abs().max()), 1e-30)


def _all_same(acts: list[Tensor], ref: list[Tensor]) -> bool:
    return all(close(a, b) for a, b in zip(acts, ref, strict=True))


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def check_eval_mode(children: list[tuple[str, nn.Module]]) -> None:
    stochastic = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
    for path, child in children:
        for sub, m in child.named_modules():
            if isinstance(m, stochastic) and m.training:
                where = path + (f".{sub}" if sub else "")
                raise InputError(
                    f"model has {type(m).__name__} at {where!r} in training mode; "
                    "modgraph analyses "
                    "the deterministic function of eval mode: call model.eval() first"
                )


def _select(names: list[str], layers: LayerSelector) -> list[str]:
    candidates = [INPUT, *names]
    if callable(layers) and not isinstance(layers, str):
        return [n for n in names if layers(n)]
    wanted = [layers] if isinstance(layers, str) else list(layers)
    for n in wanted:
        if not isinstance(n, str) or n not in candidates:
            raise InputError(f"unknown layer name {n!r} in layers; candidates are {candidates}")
    return [n for n in names if n in wanted]


def device_and_dtype(chain: LayerChain, device=None) -> tuple[torch.device, torch.dtype]:
    """Where an analysis of ``chain`` runs and in which dtype.

    The dtype is that of the first floating-point parameter (float32 for a model without any);
    ``device`` defaults to the device of the first parameter (the CPU for a model without any).
    """
    params = list(chain.parameters())
    dtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)
    if device is None:
        device = params[0].device if params else torch.device("cpu")
    return torch.device(device), dtype

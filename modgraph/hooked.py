"""Any ``nn.Module`` as a layer chain: layers named by module path, read through forward hooks.

:class:`HookedChain` cuts a model at the outputs of named sub-modules (``"encoder.3"``,
``"blocks.1"``, ``"transformer.h.0[0]"``), the way TransformerLens and nnsight name activations,
and the model's own output is the final layer. It never rebuilds the model: every layer is
captured, replaced or perturbed by a forward hook during a call of the model itself, inside a
``try``/``finally`` that removes the hooks.

- ``forward(x)``: one call of the model; hooks record every layer (the call stops at the last
  layer asked for).
- ``stage(l, x)``: the map ``f_l -> f_{l+1}``: the model is called on ``x`` with layer ``l``'s
  output replaced by ``f_l`` and stops at layer ``l + 1``.
- ``perturbed(x, deltas)``: one call with ``deltas`` added to the layers, so that one backward
  pass per output row gives the Jacobian with respect to every layer, as for
  :class:`~modgraph.chain.LayerChain`.

The paper's chain ``f_{l+1} = g_l(f_l)`` needs every layer to carry everything that later layers
read from earlier ones. :meth:`HookedChain.check` tests it on a batch: with layer ``l`` held at
its value on ``x``, layer ``l + 1`` must not change when the rest of the model sees other inputs.
A residual bypass, a skip connection or a cached value breaks it; the error names the module
whose output goes around the layer and the enclosing module to cut at instead.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ._validation import invalid
from .chain import (
    INPUT,
    Chain,
    FeatureMaps,
    LayerChain,
    check_eval_mode,
    close,
    inplace_error,
    one_tensor,
)
from .errors import InputError

__all__ = ["HookedChain", "OUTPUT"]

OUTPUT = "output"
_SPEC = re.compile(r"^(?P<path>[^\[\]]*)(\[(?P<key>[^\[\]]+)\])?$")


class _Stop(Exception):
    """Raised by the hook of the last layer needed: the rest of the forward is not run."""


def _parse(spec, arg: str) -> tuple[str, int | str | None]:
    """``"path"`` or ``"path[key]"`` (key an int index or a name) as (path, key)."""
    m = _SPEC.match(spec) if isinstance(spec, str) else None
    if m is None:
        raise invalid(
            "HookedChain", arg, "module paths such as 'encoder.3' or 'transformer.h.0[0]'", spec
        )
    key = m.group("key")
    if key is not None:
        key = key.strip().strip("'\"")
        key = int(key) if re.fullmatch(r"-?\d+", key) else key
    return m.group("path"), key


def select(out, key, where: str):
    """The tensor ``key`` of a module's output (a tensor, tuple, list, dict or ModelOutput)."""
    if key is None:
        return one_tensor(out, where)
    if isinstance(out, Tensor):  # indexing a tensor would pick samples, not an element
        raise InputError(
            f"layer {where!r}: the module returns a tensor, not a tuple or dict; drop the "
            f"selector [{key!r}]"
        )
    try:
        if isinstance(key, int) and isinstance(out, Mapping):
            return one_tensor(list(out.values())[key], where)
        return one_tensor(out[key], where)
    except (KeyError, IndexError, TypeError):
        raise InputError(
            f"layer {where!r}: the module's output ({type(out).__name__}) has no element [{key!r}]"
        ) from None


def _replace(out, key, value: Tensor):
    """The module output ``out`` with its element ``key`` (or itself) replaced by ``value``."""
    if key is None:
        return value
    if isinstance(out, Mapping):
        name = list(out.keys())[key] if isinstance(key, int) else key
        new = type(out)(**{**out, name: value}) if hasattr(out, "to_tuple") else dict(out)
        new[name] = value
        return new
    items = list(out)
    items[key] = value
    if isinstance(out, tuple):
        return type(out)(*items) if hasattr(out, "_fields") else tuple(items)
    return items


class HookedChain(Chain):
    """A model cut at the outputs of named sub-modules, read and edited through forward hooks.

    Parameters
    ----------
    model : nn.Module
        In eval mode. Called as ``model(x)`` (or ``call(model, x)``) on each batch of inputs.
    layers : list of str
        Module paths (``model.get_submodule`` names), in the order the forward computes them,
        each optionally followed by a selector of the module's output: ``"h.0[0]"`` (element 0
        of a tuple), ``"block[hidden]"`` (a key of a dict or ModelOutput). Each module must run
        exactly once per forward. ``"input"`` first makes the model's input layer 0 (added by
        default for floating-point inputs, see :meth:`for_inputs`).
    output : None, int, str or callable
        Selects the final layer from the model's output: the output itself (``None``), an
        element or key (``"logits"``), or ``output(model_output) -> Tensor`` (e.g.
        ``lambda out: out.logits[:, -1]``, the last position).
    output_name : str
        The final layer's name.
    call : callable, optional
        ``call(model, x)`` runs the model on a batch (e.g. with an attention mask held fixed);
        default ``model(x)``.
    feature_maps : {"positions", "flatten"}
        How activations of shape (batch, C, H, W) are read (see
        :class:`~modgraph.chain.FeatureMaps`).
    include_input : bool, optional
        Whether the model's input is layer 0; default: when it is floating point (decided by
        :meth:`for_inputs` on the data), not for token ids.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.enc = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
    ...         self.head = nn.Linear(8, 2)
    ...     def forward(self, x):
    ...         return self.head(self.enc(x))
    >>> chain = HookedChain(Net(), ["enc"])
    >>> chain.names
    ('input', 'enc', 'output')
    >>> [f.shape[-1] for f in chain.forward(torch.randn(5, 4))]
    [4, 8, 2]
    """

    def __init__(  # noqa: PLR0913 (the ways a model's output and call are read)
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        output=None,
        output_name: str = OUTPUT,
        call: Callable | None = None,
        feature_maps: str = "positions",
        include_input: bool | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise invalid("HookedChain", "model", "an nn.Module", model)
        if layers is not None and (
            isinstance(layers, str) or not isinstance(layers, Sequence) or not layers
        ):
            raise invalid("HookedChain", "layers", "a non-empty list of module paths", layers)
        if not (output is None or isinstance(output, (int, str)) or callable(output)):
            raise invalid("HookedChain", "output", "None, an int, a str or a callable", output)
        check_eval_mode([("", model)])
        self.model, self.output, self.call = model, output, call
        self.feature_maps, self.output_name = feature_maps, output_name
        self.maps = FeatureMaps(feature_maps)
        specs = None if layers is None else list(layers)
        named_input = _has_module(model, INPUT)  # then "input" in layers is that module
        if specs and specs[0] == INPUT and not named_input:
            specs, include_input = specs[1:], True
        self.include_input = include_input
        self.has_input = include_input is not False  # until for_inputs decides
        self._layer_specs = specs
        if specs is None:  # chosen on the data by for_inputs
            self.names = (*([INPUT] if self.has_input else []), "...", output_name)
            return
        if INPUT in specs and not named_input:
            raise InputError(f"layers: {INPUT!r} can only be the first layer, got {list(layers)}")
        if len(set(specs)) != len(specs):
            raise InputError(f"layers name a module output twice: {list(layers)}")
        self.specs = [_parse(s, "layers") for s in specs]
        self.modules_ = [self._module(path, spec) for (path, _), spec in zip(self.specs, specs)]
        where = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
        self.paths = [where.get(id(m), p) for m, (p, _) in zip(self.modules_, self.specs)]
        # a module named like the model's input or output layer: those get parentheses, so
        # that every layer has its own name
        first = f"({INPUT})" if INPUT in specs else INPUT
        last = f"({output_name})" if output_name in specs else output_name
        names = ([first] if self.has_input else []) + specs + [last]
        if len(names) < 2:
            raise InputError("a chain needs at least two layers; name at least one module path")
        self.names = tuple(names)

    def _module(self, path: str, spec: str) -> nn.Module:
        try:
            return self.model.get_submodule(path)
        except AttributeError:
            aliases = getattr(self.model, "hook_dict", None)  # TransformerLens hook names
            if isinstance(aliases, Mapping) and isinstance(aliases.get(path), nn.Module):
                return aliases[path]
            known = [n for n, _ in self.model.named_modules() if n]
            close = difflib.get_close_matches(path, known, n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise InputError(
                f"layers: {type(self.model).__name__} has no module {path!r} (in {spec!r}){hint} "
                f"Its modules: {_summary(known)}"
            ) from None

    # ------------------------------------------------------------------ chain interface
    def for_inputs(self, x: Tensor) -> HookedChain:
        """The chain to analyse on inputs like ``x``.

        With ``include_input=None``, floating-point inputs are layer 0 and integer inputs
        (token ids, which have no basis) are not: the analysis then starts at the first module.
        """
        if x.is_complex():
            raise InputError(
                f"data holds complex values (dtype {x.dtype}); modgraph analyses real-valued "
                "inputs and activations"
            )
        if self._layer_specs is None:
            include = x.is_floating_point() if self.include_input is None else self.include_input
            return self._with(include, self._default_layers(x)).for_inputs(x)
        if self.include_input is None:
            return self._with(x.is_floating_point())
        if self.include_input and not x.is_floating_point():
            raise InputError(
                f"data holds integer values (dtype {x.dtype}, e.g. token ids), which have no "
                f"basis: leave {INPUT!r} out of layers and start at a module's output (the "
                "embedding's)"
            )
        return self

    def _default_layers(self, x: Tensor) -> list[str]:
        """The outputs of the top-level modules called just before a module with parameters
        (as :meth:`LayerChain.from_model` cuts an ``nn.Sequential``), in call order; each must
        be called once, and the one whose output is the model's (the final layer) is left out."""
        calls: dict[str, list] = {}
        handles = [
            m.register_forward_hook(lambda mod, a, o, n=n: calls.setdefault(n, []).append(o))
            for n, m in self.model.named_children()
        ]
        try:
            with torch.no_grad():
                out = self.call_model(x)
        finally:
            for h in handles:
                h.remove()
        try:
            final = self._output(out)
        except InputError:  # said again, in full, when the chain runs
            final = out
        last = [n for n, outs in calls.items() if outs[0] is out or outs[0] is final]
        once = [n for n, outs in calls.items() if len(outs) == 1 and n not in last]
        # the rule nn.Sequential has: a layer before every module with parameters (the output
        # of the module called just before it), so that the same network is cut alike written
        # either way; every module called once where none has parameters
        order = list(calls)
        layers = [a for a, b in zip(order, order[1:])
                  if a in once and _has_params(self.model.get_submodule(b))] or once  # fmt: skip
        if not layers:
            raise InputError(
                f"layers: found no top-level module of {type(self.model).__name__} to cut at "
                "(each must run once per forward and not return the model's output); name "
                "the layers as module paths, e.g. layers=['encoder', 'blocks.0']. Its modules: "
                + _summary([n for n, _ in self.model.named_modules() if n])
            )
        return layers

    def _with(self, include_input: bool, layers: Sequence[str] | None = None) -> HookedChain:
        return HookedChain(
            self.model,
            self._layer_specs if layers is None else layers,
            output=self.output,
            output_name=self.output_name,
            call=self.call,
            feature_maps=self.feature_maps,
            include_input=include_input,
        )

    def modules(self) -> list[nn.Module]:
        return [self.model]

    def call_model(self, x: Tensor):
        """One call of the model on a batch of inputs (``call(model, x)`` if given)."""
        return self.model(x) if self.call is None else self.call(self.model, x)

    # ------------------------------------------------------------------ running
    def _run(self, x: Tensor, stop: int | None = None, edit=None) -> list[Tensor]:
        """Layers ``0..stop`` on input ``x``, ``edit(l, f)`` applied to each as it is computed."""
        if self._layer_specs is None:
            raise InputError(
                "this HookedChain chooses its layers on the data: use chain.for_inputs(x) first"
            )
        L = len(self.names) - 1
        stop = L if stop is None else stop
        offset = 1 if self.has_input else 0
        acts: list[Tensor | None] = [None] * (stop + 1)
        versions: dict[int, int] = {}

        def take(l: int, f: Tensor) -> Tensor:
            f = self.maps.read(l, f)
            if edit is not None:
                f = edit(l, f)
            acts[l], versions[l] = f, f._version
            return f

        def hook_for(l: int, key):
            def hook(module, args, out):
                if acts[l] is not None:
                    raise InputError(
                        f"layer {self.names[l]!r}: the module runs more than once in one forward "
                        "(a module reused at several places); name a module that runs once"
                    )
                later = [i for i in range(l + 1, stop + 1) if acts[i] is not None]
                if later:
                    raise InputError(
                        f"layers must be given in the order the forward computes them: "
                        f"{self.names[later[0]]!r} ran before {self.names[l]!r}"
                    )
                new = take(l, select(out, key, self.names[l]))
                if l == stop:
                    raise _Stop
                return None if edit is None else _replace(out, key, self.maps.write(l, new))

            return hook

        handles = []
        try:
            if self.has_input:
                x = self.maps.write(0, take(0, x))
                if stop == 0:
                    return acts
            for i, ((_, key), module) in enumerate(zip(self.specs, self.modules_)):
                if i + offset <= stop and i + offset < L:
                    handles.append(module.register_forward_hook(hook_for(i + offset, key)))
            try:
                out = self.call_model(x)
            except _Stop:
                return self._unchanged(acts, versions)
            self._check_ran(acts, min(stop, L - 1))
            self._unchanged(acts, versions)
            take(L, self._output(out))
            return acts
        finally:
            for h in handles:
                h.remove()

    def _unchanged(self, acts: list, versions: dict[int, int]) -> list:
        """``acts``, once no layer was written in place after it was read."""
        for l, v in versions.items():
            if acts[l]._version != v:
                raise inplace_error(self.names[l])
        return acts

    def _check_ran(self, acts: list, upto: int) -> None:
        missing = [self.names[i] for i in range(upto + 1) if acts[i] is None]
        if missing:
            raise InputError(
                f"layers {missing}: the module did not run in the model's forward (a "
                "ModuleList or an unused module); name modules that the forward calls"
            )

    def _output(self, out) -> Tensor:
        if callable(self.output) and not isinstance(self.output, (int, str)):
            return one_tensor(self.output(out), self.names[-1])
        return select(out, self.output, self.names[-1])

    def forward(self, x: Tensor, upto: int | None = None) -> list[Tensor]:
        """Activations ``[f_0, ..., f_upto]`` (all layers by default) for a batch of inputs."""
        return self._run(x, upto)

    def _tiled(self, x: Tensor, f: Tensor) -> Tensor:
        """``x`` repeated to the batch size of ``f`` (several variants of a batch at once)."""
        if f.shape[0] == x.shape[0]:
            return x
        if f.shape[0] % x.shape[0]:
            raise InputError(
                f"a layer batch of {f.shape[0]} samples does not match the {x.shape[0]} inputs"
            )
        return x.repeat(f.shape[0] // x.shape[0], *([1] * (x.ndim - 1)))

    def stage(self, l: int, x: Tensor) -> Callable[[Tensor], Tensor]:
        """The map from layer ``l`` to layer ``l + 1`` on the batch whose inputs are ``x``."""

        def g(f: Tensor) -> Tensor:
            return self._run(self._tiled(x, f), l + 1, _replacer(l, f))[l + 1]

        return g

    def run_from(self, layer: int, f: Tensor, x: Tensor) -> Tensor:
        """The final output computed from the activations ``f`` of layer ``layer``."""
        return self._run(self._tiled(x, f), None, _replacer(layer, f))[-1]

    def perturbed(self, x: Tensor, deltas: Sequence[Tensor], first: int) -> Tensor:
        """The final output with ``deltas[i]`` added to layer ``first + i``, in one forward."""

        def add(l: int, f: Tensor) -> Tensor:
            i = l - first
            return f + deltas[i] if 0 <= i < len(deltas) else f

        return self._run(x, None, add)[-1]

    # ------------------------------------------------------------------ the chain assumption
    @torch.no_grad()
    def check(self, x: Tensor, rtol: float | None = None) -> None:
        """Raise if a layer does not carry everything later layers read (see the module doc).

        Layer ``l`` is held at its value on ``x`` while the model runs on ``x`` with the samples
        rolled by one; layer ``l + 1`` must come out as on ``x`` (to ``rtol`` times its largest
        value; default the square root of the dtype's resolution). Needs a batch of at least two
        different samples; a batch of one is not checked.
        """
        if x.shape[0] < 2:
            return
        other = x.roll(1, 0)
        acts = self.forward(x)
        for l in range(len(self.names) - 1):
            if not acts[l].is_floating_point():
                continue
            got = self._run(other, l + 1, _replacer(l, acts[l]))[l + 1]
            if not close(got, acts[l + 1], rtol):
                raise InputError(self._bypass_message(l, x, other, acts))

    def _bypass_message(self, l: int, x: Tensor, other: Tensor, acts) -> str:
        name, nxt = self.names[l], self.names[l + 1]
        order = self._call_order(x)
        path = self.paths[l - (1 if self.has_input else 0)] if l or not self.has_input else None
        before = order[: order.index(path)] if path in order else []
        culprit = None
        for cand in reversed(before):  # the latest module whose output, held too, restores it
            if path is not None and path.startswith(cand + ".") or cand == "":
                continue  # an enclosing module has not finished when layer l is computed
            held = _hold(self.model.get_submodule(cand), self, x)
            try:
                got = self._run(other, l + 1, _replacer(l, acts[l]))[l + 1]
            finally:
                held.remove()
            if close(got, acts[l + 1], None):
                culprit = cand
                break
        around = f"the output of {culprit!r}" if culprit else "a value computed outside the layer"
        msg = (
            f"layer {name!r} does not carry everything the rest of the model reads: with it held "
            f"fixed, layer {nxt!r} still depends on the input, because {around} reaches later "
            "layers without passing through it (a residual bypass, a skip connection or a "
            "cached value). The interaction basis needs a chain f_{l+1} = g_l(f_l)"
        )
        cut = self._enclosing_cut(path, l, x, order) if path else None
        if cut:
            msg += f"; cut at the output of the enclosing module {cut!r} instead of {name!r}"
        return msg

    def _enclosing_cut(self, path: str, l: int, x: Tensor, order: list[str]) -> str | None:
        """The innermost module around ``path`` whose output is a valid cut before layer l+1."""
        parts = path.split(".")
        for k in range(len(parts) - 1, 0, -1):
            cand = ".".join(parts[:k])
            if cand not in order:
                continue
            specs = list(self._layer_specs)
            specs[l - (1 if self.has_input else 0)] = cand
            trial = self._with(self.has_input, specs)
            try:
                trial.check(x)
            except InputError:
                continue
            return cand
        return None

    def _call_order(self, x: Tensor) -> list[str]:
        """Paths of the modules the forward calls, in the order they finish."""
        order: list[str] = []
        handles = [
            m.register_forward_hook(lambda mod, a, o, n=n: order.append(n) if n not in order else 0)
            for n, m in self.model.named_modules()
        ]
        try:
            self.call_model(x)
        finally:
            for h in handles:
                h.remove()
        return order


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _has_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def input_included(model: nn.Module, names: Sequence[str]) -> bool:
    """Whether layer 0 of a hooked chain of ``model`` with layer names ``names`` is the
    model's input (not a module of that name)."""
    return names[0] == f"({INPUT})" or (names[0] == INPUT and not _has_module(model, INPUT))


def _replacer(layer: int, value: Tensor):
    def edit(l: int, f: Tensor) -> Tensor:
        return value if l == layer else f

    return edit


def _hold(module: nn.Module, chain: HookedChain, x: Tensor):
    """Hook ``module`` to return its output on ``x`` whatever its input."""
    saved = []
    h = module.register_forward_hook(lambda m, a, o: saved.append(o))
    try:
        chain.call_model(x)
    finally:
        h.remove()
    it = iter(saved)
    return module.register_forward_hook(lambda m, a, o: next(it, o))  # a handle: .remove()


def _summary(names: list[str], most: int = 12) -> str:
    top = [n for n in names if "." not in n]
    shown = top[:most]
    return ", ".join(shown) + (f", ... ({len(top)} top-level)" if len(top) > most else "")


def as_chain(model, layers=None, *, feature_maps: str = "positions") -> Chain:
    """The chain of any model: a ready-made chain as it is, an ``nn.Sequential`` or a list of
    modules as a :class:`~modgraph.chain.LayerChain` (stage modules, ``layers`` as boundary names),
    any other ``nn.Module`` as a :class:`HookedChain` cut at the module paths ``layers``
    (default: its top-level modules, in the order the forward calls them, see
    :meth:`HookedChain.for_inputs`)."""
    if isinstance(model, Chain):
        if layers is not None:
            raise InputError("layers cannot be given together with a ready-made chain")
        return model
    if isinstance(model, (nn.Sequential, list, tuple)):
        return LayerChain.from_model(model, layers, feature_maps=feature_maps)
    if not isinstance(model, nn.Module):
        raise invalid(
            "analyze", "model", "an nn.Module, a list of nn.Module or a LayerChain", model
        )
    if layers is None and any(hasattr(model, a) for a in ("hook_dict", "lm_head")):
        raise InputError(
            f"model is a {type(model).__name__}, which looks like a transformer: "
            "mg.transformer_chain(model) cuts it at the residual stream (TransformerLens, "
            "Hugging Face GPT-2, TinyTransformer); or name its layers as module paths"
        )
    if layers is not None and (callable(layers) and not isinstance(layers, str)):
        raise invalid("analyze", "layers", "a list of module paths for a custom nn.Module", layers)
    specs = None if layers is None else ([layers] if isinstance(layers, str) else list(layers))
    return HookedChain(model, specs, feature_maps=feature_maps)


def chain_for_analysis(
    model, names: Sequence[str], first: Tensor, *, layers=None, feature_maps: str = "positions"
) -> Chain:
    """The chain of ``model`` cut where an analysis with layer names ``names`` was cut, for
    inputs like ``first``, checked against those names.

    ``model`` may be the model as passed to :func:`modgraph.analyze` (``layers`` need not be
    repeated: the boundaries are found by name), a ready-made chain, or a model with ``layers``.
    """
    names = list(names)
    if isinstance(model, Chain) or layers is not None:
        chain = as_chain(model, layers, feature_maps=feature_maps)
    else:
        try:
            if isinstance(model, (nn.Sequential, list, tuple)):
                chain = LayerChain.from_model(model, names[1:], feature_maps=feature_maps)
            else:
                with_input = input_included(model, names)
                chain = HookedChain(
                    model, names[1 if with_input else 0 : -1],
                    output_name=names[-1].removeprefix("(").removesuffix(")"),
                    feature_maps=feature_maps, include_input=with_input,
                )  # fmt: skip
        except InputError as err:
            raise InputError(
                f"model does not match analysis: the analysis has layers {names}, and {err}"
            ) from err
    chain = chain.for_inputs(first)
    if list(chain.names) != names:
        raise InputError(
            f"model does not match analysis: the model's layers are {list(chain.names)} but the "
            f"analysis was fitted on {names} (pass the analysed model, and layers= as given to "
            "analyze)"
        )
    return chain

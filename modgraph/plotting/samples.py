"""Inputs shown as small HTML snippets: images as thumbnails, tokens as text, vectors as entries.

Used by the interactive report for the top and bottom activating samples of each direction
(:mod:`modgraph.exemplars`). Which view an input gets is decided from one sample's shape and
dtype (:func:`sample_kind`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["sample_kind", "sample_html", "example_details"]
__all__ += ["THUMBNAIL_PX", "CONTEXT_TOKENS", "TOP_ENTRIES"]

#: Displayed width of an image thumbnail, in CSS pixels (small images are scaled up, pixelated).
THUMBNAIL_PX = 48
#: Tokens shown before the position of a token example.
CONTEXT_TOKENS = 8
#: Entries shown of an input vector, largest magnitude first.
TOP_ENTRIES = 4


def sample_kind(sample: np.ndarray) -> str:
    """``"tokens"`` (integer sequence), ``"image"`` (2-D, or 3-D with 1, 3 or 4 channels first or
    last), or ``"vector"`` (anything else) for one sample of the data."""
    if np.issubdtype(sample.dtype, np.integer) and sample.ndim == 1:
        return "tokens"
    if sample.ndim == 2:
        return "image"
    if sample.ndim == 3 and (sample.shape[0] in (1, 3, 4) or sample.shape[-1] in (1, 3, 4)):
        return "image"
    return "vector"


def sample_html(
    sample: np.ndarray,
    kind: str,
    position: int | None = None,
    decode: Callable[[int], str] | None = None,
) -> str:
    """One sample as an HTML snippet; ``position`` marks a sequence position or spatial place."""
    if kind == "tokens":
        return _tokens(sample, position, decode)
    if kind == "image":  # a layer's position need not be a pixel (pooling): say its number
        where = "" if position is None else f" <small>(position {position})</small>"
        return _thumbnail(sample) + where
    return _vector(sample, position)


def _tokens(ids: np.ndarray, position: int | None, decode) -> str:
    p = len(ids) - 1 if position is None else int(position)
    start = max(0, p - CONTEXT_TOKENS)
    show = (lambda t: decode(int(t))) if decode is not None else (lambda t: str(int(t)))
    parts = [html.escape(show(t)) for t in ids[start : p + 1]]
    parts[-1] = f"<b>{parts[-1]}</b>"
    return ("... " if start else "") + " ".join(parts) + f" <small>(pos {p})</small>"


def _image(sample: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) with C in 1, 3, 4."""
    img = np.asarray(sample, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    return img


def _thumbnail(sample: np.ndarray) -> str:
    from PIL import Image  # matplotlib's own dependency

    img = _image(sample)
    lo, hi = float(img.min()), float(img.max())
    scaled = np.zeros_like(img) if hi <= lo else (img - lo) / (hi - lo)
    buf = io.BytesIO()
    Image.fromarray((255 * scaled).round().astype(np.uint8)).save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{data}" width="{THUMBNAIL_PX}" '
        'style="image-rendering:pixelated;border:1px solid #ccc">'
    )


def _vector(sample: np.ndarray, position: int | None) -> str:
    v = np.asarray(sample, dtype=np.float64)
    prefix = ""
    if v.ndim >= 2 and position is not None:  # (positions, d): the row at the position
        v = v.reshape(-1, v.shape[-1])[position]
        prefix = f"pos {position}: "
    v = v.reshape(-1)
    top = np.argsort(-np.abs(v), kind="stable")[:TOP_ENTRIES]
    return prefix + ", ".join(f"x[{i}]={v[i]:.3g}" for i in top)


def example_details(
    analysis,
    partitions: Mapping[str, object],
    inputs: Mapping[int, np.ndarray] | None,
    *,
    decode: Callable[[int], str] | None = None,
    outputs: list[np.ndarray] | None = None,
    shown: int = 8,
) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """The HTML the interactive report shows per node and per module, and each sample once.

    Parameters
    ----------
    analysis : Analysis
        With exemplars (``analyze(..., n_examples=k)``); without them only the outputs show.
    partitions : dict {name: ModuleResult}
    inputs : dict {sample index: array}, optional
        The samples the exemplars name (without them, examples show as sample numbers).
    decode : callable, optional
        Token id -> string, for token inputs.
    outputs : list of ndarray, optional
        Per layer the output attribution ``A[l]`` of shape (d_out, k_l)
        (:func:`modgraph.edges.output_attribution`).
    shown : int
        Samples shown per list (top, bottom, module).

    Returns
    -------
    node_details : list of str
        Per node, in ``graph.nodes`` order; ``{{s:KEY}}`` stands for ``samples[KEY]``.
    module_details : dict {partition: list of str}
        Per partition, per module id.
    samples : dict {KEY: HTML}
        ``KEY`` is ``"N"`` or ``"N_P"`` (sample ``N`` at position ``P``).
    """
    graph = analysis.graph
    ex = analysis.exemplars
    kind = sample_kind(next(iter(inputs.values()))) if inputs else None
    samples: dict[str, str] = {}

    def ref(sample: int, position: int | None) -> str:
        key = str(sample) if position is None else f"{sample}_{position}"
        if key not in samples:
            head = f"<small>#{sample}</small> "
            body = "" if not inputs else sample_html(inputs[sample], kind, position, decode)
            samples[key] = head + body
        return "{{s:" + key + "}}"

    def table(title: str, side, j: int, sequence: bool) -> str:
        cells = []
        for v, s, p in zip(side.values[j, :shown], side.samples[j, :shown],
                           side.positions[j, :shown]):  # fmt: skip
            pos = int(p) if sequence else None
            cells.append(f"<tr><td>{ref(int(s), pos)}</td><td>{float(v):.3g}</td></tr>")
        return f"<p><b>{title}</b></p><table>{''.join(cells)}</table>"

    nodes = []
    for l, j in zip(graph.node_layer, graph.node_index):
        parts = []
        if outputs is not None:
            a = outputs[l][:, j]
            top = np.argsort(-a, kind="stable")[:TOP_ENTRIES]
            parts.append("<p><b>drives outputs</b> (RMS attribution): "
                         + ", ".join(f"out[{o}] {a[o]:.3g}" for o in top) + "</p>")  # fmt: skip
        if ex is not None:
            e = ex[l]
            parts.append(table("top samples (largest coordinate)", e.top, j, e.sequence))
            parts.append(table("bottom samples (smallest coordinate)", e.bottom, j, e.sequence))
        nodes.append("".join(parts))

    modules = {}
    for name, result in partitions.items():
        per = []
        labels = result.membership_array
        for m in range(result.n_modules):
            members = np.flatnonzero(labels == m)
            listed = ", ".join(graph.nodes[i] for i in members[:40])
            more = f" and {len(members) - 40} more" if len(members) > 40 else ""
            text = f"<p><b>members</b>: {listed}{more}</p>"
            text += f"<p><b>{html.escape(name)}</b>: {html.escape(result.verdict)}</p>"
            if ex is not None:
                text += _module_samples(graph, ex, members, ref, shown)
            per.append(text)
        modules[name] = per
    return nodes, modules, samples


def _module_samples(graph, ex, members, ref, shown: int) -> str:
    """Samples that drive the module's directions most: each direction's top list scored by
    value over the direction's largest, summed over the module's directions."""
    score: dict[tuple[int, int | None], float] = {}
    for i in members:
        l, j = int(graph.node_layer[i]), int(graph.node_index[i])
        top = ex[l].top
        scale = float(abs(top.values[j, 0])) if top.values.shape[1] else 0.0
        for v, s, p in zip(top.values[j], top.samples[j], top.positions[j]):
            key = (int(s), int(p) if ex[l].sequence else None)
            score[key] = score.get(key, 0.0) + (float(v) / scale if scale > 0 else 0.0)
    best = sorted(score.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1] or 0))[:shown]
    cells = "".join(f"<tr><td>{ref(s, p)}</td><td>{v:.2f}</td></tr>" for (s, p), v in best)
    return ("<p><b>samples that drive it most</b> (summed value / the direction's largest, "
            f"over its directions' top lists)</p><table>{cells}</table>")  # fmt: skip

"""Inputs shown as small HTML snippets: images as thumbnails, tokens as text, vectors as entries.

Used by the interactive report for the top and bottom activating samples of each direction
(:mod:`modgraph.exemplars`). Which view an input gets is decided from one sample's shape and
dtype (:func:`sample_kind`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable

import numpy as np

__all__ = ["sample_kind", "sample_html", "THUMBNAIL_PX", "CONTEXT_TOKENS", "TOP_ENTRIES"]

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
    if sample.ndim == 2 or (sample.ndim == 3 and (sample.shape[0] in (1, 3, 4) or sample.shape[-1] in (1, 3, 4))):
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
    if kind == "image":
        where = ""
        if position is not None:
            h, w = _image(sample).shape[:2]
            where = f"<br><small>at ({position // w}, {position % w})</small>" if h * w > 1 else ""
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

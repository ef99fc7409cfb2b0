"""The interaction graph: basis directions as nodes, strong interactions as edges.

Nodes are the basis directions of every layer (Bushnaq et al. 2024, sec. 5). Direction ``j`` of
layer ``l`` and direction ``i`` of layer ``l + 1`` are joined when their RMS interaction strength
``w_ij`` exceeds the noise floor ``eps^1/2`` of the behavioral loss; the edge then has strength

.. math::

    s_{ij} = \\ln\\left(\\frac{w_{ij}}{\\varepsilon^{1/2}}\\right) > 0,

which is what cutting that edge costs when the network is split into modules. Weaker edges cost
nothing to cut and are dropped. This module is pure numpy / scipy: it never imports torch, so graphs
can be loaded and partitioned without it (tensors are still accepted and converted).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._validation import check_real, invalid
from .atomic import atomic_path
from .errors import InputError

__all__ = ["InteractionGraph", "Edges"]


def _as_float64(x, name: str) -> np.ndarray:
    """Float64 copy of a numpy array, nested sequence or torch tensor (without importing torch)."""
    if hasattr(x, "detach"):  # a torch tensor: duck-typed so this module never imports torch
        x = x.detach().cpu().numpy()
    try:
        return np.array(x, dtype=np.float64)  # a copy, so later edits by the caller cannot leak in
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be an array of numbers, got {type(x).__name__}") from err


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


_WHERE = "InteractionGraph"
_NAMES = "a non-empty sequence of str"


def _layer_names(names) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise invalid(_WHERE, "layer_names", _NAMES, names)
    names = tuple(names)
    if not names or not all(isinstance(name, str) for name in names):
        raise invalid(_WHERE, "layer_names", _NAMES, names)
    return names


def _importance(importance, n_layers: int) -> tuple[np.ndarray, ...]:
    if isinstance(importance, np.ndarray) or not isinstance(importance, Sequence):
        constraint = "a sequence of 1-d arrays (one per layer)"
        raise invalid(_WHERE, "importance", constraint, importance)
    if len(importance) != n_layers:
        raise InputError(
            f"importance must have one array per layer ({n_layers} layer_names), "
            f"got {len(importance)}"
        )
    out = []
    for l, imp in enumerate(importance):
        a = _as_float64(imp, f"importance[{l}]")
        if a.ndim != 1:
            raise InputError(f"importance[{l}] must be 1-d (k_{l},), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise InputError(f"importance[{l}] must be finite, got {a[~np.isfinite(a)][:3]}")
        out.append(_readonly(a))
    return tuple(out)


def _strengths(w, sizes: list[int]) -> tuple[np.ndarray, ...]:
    if isinstance(w, np.ndarray) or not isinstance(w, Sequence):
        constraint = "a sequence of 2-d arrays (one per adjacent layer pair)"
        raise invalid(_WHERE, "w", constraint, w)
    if len(w) != len(sizes) - 1:
        raise InputError(
            f"w must have one matrix per adjacent layer pair ({len(sizes) - 1} for "
            f"{len(sizes)} layers), got {len(w)}"
        )
    out = []
    for l, wl in enumerate(w):
        a = _as_float64(wl, f"w[{l}]")
        want = (sizes[l + 1], sizes[l])
        if a.shape != want:
            raise InputError(
                f"w[{l}] must have shape (k_{l + 1}, k_{l}) = {want} to match importance, "
                f"got {a.shape}"
            )
        bad = ~np.isfinite(a)
        if bad.any():
            raise InputError(f"w[{l}] must be finite, got {a[bad][:3]} at {np.argwhere(bad)[0]}")
        if (a < 0).any():
            raise InputError(
                f"w[{l}] must be non-negative (an RMS strength), got min {a.min()!r} "
                f"at {np.argwhere(a < 0)[0]}"
            )
        out.append(_readonly(a))
    return tuple(out)


@dataclass(frozen=True)
class Edges:
    """The kept edges of an :class:`InteractionGraph`, as parallel arrays.

    Edges are ordered by layer pair, then by the row-major position of ``w[l]`` (target index ``i``
    major), so the order is deterministic.

    Attributes
    ----------
    src : ndarray of int64, shape (n_edges,)
        Node number (position in ``graph.nodes``) of the edge's end in layer ``l``.
    dst : ndarray of int64, shape (n_edges,)
        Node number of the edge's end in layer ``l + 1``.
    w : ndarray of float64, shape (n_edges,)
        RMS interaction strength, ``w > eps^1/2``.
    strength : ndarray of float64, shape (n_edges,)
        ``ln(w / eps^1/2)``, the cost of cutting the edge (non-negative).
    """

    src: np.ndarray
    dst: np.ndarray
    w: np.ndarray
    strength: np.ndarray

    def __len__(self) -> int:
        return len(self.src)


@dataclass(frozen=True, eq=False)  # eq=False: elementwise == on arrays has no single truth value
class InteractionGraph:
    """Basis directions of all layers and the interactions between adjacent layers.

    Attributes
    ----------
    layer_names : tuple of str, length L + 1
        Name of each layer position ``0 .. L``.
    importance : tuple of ndarray
        ``importance[l]`` has shape ``(k_l,)``: the basis eigenvalues of layer ``l``.
    w : tuple of ndarray
        ``w[l]`` has shape ``(k_{l+1}, k_l)``: ``w[l][i, j]`` is the RMS interaction strength
        between direction ``j`` of layer ``l`` and direction ``i`` of layer ``l + 1`` (finite,
        non-negative).
    eps : float
        Noise scale of the behavioral loss; edges with ``w <= eps^1/2`` are dropped.

    Notes
    -----
    Node ids are strings ``"l:i"`` (layer position, index within the layer), layer 0 first. The
    arrays are copied to float64 and made read-only, so a graph never changes after construction.

    Examples
    --------
    >>> import numpy as np
    >>> g = InteractionGraph(("in", "out"), (np.ones(2), np.ones(2)),
    ...                      (np.array([[4.0, 0.5], [0.0, 1.0]]),), eps=1.0)
    >>> g.nodes
    ['0:0', '0:1', '1:0', '1:1']
    >>> g.n_edges, float(g.edges.strength[0]) == float(np.log(4.0))
    (1, True)
    """

    layer_names: tuple[str, ...]
    importance: tuple[np.ndarray, ...]
    w: tuple[np.ndarray, ...]
    eps: float

    def __post_init__(self):
        names = _layer_names(self.layer_names)
        importance = _importance(self.importance, len(names))
        ws = _strengths(self.w, [len(a) for a in importance])
        eps = check_real("InteractionGraph", "eps", self.eps, low=0, low_open=True)
        # Frozen dataclass: normalized values are stored through object.__setattr__.
        object.__setattr__(self, "layer_names", names)
        object.__setattr__(self, "importance", importance)
        object.__setattr__(self, "w", ws)
        object.__setattr__(self, "eps", eps)

    def __repr__(self) -> str:
        return (
            f"InteractionGraph(layer_names={self.layer_names!r}, sizes={self.layer_sizes}, "
            f"n_edges={self.n_edges}, eps={self.eps!r})"
        )

    # ------------------------------------------------------------------ nodes
    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Number of basis directions ``k_l`` of each layer."""
        return tuple(len(a) for a in self.importance)

    @cached_property
    def _offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.layer_sizes)]).astype(np.int64)

    @property
    def threshold(self) -> float:
        """``eps^1/2``: edges need ``w`` strictly above this."""
        return float(np.sqrt(self.eps))

    @cached_property
    def nodes(self) -> list[str]:
        """Node ids ``"l:i"``, layer 0 first."""
        return [f"{l}:{i}" for l, k in enumerate(self.layer_sizes) for i in range(k)]

    @property
    def n_nodes(self) -> int:
        return int(self._offsets[-1])

    @cached_property
    def node_layer(self) -> np.ndarray:
        """Layer position of each node, int64 array of shape (n_nodes,)."""
        return _readonly(np.repeat(np.arange(len(self.layer_sizes)), self.layer_sizes))

    @cached_property
    def node_index(self) -> np.ndarray:
        """Index of each node within its layer, int64 array of shape (n_nodes,)."""
        return _readonly(np.arange(self.n_nodes) - self._offsets[self.node_layer])

    @cached_property
    def node_importance(self) -> np.ndarray:
        """Basis eigenvalue of each node, float64 array of shape (n_nodes,)."""
        if not self.importance:
            return _readonly(np.zeros(0))
        return _readonly(np.concatenate(self.importance))

    @cached_property
    def _node_number(self) -> dict[str, int]:
        return {node: n for n, node in enumerate(self.nodes)}

    # ------------------------------------------------------------------ edges
    @cached_property
    def edges(self) -> Edges:
        """Edges with ``w > eps^1/2`` and strengths ``ln(w / eps^1/2)``; see :class:`Edges`."""
        thr = self.threshold
        src, dst, ws = [], [], []
        for l, wl in enumerate(self.w):  # one vectorised step per layer pair, never per edge
            i, j = np.nonzero(wl > thr)
            src.append(self._offsets[l] + j)
            dst.append(self._offsets[l + 1] + i)
            ws.append(wl[i, j])
        if not ws:
            src, dst, ws = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
        w = np.concatenate(ws)
        # w > thr can still round to w / thr == 1.0; clip so a strength is never a tiny negative.
        strength = np.maximum(np.log(w / thr), 0.0)
        return Edges(
            src=_readonly(np.concatenate(src).astype(np.int64)),
            dst=_readonly(np.concatenate(dst).astype(np.int64)),
            w=_readonly(w),
            strength=_readonly(strength),
        )

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def adjacency(self, weight: str | None = "strength") -> sp.csr_matrix:
        """Symmetric adjacency matrix of the (undirected view of the) graph.

        Parameters
        ----------
        weight : {"strength", "w"} or None
            Edge value to store; ``None`` stores 1 for every edge.

        Returns
        -------
        scipy.sparse.csr_matrix of shape (n_nodes, n_nodes)
            ``A[a, b] = A[b, a]`` = the weight of the edge between nodes ``a`` and ``b``.
        """
        e = self.edges
        if weight is None:
            vals = np.ones(len(e))
        elif weight in ("strength", "w"):
            vals = getattr(e, weight)
        else:
            raise invalid("InteractionGraph.adjacency", "weight", "'strength', 'w' or None", weight)
        n = self.n_nodes
        rows = np.concatenate([e.src, e.dst])
        cols = np.concatenate([e.dst, e.src])
        return sp.csr_matrix((np.concatenate([vals, vals]), (rows, cols)), shape=(n, n))

    @cached_property
    def connected_nodes(self) -> np.ndarray:
        """Boolean mask of shape (n_nodes,): nodes with at least one kept edge."""
        mask = np.zeros(self.n_nodes, dtype=bool)
        mask[self.edges.src] = True
        mask[self.edges.dst] = True
        return _readonly(mask)

    # ------------------------------------------------------------------ memberships
    def membership_array(self, membership) -> np.ndarray:
        """Module label of every node, as an int64 array in node order.

        Parameters
        ----------
        membership : dict or sequence or ndarray
            Either a mapping ``{node id: module}`` covering every node exactly, or a sequence /
            array of integer labels of length ``n_nodes`` in the order of ``nodes``.

        Returns
        -------
        ndarray of int64, shape (n_nodes,)

        Raises
        ------
        InputError
            Missing or unknown node ids, a wrong length, or non-integer labels.
        """
        if isinstance(membership, Mapping):
            unknown = [k for k in membership if k not in self._node_number]
            if unknown:
                raise InputError(
                    f"membership has {len(unknown)} unknown node ids (ids are 'layer:index'), "
                    f"e.g. {unknown[:3]!r}"
                )
            missing = [n for n in self.nodes if n not in membership]
            if missing:
                raise InputError(
                    f"membership is missing {len(missing)} of {self.n_nodes} nodes, "
                    f"e.g. {missing[:3]!r}"
                )
            values = [membership[n] for n in self.nodes]
        else:
            values = membership
        try:
            arr = np.asarray(values)
        except (TypeError, ValueError) as err:
            raise InputError(f"membership must be a dict or a sequence of ints: {err}") from err
        if arr.ndim != 1 or len(arr) != self.n_nodes:
            raise InputError(
                f"membership must have one label per node ({self.n_nodes}), got shape {arr.shape}"
            )
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64)
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        if arr.dtype.kind == "b" or len(arr) == 0:
            return arr.astype(np.int64)
        raise InputError(f"membership labels must be integers, got dtype {arr.dtype}: {arr[:3]}")

    # ------------------------------------------------------------------ export
    def _node_attrs(self) -> dict[str, list]:
        layer = self.node_layer.tolist()
        return {
            "layer": layer,
            "layer_name": [self.layer_names[l] for l in layer],
            "index": self.node_index.tolist(),
            # .tolist() gives Python floats: networkx declares those "double" (numpy float64 would
            # be declared "float", which Gephi reads as single precision).
            "importance": self.node_importance.tolist(),
        }

    def to_networkx(self, *, modules: Mapping[str, Mapping[str, int]] | None = None):
        """Directed networkx graph, edges from layer ``l`` to layer ``l + 1``.

        Parameters
        ----------
        modules : dict {name: membership}, optional
            Partitions stored as int node attributes ``module_<name>`` (``-1`` for a node
            without edges), e.g. ``{"leiden": result.membership}``.

        Returns
        -------
        networkx.DiGraph
            Nodes are the ids ``"l:i"`` with attributes ``layer`` (int), ``layer_name`` (str),
            ``index`` (int) and ``importance`` (float); edges carry ``w`` and ``strength``
            (Python floats). Graph attributes: ``eps`` and ``layer_names`` (a list).
        """
        import networkx as nx

        g = nx.DiGraph(eps=self.eps, layer_names=list(self.layer_names))
        attrs = {**self._node_attrs(), **self._module_attrs(modules, "to_networkx")}
        keys = list(attrs)
        g.add_nodes_from(
            (node, dict(zip(keys, vals, strict=True)))
            for node, *vals in zip(self.nodes, *attrs.values(), strict=True)
        )
        e = self.edges
        nodes = self.nodes
        g.add_edges_from(
            (nodes[a], nodes[b], {"w": w, "strength": s})
            for a, b, w, s in zip(
                e.src.tolist(), e.dst.tolist(), e.w.tolist(), e.strength.tolist(), strict=True
            )
        )
        return g

    def to_igraph(
        self, *, directed: bool = True, modules: Mapping[str, Mapping[str, int]] | None = None
    ):
        """igraph graph built straight from the edge arrays.

        Parameters
        ----------
        directed : bool
            Direct edges from layer ``l`` to ``l + 1`` (default) or not.
        modules : dict {name: membership}, optional
            Partitions stored as int vertex attributes ``module_<name>`` (as
            :meth:`to_networkx`). igraph's own GraphML reader stores every number as a float
            (its core has one numeric type), so from a file, ``int(v["module_leiden"])``.

        Returns
        -------
        igraph.Graph
            Vertex ``v`` is node ``nodes[v]``; vertex attributes ``name`` (the node id),
            ``layer``, ``layer_name``, ``index``, ``importance``; edge attributes ``w`` and
            ``strength``; graph attributes ``eps`` and ``layer_names``.
        """
        import igraph

        e = self.edges
        g = igraph.Graph(
            n=self.n_nodes,
            edges=np.column_stack([e.src, e.dst]).tolist(),
            directed=directed,
            graph_attrs={"eps": self.eps, "layer_names": list(self.layer_names)},
        )
        g.vs["name"] = list(self.nodes)
        attrs = {**self._node_attrs(), **self._module_attrs(modules, "to_igraph")}
        for key, vals in attrs.items():
            g.vs[key] = vals
        g.es["w"] = e.w.tolist()
        g.es["strength"] = e.strength.tolist()
        return g

    def _module_attrs(self, modules, where: str) -> dict[str, list[int]]:
        """``module_<name>``: every node's module (``-1`` for none), per partition."""
        attrs = {}
        for name, membership in (modules or {}).items():
            if not isinstance(name, str) or not name.isidentifier():
                raise invalid(where, "modules", "a dict keyed by identifiers", name)
            attrs[f"module_{name}"] = self.membership_array(membership).tolist()
        return attrs

    def to_graphml(self, path, *, modules: Mapping[str, Mapping[str, int]] | None = None) -> Path:
        """Write the graph as GraphML (readable by Gephi, networkx and igraph), atomically.

        Floats are declared ``attr.type="double"`` and written with Python's shortest
        round-trip ``repr``, so reading the file back gives bit-identical values (but igraph's
        reader rejects subnormal numbers, below 2.2e-308, as an overflow). Graph-level
        attributes are ``eps`` (double) and ``layer_names`` (a JSON list, as a string). The file
        is written to a temporary file in the same directory and moved into place, so a failure
        never leaves a half-written file at ``path``.

        Parameters
        ----------
        path : str or os.PathLike
            Destination file; its directory must exist.
        modules : dict {name: membership}, optional
            Partitions to store as node attributes ``module_<name>`` (int; ``-1`` for a node
            without edges), e.g. ``{"leiden": result.membership}``. Node ids are ``"l:i"``:
            ``l`` is the layer's *position* in the chain (attribute ``layer``), ``i`` the
            direction's index in that layer (``index``); ``layer_name`` is the module path.

        Returns
        -------
        pathlib.Path
            The path written.
        """
        import networkx as nx

        path = Path(path)
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"path must be in an existing directory, got {str(path)!r}")
        if path.is_dir():
            raise InputError(f"path must be a file name, got the directory {str(path)!r}")
        self._module_attrs(modules, "to_graphml")  # checked in this function's name
        g = self.to_networkx(modules=modules)
        # GraphML attributes must be scalars: store the list of names as a JSON string.
        g.graph["layer_names"] = json.dumps(list(self.layer_names))
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            # All floats are Python floats (see _node_attrs), which networkx declares "double"
            # and writes with repr(), the shortest string that parses back bit-exactly.
            nx.write_graphml(g, fh)
        return path

    @classmethod
    def from_graphml(cls, path) -> InteractionGraph:
        """Read a graph written by :meth:`to_graphml`.

        Only kept edges are stored in the file, so ``w`` entries at or below ``eps^1/2`` come back
        as 0; the edges, strengths, importances and node ids are identical.

        Parameters
        ----------
        path : str or os.PathLike

        Returns
        -------
        InteractionGraph
        """
        import networkx as nx

        try:
            g = nx.read_graphml(path)
        except FileNotFoundError:
            raise InputError(f"path {str(path)!r} does not exist") from None
        except Exception as err:  # ParseError, NetworkXError, ...: not GraphML
            raise InputError(
                f"path {str(path)!r} is not a GraphML file ({type(err).__name__}: {err})"
            ) from None
        try:
            names = json.loads(g.graph["layer_names"])
            eps = float(g.graph["eps"])
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(
                f"path {str(path)!r} is not a modgraph GraphML file (no eps / layer_names)"
            ) from err
        where = f"path {str(path)!r}: "
        nodes = _graphml_nodes(g, names, eps, where)
        sizes = [len(layer) for layer in nodes]
        importance = [np.array([lam for _, lam in sorted(layer.values())]) for layer in nodes]
        w = [np.zeros((sizes[l + 1], sizes[l])) for l in range(len(names) - 1)]
        for a, b, d in g.edges(data=True):
            (la, ia), (lb, ib) = (_node_position(g.nodes[n], where, n) for n in (a, b))
            value = d.get("w")
            if lb != la + 1 or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise InputError(
                    f"{where}edge {a} -> {b} must join layer l to l + 1 with a finite w > 0 "
                    f"(got layers {la} -> {lb}, w = {value!r}); not a file modgraph wrote"
                )
            w[la][ib, ia] = value
        return cls(tuple(names), tuple(importance), tuple(w), eps=eps)


def _node_position(d: dict, where: str, node) -> tuple[int, int]:
    """A GraphML node's (layer, index), both non-negative ints."""
    layer, index = d.get("layer"), d.get("index")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (layer, index)):
        raise InputError(
            f"{where}node {node!r} needs non-negative int attributes layer and index (got "
            f"{layer!r}, {index!r}); not a file modgraph wrote"
        )
    return layer, index


def _graphml_nodes(g, names, eps, where: str) -> list[dict[int, tuple[int, float]]]:
    """Per layer, {index: (index, importance)} of a GraphML graph, checked to be what
    :meth:`InteractionGraph.to_graphml` writes: every layer named once and holding nodes
    ``0..k-1``, each once, with a finite importance (sizes come from the node count, so a
    forged index cannot allocate beyond the file)."""
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)
            and len(set(names)) == len(names)):  # fmt: skip
        raise InputError(f"{where}layer_names must be a list of 2 or more distinct names, got "
                         f"{str(names)[:200]}")  # fmt: skip
    if not 0 < eps < math.inf:
        raise InputError(f"{where}eps must be a finite number > 0, got {eps!r}")
    nodes: list[dict[int, tuple[int, float]]] = [{} for _ in names]
    for node, d in g.nodes(data=True):
        layer, index = _node_position(d, where, node)
        lam = d.get("importance")
        if layer >= len(names) or index in nodes[layer]:
            raise InputError(
                f"{where}node {node!r} is at layer {layer}, index {index}: "
                + (f"there are {len(names)} layers" if layer >= len(names) else "a duplicate")
            )
        if not isinstance(lam, (int, float)) or not 0 <= lam < math.inf:
            raise InputError(f"{where}node {node!r} has importance {lam!r}, not a finite >= 0")
        nodes[layer][index] = (index, float(lam))
    for l, layer in enumerate(nodes):
        if sorted(layer) != list(range(len(layer))) or not layer:
            raise InputError(
                f"{where}layer {l} ({names[l]!r}) must hold the nodes 0..k-1 (k >= 1), got "
                f"{len(layer)} nodes with indices up to {max(layer, default=None)}"
            )
    return nodes

"""The interactive report: one self-contained HTML page drawn with bokeh (resources inline).

The page shows the interaction graph layer by layer, nodes colored by module. Hovering a node
shows its layer, direction and Lambda; clicking it lists its strongest in- and out-edges (``w``
and ``ln(w / eps^1/2)`` at the current eps), the outputs it drives and its top and bottom
activating samples; clicking a module in the table highlights it and lists its members, its cost
to the rest and the samples that drive its directions most. A slider re-thresholds the edges at
another eps (the modules stay those found at the analysis' eps), a menu switches between the
partitions.

The page holds the edges down to ``eps / EPS_RANGE`` (so that the slider can lower eps), at most
``max_edges`` of them, the strongest; the header says when any were left out. Everything that
moves on the page runs in one bokeh ``CustomJS`` callback (``_UPDATE_JS``), which redraws from
the widgets' state; bokeh's own tools do hover, tap, pan and zoom.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._validation import check_int
from ..analysis import Analysis
from ..atomic import atomic_path
from ..errors import InputError
from ..partition.objective import UNASSIGNED, ModuleResult
from .graph import importance_scale, node_labels, node_layout
from .style import CROSS_EDGE_COLOR, module_style

__all__ = ["interactive_report", "save_html", "MAX_EDGES", "EPS_RANGE"]

#: Most edges the page holds (the strongest); ~50,000 stay responsive in a browser.
MAX_EDGES = 50_000
#: The slider reaches down to eps / EPS_RANGE; the page holds the edges that needs.
EPS_RANGE = 100.0
#: Strongest edges listed per direction when it is clicked.
LISTED_EDGES = 8
#: Width of the column of controls, details and module table beside the graph, in pixels.
PANEL_PX = 460


def interactive_report(  # noqa: PLR0913 (the page's inputs, keyword-only)
    analysis: Analysis,
    partitions: Mapping[str, ModuleResult],
    *,
    node_details: list[str] | None = None,
    module_details: Mapping[str, list[str]] | None = None,
    samples: Mapping[int, str] | None = None,
    max_edges: int = MAX_EDGES,
    title: str = "modgraph report",
):
    """The report page as a bokeh Document (write it with :func:`save_html`).

    Parameters
    ----------
    analysis : Analysis
    partitions : dict {name: ModuleResult}
        Partitions of ``analysis.graph`` to switch between (the first is shown first).
    node_details : list of str, optional
        Per node (in ``graph.nodes`` order) an HTML snippet shown when it is clicked (outputs it
        drives, its examples); ``{{s:N}}`` stands for sample ``N`` of ``samples``.
    module_details : dict {name: list of str}, optional
        Per partition, per module, an HTML snippet shown when the module is selected.
    samples : dict {sample index: HTML}, optional
        Each sample's snippet once (a thumbnail is stored once however often it is shown).
    max_edges : int
        Most edges the page holds, the strongest.
    """
    from bokeh.document import Document
    from bokeh.layouts import column, row
    from bokeh.models import (
        Button,
        ColumnDataSource,
        CustomJS,
        DataTable,
        Div,
        HoverTool,
        HTMLTemplateFormatter,
        Select,
        Slider,
        TableColumn,
        TapTool,
        TextInput,
    )
    from bokeh.plotting import figure

    check_int("interactive_report", "max_edges", max_edges, low=1)
    if not partitions:
        raise InputError("partitions of interactive_report is empty: pass at least one")
    graph = analysis.graph
    names = list(partitions)
    labels = {m: node_labels(graph, partitions[m]) for m in names}

    x = graph.node_layer.astype(np.float64)
    y = node_layout(graph, labels[names[0]])
    lam = graph.node_importance
    nodes = {
        "x": x,
        "y": y,
        "node": list(graph.nodes),
        "layer": [graph.layer_names[l] for l in graph.node_layer],
        "direction": graph.node_index.tolist(),
        "lam": lam,
        "size": _marker_sizes(lam, max(graph.layer_sizes)),
        "details": node_details or [""] * graph.n_nodes,
        "alpha": np.ones(graph.n_nodes),
    }
    for m in names:
        nodes[f"module_{m}"] = labels[m].tolist()
        nodes[f"color_{m}"] = [module_style(int(v))[0] for v in labels[m]]
    nodes["module"] = list(nodes[f"module_{names[0]}"])
    nodes["color"] = list(nodes[f"color_{names[0]}"])
    node_src = ColumnDataSource(nodes, name="nodes")

    all_edges, note = _edges(analysis, max_edges)
    edge_store = ColumnDataSource(all_edges, name="all_edges")
    edge_src = ColumnDataSource(
        {k: [] for k in ("x0", "y0", "x1", "y1", "width", "color", "alpha")}, name="edges"
    )

    height = int(min(900, max(420, 9 * max(graph.layer_sizes) + 120)))
    fig = figure(
        width=int(min(1100, max(600, 170 * len(graph.layer_sizes) + 200))),
        height=height,
        tools="pan,wheel_zoom,box_zoom,reset,save",
        active_scroll="wheel_zoom",
        output_backend="webgl",
        title="interaction graph (click a node; drag to pan, wheel to zoom)",
        name="graph",
    )
    fig.segment("x0", "y0", "x1", "y1", source=edge_src, line_width="width",
                line_color="color", line_alpha="alpha")  # fmt: skip
    dots = fig.scatter("x", "y", source=node_src, size="size", fill_color="color",
                       line_color="#333333", fill_alpha="alpha", line_alpha="alpha")  # fmt: skip
    fig.add_tools(
        HoverTool(
            renderers=[dots],
            tooltips=[
                ("node", "@node"),
                ("layer", "@layer"),
                ("direction", "@direction"),
                ("Lambda", "@lam{0.000e}"),
                ("module", "@module"),
            ],
        ),
        TapTool(renderers=[dots]),
    )
    fig.xaxis.ticker = list(range(len(graph.layer_sizes)))
    fig.xaxis.major_label_overrides = {i: n for i, n in enumerate(graph.layer_names)}
    fig.xaxis.axis_label = "layer"
    fig.yaxis.visible = False
    fig.grid.visible = False

    tables, table_sources = [], {}
    for i, m in enumerate(names):
        data = _module_table(graph, labels[m], (module_details or {}).get(m))
        table_sources[m] = ColumnDataSource(data, name=f"modules_{m}")
        swatch = HTMLTemplateFormatter(template='<span style="color:<%= color %>">&#9632;</span> '
                                       "<%= value %>")  # fmt: skip
        # widths in pixels that fit each column's title and values; long layer lists scroll
        layers_px = int(min(600, max(120, 7 * max(map(len, data["layers"]), default=0))))
        cols = [TableColumn(field="module", title="module", formatter=swatch, width=70)]
        cols += [TableColumn(field=f, title=t, width=px) for f, t, px in (
            ("size", "size", 50), ("cost_out", "cost to the rest", 110),
            ("cost_in", "cost inside", 90), ("layers", "layers", layers_px))]  # fmt: skip
        tables.append(DataTable(source=table_sources[m], columns=cols, width=PANEL_PX,
                                height=220, index_position=None, visible=i == 0,
                                reorderable=False, autosize_mode="none",
                                name=f"table_{m}"))  # fmt: skip

    lo = math.log10(analysis.eps / EPS_RANGE)
    strongest = float(all_edges["w"].max()) if len(all_edges["w"]) else 0.0
    hi = math.log10(max(analysis.eps * 10, strongest**2))  # up to where the last edge goes
    slider = Slider(start=lo, end=hi, value=math.log10(analysis.eps), step=0.05, width=PANEL_PX,
                    title="log10 eps (edges shown: w > eps^1/2; modules stay as found)",
                    name="eps")  # fmt: skip
    select = Select(title="partition", value=names[0], options=names, width=200, name="partition")
    find = TextInput(title="find nodes (ids '2:5', a layer name, 'module 3'; comma-separated)",
                     width=PANEL_PX, name="find")  # fmt: skip
    export = Button(label="export the selection (JSON)", width=220, name="export")
    # the details sit above the table, in a box that scrolls: in view whatever is clicked
    info = Div(text=_HINT, width=PANEL_PX, height=380, name="info",
               styles={"overflow-y": "auto", "border-top": "1px solid #ddd"})  # fmt: skip
    count = Div(text="", width=PANEL_PX, name="count")
    header = Div(text=_header(analysis, partitions, note), width=1100, name="header")
    sample_src = ColumnDataSource(
        {"id": list((samples or {}).keys()), "html": list((samples or {}).values())},
        name="samples",
    )

    update = CustomJS(
        args=dict(
            nodes=node_src,
            store=edge_store,
            edges=edge_src,
            slider=slider,
            select=select,
            tables=table_sources,
            widgets=dict(zip(names, tables)),
            info=info,
            count=count,
            samples=sample_src,
            cross=CROSS_EDGE_COLOR,
            listed=LISTED_EDGES,
            hint=_HINT,
            find=find,
        ),
        code=_UPDATE_JS,
    )
    slider.js_on_change("value", update)
    select.js_on_change("value", update)
    find.js_on_change("value", update)
    node_src.selected.js_on_change("indices", update)
    for src in table_sources.values():
        src.selected.js_on_change("indices", update)
    export.js_on_event("button_click", CustomJS(
        args=dict(nodes=node_src, select=select, tables=table_sources, eps=analysis.eps),
        code=_EXPORT_JS))  # fmt: skip
    doc = Document(title=title)
    controls = column(row(select, export), find, slider, count, info, *tables)
    doc.add_root(column(header, row(fig, controls)))
    doc.js_on_event("document_ready", update)
    return doc


def save_html(doc, path: str | os.PathLike, *, title: str = "modgraph report") -> Path:
    """Write the page ``doc`` as one standalone HTML file (JavaScript inline), atomically."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    path = Path(path)
    text = file_html(doc, INLINE, title)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _marker_sizes(lam: np.ndarray, widest: int) -> np.ndarray:
    """Marker diameter in pixels from log Lambda, smaller for wide layers."""
    big = float(np.clip(600 / max(widest, 1), 5, 18))
    return big * (0.45 + 0.55 * importance_scale(lam))


def _edges(analysis: Analysis, max_edges: int) -> tuple[dict, str]:
    """Every edge the slider can show (``w > (eps / EPS_RANGE)^1/2``), the strongest first."""
    low = analysis.with_eps(analysis.eps / EPS_RANGE).graph.edges
    keep = np.argsort(-low.w, kind="stable")[:max_edges]
    note = ""
    if len(keep) < len(low.w):
        w_min = float(low.w[keep[-1]])
        note = (f"The page holds the {max_edges:,} strongest of {len(low.w):,} edges "
                f"(w >= {w_min:.3g}); weaker ones are left out at every eps.")  # fmt: skip
    return {"src": low.src[keep], "dst": low.dst[keep], "w": low.w[keep]}, note


def _module_table(graph, labels: np.ndarray, details: list[str] | None) -> dict:
    """One row per module, largest first: size, layers spanned, cost to the rest and inside."""
    e = graph.edges
    modules = sorted(set(labels.tolist()) - {UNASSIGNED},
                     key=lambda m: (-int((labels == m).sum()), m))  # fmt: skip
    rows = {k: [] for k in ("module", "color", "size", "layers", "cost_out", "cost_in", "details")}
    ls, ld = labels[e.src], labels[e.dst]
    for m in modules:
        members = labels == m
        layers = sorted({graph.layer_names[l] for l in graph.node_layer[members]},
                        key=graph.layer_names.index)  # fmt: skip
        rows["module"].append(int(m))
        rows["color"].append(module_style(int(m))[0])
        rows["size"].append(int(members.sum()))
        rows["layers"].append(", ".join(layers))
        rows["cost_out"].append(round(float(e.strength[(ls == m) != (ld == m)].sum()), 3))
        rows["cost_in"].append(round(float(e.strength[(ls == m) & (ld == m)].sum()), 3))
        rows["details"].append(details[m] if details is not None and m < len(details) else "")
    return rows


# The snippets are f-strings with html.escape on every name, not jinja2 templates: the same text,
# faster (benchmarks/bench_libraries.py), and the escaping is checked in a browser with hostile
# names (tests/test_html_report.py).
def _header(analysis: Analysis, partitions: Mapping[str, ModuleResult], note: str) -> str:
    g = analysis.graph
    lines = [
        f"<h2 style='margin:4px 0'>modgraph: {g.n_nodes} directions, {g.n_edges} edges above "
        f"eps<sup>1/2</sup> (eps = {analysis.eps:g})</h2>",
        "<p style='margin:2px 0'>"
        + "; ".join(f"{html.escape(layer.name)}: {layer.k}/{layer.d}" for layer in analysis.layers)
        + " (kept / width)</p>",
    ]
    for m, r in partitions.items():
        lines.append(f"<p style='margin:2px 0'><b>{html.escape(m)}</b>: {html.escape(r.verdict)}"
                     f"; cross-module cost {r.cost:.3g}</p>")  # fmt: skip
    if note:
        lines.append(f"<p style='margin:2px 0;color:#a00'>{html.escape(note)}</p>")
    return "\n".join(lines)


_HINT = ("<p><i>Click a node for its edges, outputs and examples (shift-click pins several); "
         "click a module in the table to highlight it; find nodes by id, layer or module "
         "above.</i></p>")  # fmt: skip

# One redraw from the widgets' state: partition, eps, selected node, selected module. Every
# string from the model, the data or a file (node, layer and partition names) goes through esc();
# the details snippets were escaped in Python (see plotting.samples).
_UPDATE_JS = """
const esc = (v) => String(v).replace(/[&<>"']/g,
  (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'})[c]);
const part = select.value;
const T = tables[part];
const N = nodes.data, n = N.x.length;
const mod = N['module_' + part], col = N['color_' + part];
// the newer of a node click and a module row wins: the other is cleared (which runs this again)
if (cb_obj === T.selected && T.selected.indices.length && nodes.selected.indices.length) {
  nodes.selected.indices = []; return;
}
if (cb_obj === nodes.selected && nodes.selected.indices.length && T.selected.indices.length) {
  T.selected.indices = []; return;
}
if (cb_obj === find) {  // ids '2:5', a layer name (or part of one), 'module 3'; comma-separated
  const hits = new Set();
  for (const raw of find.value.split(',')) {
    const t = raw.trim().toLowerCase(), m = t.match(/^module\\s+(-?[0-9]+)$/);
    if (!t) continue;
    for (let i = 0; i < n; i++) {
      if (m ? mod[i] === Number(m[1])
            : (N.node[i] === t || String(N.layer[i]).toLowerCase().includes(t))) hits.add(i);
    }
  }
  nodes.selected.indices = Array.from(hits).sort((a, b) => a - b);
  if (!hits.size && find.value.trim()) info.text = `<p>no node matches ${esc(find.value)}</p>`;
  return;
}
for (const [m, w] of Object.entries(widgets)) { w.visible = (m === part); }
const thr = Math.sqrt(Math.pow(10, slider.value));
const pick = nodes.selected.indices, pinned = new Set(pick);
const node = pick.length === 1 ? pick[0] : -1;
const row = T.selected.indices.length ? T.selected.indices[0] : -1;
const sel = row >= 0 ? T.data.module[row] : null;
const alpha = new Array(n);
for (let i = 0; i < n; i++) {
  alpha[i] = pick.length > 1 ? (pinned.has(i) ? 1.0 : 0.15)
                             : (sel === null || mod[i] === sel) ? 1.0 : 0.15;
}
nodes.data = Object.assign({}, N, {module: Array.from(mod), color: Array.from(col), alpha: alpha});
const E = store.data, out = {x0: [], y0: [], x1: [], y1: [], width: [], color: [], alpha: []};
let top = 0;
for (let k = 0; k < E.w.length; k++) { top = Math.max(top, Math.log(E.w[k] / thr)); }
const ins = [], outs = [];
for (let k = 0; k < E.w.length; k++) {
  if (E.w[k] <= thr) continue;
  const s = E.src[k], d = E.dst[k], c = Math.log(E.w[k] / thr), r = top > 0 ? c / top : 1;
  const lit = pick.length ? (pinned.has(s) || pinned.has(d))
                          : (sel === null || (mod[s] === sel && mod[d] === sel));
  out.x0.push(N.x[s]); out.y0.push(N.y[s]); out.x1.push(N.x[d]); out.y1.push(N.y[d]);
  out.width.push(0.4 + 3.2 * r);
  out.color.push(mod[s] === mod[d] && mod[s] >= 0 ? col[s] : cross);
  out.alpha.push(lit ? 0.15 + 0.7 * r : 0.03);
  if (d === node) ins.push([E.w[k], c, s]);
  if (s === node) outs.push([E.w[k], c, d]);
}
edges.data = out;
count.text = `<b>${out.x0.length}</b> edges shown ` +
  `(w &gt; eps<sup>1/2</sup> = ${thr.toPrecision(3)})`;
const S = {};
for (let i = 0; i < samples.data.id.length; i++) { S[samples.data.id[i]] = samples.data.html[i]; }
const fill = (h) => h.replace(/\\{\\{s:([0-9_]+)\\}\\}/g, (m, id) => S[id] || ('sample ' + id));
const list = (title, es) => {
  es.sort((a, b) => b[0] - a[0]);
  const items = es.slice(0, listed).map(([w, c, o]) =>
    `<li>${esc(N.node[o])} (${esc(N.layer[o])}, module ${mod[o]}): w = ${w.toPrecision(3)}, ` +
    `ln(w/eps<sup>1/2</sup>) = ${c.toFixed(2)}</li>`).join('');
  return `<p><b>${title}</b> (${es.length})</p><ul style="margin:0">${items}</ul>`;
};
if (node >= 0) {
  info.text = `<h3 style="margin:4px 0">node ${esc(N.node[node])}</h3>` +
    `<p>layer ${esc(N.layer[node])}, direction ${N.direction[node]}, Lambda = ` +
    `${N.lam[node].toExponential(3)}, module ${mod[node]} (${esc(part)})</p>` +
    list('strongest in-edges', ins) + list('strongest out-edges', outs) + fill(N.details[node]);
} else if (pick.length > 1) {
  info.text = `<h3 style="margin:4px 0">${pick.length} nodes pinned</h3><ul style="margin:0">` +
    pick.slice(0, 200).map((i) => `<li>${esc(N.node[i])} (${esc(N.layer[i])}, direction ` +
      `${N.direction[i]}, module ${mod[i]}, Lambda ${N.lam[i].toExponential(3)})</li>`).join('') +
    '</ul>' + (pick.length > 200 ? `<p>and ${pick.length - 200} more</p>` : '');
} else if (row >= 0) {
  info.text = `<h3 style="margin:4px 0">module ${sel} (${esc(part)}): ` +
    `${T.data.size[row]} directions</h3>` +
    `<p>layers ${esc(T.data.layers[row])}; cost to the rest ${T.data.cost_out[row]}, inside ` +
    `${T.data.cost_in[row]} (summed ln(w/eps<sup>1/2</sup>) at the analysis eps)</p>` +
    fill(T.data.details[row]);
} else {
  info.text = hint;
}
"""

# The selection (pinned nodes, else the selected module's members) as a JSON download, and as
# window.modgraphSelection for scripts.
_EXPORT_JS = """
const part = select.value, N = nodes.data, mod = N['module_' + part], T = tables[part];
let idx = Array.from(nodes.selected.indices);
if (!idx.length && T.selected.indices.length) {
  const m = T.data.module[T.selected.indices[0]];
  for (let i = 0; i < N.x.length; i++) { if (mod[i] === m) idx.push(i); }
}
const out = {eps: eps, partition: part, nodes: idx.map((i) => ({
  id: N.node[i], layer: N.layer[i], direction: N.direction[i], module: mod[i],
  importance: N.lam[i]}))};
window.modgraphSelection = out;
const a = document.createElement('a');
a.href = URL.createObjectURL(new Blob([JSON.stringify(out, null, 1)], {type: 'application/json'}));
a.download = 'modgraph-selection.json';
document.body.appendChild(a); a.click(); a.remove();
"""

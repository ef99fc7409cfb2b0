"""Benchmark: modules of tracr-compiled RASP programs against the program's own variables.

tracr (Lindner et al. 2023) compiles a RASP program into a transformer whose residual stream is
labelled: every dimension belongs to one variable of the program (``tokens``, ``indices``, and
each intermediate ``map``, ``aggregate`` or ``selector_width``), and each layer reads some
variables and writes others. That is a known mechanism to hold the modules against.

Each program of ``PROGRAMS`` is compiled (``tracr-pypi``, which needs jax; not a dependency of
modgraph: ``pip install tracr-pypi``), its weights copied into an equivalent torch module
(:class:`TracrTransformer`, checked against tracr's own residual stream to 1e-5), and analysed
by modgraph with the defaults (global variant, sparse rotation, eps 1e-3 of the output
variance) at the residual stream after every attention and MLP sublayer, on every input
sequence of the program's vocabulary up to its length (or a sample of them). Every direction is
labelled by the variable holding most of its weight over the residual dimensions (a direction
whose largest variable holds less than half is a mixture, left out of the scores). Printed per
program: the variables, the modules found (automatic number; the default, Leiden and spectral)
with their significance, and their agreement with the variables (NMI, ARI, purity on the
labelled nodes).
No target is set yet (issue #38 asks for the report first). Most programs are one chain of
variables to one output (one module is the right answer); ``two_fracs`` has two independent
branches (the share of ``x`` so far and of ``y`` so far) joined only by the final sum.

Run: ``python benchmarks/bench_tracr.py [--samples 2000] [--programs two_fracs,hist]``
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
import warnings

import numpy as np
import torch
from torch import nn

import modgraph as mg

#: The residual dimensions' share a direction needs in one variable to be labelled by it.
SINGLE = 0.5


class _Attention(nn.Module):
    def __init__(self, p: dict, heads: int, key_size: int):
        super().__init__()
        self.heads, self.key_size = heads, key_size
        for name in ("query", "key", "value", "linear"):
            w, b = (torch.tensor(np.asarray(p[name][k]), dtype=torch.float64) for k in "wb")
            layer = nn.Linear(*w.shape).double()
            layer.weight.data, layer.bias.data = w.T.contiguous(), b
            setattr(self, name, layer)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = (getattr(self, n)(x).view(B, T, self.heads, self.key_size)
                   for n in ("query", "key", "value"))  # fmt: skip
        logits = torch.einsum("bthd,bThd->bhtT", q, k) / math.sqrt(self.key_size)
        mixed = torch.einsum("bhtT,bThd->bthd", logits.softmax(-1), v).reshape(B, T, -1)
        return x + self.linear(mixed)


class _MLP(nn.Module):
    def __init__(self, p: dict):
        super().__init__()
        layers = []
        for name in ("linear_1", "linear_2"):
            w, b = (torch.tensor(np.asarray(p[name][k]), dtype=torch.float64) for k in "wb")
            layer = nn.Linear(*w.shape).double()
            layer.weight.data, layer.bias.data = w.T.contiguous(), b
            layers.append(layer)
        self.linear_1, self.linear_2 = layers

    def forward(self, x):
        return x + self.linear_2(torch.relu(self.linear_1(x)))


class _Embed(nn.Module):
    def __init__(self, token: np.ndarray, pos: np.ndarray):
        super().__init__()
        self.token = nn.Parameter(torch.tensor(token, dtype=torch.float64))
        self.pos = nn.Parameter(torch.tensor(pos, dtype=torch.float64))

    def forward(self, tokens):
        return self.token[tokens] + self.pos[: tokens.shape[1]]


class TracrTransformer(nn.Module):
    """A tracr-compiled model in torch: the same weights, the same forward (no LayerNorm, ReLU
    MLPs, softmax attention scaled by ``1/sqrt(key_size)``, no mask: tracr compiles without a
    padding token here). Module paths ``embed``, ``blocks.i.attn`` (the residual after the
    attention) and ``blocks.i.mlp`` (after the MLP); the output is the residual stream's
    dimensions of the program's output variable (``out_dims``)."""

    def __init__(self, compiled, out_dims: list[int]):
        super().__init__()
        p, c = compiled.params, compiled.model_config
        self.embed = _Embed(np.asarray(p["token_embed"]["embeddings"]),
                            np.asarray(p["pos_embed"]["embeddings"]))  # fmt: skip
        blocks = []
        for i in range(c.num_layers):
            pre = f"transformer/layer_{i}"
            attn = {n: p[f"{pre}/attn/{n}"] for n in ("query", "key", "value", "linear")}
            mlp = {n: p[f"{pre}/mlp/{n}"] for n in ("linear_1", "linear_2")}
            blocks.append(nn.Sequential())
            blocks[-1].add_module("attn", _Attention(attn, c.num_heads, c.key_size))
            blocks[-1].add_module("mlp", _MLP(mlp))
        self.blocks = nn.ModuleList(blocks)
        self.register_buffer("out_dims", torch.tensor(out_dims))

    def residual(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, tokens):
        return self.residual(tokens)[..., self.out_dims]


def _programs():
    from tracr.compiler import lib
    from tracr.rasp import rasp

    is_x = rasp.numerical(rasp.Map(lambda t: 1 if t == "x" else 0, rasp.tokens)).named("is_x")
    is_y = rasp.numerical(rasp.Map(lambda t: 1 if t == "y" else 0, rasp.tokens)).named("is_y")
    # two independent branches (the share of x so far, of y so far), joined only at the output
    fx = lib.make_frac_prevs(is_x == 1).named("frac_x")
    fy = lib.make_frac_prevs(is_y == 1).named("frac_y")
    two = rasp.numerical(rasp.LinearSequenceMap(fx, fy, 1.0, 1.0)).named("two_fracs")
    return {
        "two_fracs": (two, {"x", "y", "z"}, 5),
        "length": (lib.make_length(), {"a", "b", "c"}, 5),
        "hist": (lib.make_hist(), {"a", "b", "c"}, 5),
        "reverse": (lib.make_reverse(rasp.tokens), {"a", "b", "c"}, 5),
        "frac_prevs": (lib.make_frac_prevs(is_x == 1), {"x", "y", "z"}, 5),
        "sort_unique": (lib.make_sort_unique(rasp.tokens, rasp.tokens), {1, 2, 3, 4}, 4),
    }


def _inputs(vocab, max_len: int, samples: int, rng) -> list[list[list]]:
    """Per length 1..max_len, every sequence over ``vocab`` or ``samples / max_len`` of them at
    random (one batch per length: modgraph has no padding mask, and lengths may differ between
    batches)."""
    vocab, per = sorted(vocab), max(1, samples // max_len)
    out = []
    for n in range(1, max_len + 1):
        if len(vocab) ** n <= per:
            out.append([list(s) for s in itertools.product(vocab, repeat=n)])
        else:
            out.append([[vocab[i] for i in rng.integers(len(vocab), size=n)] for _ in range(per)])
    return out


def _variables(labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Residual dimension labels (``'map_3'``, ``'tokens:a'``) -> variables and, per dimension,
    its variable's index."""
    names = [lab.split(":")[0] for lab in labels]
    variables = sorted(set(names))
    return variables, np.array([variables.index(n) for n in names])


def _direction_labels(analysis, var_of_dim: np.ndarray, n_vars: int) -> list[np.ndarray]:
    """Per residual layer (not the output), each direction's variable (-1: a mixture)."""
    out = []
    for layer in analysis.layers[:-1]:
        weight = layer.C_pinv.double().numpy() ** 2  # (d, k): direction j's residual profile
        share = np.stack([weight[var_of_dim == v].sum(0) for v in range(n_vars)])
        share /= np.maximum(share.sum(0, keepdims=True), 1e-300)
        label = share.argmax(0)
        out.append(np.where(share.max(0) >= SINGLE, label, -1))
    return out


def _scores(graph, result, per_layer: list[np.ndarray]) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    truth, found = [], []
    for node, module in result.membership.items():
        l, i = (int(v) for v in node.split(":"))
        if l < len(per_layer) and module >= 0 and per_layer[l][i] >= 0:
            truth.append(per_layer[l][i])
            found.append(module)
    if len(truth) < 2:
        return {"nmi": float("nan"), "ari": float("nan"), "purity": float("nan"), "n": len(truth)}
    t, f = np.array(truth), np.array(found)
    purity = sum(np.bincount(t[f == m]).max() for m in np.unique(f)) / len(t)
    return {"nmi": normalized_mutual_info_score(t, f), "ari": adjusted_rand_score(t, f),
            "purity": purity, "n": len(t)}  # fmt: skip


def run(samples: int, only: list[str] | None = None) -> None:
    from tracr.compiler import compiling

    rng = np.random.default_rng(0)
    for name, (program, vocab, max_len) in _programs().items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        compiled = compiling.compile_rasp_to_model(program, vocab=vocab, max_seq_len=max_len,
                                                   compiler_bos="BOS")  # fmt: skip
        labels = [str(lab) for lab in compiled.residual_labels]
        out_name = program.label
        out_dims = [i for i, lab in enumerate(labels) if lab.split(":")[0] == out_name]
        model = TracrTransformer(compiled, out_dims).eval()
        batches = _inputs(vocab, max_len, samples, rng)
        code = compiled.input_encoder.encoding_map
        tokens = [torch.tensor([[code[t] for t in ["BOS", *s]] for s in b]) for b in batches]
        # the torch copy computes tracr's residual stream
        for b, t in zip(batches, tokens):
            theirs = np.asarray(compiled.apply(["BOS", *b[-1]]).residuals[-1])[0]
            ours = model.residual(t[-1:])[0].detach().numpy()
            assert np.abs(theirs - ours).max() < 1e-5, (name, np.abs(theirs - ours).max())
        layers = [f"blocks.{i}.{s}" for i in range(len(model.blocks)) for s in ("attn", "mlp")]
        chain = mg.HookedChain(model, ["embed", *layers])
        a = mg.analyze(chain, tokens, progress=False)
        t_analyze = time.perf_counter() - t0
        variables, var_of_dim = _variables(labels)
        per_layer = _direction_labels(a, var_of_dim, len(variables))
        used = sorted({variables[v] for lab in per_layer for v in lab if v >= 0})
        print(f"{name}: {sum(map(len, batches))} sequences of 1-{max_len} tokens, "
              f"{len(model.blocks)} layers, "
              f"residual {len(labels)} dims, variables {variables}; {a.graph.n_edges} edges "
              f"on {int(a.graph.connected_nodes.sum())} nodes; {t_analyze:.1f} s")  # fmt: skip
        print(f"  directions labelled by a variable: {sum(int((p >= 0).sum()) for p in per_layer)}"
              f" of {sum(len(p) for p in per_layer)} ({used})")  # fmt: skip
        for method in ("auto", "leiden", "spectral"):  # auto: the default (the map equation's)
            r = mg.find_modules(a.graph, method=method)
            s = _scores(a.graph, r, per_layer)
            m = r.membership_array
            sizes = sorted(np.bincount(m[m >= 0]).tolist(), reverse=True)[:8]
            print(f"  {method:<8} {r.verdict}; sizes {sizes}; NMI {s['nmi']:.2f} ARI "
                  f"{s['ari']:.2f} purity {s['purity']:.2f} on {s['n']} labelled")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--programs", type=lambda s: s.split(","), help="comma-separated names")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    run(args.samples, args.programs)

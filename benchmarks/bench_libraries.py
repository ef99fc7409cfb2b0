"""Benchmark: modgraph's hand-written parts against the maintained libraries that do the same.

Each part is run side by side with its library counterpart on the inputs modgraph gives it, in
one process, alternating; the script prints time per call as a ratio (library / modgraph) and
how far the results differ, so that each choice (replace or keep) rests on a measurement:

1. k-means with k-means++ restarts (``partition.spectral.kmeans``) against scikit-learn's
   ``KMeans(n_init=10)``, on spectral embeddings of the sizes the module scan makes.
2. The adjusted Rand index against ``sklearn.metrics.adjusted_rand_score``.
3. The null model's degree-preserving swaps of one layer pair's block
   (``partition.null._rewired``) against igraph's ``Graph.rewire`` (directed, so that swaps stay
   between the two layers).
4. The report's HTML snippets (f-strings with ``html.escape``) against jinja2 with autoescape.
5. Integrated-gradients edges (``attribution="integrated"``) against captum's
   ``IntegratedGradients`` on the same layer pair.
6. The LLC by SGLD (``effective_parameter_count(method="llc")``'s estimator) against devinterp's
   ``estimate_learning_coefficient`` on the same model, data and hyperparameters.

Parts 5 and 6 need captum and devinterp 1.x (``pip install torch==2.13.0 captum
"devinterp<2"``; devinterp 2 estimates the LLC of language models from a Hugging Face dataset of
token ids only); neither is a dependency of modgraph, and each part is skipped when missing.

Run: ``python benchmarks/bench_libraries.py [--repeats 200]``
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import time

import numpy as np
import torch
from torch import nn

import modgraph as mg
from modgraph.partition.null import _rewired
from modgraph.partition.spectral import kmeans


def timed(fn, repeats: int) -> float:
    """Seconds per call, the best of 3 blocks of ``repeats`` calls."""
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeats)
    return best


def report(name: str, ours: float, theirs: float, agreement: str) -> None:
    print(f"{name:<34} modgraph {ours * 1e3:9.3f} ms  library {theirs * 1e3:9.3f} ms  "
          f"library/modgraph {theirs / ours:7.2f}x  {agreement}")  # fmt: skip


def part_kmeans(repeats: int) -> None:
    rng = np.random.default_rng(0)
    for n, dim, k in ((60, 4, 3), (400, 8, 6), (1280, 9, 8)):
        centres = rng.normal(size=(k, dim)) * 3
        X = centres[rng.integers(k, size=n)] + rng.normal(size=(n, dim))
        _kmeans_case(X, k, repeats)


def _kmeans_case(X: np.ndarray, k: int, repeats: int) -> None:
    from sklearn.cluster import KMeans

    def distortion(labels):
        return sum(((X[labels == c] - X[labels == c].mean(0)) ** 2).sum() for c in set(labels))

    ours = timed(lambda: kmeans(X, k, np.random.default_rng(1)), repeats)
    theirs = timed(lambda: KMeans(k, n_init=10, random_state=1).fit(X), max(1, repeats // 10))
    a = distortion(kmeans(X, k, np.random.default_rng(1)))
    b = distortion(KMeans(k, n_init=10, random_state=1).fit(X).labels_)
    report(f"k-means ({len(X)}x{X.shape[1]}, k={k}, 10 starts)", ours, theirs,
           f"distortion library/modgraph {b / a:.4f}")  # fmt: skip


def part_ari(repeats: int) -> None:
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(200):
        n = int(rng.integers(2, 500))
        a, b = rng.integers(0, rng.integers(1, 12), size=(2, n))
        worst = max(worst, abs(mg.partition.adjusted_rand_index(a, b) - adjusted_rand_score(a, b)))
    a, b = rng.integers(0, 8, size=(2, 2000))
    ours = timed(lambda: mg.partition.adjusted_rand_index(a, b), repeats)
    theirs = timed(lambda: adjusted_rand_score(a, b), repeats)
    report("adjusted Rand index (2000 items)", ours, theirs, f"largest difference {worst:.1e}")


def part_rewire(repeats: int) -> None:
    import igraph

    rng = np.random.default_rng(0)
    rows_n, cols_n, m = 64, 64, 600
    flat = rng.choice(rows_n * cols_n, size=m, replace=False)
    rows, cols = flat // cols_n, flat % cols_n

    def with_igraph():
        g = igraph.Graph(n=rows_n + cols_n, edges=list(zip(rows, cols + rows_n)), directed=True)
        g.rewire(n=10 * m, mode="simple")
        return g

    ours = timed(lambda: _rewired(rows, cols, (rows_n, cols_n), np.random.default_rng(1)),
                 max(1, repeats // 4))  # fmt: skip
    theirs = timed(with_igraph, max(1, repeats // 4))
    g = with_igraph()
    kept = g.indegree() == igraph.Graph(n=rows_n + cols_n, edges=list(zip(rows, cols + rows_n)),
                                        directed=True).indegree()  # fmt: skip
    report(
        "degree-preserving swaps (600 edges)",
        ours,
        theirs,
        f"igraph keeps degrees: {kept}; cannot hold the backbone fixed (no 'taken' edges)",
    )


def part_html(repeats: int) -> None:
    import jinja2

    names = [f"blocks.{i}.hook_resid_post<script>" for i in range(12)]
    ks = list(range(12))
    env = jinja2.Environment(autoescape=True)
    tpl = env.from_string("<p>{% for n, k in rows %}{{ n }}: {{ k }}/64{% if not loop.last %}; "
                          "{% endif %}{% endfor %} (kept / width)</p>")  # fmt: skip

    def ours_fn():
        return "<p>" + "; ".join(f"{html.escape(n)}: {k}/64" for n, k in zip(names, ks)) + \
            " (kept / width)</p>"  # fmt: skip

    def theirs_fn():
        return tpl.render(rows=list(zip(names, ks)))

    same = ours_fn().replace("&#x27;", "&#39;") == theirs_fn().replace("&#x27;", "&#39;")
    report("HTML snippet (12 names, escaped)", timed(ours_fn, repeats), timed(theirs_fn, repeats),
           f"same text: {same}")  # fmt: skip


def _mlp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    return net.double().eval(), torch.randn(300, 6, dtype=torch.float64)


def part_integrated(repeats: int) -> None:
    if importlib.util.find_spec("captum") is None:
        print("integrated gradients: captum not installed, skipped")
        return
    from captum.attr import IntegratedGradients

    net, x = _mlp()
    kw = dict(attribution="integrated", n_steps=16, rotation="none", progress=False)
    a = mg.analyze(net, x, **kw)
    chain = mg.LayerChain.from_model(net)
    l = 1  # the pair of layers "1" -> "3": f_hat_3 as a function of f_hat_1
    b0, b1 = a.layers[l], a.layers[l + 1]
    f = chain.forward(x)[l]
    fhat = b0.transform(f)

    def g(h):
        return b1.transform(chain.stage(l)(b0.mean + h @ b0.C_pinv.T))

    def with_captum():
        ig = IntegratedGradients(g)
        attr = [ig.attribute(fhat, baselines=torch.zeros_like(fhat), target=i, n_steps=16,
                             method="gausslegendre") for i in range(b1.k)]  # fmt: skip
        return torch.stack([t.square().mean(0).sqrt() for t in attr])  # (k_next, k)

    w_captum = with_captum()
    rel = float((w_captum - a.w[l]).abs().max() / a.w[l].abs().max())
    ours = timed(lambda: mg.analyze(net, x, **kw), max(1, repeats // 50))
    theirs = timed(with_captum, max(1, repeats // 50))
    report(
        "integrated-gradient edges (3 pairs vs 1)",
        ours,
        theirs,
        f"largest difference {rel:.1e} of the largest w (captum: one pair only)",
    )


def part_llc(repeats: int) -> None:
    if importlib.util.find_spec("devinterp") is None:
        print("LLC by SGLD: devinterp not installed, skipped")
        return
    from devinterp.optim import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    net, x = _mlp()
    net = net.float()
    x = x.float()
    y = net(x).detach() + 0.05 * torch.randn(len(x), 3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(x))
    # equilibrated chains: the relaxation time 2 / (lr gamma) is 200 steps, burn-in 2.5 times it
    lr, gamma, nbeta, chains, draws, burnin = 1e-4, 100.0, 30.0, 4, 1500, 500

    from modgraph.diagnostics.llc import flat_params

    w0, unflatten = flat_params(net)

    def loss_fn(w):
        out = torch.func.functional_call(net, unflatten(w), (x,))
        return nn.functional.mse_loss(out, y)

    def ours_fn():  # full batch, the same burn-in and step: devinterp's update rule
        est = mg.diagnostics.llc_estimate(loss_fn, w0, eps=1 / nbeta, gamma=gamma, step_size=lr,
                              n_chains=chains, n_steps=burnin + draws, n_burnin=burnin,
                              seed=0)  # fmt: skip
        return est.value

    def theirs_fn():
        return estimate_learning_coeff_with_summary(
            net, loader, evaluate=lambda model, data: (
                nn.functional.mse_loss(model(data[0]), data[1]), {}),
            sampling_method=SGLD, optimizer_kwargs=dict(lr=lr, localization=gamma, nbeta=nbeta),
            num_chains=chains, num_draws=draws, num_burnin_steps=burnin, device="cpu",
            verbose=False,
            seed=0,
        )  # fmt: skip

    t0 = time.perf_counter()
    r1 = ours_fn()
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    r2 = theirs_fn()
    t_theirs = time.perf_counter() - t0
    print(
        f"LLC by SGLD ({chains} chains x {draws} draws after {burnin}, full batch): "
        f"modgraph {r1:.3f}, "
        f"devinterp {r2['llc/mean']:.3f} +- {r2['llc/std']:.3f} (sd over chains); "
        f"time devinterp/modgraph {t_theirs / t_ours:.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    parts = (part_kmeans, part_ari, part_rewire, part_html, part_integrated, part_llc)
    for part in parts:
        part(args.repeats)

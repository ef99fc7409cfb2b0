"""Degeneracy adds up over non-interacting modules, and an interaction of strength w removes it
logarithmically (paper sec. 5, the logarithmic law of sec. 5.2.3).

Planted network: K = 3 modules side by side in one ReLU MLP (block-diagonal weights; the
off-block entries are masked, so they are not parameters). Module k reads its own 2 inputs through
5 ReLU neurons into its own output. Its fifth neuron is a *spare*: its outgoing weight is 0, so
its 3 incoming parameters (2 weights + bias) are free, a planted degeneracy. An interaction of
strength w is a fixed coupling (a buffer, not a parameter) from module k's spare neuron to module
k+1's output (cyclically): it makes those 9 free parameters matter with curvature ~ w^2.

Measured with :func:`modgraph.diagnostics.effective_parameter_count` on the behavioral loss
at eps = 1e-4:

- ``hessian``: number of Hessian eigenvalues above 2 eps;
- ``llc``: 2 lambda_hat from SGLD (n beta = 1/eps, localisation gamma = 100);
- ``volume``: the Hessian spectrum's log-volume count
  ``N_V = sum_i ln(1 + h_i / eps) / ln(1 / eps)`` (twice the free energy of the quadratic
  approximation with a unit-width prior, over ln 1/eps), the quantity whose w-dependence the
  paper's volume argument is about.

Paper's law: each lifted parameter adds ``1 - 2 ln w / ln eps`` (clipped to [0, 1]) to N_eff.

Run from the repository root::

    python examples/additivity.py

Writes ``figures/additivity.png`` and ``figures/additivity.json``. CPU, float64, about two minutes;
deterministic given the seeds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import modgraph as mg  # noqa: E402

SEED = 0
K = 3  # modules
D_IN, HIDDEN, D_OUT = 2, 5, 1  # per module; the last hidden neuron is the spare
N = 512
EPS = 1e-4
WS = np.logspace(-4, 0, 9)  # interaction strengths
LLC = dict(n_chains=4, n_steps=2000, gamma=100.0, minibatch_size=None)
OUT = Path(__file__).resolve().parent.parent / "figures"
OKABE_ITO = {"hessian": "#0072B2", "llc": "#D55E00", "volume": "#009E73", "law": "#000000"}


class MaskedLinear(nn.Module):
    """``y = (W * mask + coupling) x + b``: masked entries are inert, ``coupling`` is fixed."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight * mask)
        self.bias = nn.Parameter(bias.clone())
        self.register_buffer("mask", mask)
        self.register_buffer("coupling", torch.zeros_like(weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.weight * self.mask + self.coupling).T + self.bias


def module_weights(k: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(SEED + k)
    W1 = torch.randn(HIDDEN, D_IN, generator=g, dtype=torch.float64)
    b1 = 0.3 * torch.randn(HIDDEN, generator=g, dtype=torch.float64)
    W2 = torch.randn(D_OUT, HIDDEN, generator=g, dtype=torch.float64)
    W2[:, -1] = 0.0  # the spare neuron: read by nobody inside its module
    b2 = 0.1 * torch.randn(D_OUT, generator=g, dtype=torch.float64)
    return [W1, b1, W2, b2]


def module_net(k: int) -> nn.Sequential:
    W1, b1, W2, b2 = module_weights(k)
    net = nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, D_OUT)).double()
    with torch.no_grad():
        for p, v in zip(net.parameters(), (W1, b1, W2, b2)):
            p.copy_(v)
    return net.eval()


def whole_net(w: float) -> nn.Sequential:
    """The K modules side by side; coupling w from spare neuron k to output k+1."""
    parts = [module_weights(k) for k in range(K)]
    W1, W2 = torch.block_diag(*[p[0] for p in parts]), torch.block_diag(*[p[2] for p in parts])
    m1, m2 = (W1 != 0) | torch.block_diag(*[torch.ones_like(p[0]) for p in parts]).bool(), None
    m2 = torch.block_diag(*[torch.ones_like(p[2]) for p in parts]).bool()
    net = nn.Sequential(
        MaskedLinear(W1, torch.cat([p[1] for p in parts]), m1.double()),
        nn.ReLU(),
        MaskedLinear(W2, torch.cat([p[3] for p in parts]), m2.double()),
    )
    with torch.no_grad():
        for k in range(K):
            net[2].coupling[((k + 1) % K) * D_OUT, k * HIDDEN + HIDDEN - 1] = w
    return net.eval()


def counts(net: nn.Module, x: torch.Tensor, *, step: float, llc: bool = True) -> dict:
    h = mg.diagnostics.effective_parameter_count(net, x, eps=EPS, method="hessian")
    eig = np.clip(h.eigenvalues, 0.0, None)
    out = {
        "hessian": h.value,
        "volume": float(np.log1p(eig / EPS).sum() / np.log(1 / EPS)),
        "n_params": h.n_params,
    }
    if llc:
        e = mg.diagnostics.effective_parameter_count(
            net, x, eps=EPS, method="llc", seed=SEED, step_size=step, **LLC
        )
        out["llc"], out["llc_se"] = e.value, 2 * e.llc.std_error
        out["llc_rhat"] = e.llc.rhat
    return out


def law(w: np.ndarray) -> np.ndarray:
    return np.clip(1 - 2 * np.log(w) / np.log(EPS), 0.0, 1.0)


def main() -> dict:
    torch.set_num_threads(1)
    t0 = time.time()
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(N, K * D_IN, generator=g, dtype=torch.float64)
    # one SGLD step size for every run (the default rule at the stiffest network, w = 1), so that
    # the runs differ only in the loss, not in the discretisation; the noise is common too (seed)
    h_max = mg.diagnostics.effective_parameter_count(whole_net(1.0), x, eps=EPS).eigenvalues[0]
    step = 0.1 / (h_max / EPS + LLC["gamma"])
    modules = [counts(module_net(k), x[:, k * D_IN : (k + 1) * D_IN], step=step) for k in range(K)]
    whole = counts(whole_net(0.0), x, step=step)
    summed = {m: sum(c[m] for c in modules) for m in ("hessian", "volume", "llc")}
    summed["llc_se"] = float(np.sqrt(sum(c["llc_se"] ** 2 for c in modules)))
    sweep = [counts(whole_net(float(w)), x, step=step) for w in WS]
    n_lift = K * (D_IN + 1)
    res = {
        "eps": EPS,
        "sgld": {**LLC, "step_size": step, "seed": SEED},
        "K": K,
        "n_lifted": n_lift,
        "modules": modules,
        "sum_of_modules": summed,
        "whole_w0": whole,
        "w": WS.tolist(),
        "sweep": sweep,
        "law": (n_lift * law(WS)).tolist(),
    }
    # the law is affine in ln w between eps^1/2 and 1: fit the volume count's slope there
    inside = (WS > EPS**0.5 * 1.01) & (WS <= 1)
    dv = np.array([s["volume"] - whole["volume"] for s in sweep])
    xs = 1 - 2 * np.log(WS) / np.log(EPS)
    slope, icpt = np.polyfit(xs[inside], dv[inside], 1)
    res["volume_fit"] = {"slope": float(slope), "intercept": float(icpt), "expected_slope": n_lift}
    res["seconds"] = time.time() - t0
    plot(res)
    OUT.mkdir(exist_ok=True)
    (OUT / "additivity.json").write_text(json.dumps(res, indent=2))
    return res


def plot(res: dict) -> None:
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3), layout="constrained")
    methods = [("hessian", "Hessian rank"), ("llc", "2 x LLC (SGLD)"), ("volume", "log-volume")]
    xpos = np.arange(len(methods))
    bottoms = np.zeros(len(methods))
    shades = ("#56B4E9", "#E69F00", "#CC79A7")
    for k, c in enumerate(res["modules"]):
        vals = np.array([c[m] for m, _ in methods])
        a1.bar(
            xpos - 0.2,
            vals,
            0.38,
            bottom=bottoms,
            color=shades[k],
            edgecolor="black",
            lw=0.5,
            label=f"module {k + 1} alone",
        )
        bottoms += vals
    whole = res["whole_w0"]
    a1.bar(
        xpos + 0.2,
        [whole[m] for m, _ in methods],
        0.38,
        color="0.6",
        edgecolor="black",
        lw=0.5,
        label="whole network (no interaction)",
        yerr=[0, whole["llc_se"], 0],
        capsize=3,
    )
    s_se = res["sum_of_modules"]["llc_se"]
    a1.errorbar(xpos[1] - 0.2, bottoms[1], yerr=s_se, color="black", capsize=3)
    a1.set_xticks(xpos, [lab for _, lab in methods])
    a1.set_ylim(0, 1.45 * max(bottoms.max(), max(whole[m] for m, _ in methods)))
    a1.set_ylabel("effective parameter count $N_{eff}$ (parameters)")
    a1.set_title(
        f"Additivity over K={res['K']} modules (eps={res['eps']:g}; bars: 2 s.e.)", fontsize=10
    )
    a1.legend(fontsize=8, frameon=False, loc="upper center", ncol=2)

    w = np.array(res["w"])
    base = res["whole_w0"]
    for m, lab in methods:
        d = np.array([s[m] - base[m] for s in res["sweep"]])
        kw = dict(color=OKABE_ITO[m], marker="o", ms=4, lw=1.5, label=lab)
        if m == "llc":
            # 2 s.e. of each run; the runs share their noise, so differences are more precise
            se = [s["llc_se"] for s in res["sweep"]]
            a2.errorbar(w, d, yerr=se, capsize=2, **kw)
        else:
            a2.plot(w, d, **kw)
    wf = np.logspace(-4, 0, 200)
    a2.plot(
        wf,
        res["n_lifted"] * law(wf),
        color=OKABE_ITO["law"],
        ls="--",
        lw=1.2,
        label=r"paper: $n(1 - 2\ln w / \ln\varepsilon)$",
    )
    a2.axvline(res["eps"] ** 0.5, color="0.5", ls=":", lw=1)
    a2.text(res["eps"] ** 0.5 * 1.15, 5.0, r"$w=\varepsilon^{1/2}$", fontsize=8, color="0.35")
    a2.set_xscale("log")
    a2.set_xlabel("interaction strength w (coupling weight, output units per activation unit)")
    a2.set_ylabel(r"increase of $N_{eff}$ over $w=0$ (parameters)")
    a2.set_title(f"Interaction lifts {res['n_lifted']} free parameters", fontsize=10)
    a2.legend(fontsize=8, frameon=False, loc="upper left")
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / "additivity.png", dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    r = main()
    s = r["sum_of_modules"]
    print("method   sum(modules)   whole(w=0)")
    for m in ("hessian", "llc", "volume"):
        print(f"{m:8s} {s[m]:12.2f} {r['whole_w0'][m]:12.2f}")
    print("w        d_hessian  d_llc  d_volume  law")
    for w, sw, lw in zip(r["w"], r["sweep"], r["law"]):
        b = r["whole_w0"]
        print(
            f"{w:8.1e} {sw['hessian'] - b['hessian']:8.1f} {sw['llc'] - b['llc']:7.2f} "
            f"{sw['volume'] - b['volume']:8.2f} {lw:6.2f}"
        )
    print("volume fit:", r["volume_fit"], f"({r['seconds']:.0f} s)")

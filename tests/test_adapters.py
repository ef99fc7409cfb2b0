"""The transformer adapters against the real packages: TransformerLens 3.x (installed with the
test extra), TransformerLens 4.x (installed next to it with --target, run in a subprocess) and
Hugging Face GPT-2. Models are built from configs; nothing is downloaded."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import modgraph as mg
from modgraph.circuits import ablation as ab

pytestmark = pytest.mark.integration

TL4 = Path(sys.prefix) / "tl4"  # pip install --no-deps --target .venv/tl4 transformer-lens==4.*


def _lens3():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_ctx=6, d_head=8, n_heads=4, d_mlp=64, d_vocab=10,
        act_fn="relu", normalization_type="LN", seed=0,
    )  # fmt: skip
    return HookedTransformer(cfg, move_to_device=False).eval()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("split", ["block", "sublayer"])
def test_transformer_lens_3_hooked_transformer(split):
    model = _lens3()
    tokens = torch.randint(0, 10, (160, 6))
    chain = mg.transformer_chain(model, split=split)
    want = ["blocks.0.hook_resid_pre"]
    for i in range(2):
        want += [f"blocks.{i}.hook_resid_mid"] * (split == "sublayer")
        want += [f"blocks.{i}.hook_resid_post"]
    assert list(chain.names) == [*want, "logits"]
    with torch.no_grad():
        acts = chain.for_inputs(tokens).forward(tokens[:20])
        logits, cache = model.run_with_cache(tokens[:20])
    for name, f in zip(chain.names[:-1], acts):
        assert (f - cache[name]).abs().max() <= 1e-6
    assert torch.equal(acts[-1], logits[:, -1])
    a = mg.analyze(chain, tokens, progress=False)
    assert a.layer_names == list(chain.names) and a.graph.n_edges > 0
    assert torch.allclose(ab.run_ablated(chain, a, tokens), logits_all(model, tokens)[:, -1])
    curve = mg.circuits.faithfulness_curve(chain, a, tokens, n_points=3)
    assert curve.loss[0] == 0 and curve.loss[-1] > 0


def logits_all(model, tokens):
    with torch.no_grad():
        return model(tokens)


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_layer=2, n_embd=64, n_head=4, n_positions=16, vocab_size=20, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    cfg._attn_implementation = "eager"  # sdpa has no batching rule for its backward in torch.func
    torch.manual_seed(0)
    return GPT2LMHeadModel(cfg).eval()


def test_hugging_face_gpt2():
    model = _gpt2()
    tokens = torch.randint(0, 20, (100, 8))
    chain = mg.transformer_chain(model)
    assert chain.names == ("transformer.drop", "transformer.h.0", "transformer.h.1", "logits")
    with torch.no_grad():
        acts = chain.for_inputs(tokens).forward(tokens[:20])
        out = model(tokens[:20], output_hidden_states=True)
    # HF applies ln_f to its last hidden state; the block's own output is compared before that
    for f, h in zip(acts[:2], out.hidden_states[:2]):
        assert (f - h).abs().max() <= 1e-6
    assert (acts[-1] - out.logits[:, -1]).abs().max() <= 1e-6
    a = mg.analyze(chain, tokens, progress=False)
    assert a.graph.n_edges > 0
    curve = mg.circuits.faithfulness_curve(chain, a, tokens, n_points=3)
    assert curve.loss[0] == 0
    with pytest.raises(mg.InputError, match="computes inline"):
        mg.transformer_chain(model, split="sublayer")
    with pytest.raises(mg.InputError, match="looks like a transformer"):
        mg.analyze(model, tokens, progress=False)


BRIDGE = """
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge.sources.native import boot

def build():
    cfg = TransformerBridgeConfig(
        d_model=32, d_head=8, n_layers=2, n_ctx=6, n_heads=4, d_vocab=10, d_mlp=64,
        act_fn="relu", normalization_type="LN", architecture="TransformerLensNative", seed=0,
    )
    return boot(cfg).eval()
"""

TL4_SCRIPT = """
import json, torch, modgraph as mg
from transformer_lens.model_bridge import TransformerBridge
from modgraph.cli import main
from bridge_model import build
model = build()
assert isinstance(model, TransformerBridge)
torch.manual_seed(0)
tokens = torch.randint(0, 10, (160, 6))
chain = mg.transformer_chain(model)
with torch.no_grad():
    acts = chain.for_inputs(tokens).forward(tokens[:20])
    logits, cache = model.run_with_cache(tokens[:20])
for name, f in zip(chain.names[:-1], acts):
    assert (f - cache[name]).abs().max() <= 1e-6, name
assert torch.equal(acts[-1], logits[:, -1])
a = mg.analyze(chain, tokens, progress=False)
curve = mg.circuits.faithfulness_curve(chain, a, tokens, n_points=3)
assert curve.loss[0] == 0 and curve.loss[-1] > 0
try:
    mg.transformer_chain(model, split="sublayer")
except mg.InputError as err:
    assert "alias of" in str(err), err
else:
    raise AssertionError("split='sublayer' on a TransformerBridge was accepted")
# from the CLI: a bridge cannot be pickled (TransformerLens 4.3 defines classes inside methods),
# so MODEL names the function that builds it
torch.save(tokens[:80], "tokens.pt")
assert main(["analyze", "bridge_model:build", "tokens.pt", "--out", "out", "--quiet"]) == 0
layers = [layer["name"] for layer in json.load(open("out/summary.json"))["layers"]]
assert layers == list(chain.names), layers
print("ok", list(chain.names), a.graph.n_edges)
"""


def test_transformer_lens_4_transformer_bridge(tmp_path):
    assert (TL4 / "transformer_lens").is_dir(), (
        f"TransformerLens 4.x is not installed at {TL4}: run "
        f"{sys.executable} -m pip install --no-deps --target {TL4} transformer-lens==4.3.0 "
        "(the README's test command does)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TL4), str(tmp_path), *sys.path])}
    (tmp_path / "bridge_model.py").write_text(textwrap.dedent(BRIDGE))
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TL4_SCRIPT)],
        env=env, cwd=tmp_path, capture_output=True, text=True,  # no time limit: slow is not wrong
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("ok ['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_post'"), last

#!/usr/bin/env python3
"""Tiny random Zamba2 checkpoints and transformers' own Δ and logits for them (parity fixtures).

Run in the reference venv (CPU torch + transformers 5.24), from the repository root:

    /tmp/reference-venv/bin/python scripts/make_zamba2_golden.py

Each configuration is built with transformers' `Zamba2Config` / `Zamba2ForCausalLM` and their own
random initialisation (dt_bias from time_step_min/max, A_log = log(1..H); weights N(0, σ²) with
initializer_range σ = 0.25 instead of 0.02, so that at width 16 the layers' outputs, and what the
filter changes, are far above float noise). Together they cover one
and two shared blocks, the shared-attention adapters on and off, RoPE on and off, grouped-query
attention, B/C groups, and layer schedules that start with, end with and repeat hybrid layers.

Writes:
  Fixtures/models/zamba2-<name>/          config.json + model.safetensors (f32; `-bf16`, `-f16`: half precision)
  Fixtures/models/zamba2-tiny-calib/      the fixture tokenizer's vocabulary, for calibrate / eval tests
  Fixtures/golden/zamba2-<name>-f32.safetensors
        tokens (i64 [L]), layer.{i}.delta f32 [L, H] (Δ of layer i's Mamba mixer, i = the model's
        layer index, hybrid layers included), layer.{i}.A f32 [H], logits f32 [L, V]
  Fixtures/golden/zamba2-<name>-{bf16,f16}.safetensors   the same on the weights rounded to bf16 / f16
  Fixtures/golden/zamba2-<name>-longmamba.safetensors
        the LongMamba filter applied inside transformers' scan (as make_longmamba_golden.py does
        for Mamba-2): layer.{i}.threshold, layer.{i}.cumulative_decay, theta, logits, vanilla_logits
Δ is taken where transformers' scan receives it: softplus(dt + dt_bias) clamped to
time_step_limit = (time_step_min, inf).
"""
import json
import os
import shutil
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import Zamba2Config, Zamba2ForCausalLM
from transformers.models.zamba2 import modeling_zamba2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "Fixtures", "models")
GOLDEN = os.path.join(ROOT, "Fixtures", "golden")
SEQ_LEN = 40          # crosses transformers' chunk boundary (chunk_size 16) twice
VOCAB = 64
THETA = 0.5

M, H = "mamba", "hybrid"
CONFIGS = {
    # one shared block, attention adapters, RoPE, MHA, hybrid layers in the middle and last
    "one-block": dict(layers_block_type=[M, H, M, M, H], num_mem_blocks=1, use_shared_attention_adapter=True,
                      use_mem_rope=True, num_attention_heads=4, num_key_value_heads=4),
    # two shared blocks (ABAB), no adapters, no RoPE, GQA (4 query heads, 2 kv heads), starts hybrid
    "two-blocks-gqa": dict(layers_block_type=[H, M, H, H, M, H], num_mem_blocks=2, use_shared_attention_adapter=False,
                           use_mem_rope=False, num_attention_heads=4, num_key_value_heads=2),
    # two shared blocks with adapters and RoPE, two B/C groups, SiLU MLP, an odd schedule
    "two-blocks-adapters": dict(layers_block_type=[M, H, H, M, H], num_mem_blocks=2, use_shared_attention_adapter=True,
                                use_mem_rope=True, num_attention_heads=2, num_key_value_heads=2, mamba_ngroups=2,
                                hidden_act="silu"),
}


def config(name):
    kw = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=len(CONFIGS[name]["layers_block_type"]),
              mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, n_mamba_heads=4, chunk_size=16,
              intermediate_size=32, adapter_rank=4, max_position_embeddings=4096, rms_norm_eps=1e-5,
              initializer_range=0.25,
              pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    kw.update(CONFIGS[name])
    return Zamba2Config(**kw)


current = {"deltas": [], "table": None, "kept": []}


def patch():
    """Wrap transformers' chunk scan: record Δ as the scan gets it, and optionally filter it."""
    original = modeling_zamba2.mamba2_chunk_scan

    def scan(hidden_states, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False,
             dt_limit=(0.0, float("inf")), **kw):
        if dt_bias is not None:
            dt = dt + dt_bias.to(dt.dtype)
        if dt_softplus:
            dt = F.softplus(dt)
        dt = torch.clamp(dt, min=dt_limit[0], max=dt_limit[1])              # Δ: [B, L, H]
        layer = len(current["deltas"])
        current["deltas"].append(dt[0].float().clone())
        t = current["table"]
        if t is not None:
            tau = t[f"layer.{layer}.threshold"].view(1, 1, -1)
            is_global = (t[f"layer.{layer}.cumulative_decay"] > THETA).view(1, 1, -1)
            keep = dt > tau
            current["kept"].append(float((keep & is_global).sum()))
            dt = torch.where(is_global & ~keep, torch.zeros_like(dt), dt)
        return original(hidden_states, dt, A, B, C, chunk_size, D=D, dt_bias=None, dt_softplus=False,
                        dt_limit=(0.0, float("inf")), **kw)

    modeling_zamba2.mamba2_chunk_scan = scan


def mamba_mixers(model):
    for layer in model.model.layers:
        yield layer.mamba_decoder.mamba if hasattr(layer, "mamba_decoder") else layer.mamba


def run(model, tokens, table=None):
    current.update(deltas=[], table=table, kept=[])
    with torch.no_grad():
        logits = model(torch.tensor([tokens]), use_cache=False).logits[0].float().contiguous()
    assert len(current["deltas"]) == model.config.num_hidden_layers, "the scan did not run once per layer"
    return logits, current["deltas"], current["kept"]


def record(model, tokens):
    logits, deltas, _ = run(model, tokens)
    out = {"tokens": torch.tensor(tokens, dtype=torch.int64), "logits": logits}
    for i, mixer in enumerate(mamba_mixers(model)):
        out[f"layer.{i}.delta"] = deltas[i].contiguous()
        out[f"layer.{i}.A"] = (-torch.exp(mixer.A_log.float())).contiguous()
    return out


def rounded(model, dtype):
    """An fp32 copy whose weights are rounded to `dtype` (what a loader upcasts)."""
    m = Zamba2ForCausalLM(model.config)
    m.load_state_dict({k: v.to(dtype).to(torch.float32) for k, v in model.state_dict().items()})
    return m.eval()


def save_model(model, name, dtype):
    path = os.path.join(MODELS, name)
    shutil.rmtree(path, ignore_errors=True)
    m = Zamba2ForCausalLM(model.config)
    m.load_state_dict(model.state_dict())
    m.to(dtype).save_pretrained(path)
    for extra in ("generation_config.json",):
        p = os.path.join(path, extra)
        if os.path.exists(p):
            os.remove(p)


def save_golden(name, data, **meta):
    save_file(data, os.path.join(GOLDEN, f"{name}.safetensors"),
              metadata={"generator": "scripts/make_zamba2_golden.py", "torch": torch.__version__,
                        "transformers": __import__("transformers").__version__, **meta})


def synthetic_table(golden, layers, seed):
    """τ: halfway across the gap nearest each channel's median recorded Δ (about half the tokens are
    dropped, none sits on the threshold); a: pseudo-random cumulative decays, about half above θ."""
    g = torch.Generator().manual_seed(seed)
    table = {}
    for i in range(layers):
        ranked = golden[f"layer.{i}.delta"].sort(dim=0).values                 # [L, H]
        tau = torch.empty(ranked.shape[1])
        for c in range(ranked.shape[1]):
            # The gap nearest the median whose sides differ by > 1e-3 relative: Δ clamped to
            # time_step_min ties, and no Δ may sit within float noise of its threshold.
            col = ranked[:, c]
            mid = col.shape[0] // 2
            gaps = sorted(range(1, col.shape[0]), key=lambda k: abs(k - mid))
            k = next(k for k in gaps if col[k] - col[k - 1] > 1e-3 * col[k])
            tau[c] = (col[k - 1] + col[k]) / 2
        table[f"layer.{i}.threshold"] = tau
        table[f"layer.{i}.cumulative_decay"] = torch.rand(ranked.shape[1], generator=g)
    return table


def calibration_fixture():
    """Fixtures/models/zamba2-tiny-calib: the fixture tokenizer's vocabulary, max_position_embeddings
    256 (what `calibrate` takes as L), for the calibrate / record / eval tests."""
    with open(os.path.join(ROOT, "Fixtures", "tokenizer", "fixture-tokenizer.json")) as f:
        tok = json.load(f)
    vocab = len(tok["model"]["vocab"]) + len([t for t in tok["added_tokens"] if t["content"] not in tok["model"]["vocab"]])
    torch.manual_seed(11)
    cfg = Zamba2Config(vocab_size=vocab, hidden_size=16, num_hidden_layers=4, layers_block_type=[M, H, M, H],
                       mamba_d_state=8, n_mamba_heads=4, chunk_size=64, intermediate_size=32, adapter_rank=4,
                       num_attention_heads=4, use_shared_attention_adapter=True, use_mem_rope=True,
                       max_position_embeddings=256, initializer_range=0.25, tie_word_embeddings=True,
                       pad_token_id=0, bos_token_id=0, eos_token_id=0)
    model = Zamba2ForCausalLM(cfg).eval()
    save_model(model, "zamba2-tiny-calib", torch.float32)
    shutil.copy(os.path.join(ROOT, "Fixtures", "tokenizer", "fixture-tokenizer.json"),
                os.path.join(MODELS, "zamba2-tiny-calib", "tokenizer.json"))


def main():
    patch()
    calibration_fixture()
    os.makedirs(GOLDEN, exist_ok=True)
    g = torch.Generator().manual_seed(2025)
    tokens = torch.randint(3, VOCAB, (SEQ_LEN,), generator=g).tolist()
    for seed, name in enumerate(CONFIGS):
        torch.manual_seed(100 + seed)
        model = Zamba2ForCausalLM(config(name)).eval()
        full = f"zamba2-{name}"
        save_model(model, full, torch.float32)
        golden = record(model, tokens)
        save_golden(f"{full}-f32", golden, model=full, precision="f32")
        if name == "one-block":
            for precision, dtype in (("bf16", torch.bfloat16), ("f16", torch.float16)):
                save_model(model, f"{full}-{precision}", dtype)
                save_golden(f"{full}-{precision}", record(rounded(model, dtype), tokens), model=f"{full}-{precision}", precision=precision)
        layers = model.config.num_hidden_layers
        table = synthetic_table(golden, layers, seed + 7)
        logits, _, kept = run(model, tokens, table)
        out = dict(table)
        out.update(tokens=golden["tokens"], theta=torch.tensor([THETA]), logits=logits, vanilla_logits=golden["logits"])
        for i in range(layers):
            out[f"layer.{i}.kept"] = torch.tensor([kept[i]])
        save_golden(f"{full}-longmamba", out, model=full, theta=str(THETA))
        change = (logits - golden["logits"]).abs().max().item()
        print(f"{full}: hybrid layers {model.config.hybrid_layer_ids}, max |filtered − vanilla logits| = {change:.4f}, kept {kept}")


if __name__ == "__main__":
    sys.exit(main())

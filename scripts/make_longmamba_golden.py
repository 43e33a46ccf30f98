#!/usr/bin/env python3
"""Golden files for LongMamba inference: the Δ filter applied inside Hugging Face transformers.

Rule (docs/method.md §4): in a global channel (cumulative decay a_c > θ), token t
keeps Δ_c,t if Δ_c,t > τ_c, otherwise Δ_c,t := 0 (no update, no decay). Local channels are
untouched. Applied here by wrapping transformers' own scan functions so that Δ is replaced after
softplus (+ bias, + dt limit) and before the scan, exactly where the Swift runner applies it.

Run from the repository root in the reference venv:
    /tmp/reference-venv/bin/python scripts/make_longmamba_golden.py
Writes Fixtures/golden/<arch>-longmamba.safetensors: tokens, layer.{i}.threshold f32 [C],
layer.{i}.cumulative_decay f32 [C], theta (f32 [1]), logits f32 [L, V], vanilla_logits, and
layer.{i}.kept (f32 [1]: number of (token, global channel) pairs kept).
"""
import os

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import Mamba2ForCausalLM, MambaForCausalLM
from transformers.models.mamba import modeling_mamba
from transformers.models.mamba2 import modeling_mamba2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THETA = 0.5


def synthetic_table(golden, layers, channels, seed):
    """τ: per-channel median of the recorded vanilla Δ (so about half the tokens are dropped);
    a: pseudo-random cumulative decays in (0, 1), about half above θ."""
    g = torch.Generator().manual_seed(seed)
    table = {}
    for i in range(layers):
        delta = golden.get_tensor(f"layer.{i}.delta")                       # [L, C]
        # Halfway between two neighbouring recorded values, so that no Δ sits on the threshold
        # (float32 noise between implementations must not flip a comparison).
        ranked = delta.sort(dim=0).values
        middle = ranked.shape[0] // 2
        table[f"layer.{i}.threshold"] = ((ranked[middle - 1] + ranked[middle]) / 2).contiguous()
        table[f"layer.{i}.cumulative_decay"] = torch.rand(channels, generator=g)
    return table


current = {"layer": 0, "table": None, "kept": {}}


def filter_delta(dt, layer, channel_dim):
    """dt: Δ after softplus; channel_dim: which axis holds the channels."""
    t = current["table"]
    tau = t[f"layer.{layer}.threshold"]
    is_global = t[f"layer.{layer}.cumulative_decay"] > THETA
    shape = [1] * dt.dim()
    shape[channel_dim] = -1
    tau, is_global = tau.view(shape), is_global.view(shape)
    keep = dt > tau
    current["kept"][layer] = float((keep & is_global).sum())
    return torch.where(is_global & ~keep, torch.zeros_like(dt), dt)


def patch():
    original_m1 = modeling_mamba.mamba_selective_scan
    original_m2 = modeling_mamba2.mamba2_chunk_scan

    def m1(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, **kw):
        if delta_bias is not None:
            dt = dt + delta_bias.to(dt.dtype)[..., None]
        if delta_softplus:
            dt = F.softplus(dt)
        dt = filter_delta(dt, current["layer"], 1)                         # dt: [B, d_inner, L]
        current["layer"] += 1
        return original_m1(hidden_states, dt, A, B, C, D=D, z=z, delta_bias=None, delta_softplus=False, **kw)

    def m2(hidden_states, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False,
           dt_limit=(0.0, float("inf")), **kw):
        if dt_bias is not None:
            dt = dt + dt_bias.to(dt.dtype)
        if dt_softplus:
            dt = F.softplus(dt)
        dt = torch.clamp(dt, min=dt_limit[0], max=dt_limit[1])
        dt = filter_delta(dt, current["layer"], 2)                         # dt: [B, L, H]
        current["layer"] += 1
        return original_m2(hidden_states, dt, A, B, C, chunk_size, D=D, dt_bias=None, dt_softplus=False,
                           dt_limit=(0.0, float("inf")), **kw)

    modeling_mamba.mamba_selective_scan = m1
    modeling_mamba2.mamba2_chunk_scan = m2


def main():
    patch()
    for arch, cls, model_dir, seed in (("mamba", MambaForCausalLM, "mamba-tiny-hf", 1),
                                       ("mamba2", Mamba2ForCausalLM, "mamba2-tiny-hf", 2)):
        golden = safe_open(os.path.join(ROOT, "Fixtures", "golden", f"{arch}-f32.safetensors"), "pt")
        tokens = golden.get_tensor("tokens")
        model = cls.from_pretrained(os.path.join(ROOT, "Fixtures", "models", model_dir)).eval()
        layers = model.config.num_hidden_layers
        channels = golden.get_tensor("layer.0.delta").shape[1]
        table = synthetic_table(golden, layers, channels, seed)
        current.update(layer=0, table=table, kept={})
        with torch.no_grad():
            logits = model(tokens[None]).logits[0].float().contiguous()
        assert current["layer"] == layers, "the patched scan was not called once per layer"
        out = dict(table)
        out["tokens"] = tokens
        out["theta"] = torch.tensor([THETA])
        out["logits"] = logits
        out["vanilla_logits"] = golden.get_tensor("logits")
        for i in range(layers):
            out[f"layer.{i}.kept"] = torch.tensor([current["kept"][i]])
        save_file(out, os.path.join(ROOT, "Fixtures", "golden", f"{arch}-longmamba.safetensors"),
                  metadata={"generator": "scripts/make_longmamba_golden.py", "theta": str(THETA)})
        change = (logits - out["vanilla_logits"]).abs().max().item()
        print(f"{arch}: max |logits − vanilla| = {change:.4f}, kept = {[current['kept'][i] for i in range(layers)]}")


if __name__ == "__main__":
    main()

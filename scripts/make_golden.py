#!/usr/bin/env python3
"""Build the tiny Mamba-1 / Mamba-2 parity fixtures and record Hugging Face transformers' Δ and logits.

Run in the reference venv (CPU torch + transformers), from the repository root:

    VENV=/tmp/reference-venv bash scripts/reference-venv.sh   # or: make fixtures
    /tmp/reference-venv/bin/python scripts/make_golden.py

Writes:
  Fixtures/models/<name>/            checkpoints in the transformers layout (safetensors, single and
                                     sharded; f32, bf16, f16) and in the state-spaces layout
                                     (config.json with d_model/n_layer/ssm_cfg + pytorch_model.bin)
  Fixtures/golden/<arch>-<precision>.safetensors
                                     tokens (i64 [L]), layer.{i}.delta f32 [L, C], layer.{i}.A,
                                     logits f32 [L, V], recorded by transformers in fp32 on the
                                     weights as rounded to that precision.

Models are random-initialised with transformers' own initialisation (dt bias from
time_step_min/max, A_log = log(1..N) or log(U(1,16))), so Δ is realistic.
"""
import json
import math
import os
import shutil
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import (FalconMambaConfig, FalconMambaForCausalLM, Mamba2Config, Mamba2ForCausalLM,
                          MambaConfig, MambaForCausalLM)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "Fixtures", "models")
GOLDEN = os.path.join(ROOT, "Fixtures", "golden")
SEQ_LEN = 80           # crosses the Mamba-2 chunk boundary (chunk_size 32) twice
VOCAB_SS = 500         # state-spaces config vocab; padded to a multiple of 8 in the weights
VOCAB = 504            # padded vocab = embedding rows


def mamba1_config():
    return MambaConfig(
        vocab_size=VOCAB, hidden_size=64, state_size=16, num_hidden_layers=2, expand=2,
        conv_kernel=4, time_step_rank="auto", use_bias=False, use_conv_bias=True,
        layer_norm_epsilon=1e-5, residual_in_fp32=True, tie_word_embeddings=True,
        pad_token_id=0, bos_token_id=0, eos_token_id=0,
    )


def falcon_mamba_config():
    """Falcon-Mamba: Mamba-1 with weightless RMS norms on dt_low, B, C and an untied LM head."""
    return FalconMambaConfig(
        vocab_size=VOCAB, hidden_size=64, state_size=16, num_hidden_layers=2, expand=2,
        conv_kernel=4, time_step_rank="auto", use_bias=False, use_conv_bias=True,
        layer_norm_epsilon=1e-5, mixer_rms_eps=1e-6, residual_in_fp32=True,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=0, eos_token_id=0,
    )


def mamba2_config():
    return Mamba2Config(
        vocab_size=VOCAB, hidden_size=64, state_size=16, num_hidden_layers=2, expand=2,
        head_dim=16, num_heads=8, n_groups=2, conv_kernel=4, chunk_size=32, use_bias=False,
        use_conv_bias=True, layer_norm_epsilon=1e-5, residual_in_fp32=True,
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=0, eos_token_id=0,
        time_step_limit=(0.0, float("inf")),
    )


def state_spaces_config(arch, cfg):
    """The original mamba_ssm config.json (MambaConfig of mixer_seq_simple)."""
    ssm_cfg = {"d_state": cfg.state_size, "d_conv": cfg.conv_kernel, "expand": cfg.expand}
    if arch == "mamba2":
        ssm_cfg.update({"layer": "Mamba2", "headdim": cfg.head_dim, "ngroups": cfg.n_groups,
                        "chunk_size": cfg.chunk_size})
    return {"d_model": cfg.hidden_size, "d_intermediate": 0, "n_layer": cfg.num_hidden_layers,
            "vocab_size": VOCAB_SS, "ssm_cfg": ssm_cfg, "rms_norm": True, "residual_in_fp32": True,
            "fused_add_norm": True, "pad_vocab_size_multiple": 8, "tie_embeddings": True}


def record(model, arch, tokens):
    """Δ per layer [L, C] exactly as the transformers mixer computes it, plus A and logits."""
    deltas, As = {}, {}
    hooks = []
    for i, layer in enumerate(model.backbone.layers):
        mixer = layer.mixer
        if arch in ("mamba", "falcon_mamba"):
            def hook(mod, inp, out, i=i, mixer=mixer):
                time_step = out[..., : mixer.time_step_rank]                      # [B, L, R]
                if arch == "falcon_mamba":
                    time_step = mixer.dt_layernorm(time_step)
                dt = mixer.dt_proj.weight @ time_step.transpose(1, 2)              # [B, d_inner, L]
                dt = dt + mixer.dt_proj.bias.float()[..., None]
                deltas[i] = F.softplus(dt)[0].transpose(0, 1).contiguous()         # [L, d_inner]
            hooks.append(mixer.x_proj.register_forward_hook(hook))
        else:
            def hook(mod, inp, out, i=i, mixer=mixer):
                dt = out[..., -mixer.num_heads:]                                   # [B, L, H]
                dt = F.softplus(dt + mixer.dt_bias)
                lo, hi = mixer.time_step_limit
                deltas[i] = torch.clamp(dt, min=lo, max=hi)[0].contiguous()        # [L, H]
            hooks.append(mixer.in_proj.register_forward_hook(hook))
        As[i] = (-torch.exp(mixer.A_log.float())).contiguous()
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0].float().contiguous()      # [L, V]
    for h in hooks:
        h.remove()
    out = {"tokens": torch.tensor(tokens, dtype=torch.int64), "logits": logits}
    for i in deltas:
        out[f"layer.{i}.delta"] = deltas[i].float()
        out[f"layer.{i}.A"] = As[i]
    return out


def rounded(model, dtype):
    """An fp32 copy of the model whose weights are rounded to `dtype` (what a loader upcasts)."""
    m = type(model)(model.config)
    m.load_state_dict({k: v.to(dtype).to(torch.float32) for k, v in model.state_dict().items()})
    return m.eval()


def save_hf(model, name, dtype, max_shard_size=None):
    path = os.path.join(MODELS, name)
    shutil.rmtree(path, ignore_errors=True)
    m = type(model)(model.config)
    m.load_state_dict(model.state_dict())
    m = m.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    m.save_pretrained(path, **kwargs)
    for extra in ("generation_config.json",):
        p = os.path.join(path, extra)
        if os.path.exists(p):
            os.remove(p)
    return path


def save_state_spaces(model, arch, name, dtype):
    """state-spaces layout: backbone.embedding.weight (singular), tied lm_head saved too, .bin."""
    path = os.path.join(MODELS, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    sd = {}
    for k, v in model.state_dict().items():
        k = k.replace("backbone.embeddings.", "backbone.embedding.")
        # mamba_ssm keeps A_log and D in fp32 even in half-precision checkpoints.
        keep = k.endswith(".A_log") or k.endswith(".D")
        sd[k] = v.float() if keep else v.to(dtype)
    sd["lm_head.weight"] = sd["backbone.embedding.weight"]      # tied: one storage, two keys
    torch.save(sd, os.path.join(path, "pytorch_model.bin"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(state_spaces_config(arch, model.config), f, indent=2)
    return path


def save_golden(arch, precision, data):
    os.makedirs(GOLDEN, exist_ok=True)
    save_file(data, os.path.join(GOLDEN, f"{arch}-{precision}.safetensors"),
              metadata={"architecture": arch, "precision": precision,
                        "generator": "scripts/make_golden.py",
                        "torch": torch.__version__,
                        "transformers": __import__("transformers").__version__})


def main():
    torch.manual_seed(1234)
    g = torch.Generator().manual_seed(99)
    tokens = torch.randint(2, VOCAB_SS, (SEQ_LEN,), generator=g).tolist()
    os.makedirs(os.path.join(ROOT, "Fixtures", "tokens"), exist_ok=True)
    with open(os.path.join(ROOT, "Fixtures", "tokens", "parity.tokens"), "w") as f:
        f.write(" ".join(map(str, tokens)) + "\n")
    manifest = {}
    torch.manual_seed(4321)
    falcon = FalconMambaForCausalLM(falcon_mamba_config()).eval()
    save_golden("falcon_mamba", "f32", record(falcon, "falcon_mamba", tokens))
    save_hf(falcon, "falcon_mamba-tiny-hf", torch.float32)
    manifest["falcon_mamba-tiny-hf"] = {"architecture": "falcon_mamba", "layout": "hf", "golden": "falcon_mamba-f32"}
    torch.manual_seed(1234)
    for arch, make_cfg, cls in (("mamba", mamba1_config, MambaForCausalLM),
                                ("mamba2", mamba2_config, Mamba2ForCausalLM)):
        model = cls(make_cfg()).eval()
        # Stronger A_log/D spread than the defaults would be fine too; keep the models' own init.
        for precision, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16), ("f16", torch.float16)):
            reference = rounded(model, dtype) if dtype != torch.float32 else model
            save_golden(arch, precision, record(reference, arch, tokens))
        variants = [
            (f"{arch}-tiny-hf", "hf", torch.float32, None, "f32"),
            (f"{arch}-tiny-hf-bf16", "hf", torch.bfloat16, None, "bf16"),
            (f"{arch}-tiny-hf-f16", "hf", torch.float16, None, "f16"),
            (f"{arch}-tiny-hf-sharded", "hf", torch.float32, "100KB", "f32"),
        ]
        for name, layout, dtype, shard, precision in variants:
            save_hf(model, name, dtype, shard)
            manifest[name] = {"architecture": arch, "layout": layout, "golden": f"{arch}-{precision}"}
        ss_dtype, ss_precision = (torch.float32, "f32") if arch == "mamba" else (torch.float16, "f16")
        name = f"{arch}-tiny-ss"
        save_state_spaces(model, arch, name, ss_dtype)
        # A_log and D stay fp32 in the .bin; the golden for f16 rounds them too, so record a
        # matching golden for this exact mix.
        if ss_dtype != torch.float32:
            m = type(model)(model.config)
            sd = {}
            for k, v in model.state_dict().items():
                keep = k.endswith(".A_log") or k.endswith(".D")
                sd[k] = v if keep else v.to(ss_dtype).float()
            m.load_state_dict(sd)
            save_golden(arch, "ss-" + ss_precision, record(m.eval(), arch, tokens))
            ss_precision = "ss-" + ss_precision
        manifest[name] = {"architecture": arch, "layout": "state-spaces", "golden": f"{arch}-{ss_precision}"}
    with open(os.path.join(MODELS, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    sys.exit(main())

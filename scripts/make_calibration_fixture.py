#!/usr/bin/env python3
"""A tiny random-initialised Mamba-2 whose vocabulary matches the fixture tokenizer, for
calibration tests and the embedded default of `make run` (until a trained demo model is used).

    /tmp/reference-venv/bin/python scripts/make_calibration_fixture.py

Writes Fixtures/models/mamba2-tiny-calib/{config.json, model.safetensors, tokenizer.json}.
The config carries "training_length": 256 (what `calibrate` uses as L by default).
"""
import json
import os
import shutil

import torch
from transformers import Mamba2Config, Mamba2ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Fixtures", "models", "mamba2-tiny-calib")
TOKENIZER = os.path.join(ROOT, "Fixtures", "tokenizer", "fixture-tokenizer.json")


def main():
    with open(TOKENIZER) as f:
        tok = json.load(f)
    vocab = len(tok["model"]["vocab"]) + len([t for t in tok["added_tokens"] if t["content"] not in tok["model"]["vocab"]])
    padded = (vocab + 15) // 16 * 16
    torch.manual_seed(7)
    config = Mamba2Config(vocab_size=padded, hidden_size=64, state_size=16, num_hidden_layers=2, expand=2, head_dim=16,
                          num_heads=8, n_groups=1, conv_kernel=4, chunk_size=64, layer_norm_epsilon=1e-5,
                          residual_in_fp32=True, tie_word_embeddings=True, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    model = Mamba2ForCausalLM(config).eval()
    shutil.rmtree(OUT, ignore_errors=True)
    model.save_pretrained(OUT)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(OUT, extra)):
            os.remove(os.path.join(OUT, extra))
    with open(os.path.join(OUT, "config.json")) as f:
        cfg = json.load(f)
    cfg["training_length"] = 256
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    shutil.copy(TOKENIZER, os.path.join(OUT, "tokenizer.json"))
    print(f"wrote {OUT}: vocab {vocab} → {padded} rows")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Seed corpora for the libFuzzer harnesses (Fuzz/seeds/<harness>/), small by design (libFuzzer
mutates inputs of a few KB best). Made from the repository's fixtures; run from the repo root
with the reference venv (scripts/reference-venv.sh):

    /tmp/reference-venv/bin/python scripts/make_fuzz_seeds.py

The delta-blob seeds come from the Swift encoder itself (`make fuzz-seeds` runs the fuzz binary
with LONGMAMBA_FUZZ_MAKE_SEEDS)."""
import io
import json
import os
import shutil
import struct
import zipfile

import numpy as np
import zstandard
from safetensors.numpy import save as st_save

OUT = "Fuzz/seeds"


def put(harness, name, data):
    d = os.path.join(OUT, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


def main():
    for h in ["safetensors", "torch-zip", "pickle", "tokenizer-json", "tokenizer-encode", "config", "pile-line", "zstd", "token-file", "store"]:
        shutil.rmtree(os.path.join(OUT, h), ignore_errors=True)
    rng = np.random.default_rng(0)

    # safetensors: a few tensors of each dtype the loader reads, and a metadata block.
    import torch
    from safetensors.torch import save as st_save_torch

    put("safetensors", "f32.safetensors", st_save({"backbone.embeddings.weight": rng.standard_normal((4, 8), dtype=np.float32),
                                                 "lm_head.weight": rng.standard_normal((4, 8), dtype=np.float32)}, metadata={"format": "pt"}))
    put("safetensors", "f16.safetensors", st_save({"a": rng.standard_normal((3, 5)).astype(np.float16), "b": np.arange(6, dtype=np.int64)}))
    put("safetensors", "bf16.safetensors", st_save_torch({"w": torch.randn(2, 3, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)}))

    # torch zip files: the committed fixtures (1.5-5 KB each) and their pickles.
    for name in sorted(os.listdir("Fixtures/torch")):
        if not name.endswith((".bin", ".pt")):
            continue
        with open(os.path.join("Fixtures/torch", name), "rb") as f:
            raw = f.read()
        put("torch-zip", name, raw)
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                for info in z.infolist():
                    if info.filename.endswith("data.pkl"):
                        put("pickle", name.rsplit(".", 1)[0] + ".pkl", z.read(info))
        except zipfile.BadZipFile:
            pass

    # tokenizer.json: a tiny byte-level BPE in the GPT-NeoX layout (the fixture one is 127 KB).
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["The pass key is 12345. Remember it.", "In the beginning God created the heaven and the earth."] * 20, trainer=trainer)
    put("tokenizer-json", "tiny.json", tok.to_str())

    # text to encode: ASCII, digits, accents (composed and decomposed), CJK, emoji, a bad byte.
    for i, t in enumerate(["The pass key is 48213. Remember it.", "café cafe\u0301 naïve — “quotes”", "日本語のテキスト 🙂👍🏽",
                           "  leading spaces\n\ttabs\r\n", "1234567890 3.14159 -0.5e-3"]):
        put("tokenizer-encode", f"text{i}.txt", t)
    put("tokenizer-encode", "bad-utf8.bin", b"ok \xff\xfe then \xc3")

    # config.json in both layouts and every architecture.
    for d in sorted(os.listdir("Fixtures/models")):
        p = os.path.join("Fixtures/models", d, "config.json")
        if os.path.exists(p):
            with open(p, "rb") as f:
                put("config", d + ".json", f.read())
    if os.path.exists("Fixtures/demo-model/config.json"):
        with open("Fixtures/demo-model/config.json", "rb") as f:
            put("config", "demo-model.json", f.read())

    # Pile lines: real lines of the fixture corpus (first 3, cut at 1 KB of text) and edge cases.
    with open("Fixtures/corpus/fixture.jsonl.zst", "rb") as f:
        lines = zstandard.ZstdDecompressor().decompressobj().decompress(f.read()).decode("utf-8").splitlines()
    small = []
    for line in lines[:3]:
        j = json.loads(line)
        j["text"] = j["text"][:1000]
        small.append(json.dumps(j, ensure_ascii=False))
    put("pile-line", "fixture.jsonl", "\n".join(small) + "\n")
    put("pile-line", "escapes.jsonl", '{"meta": {"pile_set_name": "Pile-CC"}, "text": "a\\u00e9\\ud83d\\ude00\\n\\t\\"q\\""}\n{"text": ""}\n\n')
    put("pile-line", "subset-first.jsonl", '{"meta":{"pile_set_name":"Github"},"text":"x"}\r\n')

    # zstd: one frame and two concatenated frames of Pile lines.
    c = zstandard.ZstdCompressor(level=3)
    payload = ("\n".join(small) + "\n").encode("utf-8")
    put("zstd", "one-frame.jsonl.zst", c.compress(payload))
    put("zstd", "two-frames.jsonl.zst", c.compress(payload[: len(payload) // 2]) + c.compress(payload[len(payload) // 2 :]))

    # token files: the committed one.
    with open("Fixtures/tokens/parity.tokens", "rb") as f:
        put("token-file", "parity.tokens", f.read())

    # store: the v1 fixture (100 KB).
    with open("Fixtures/store/v1.sqlite", "rb") as f:
        put("store", "v1.sqlite", f.read())


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the small PyTorch checkpoints under Fixtures/torch/ that the Swift reader is tested on.

Recipe (any recent torch works; these were made with torch 2.13 CPU):
    python -m venv /tmp/reference-venv && /tmp/reference-venv/bin/pip install torch numpy
    /tmp/reference-venv/bin/python scripts/make_torch_fixtures.py
Outputs (all tiny, committed; Swift tests never run Python):
    state_dict.bin        real torch.save of an OrderedDict: f32/f16/bf16/i64, tied weights, slices
                          saved with their storage (storage_offset), a scalar; folder 'archive/'
    pytorch_model.bin     the same state dict saved by path: torch names the folder after the stem
    training_ckpt.pt      {'model': nn.Module state dict (has _metadata via BUILD), 'epoch', 'lr'}
    many_slices.bin       40 one-element slices of one storage (> 256 memo slots: LONG_BINPUT)
    protocol4.bin         the same saved with pickle_protocol=4 (FRAME, MEMOIZE, STACK_GLOBAL, ...)
    expected.json         dtype, shape, values and tied pairs for the files above
    malicious_os_system.bin  pickle calling os.system through __reduce__ (must be refused unrun)
    compressed.bin        state_dict.bin re-zipped with DEFLATE
    transposed.bin        a non-contiguous (transposed) tensor
Files written by the Swift writer (swift_written*.bin) are checked by scripts/verify_torch_save.py.
"""
import collections
import io
import json
import math
import os
import zipfile

import torch

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Fixtures", "torch")


def state_dict():
    emb = torch.tensor([[0.5, -1.25, 2.0], [3.0, 0.0, -0.75], [1e-3, 4.5, -2.5], [7.0, 8.0, 9.5]], dtype=torch.float32)
    big = torch.arange(10, dtype=torch.float32) * 0.25          # saved whole, slices share it
    grid = torch.arange(12, dtype=torch.float32).reshape(3, 4)  # only row 1 is saved: offset 4
    sd = collections.OrderedDict()
    sd["backbone.embedding.weight"] = emb
    sd["backbone.layers.0.mixer.A_log"] = torch.log(torch.arange(1, 3, dtype=torch.float32)).repeat(3, 1)
    sd["backbone.layers.0.mixer.D"] = torch.tensor([1.0, -0.5, 0.125], dtype=torch.float16)
    sd["backbone.layers.0.norm.weight"] = torch.tensor([1.0, 2.5, -3.0], dtype=torch.bfloat16)
    sd["backbone.layers.0.mixer.conv1d.weight"] = torch.linspace(-1, 1, 12, dtype=torch.float32).reshape(3, 1, 4)
    sd["big"] = big
    sd["big_tail"] = big[6:9]
    sd["grid_row"] = grid[1]
    sd["position_ids"] = torch.tensor([[0, 1, 2, 50276]], dtype=torch.int64)
    sd["scalar"] = torch.tensor(3.5, dtype=torch.float64)
    sd["lm_head.weight"] = emb  # tied: same storage as the embedding
    return sd


def describe(sd, path):
    tensors = {}
    for name, t in sd.items():
        tensors[name] = {
            "dtype": {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                      torch.int64: "I64"}[t.dtype],
            "shape": list(t.shape),
            "storage_offset": t.storage_offset(),
            "values": t.reshape(-1).tolist() if t.dtype == torch.int64 else t.reshape(-1).to(torch.float64).tolist(),
        }
    return {"file": path, "tensors": tensors}


def save_archive(obj, name):
    # A file object makes torch name the zip folder 'archive/'.
    buf = io.BytesIO()
    torch.save(obj, buf)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(buf.getvalue())


class RunsShell:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def main():
    os.makedirs(OUT, exist_ok=True)
    sd = state_dict()
    expected = {}

    save_archive(sd, "state_dict.bin")
    expected["state_dict.bin"] = describe(sd, "state_dict.bin") | {
        "prefix": "archive", "tied": [["backbone.embedding.weight", "lm_head.weight"], ["big", "big_tail"]]}

    torch.save(sd, os.path.join(OUT, "pytorch_model.bin"))  # by path: folder 'pytorch_model/'
    expected["pytorch_model.bin"] = describe(sd, "pytorch_model.bin") | {"prefix": "pytorch_model", "tied": []}

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    msd = module.state_dict()
    assert hasattr(msd, "_metadata")
    save_archive({"model": msd, "epoch": 3, "lr": 0.1, "note": "training checkpoint"}, "training_ckpt.pt")
    expected["training_ckpt.pt"] = describe(msd, "training_ckpt.pt") | {"prefix": "archive", "tied": []}

    big = torch.arange(40, dtype=torch.float32) - 20
    slices = collections.OrderedDict((f"s{i}", big[i:i + 1]) for i in range(40))
    save_archive(slices, "many_slices.bin")
    expected["many_slices.bin"] = describe(slices, "many_slices.bin") | {"prefix": "archive", "tied": []}
    buf = io.BytesIO()
    torch.save(slices, buf, pickle_protocol=4)
    with open(os.path.join(OUT, "protocol4.bin"), "wb") as f:
        f.write(buf.getvalue())
    expected["protocol4.bin"] = describe(slices, "protocol4.bin") | {"prefix": "archive", "tied": []}

    save_archive({"weight": torch.ones(2), "evil": RunsShell()}, "malicious_os_system.bin")

    with zipfile.ZipFile(os.path.join(OUT, "state_dict.bin")) as src, \
            zipfile.ZipFile(os.path.join(OUT, "compressed.bin"), "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():  # fixed timestamps: the fixture is reproducible
            dst.writestr(zipfile.ZipInfo(info.filename, (1980, 1, 1, 0, 0, 0)), src.read(info.filename),
                         compress_type=zipfile.ZIP_DEFLATED)

    save_archive({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3).t()}, "transposed.bin")

    # Everything loads with torch's own safe loader, except the malicious file.
    # (protocol4.bin is left out: torch's weights-only unpickler rejects FRAME, opcode 149.)
    for name in ("state_dict.bin", "pytorch_model.bin", "training_ckpt.pt", "many_slices.bin", "transposed.bin"):
        torch.load(os.path.join(OUT, name), weights_only=True)
    try:
        torch.load(os.path.join(OUT, "malicious_os_system.bin"), weights_only=True)
        raise SystemExit("malicious file loaded with weights_only=True?")
    except Exception:
        pass

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, sort_keys=True, separators=(",", ":"))
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()

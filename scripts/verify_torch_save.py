#!/usr/bin/env python3
"""Checks files written by the Swift TorchSave writer with real PyTorch.

Run in a venv with torch (see scripts/make_torch_fixtures.py for the recipe):
    python scripts/verify_torch_save.py [FILE ...]
Default files: Fixtures/torch/swift_written.bin and swift_written_zip64.bin, produced from
`torchSaveSample()` in Tests/LongMambaTests/TorchSaveTests.swift (regenerate them with
`LONGMAMBA_WRITE_TORCH_FIXTURES=1 swift test --filter TorchSaveTests`). The expected values below
mirror that function; a mismatch or a refused file exits non-zero.
"""
import collections
import math
import os
import sys
import zipfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = [os.path.join(ROOT, "Fixtures", "torch", n) for n in ("swift_written.bin", "swift_written_zip64.bin")]


def expected():
    return collections.OrderedDict([
        ("backbone.layers.0.mixer.A_log", torch.tensor([i * 0.5 - 1 for i in range(12)], dtype=torch.float32).reshape(3, 4)),
        ("half", torch.tensor([1.5, -2, 0.25], dtype=torch.float16)),
        ("bfloat", torch.tensor([3, -0.5, 1e-3, 7], dtype=torch.float32).to(torch.bfloat16).reshape(2, 2)),
        ("double", torch.tensor([math.pi, -1e300], dtype=torch.float64)),
        ("tokens", torch.tensor([0, -1, 50276, 1 << 40], dtype=torch.int64).reshape(2, 2)),
        ("scalar", torch.tensor(42, dtype=torch.float32)),
        ("empty", torch.zeros(0, 3, dtype=torch.float32)),
        ("mask", torch.tensor([True, False, True])),
        ("bytes", torch.tensor([i % 256 for i in range(300)], dtype=torch.uint8).reshape(1, 1, 300)),
        ("meta", collections.OrderedDict([
            ("layer.0.delta", torch.tensor([[0.1, 0.2]], dtype=torch.float32)),
            ("größe ✓", torch.tensor([7], dtype=torch.int64)),
            ("nothing", collections.OrderedDict()),
        ])),
    ])


def compare(got, want, path):
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{path}: expected a dict, got {type(got).__name__}"
        assert list(got.keys()) == list(want.keys()), f"{path}: keys {list(got.keys())} != {list(want.keys())}"
        for k in want:
            compare(got[k], want[k], f"{path}.{k}" if path else k)
        return
    assert isinstance(got, torch.Tensor), f"{path}: expected a tensor, got {type(got).__name__}"
    assert got.dtype == want.dtype, f"{path}: dtype {got.dtype} != {want.dtype}"
    assert tuple(got.shape) == tuple(want.shape), f"{path}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert got.is_contiguous(), f"{path}: not contiguous"
    assert not got.requires_grad, f"{path}: requires_grad"
    assert torch.equal(got, want), f"{path}: values differ\n{got}\n{want}"


def main(paths):
    for path in paths:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            assert bad is None, f"{path}: CRC mismatch in {bad}"
            for info in z.infolist():
                assert info.compress_type == zipfile.ZIP_STORED, f"{path}: {info.filename} is compressed"
        value = torch.load(path, weights_only=True)
        assert type(value) is collections.OrderedDict, f"{path}: top level is {type(value).__name__}"
        compare(value, expected(), "")
        # mmap loading takes the aligned-storage path torch uses for big checkpoints.
        compare(torch.load(path, weights_only=True, mmap=True), expected(), "")
        print(f"OK {os.path.relpath(path, ROOT)}: torch {torch.__version__} weights_only=True (+mmap), "
              f"{sum(1 for _ in walk(value))} tensors bit-exact")


def walk(v):
    if isinstance(v, dict):
        for x in v.values():
            yield from walk(x)
    else:
        yield v


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)

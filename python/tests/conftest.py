"""Shared fixtures: the longmamba binary (built by `make run` / `make test`) makes real tables
for the repository's fixture models, so every comparison is against the Swift tool itself."""
import json
import os
import subprocess

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, "Fixtures", "models")
CALIBRATION_LENGTH = 32   # the training length the test tables are solved with
PROMPT_LENGTH = 160       # > 1.5 × 32: filtering is on


def longmamba_binary():
    path = os.environ.get("LONGMAMBA_BIN", os.path.join(ROOT, ".build", "release", "longmamba"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} not found: build the tool first (make run, or swift build -c release), "
                    f"or set LONGMAMBA_BIN")
    return path


def run_longmamba(*args):
    done = subprocess.run([longmamba_binary(), *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"longmamba {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done.stdout


def write_tokens(path, ids):
    with open(path, "w") as f:
        f.write(" ".join(str(int(i)) for i in ids) + "\n")


def vocab_size(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)["vocab_size"]


@pytest.fixture(scope="session")
def tables(tmp_path_factory):
    """{fixture model name: (db path, table id, prompt token ids)} for Mamba-1, Mamba-2, Falcon-Mamba."""
    out = {}
    for name in ["mamba-tiny-hf", "mamba2-tiny-hf", "falcon_mamba-tiny-hf"]:
        d = tmp_path_factory.mktemp(name)
        model = os.path.join(MODELS, name)
        rng = np.random.default_rng(7)
        V = vocab_size(model)
        recordings = []
        for k in range(3):
            tokens = d / f"sample-{k}.tokens"
            write_tokens(tokens, rng.integers(0, V, CALIBRATION_LENGTH))
            recordings.append(d / f"sample-{k}.safetensors")
            run_longmamba("record", "--model", model, "--tokens", tokens, "--out", recordings[-1])
        db = d / "cal.sqlite"
        table_id = int(run_longmamba("solve", "--db", db, "--recordings", *recordings, "--clamp", "0.2",
                                     "--aggregate", "max", "--interval", "16", "--max-length", "256",
                                     "--training-length", CALIBRATION_LENGTH, "--representation", "exact").split()[-1])
        prompt = rng.integers(0, V, PROMPT_LENGTH)
        out[name] = (str(db), table_id, prompt)
    return out


DEMO_MODEL = os.path.join(ROOT, "Fixtures", "demo-model")
ZAMBA2_MODEL = os.path.join(MODELS, "zamba2-tiny-calib")   # the fixture tokenizer's vocabulary, L = 256


def calibrated_export(directory, model, corpus, *options):
    """`longmamba calibrate` into a fresh store, then its table exported as safetensors (read with
    lmt.load_export, so the tests do not depend on the store's schema)."""
    db = directory / "cal.sqlite"
    table_id = run_longmamba("calibrate", "--model", model, "--corpus", corpus, "--db", db, *options).split()[-1]
    path = directory / "table.safetensors"
    run_longmamba("export", "--db", db, "--table", table_id, "--format", "safetensors", "--out", path)
    return str(path)


@pytest.fixture(scope="session")
def demo_table(tmp_path_factory):
    """The demo model's table as `make run` calibrates it, made small: 2 samples, lengths 64…1024
    (training length 128: filtering from 192 tokens)."""
    return calibrated_export(tmp_path_factory.mktemp("demo-table"), DEMO_MODEL,
                             os.path.join(ROOT, "Fixtures", "demo-corpus", "train-sample.jsonl.zst"),
                             "--samples", "2", "--interval", "64", "--max-length", "1024", "--clamp", "0.1",
                             "--aggregate", "max")


@pytest.fixture(scope="session")
def zamba2_table(tmp_path_factory):
    """A Zamba2 table as the Swift pipeline test calibrates one: zamba2-tiny-calib, 2 samples,
    lengths 256…1024 (training length 256: filtering from 384 tokens)."""
    return calibrated_export(tmp_path_factory.mktemp("zamba2-table"), ZAMBA2_MODEL,
                             os.path.join(ROOT, "Fixtures", "corpus", "fixture.jsonl.zst"),
                             "--samples", "2", "--interval", "256", "--max-length", "1024")

"""apply_longmamba in transformers against the Swift runner's LongMamba prefill (`record --logits`)."""
import json
import os
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed here: the transformers tests need CPU torch")
transformers = pytest.importorskip("transformers", reason="transformers is not installed here")

import longmamba_tables as lmt  # noqa: E402
from conftest import MODELS, run_longmamba, write_tokens  # noqa: E402

CLASSES = {"mamba-tiny-hf": "MambaForCausalLM", "mamba2-tiny-hf": "Mamba2ForCausalLM",
           "falcon_mamba-tiny-hf": "FalconMambaForCausalLM"}


def load(name):
    return getattr(transformers, CLASSES[name]).from_pretrained(os.path.join(MODELS, name)).eval()


def read_recording(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    info = header["logits"]
    start, end = info["data_offsets"]
    return np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"]), header["__metadata__"]


def theta_for(table):
    """A θ with about half the channels global, so that both rules are exercised."""
    return float(np.median(np.concatenate([l.cumulative_decay for l in table.layers])))


@pytest.mark.parametrize("name", list(CLASSES))
def test_patched_transformers_logits_equal_the_swift_runner(tables, tmp_path, name):
    db, table_id, prompt = tables[name]
    table = lmt.open(db).table(table_id)
    theta = theta_for(table)
    write_tokens(tmp_path / "prompt.tokens", prompt)
    run_longmamba("record", "--model", os.path.join(MODELS, name), "--tokens", tmp_path / "prompt.tokens",
                  "--out", tmp_path / "swift.safetensors", "--logits", "--db", db, "--table", table_id, "--theta", repr(theta))
    swift_logits, meta = read_recording(tmp_path / "swift.safetensors")
    swift_kept, swift_considered = json.loads(meta["longmamba_kept"]), json.loads(meta["longmamba_considered"])
    assert 0 < sum(swift_kept) < sum(swift_considered), "the test table must filter some Δ and keep some"

    model = load(name)
    ids = torch.tensor(prompt, dtype=torch.long)[None]
    with torch.no_grad():
        vanilla = model(ids).logits[0].float().numpy()
        with lmt.apply_longmamba(model, table, theta=theta) as handle:
            patched = model(ids).logits[0].float().numpy()
        after = model(ids).logits[0].float().numpy()
    V = patched.shape[1]
    reference = swift_logits[:, :V]
    error = np.abs(patched - reference).max() / np.abs(reference).max()
    print(f"{name}: θ {theta:.4g}, row {handle.last_row.length}, kept {handle.kept} of {handle.considered}, "
          f"relative error {error:.2e}, LongMamba vs vanilla {np.abs(patched - vanilla).max():.3f}")
    assert error <= 1e-4, f"{name}: relative error {error}"
    assert handle.kept == swift_kept and handle.considered == swift_considered
    assert handle.last_row.length == int(meta["longmamba_tabulated_length"])
    assert np.abs(patched - vanilla).max() > 1e-3, "the filter changed nothing"
    assert np.array_equal(after, vanilla), "remove() did not restore the model"


def test_short_prompts_and_decode_steps_are_not_filtered(tables):
    db, table_id, prompt = tables["mamba2-tiny-hf"]
    table = lmt.open(db).table(table_id)
    model = load("mamba2-tiny-hf")
    ids = torch.tensor(prompt, dtype=torch.long)[None]
    with torch.no_grad():
        short_vanilla = model(ids[:, :47]).logits
        with lmt.apply_longmamba(model, table, theta=theta_for(table)) as handle:
            assert handle.filter_from == 48           # 1.5 × L, L = 32
            assert torch.equal(model(ids[:, :47]).logits, short_vanilla)
            assert sum(handle.considered) == 0
            out = model(ids, use_cache=True)          # prefill: filtered
            considered = list(handle.considered)
            assert sum(considered) > 0
            step = model(ids[:, -1:], cache=out.cache, use_cache=True)
            assert handle.considered == considered    # the decode step left Δ alone
        # The step really was a decode step on the carried state: without the table it continues
        # the vanilla prefill exactly as a full pass over the longer sequence does.
        vanilla_out = model(ids, use_cache=True)
        vanilla_step = model(ids[:, -1:], cache=vanilla_out.cache, use_cache=True).logits[0, -1]
        full = model(torch.cat([ids, ids[:, -1:]], dim=1)).logits[0, -1]
        assert torch.allclose(vanilla_step, full, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(step.logits[0, -1], vanilla_step, rtol=1e-4, atol=1e-4), \
            "the filtered prefill's state should carry into the decode step"


def test_refusals_name_the_problem(tables):
    db, table_id, _ = tables["mamba-tiny-hf"]
    mamba1_table = lmt.open(db).table(table_id)
    mamba2 = load("mamba2-tiny-hf")
    with pytest.raises(lmt.ModelMismatchError, match="calibrated on a mamba model, not on this mamba2 model"):
        lmt.apply_longmamba(mamba2, mamba1_table)
    with pytest.raises(lmt.ModelMismatchError, match="table layer 0 has 128 channels, the model 8"):
        lmt.apply_longmamba(mamba2, mamba1_table, force=True)
    with pytest.raises(lmt.UnsupportedModelError, match="Linear is not supported"):
        lmt.apply_longmamba(torch.nn.Linear(2, 2), mamba1_table)
    mamba1 = load("mamba-tiny-hf")
    with pytest.raises(lmt.LongMambaTableError, match=r"θ must be > 0, got -1.0"):
        lmt.apply_longmamba(mamba1, mamba1_table, theta=-1)
    with pytest.raises(lmt.ModelMismatchError, match="pass force=True"):
        lmt.apply_longmamba(mamba1, mamba1_table, fingerprint="0" * 64)
    with lmt.apply_longmamba(mamba1, mamba1_table):
        with pytest.raises(lmt.LongMambaTableError, match="already has a LongMamba table"):
            lmt.apply_longmamba(mamba1, mamba1_table)
    handle = lmt.apply_longmamba(mamba1, mamba1_table, allow_beyond_table=False)
    with pytest.raises(lmt.LongMambaTableError, match="beyond the table's largest length 256"):
        with torch.no_grad():
            mamba1(torch.zeros(1, 300, dtype=torch.long))
    lmt.remove_longmamba(mamba1)
    assert not hasattr(mamba1, "_longmamba_handle") and handle._hooks == []


def test_the_readme_example_runs_on_the_demo_model(tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    db = tmp_path / "demo.sqlite"
    run_longmamba("calibrate", "--model", os.path.join(ROOT, "Fixtures", "demo-model"),
                  "--corpus", os.path.join(ROOT, "Fixtures", "demo-corpus", "train-sample.jsonl.zst"), "--db", db,
                  "--samples", "2", "--interval", "64", "--max-length", "2048", "--clamp", "0.05", "--aggregate", "max")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "python", "examples", "perplexity.py"), "", str(db), "1", "", "1024"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("vanilla    perplexity") and "on 1024 tokens" in lines[0]
    assert lines[1].startswith("LongMamba  perplexity") and "row 1024" in lines[1]
    vanilla, longmamba = float(lines[0].split()[2]), float(lines[1].split()[2])
    assert vanilla != longmamba
    print(done.stdout)

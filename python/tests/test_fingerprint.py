"""The model fingerprint computed in Python against the one the longmamba CLI computes, for every
fixture model (Mamba-1, Mamba-2, Falcon-Mamba, Zamba2; f32, bf16, f16; one file, shards,
pytorch_model.bin) and for variants whose config exercises the number formatting of the rule."""
import json
import os
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest

from conftest import ROOT, MODELS, longmamba_binary, run_longmamba
from longmamba_tables.errors import LongMambaTableError
from longmamba_tables.fingerprint import (CheckpointError, ConfigError, fingerprint, fingerprint_config_json,
                                          swift_array_description, swift_description)

DEMO_MODEL = os.path.join(ROOT, "Fixtures", "demo-model")
FIXTURE_MODELS = sorted(d for d in os.listdir(MODELS) if os.path.isfile(os.path.join(MODELS, d, "config.json")))


def _find_fingerprint(doc):
    if isinstance(doc, dict):
        for key in ("fingerprint", "model_fingerprint"):
            if isinstance(doc.get(key), str):
                return doc[key]
        for v in doc.values():
            found = _find_fingerprint(v)
            if found:
                return found
    return None


def cli_fingerprint(model_dir, scratch):
    """What the CLI prints for the model: `longmamba inspect --model DIR` where the binary has
    it, else the fingerprint `longmamba record` writes into a recording's metadata."""
    help_text = subprocess.run([longmamba_binary(), "inspect", "--help"], capture_output=True, text=True).stdout
    if "--model" in help_text:
        if "--json" in help_text:
            found = _find_fingerprint(json.loads(run_longmamba("inspect", "--model", model_dir, "--json")))
        else:
            found = re.search(r"\b[0-9a-f]{64}\b", run_longmamba("inspect", "--model", model_dir))
            found = found and found.group(0)
        assert found, f"no fingerprint in `longmamba inspect --model {model_dir}`"
        return found
    tokens, out = os.path.join(scratch, "one.tokens"), os.path.join(scratch, "fingerprint.safetensors")
    with open(tokens, "w") as f:
        f.write("1\n")
    run_longmamba("record", "--model", model_dir, "--tokens", tokens, "--out", out)
    with open(out, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))["__metadata__"]["fingerprint"]


def cli_refusal(model_dir, scratch):
    tokens = os.path.join(scratch, "one.tokens")
    with open(tokens, "w") as f:
        f.write("1\n")
    done = subprocess.run([longmamba_binary(), "record", "--model", model_dir, "--tokens", tokens,
                           "--out", os.path.join(scratch, "refused.safetensors")], capture_output=True, text=True)
    assert done.returncode != 0, f"the CLI accepted {model_dir}"
    return done.stderr


@pytest.mark.parametrize("name", FIXTURE_MODELS + ["demo-model"])
def test_every_fixture_model_has_the_cli_fingerprint(name, tmp_path):
    model = DEMO_MODEL if name == "demo-model" else os.path.join(MODELS, name)
    assert fingerprint(model) == cli_fingerprint(model, tmp_path)


def test_layout_and_shards_do_not_change_the_fingerprint_and_the_dtype_does():
    fp = {name: fingerprint(os.path.join(MODELS, name)) for name in FIXTURE_MODELS}
    assert fp["mamba-tiny-hf"] == fp["mamba-tiny-hf-sharded"] == fp["mamba-tiny-ss"]
    assert fp["mamba2-tiny-hf"] == fp["mamba2-tiny-hf-sharded"]
    assert len({fp["mamba-tiny-hf"], fp["mamba-tiny-hf-bf16"], fp["mamba-tiny-hf-f16"]}) == 3
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in fp.values())


def _variant(tmp_path, source, name, edit, files=None):
    """A copy of a fixture model (weights linked) with config.json edited."""
    src, dst = os.path.join(MODELS, source), tmp_path / name
    dst.mkdir()
    for f in os.listdir(src):
        if f != "config.json" and (files is None or f in files):
            os.symlink(os.path.join(src, f), dst / f)
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    edit(config)
    with open(dst / "config.json", "w") as f:
        json.dump(config, f, indent=2)
    return str(dst)


def _set(**values):
    def edit(config):
        for k, v in values.items():
            if v is None:
                config.pop(k, None)
            else:
                config[k] = v
    return edit


def _zamba2_edit(config):
    config["rope_parameters"]["rope_theta"] = 12345.5       # a Double with a fraction in sharedBlocks
    config["rms_norm_eps"] = 2.5e-06                        # eps in exponent form
    config["time_step_min"] = 0.0001                        # dtLimit lower bound at the decimal/exponent edge
    config.pop("layers_block_type")                         # the schedule from hybrid_layer_ids alone


def _ss_dt_limit(config):
    config["ssm_cfg"]["dt_limit"] = [0.0, 100.0]


VARIANTS = {
    # eps and dtLimit as Swift writes Floats: 1e-06, 0.001, 0.1
    "mamba2-eps-limit": ("mamba2-tiny-hf", _set(layer_norm_epsilon=1e-06, time_step_limit=[0.001, 0.1])),
    # norm_epsilon spelling, 0.00011 (decimal form), time_step_rank "auto" (the default rank)
    "mamba-auto-rank": ("mamba-tiny-hf", _set(layer_norm_epsilon=None, norm_epsilon=0.00011, time_step_rank="auto")),
    # a float whose shortest Float digits differ from its Double ones
    "falcon-eps": ("falcon_mamba-tiny-hf", _set(layer_norm_epsilon=3.3e-06)),
    "zamba2-rope-eps": ("zamba2-two-blocks-adapters", _zamba2_edit),
    "mamba2-ss-dt-limit": ("mamba2-tiny-ss", _ss_dt_limit),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_config_variants_have_the_cli_fingerprint(variant, tmp_path):
    source, edit = VARIANTS[variant]
    model = _variant(tmp_path, source, variant, edit)
    ours = fingerprint(model)
    assert ours == cli_fingerprint(model, tmp_path)
    assert ours != fingerprint(os.path.join(MODELS, source)) or variant == "mamba-auto-rank"


def test_a_pytorch_checkpoint_in_bf16_inside_a_training_checkpoint(tmp_path):
    """pytorch_model.bin written by torch.save: {"model": state dict} with nested dicts, bf16."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    source = os.path.join(MODELS, "mamba2-tiny-hf-bf16")
    tensors = load_file(os.path.join(source, "model.safetensors"))
    nested = {}
    for name, t in tensors.items():
        head, _, rest = name.partition(".")
        nested.setdefault(head, {})[rest] = t.clone()
    model = tmp_path / "mamba2-bin"
    model.mkdir()
    shutil.copy(os.path.join(source, "config.json"), model / "config.json")
    torch.save({"model": nested, "step": 7}, model / "pytorch_model.bin")
    ours = fingerprint(model)
    assert ours == cli_fingerprint(str(model), tmp_path)
    assert ours == fingerprint(source)


def test_the_config_json_is_swifts_encoding():
    """The first bytes hashed for the demo model and a Zamba2 fixture (sorted keys, no spaces,
    Float eps shortest, dtLimit as Float descriptions, sharedBlocks only for Zamba2)."""
    from longmamba_tables.fingerprint import _parse_config
    with open(os.path.join(DEMO_MODEL, "config.json"), "rb") as f:
        config = _parse_config(f.read(), "config.json")
    assert fingerprint_config_json(config, 2048) == (
        b'{"architecture":"mamba2","dConv":4,"dInner":256,"dModel":128,"dState":64,"dtLimit":["0.0","inf"],'
        b'"dtRank":0,"eps":1e-05,"groups":1,"headDim":32,"heads":8,"layers":4,"vocab":2048}')
    with open(os.path.join(MODELS, "zamba2-two-blocks-adapters", "config.json"), "rb") as f:
        config = _parse_config(f.read(), "config.json")
    assert fingerprint_config_json(config, 64) == (
        b'{"architecture":"zamba2","dConv":4,"dInner":32,"dModel":16,"dState":8,"dtLimit":["0.001","inf"],'
        b'"dtRank":0,"eps":1e-05,"groups":2,"headDim":8,"heads":4,"layers":5,'
        b'"sharedBlocks":{"activation":"silu","adapterRank":4,"attentionAdapters":true,"attentionHeadDim":16,'
        b'"attentionHeads":2,"blockCount":2,"hybridLayers":[1,2,4],"keyValueHeads":2,"mlpBias":false,"mlpWidth":32,'
        b'"rope":true,"ropeTheta":10000},"vocab":64}')


# Printed by Swift 6.3 (`"\(x)"`) for these Doubles and Floats.
SWIFT_DOUBLES = [(1e-05, "1e-05"), (0.1, "0.1"), (1.0, "1.0"), (0.0001, "0.0001"), (0.00011, "0.00011"),
                 (1e16, "1e+16"), (9007199254740992.0, "9007199254740992.0"),
                 (9007199254740994.0, "9.007199254740994e+15"), (1e15, "1000000000000000.0"),
                 (123456789.0, "123456789.0"), (1 / 3, "0.3333333333333333"), (5e-324, "5e-324"),
                 (1.5e300, "1.5e+300"), (-0.0, "-0.0"), (0.0, "0.0"), (2.5e-05, "2.5e-05"), (100.0, "100.0"),
                 (1e22, "1e+22"), (0.05, "0.05"), (9.999999999999999e-05, "9.999999999999999e-05"),
                 (float("inf"), "inf"), (float("-inf"), "-inf"), (float("nan"), "nan"),
                 (12345678901234567.0, "1.2345678901234568e+16")]
SWIFT_FLOATS = [(1e-5, "1e-05"), (1e-6, "1e-06"), (16777216, "16777216.0"), (16777218, "1.6777218e+07"),
                (33554432, "3.3554432e+07"), (1e10, "1e+10"), (0.001, "0.001"), (0.1, "0.1"), (1.0, "1.0"),
                (1e-4, "0.0001"), (9.9999e-5, "9.9999e-05"), (4294967296, "4.2949673e+09"),
                (8589934592, "8.589935e+09"), (2e7, "2e+07"), (1e-45, "1e-45"), (1.17549435e-38, "1.1754944e-38"),
                (3.3e-06, "3.3e-06"), (0.00011, "0.00011")]


def test_swift_number_descriptions():
    for x, text in SWIFT_DOUBLES:
        assert swift_description(x) == text, x
    for x, text in SWIFT_FLOATS:
        assert swift_description(np.float32(x), float32=True) == text, x
    assert swift_array_description([0, 0.25, 0.5]) == "[0.0, 0.25, 0.5]"
    assert swift_array_description([1e-05, 1]) == "[1e-05, 1.0]"


def _save_safetensors(path, tensors):
    from safetensors.numpy import save_file
    save_file(tensors, str(path))


def test_refusals_are_the_clis(tmp_path):
    """A tensor the config does not imply, and a config without the sizes: refused by both, the
    Python message naming the file and tensor as the CLI's does."""
    from safetensors.numpy import load_file
    source = os.path.join(MODELS, "mamba-tiny-hf")
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(os.path.join(source, "config.json"), extra / "config.json")
    tensors = load_file(os.path.join(source, "model.safetensors"))
    tensors["backbone.layers.0.mixer.surprise"] = np.zeros(3, dtype=np.float32)
    _save_safetensors(extra / "model.safetensors", tensors)
    with pytest.raises(CheckpointError) as e:
        fingerprint(extra)
    expected = (f"{extra}/model.safetensors: tensor 'backbone.layers.0.mixer.surprise': unexpected tensor for a mamba "
                f"model with 2 layers")
    assert str(e.value) == expected
    assert expected in cli_refusal(str(extra), tmp_path)

    sizeless = _variant(tmp_path, "mamba-tiny-hf", "sizeless", _set(hidden_size=None, d_model=None))
    with pytest.raises(ConfigError) as e:
        fingerprint(sizeless)
    assert str(e.value) == f"{sizeless}/config.json: missing or non-positive hidden_size/d_model"
    assert str(e.value) in cli_refusal(sizeless, tmp_path)

    with pytest.raises(LongMambaTableError, match="config.json"):
        fingerprint(tmp_path / "nowhere")

"""lmt.passkey / lmt.perplexity against `longmamba eval` (CPU, float32), prefix reuse and batching
against whole prompts, Zamba2 against the Swift runner, and the refusals."""
import json
import os
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed here: the evaluation tests need CPU torch")
transformers = pytest.importorskip("transformers", reason="transformers is not installed here")
pytest.importorskip("tokenizers", reason="tokenizers is not installed here")

import longmamba_tables as lmt  # noqa: E402
from longmamba_tables import apply as apply_module, evaluate  # noqa: E402
from conftest import (DEMO_MODEL, MODELS, ROOT, ZAMBA2_MODEL, longmamba_binary, run_longmamba,  # noqa: E402
                      write_tokens)

DEMO_TOKENIZER = os.path.join(DEMO_MODEL, "tokenizer.json")
DEMO_TEXT = os.path.join(ROOT, "Fixtures", "demo-corpus", "eval.txt")
THETA = 0.01                      # what `make run`'s tune chose for the demo model
# Below the filter start (128), just above it (256) and at 4 × L (512), where the table matters.
PASSKEY = dict(lengths=[128, 256, 512], depths=[0, 0.5, 1], trials=3, seed=0)
PERPLEXITY = dict(lengths=[128, 256, 512], windows=3, by_position=128)


def load(model_dir):
    return transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()


def eval_json(directory, *args):
    """The text of `longmamba eval … --json FILE`."""
    path = directory / f"eval-{len(list(directory.iterdir()))}.json"
    run_longmamba("eval", "--quiet", "--json", path, *args)
    return path.read_text()


def cli_error(*args):
    done = subprocess.run([longmamba_binary(), *map(str, args)], capture_output=True, text=True)
    assert done.returncode != 0, f"longmamba {' '.join(map(str, args))} succeeded"
    return done.stderr.strip().splitlines()[-1].removeprefix("Error: ")


def assert_perplexities_equal(cli, mine):
    """Every length and bucket, vanilla and LongMamba, to 1e-4 relative; the rest exactly."""
    assert len(cli["points"]) == len(mine["points"])
    for a, b in zip(cli["points"], mine["points"]):
        for key in ("length", "windows", "tabulated_length", "global_channels"):
            assert a.get(key) == b.get(key), (a["length"], key)
        assert b["kept_share"] == pytest.approx(a["kept_share"], rel=1e-9)
        pairs = [(a, b)] + list(zip(a.get("by_position", []), b.get("by_position", [])))
        assert len(a.get("by_position", [])) == len(b.get("by_position", []))
        for x, y in pairs:
            assert (x.get("start"), x.get("end")) == (y.get("start"), y.get("end"))
            for key in ("vanilla_perplexity", "long_mamba_perplexity"):
                assert y[key] == pytest.approx(x[key], rel=1e-4), (a["length"], x.get("start"), key)


# ---- prompts ----------------------------------------------------------------------------------------

def test_keys_use_swifts_splitmix64_and_rounding():
    # SplitMix64's published first output for state 0 (Steele, Lea, Flood 2014).
    assert evaluate._splitmix64(0)[1] == 0xE220A8397B1DCDAF
    # Swift's .rounded() takes halfway away from zero; Python's round() would give 2, 0 and −2.
    assert [evaluate._rounded(x) for x in (2.5, 0.5, -2.5, 0.49999999999999994, 1.4999999999999998)] == [3, 1, -3, 0, 1]
    # Five digits from 10000 on; −0.0 has other bits than 0.0, so another key, as in Swift.
    keys = [lmt.PasskeyPrompts.key(seed, S, d, t) for seed in (0, 2**64 - 1) for S in (1, 10**6)
            for d in (0.0, 0.5, -0.0) for t in range(3)]
    assert all(len(k) == 5 and k.isdigit() and k[0] != "0" for k in keys) and len(set(keys)) > 30
    assert lmt.PasskeyPrompts.key(0, 1, 0.0, 0) != lmt.PasskeyPrompts.key(0, 1, -0.0, 0)


def test_prompts_have_the_exact_length_and_the_needle_where_they_say():
    prompts = lmt.PasskeyPrompts(DEMO_TOKENIZER)
    for S, depth in [(128, 0), (300, 0.25), (300, 1), (1000, 0.5)]:
        key = lmt.PasskeyPrompts.key(0, S, depth, 0)
        ids, start = prompts.prompt(S, depth, key)
        needle = prompts.encode(lmt.PasskeyPrompts.needle(key))
        assert len(ids) == S and ids[start:start + len(needle)] == needle
        assert ids[:len(prompts.instruction_tokens)] == prompts.instruction_tokens
        H = S - len(prompts.instruction_tokens) - len(needle) - len(prompts.question_tokens)
        insertion = start - len(prompts.instruction_tokens)
        assert insertion % prompts.boundary == 0 or insertion == H        # snapped to a filler boundary
        assert abs(insertion - depth * H) <= prompts.boundary / 2 or insertion == H
    assert lmt.PasskeyPrompts.answer("  abc 0123x45") == "0123" and lmt.PasskeyPrompts.answer("none") is None


@pytest.fixture(scope="module")
def demo_cli(demo_table, tmp_path_factory):
    """`longmamba eval --task passkey` (with the prompts it ran, `--dump-prompts`) and `longmamba
    eval` on the demo model."""
    d = tmp_path_factory.mktemp("demo-cli")
    args = ["--model", DEMO_MODEL, "--table-file", demo_table, "--theta", THETA, "--threads", 1]
    dump = ["--dump-prompts", d / "prompts.jsonl"]
    passkey = eval_json(d, "--task", "passkey", *args, *dump,
                        "--lengths", ",".join(map(str, PASSKEY["lengths"])), "--depths", ",".join(map(str, PASSKEY["depths"])),
                        "--trials", PASSKEY["trials"], "--seed", PASSKEY["seed"])
    ppl = json.loads(eval_json(d, *args, "--text", DEMO_TEXT, "--lengths", ",".join(map(str, PERPLEXITY["lengths"])),
                               "--windows", PERPLEXITY["windows"], "--by-position", PERPLEXITY["by_position"]))
    prompts = [json.loads(line) for line in open(d / "prompts.jsonl")]
    return passkey, ppl, prompts


@pytest.fixture(scope="module")
def demo_passkey(demo_table, demo_cli):
    model = load(DEMO_MODEL)
    return lmt.passkey(model, DEMO_TOKENIZER, lmt.load_export(demo_table), theta=THETA, **PASSKEY,
                       fingerprint=json.loads(demo_cli[0])["model_fingerprint"])


def test_prompt_tokens_equal_the_clis(demo_cli):
    prompts = lmt.PasskeyPrompts(DEMO_TOKENIZER)
    expected = [(S, d, t) for S in PASSKEY["lengths"] for d in PASSKEY["depths"] for t in range(PASSKEY["trials"])]
    assert [(p["length"], p["depth"], p["trial"]) for p in demo_cli[2]] == expected
    starts = {}
    for p in demo_cli[2]:
        key = lmt.PasskeyPrompts.key(PASSKEY["seed"], p["length"], p["depth"], p["trial"])
        ids, start = prompts.prompt(p["length"], p["depth"], key)
        assert (p["key"], p["needle_start"], p["tokens"]) == (key, start, ids), (p["length"], p["depth"], p["trial"])
        starts.setdefault((p["length"], p["depth"]), set()).add(start)
    # Keys of different token counts move the needle: the cells where trials differ are covered.
    assert any(len(s) > 1 for s in starts.values())


# ---- parity with the CLI ----------------------------------------------------------------------------

def test_passkey_equals_longmamba_eval_on_the_demo_model(demo_cli, demo_passkey):
    """Every accuracy, kept share and row, and the JSON text itself, but for the measured speed."""
    def without_speed(text):
        return [line for line in text.splitlines() if '"prompts_per_second"' not in line]
    assert demo_passkey.prompts_per_second > 0
    assert without_speed(demo_passkey.to_json()) == without_speed(demo_cli[0])
    points = demo_passkey.points
    assert any(p.longmamba_accuracy != p.vanilla_accuracy for p in points), "the table never changed an answer"
    assert any(p.kept_share < 1 for p in points) and any(p.tabulated_length is None for p in points)


def test_perplexity_equals_longmamba_eval_on_the_demo_model(demo_table, demo_cli):
    model = load(DEMO_MODEL)
    results = lmt.perplexity(model, DEMO_TOKENIZER, lmt.load_export(demo_table), theta=THETA, text=DEMO_TEXT,
                             **PERPLEXITY, fingerprint=demo_cli[1]["model_fingerprint"])
    mine, cli = json.loads(results.to_json()), demo_cli[1]
    assert_perplexities_equal(cli, mine)
    assert {k: mine[k] for k in ("theta", "filter_from_length", "table_content_hash", "model_fingerprint")} == \
        {k: cli[k] for k in ("theta", "filter_from_length", "table_content_hash", "model_fingerprint")}
    long = results.points[-1]
    assert long.longmamba_perplexity != long.vanilla_perplexity and long.kept_share < 1
    # The one-sequence form of the README: the vanilla perplexity of the first window.
    ids = torch.tensor([lmt.PasskeyPrompts(DEMO_TOKENIZER).encode(open(DEMO_TEXT).read()[:4000])[:256]])
    single = lmt.perplexity(model, ids)
    assert single == pytest.approx(lmt.perplexity(model, ids[0], lengths=[256]).points[0].vanilla_perplexity, rel=1e-12)


def test_passkey_and_perplexity_equal_longmamba_eval_on_zamba2(zamba2_table, tmp_path):
    tokens = [(i * 37 + 11) % 1500 for i in range(1300)]
    write_tokens(tmp_path / "text.tokens", tokens)
    args = ["--model", ZAMBA2_MODEL, "--table-file", zamba2_table, "--theta", THETA, "--threads", 1]
    cli_ppl = json.loads(eval_json(tmp_path, *args, "--tokens", tmp_path / "text.tokens", "--lengths", "300,600",
                                   "--windows", 2, "--by-position", 200))
    cli_pk = json.loads(eval_json(tmp_path, "--task", "passkey", *args, "--lengths", "300,600", "--depths", "0,1",
                                  "--trials", 2))
    model, table = load(ZAMBA2_MODEL), lmt.load_export(zamba2_table)
    ppl = json.loads(lmt.perplexity(model, tokens, table, theta=THETA, lengths=[300, 600], windows=2, by_position=200,
                                    text=str(tmp_path / "text.tokens"), fingerprint=cli_ppl["model_fingerprint"]).to_json())
    assert_perplexities_equal(cli_ppl, ppl)
    assert {k: v for k, v in ppl.items() if k != "points"} == {k: v for k, v in cli_ppl.items() if k != "points"}
    assert ppl["points"][1]["tabulated_length"] == 512 and ppl["points"][1]["kept_share"] < 1
    pk = lmt.passkey(model, os.path.join(ZAMBA2_MODEL, "tokenizer.json"), table, theta=THETA, lengths=[300, 600],
                     depths=[0, 1], trials=2, fingerprint=cli_pk["model_fingerprint"])
    mine = json.loads(pk.to_json())
    assert mine.pop("prompts_per_second") > 0 and cli_pk.pop("prompts_per_second") > 0
    assert mine == cli_pk                       # a random model: 0 % both, but the kept shares are the prompts'
    assert any(p.kept_share < 1 for p in pk.points)


def test_zamba2_patched_logits_equal_the_swift_runner(zamba2_table, tmp_path):
    """As test_apply's parity test: a Zamba2 LongMamba prefill (hybrid layers included) against
    `longmamba record --logits --table-file`."""
    table = lmt.load_export(zamba2_table)
    theta = float(np.median(np.concatenate([l.cumulative_decay for l in table.layers])))
    prompt = np.random.default_rng(3).integers(0, 2000, 600)        # ≥ 384: filtered with row 512
    write_tokens(tmp_path / "prompt.tokens", prompt)
    run_longmamba("record", "--model", ZAMBA2_MODEL, "--tokens", tmp_path / "prompt.tokens", "--out",
                  tmp_path / "swift.safetensors", "--logits", "--table-file", zamba2_table, "--theta", repr(theta))
    from test_apply import read_recording
    swift_logits, meta = read_recording(tmp_path / "swift.safetensors")
    swift_kept, swift_considered = json.loads(meta["longmamba_kept"]), json.loads(meta["longmamba_considered"])
    assert 0 < sum(swift_kept) < sum(swift_considered)
    model = load(ZAMBA2_MODEL)
    ids = torch.tensor(prompt, dtype=torch.long)[None]
    with torch.no_grad():
        vanilla = model(ids).logits[0].numpy()
        with lmt.apply_longmamba(model, table, theta=theta) as handle:
            patched = model(ids).logits[0].numpy()
    error = np.abs(patched - swift_logits).max() / np.abs(swift_logits).max()
    assert error <= 1e-4, error
    assert handle.kept == swift_kept and handle.considered == swift_considered
    assert handle.last_row.length == int(meta["longmamba_tabulated_length"]) == 512
    assert np.abs(patched - vanilla).max() > 1e-3


def test_trials_whose_keys_move_the_needle_equal_the_cli(demo_table, tmp_path):
    """Keys of 3, 4 or 5 tokens change the haystack's length, so at depth 1 the needle of some trials
    starts before trial 0's (seed 7, 512 tokens): they need a prefix of their own. Python against
    `longmamba eval --task passkey`, with and without the CLI's prefix reuse."""
    prompts = lmt.PasskeyPrompts(DEMO_TOKENIZER)
    starts = [prompts.prompt(512, 1, lmt.PasskeyPrompts.key(7, 512, 1, t))[1] for t in range(4)]
    assert starts[0] > min(starts), starts
    args = ["--task", "passkey", "--model", DEMO_MODEL, "--table-file", demo_table, "--theta", THETA,
            "--lengths", 512, "--depths", 1, "--trials", 4, "--seed", 7, "--threads", 1]
    mine = lmt.passkey(load(DEMO_MODEL), DEMO_TOKENIZER, lmt.load_export(demo_table), theta=THETA, lengths=[512],
                       depths=[1], trials=4, seed=7).points[0].to_dict()
    assert 0 < mine["kept_share"] < 1
    for reuse in ("--no-reuse-prefix", "--reuse-prefix"):
        cli = json.loads(eval_json(tmp_path, *args, reuse))["points"][0]
        assert cli == mine, reuse


def test_bf16_runs_and_stays_near_float32(demo_table):
    """Any dtype works (dtype="bf16", device="cpu" here): the filter, the cache copies and the NLL
    follow the model's dtype; perplexity and the kept share stay near float32's."""
    model, table = load(DEMO_MODEL), lmt.load_export(demo_table)
    kw = dict(table=table, theta=THETA, text=DEMO_TEXT, lengths=[256])
    fp32 = lmt.perplexity(model, DEMO_TOKENIZER, **kw).points[0]
    pk32 = lmt.passkey(model, DEMO_TOKENIZER, table, theta=THETA, lengths=[256], depths=[1], trials=2).points[0]
    pk16 = lmt.passkey(model, DEMO_TOKENIZER, table, theta=THETA, lengths=[256], depths=[1], trials=2,
                       dtype="bf16", device="cpu").points[0]
    assert next(model.parameters()).dtype == torch.bfloat16
    bf16 = lmt.perplexity(model, DEMO_TOKENIZER, **kw).points[0]
    assert bf16.longmamba_perplexity == pytest.approx(fp32.longmamba_perplexity, rel=0.03)
    assert bf16.vanilla_perplexity == pytest.approx(fp32.vanilla_perplexity, rel=0.03)
    assert bf16.vanilla_perplexity != fp32.vanilla_perplexity
    assert pk16.kept_share == pytest.approx(pk32.kept_share, abs=0.03) and 0 < pk16.kept_share < 1


# ---- prefix reuse and batching ------------------------------------------------------------------------

def test_reusing_the_prefix_and_batching_change_no_result(demo_table, demo_passkey):
    """Whole prompts two at a time against shared prefixes and whole batches, at 512 tokens where
    the table filters (depth 1 has trials whose needle starts elsewhere)."""
    model = load(DEMO_MODEL)
    whole = lmt.passkey(model, DEMO_TOKENIZER, lmt.load_export(demo_table), theta=THETA, lengths=[512], depths=[0, 1],
                        trials=PASSKEY["trials"], seed=PASSKEY["seed"], reuse_prefix=False, batch_size=2)
    reused = [p for p in demo_passkey.points if p.length == 512 and p.depth in (0, 1)]
    assert whole.points == reused               # every accuracy and kept share
    assert len(reused) == 2 and all(p.kept_share < 1 for p in reused)


def _continuation_cases(tables, zamba2_table, tmp_path):
    for name in ["mamba-tiny-hf", "falcon_mamba-tiny-hf", "mamba2-tiny-hf"]:
        db, table_id, prompt = tables[name]
        path = tmp_path / f"{name}.safetensors"
        run_longmamba("export", "--db", db, "--table", table_id, "--format", "safetensors", "--out", path)
        yield name, os.path.join(MODELS, name), lmt.load_export(str(path)), prompt
    yield "zamba2", ZAMBA2_MODEL, lmt.load_export(zamba2_table), np.random.default_rng(5).integers(0, 2000, 500)


def test_a_prompt_continued_from_a_shared_prefix_equals_the_whole_prompt(tables, zamba2_table, tmp_path):
    """Prefill the shared prefix once (batch 1), copy its cache to 3 rows, continue each with its
    own suffix, filtered with the row of the whole length: the logits and kept counts of one whole
    forward, in every architecture (Mamba-1 needs `continuing_prefill`)."""
    for name, model_dir, table, prompt in _continuation_cases(tables, zamba2_table, tmp_path):
        model = load(model_dir)
        S, P = len(prompt), len(prompt) // 3
        rng = np.random.default_rng(1)
        rows = torch.tensor(np.stack([prompt] + [np.concatenate([prompt[:P], rng.permutation(prompt[P:])])
                                                 for _ in range(2)]), dtype=torch.long)
        theta = float(np.median(np.concatenate([l.cumulative_decay for l in table.layers])))
        with torch.no_grad(), lmt.continuing_prefill(model), lmt.apply_longmamba(model, table, theta=theta) as handle:
            with handle.prefill(S):
                whole = model(rows).logits
                whole_kept = handle.take_sequence_kept()
                out = model(rows[:1, :P], use_cache=True)
                prefix_kept = handle.take_sequence_kept()
                cache = out.cache
                cache.reorder_cache(torch.zeros(3, dtype=torch.long))
                continued = model(rows[:, P:], cache=cache, use_cache=True).logits
                continued_kept = handle.take_sequence_kept()
        error = (continued - whole[:, P:]).abs().max() / whole.abs().max()
        assert error <= 1e-4, f"{name}: relative error {error}"
        assert torch.equal(prefix_kept + continued_kept, whole_kept), name
        assert 0 < int(whole_kept.sum()), name
        if name == "mamba-tiny-hf":     # what continuing_prefill fixes: transformers' scan starts at zero
            with torch.no_grad():
                out = model(rows[:1, :P], use_cache=True)
                out.cache.reorder_cache(torch.zeros(3, dtype=torch.long))
                plain = model(rows[:, P:], cache=out.cache, use_cache=True).logits
                vanilla = model(rows).logits
            assert (plain - vanilla[:, P:]).abs().max() / vanilla.abs().max() > 1e-3


def test_out_of_device_memory_names_a_batch_size_that_fits(demo_table, monkeypatch):
    model = load(DEMO_MODEL)
    projection = model.backbone.layers[2].mixer.out_proj
    forward = projection.forward

    def small_memory(x):                                   # inside a mixer: room for 2 prompts at a time
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(x)
    monkeypatch.setattr(projection, "forward", small_memory)
    table = lmt.load_export(demo_table)
    with pytest.raises(lmt.BatchTooLargeError,
                       match=r"^a batch of 5 prompts of 256 tokens does not fit in the memory of cpu; pass batch_size=2 "):
        lmt.passkey(model, DEMO_TOKENIZER, table, theta=THETA, lengths=[256], depths=[1], trials=5)
    assert not hasattr(model, "_longmamba_handle"), "the table stays applied after the refusal"
    assert apply_module._active.get() is None, "the refused forward left its mixer's filter active"
    fits = lmt.passkey(model, DEMO_TOKENIZER, table, theta=THETA, lengths=[256], depths=[1], trials=5, batch_size=2)
    assert fits.points[0].trials == 5
    with pytest.raises(lmt.BatchTooLargeError, match=r"^a batch of 3 windows of 128 tokens .*pass batch_size=1 "):
        lmt.perplexity(model, list(range(1000)), lengths=[128], windows=3)


# ---- refusals ----------------------------------------------------------------------------------------

def test_refusals_are_worded_as_the_clis(demo_table, zamba2_table):
    model, table = load(DEMO_MODEL), lmt.load_export(demo_table)
    flags = {"--allow-beyond-table": "allow_beyond_table=True", "--force": "force=True"}

    def same(cli_args, error, call):
        expected = cli_error("eval", *cli_args)
        for flag, argument in flags.items():
            expected = expected.replace(flag, argument)
        with pytest.raises(error) as raised:
            call()
        assert str(raised.value) == expected

    pk = ["--task", "passkey", "--model", DEMO_MODEL]
    same(pk + ["--lengths", 256, "--depths", 1.5], lmt.PasskeyError,
         lambda: lmt.passkey(model, DEMO_TOKENIZER, lengths=[256], depths=[1.5]))
    same(pk + ["--lengths", 50, "--trials", 1], lmt.PasskeyError,
         lambda: lmt.passkey(model, DEMO_TOKENIZER, lengths=[50], trials=1))
    same(pk + ["--table-file", demo_table, "--lengths", 2000, "--depths", 1, "--trials", 1], lmt.EvaluationError,
         lambda: lmt.passkey(model, DEMO_TOKENIZER, table, lengths=[2000], depths=[1], trials=1))
    ids = " ".join(str(i) for i in range(300))
    with open(os.path.join(os.path.dirname(demo_table), "short.tokens"), "w") as f:
        f.write(ids)
    text = ["--model", DEMO_MODEL, "--tokens", f.name]
    same(text + ["--lengths", 500], lmt.EvaluationError, lambda: lmt.perplexity(model, list(range(300)), lengths=[500]))
    same(text + ["--lengths", 1], lmt.EvaluationError, lambda: lmt.perplexity(model, list(range(300)), lengths=[1]))
    same(text + ["--lengths", 100, "--by-position", 0], lmt.EvaluationError,
         lambda: lmt.perplexity(model, list(range(300)), lengths=[100], by_position=0))
    zamba2 = lmt.load_export(zamba2_table)
    # A table of another model: refused by fingerprint (the CLI computes the model's; here it is given).
    demo_fingerprint = table.fingerprint              # the demo table was calibrated on this model
    same(pk + ["--table-file", zamba2_table, "--lengths", 600, "--depths", 1, "--trials", 1], lmt.ModelMismatchError,
         lambda: lmt.passkey(model, DEMO_TOKENIZER, zamba2, lengths=[600], depths=[1], trials=1,
                             fingerprint=demo_fingerprint, model_name=DEMO_MODEL))
    with pytest.raises(lmt.ModelMismatchError, match="^table layer 0 has 4 channels, the model 8$"):
        lmt.passkey(model, DEMO_TOKENIZER, zamba2, lengths=[600], fingerprint=demo_fingerprint, force=True)
    with pytest.raises(lmt.LongMambaTableError, match=r"^θ must be > 0, got -1.0$"):
        lmt.perplexity(model, list(range(300)), table, theta=-1, lengths=[256])
    with pytest.raises(lmt.PasskeyError, match="^trials must be at least 1$"):
        lmt.passkey(model, DEMO_TOKENIZER, lengths=[256], trials=0)
    small = load(os.path.join(MODELS, "mamba2-tiny-hf"))           # 504 embedding rows
    with pytest.raises(lmt.EvaluationError, match=r"tokenizer.json has token ids up to 2047, but the model in .*"
                                                  r"mamba2-tiny-hf has 504 embedding rows \(ids 0 to 503\)$"):
        lmt.passkey(small, DEMO_TOKENIZER, lengths=[256], trials=1)
    with pytest.raises(lmt.EvaluationError, match=r"^token id 600 at position 1 is outside the model's vocabulary"):
        lmt.perplexity(small, [5, 600, 7], lengths=[3])
    with pytest.raises(lmt.PasskeyError, match="^the haystack text is empty$"):
        lmt.PasskeyPrompts(DEMO_TOKENIZER, haystack=[])
    assert not hasattr(model, "_longmamba_handle")


def test_results_with_the_fingerprint_are_drawn_by_the_report(demo_table, tmp_path):
    """With fingerprint=lmt.fingerprint(dir) (a model object does not say which weights it holds,
    so the caller names them) the JSON names the model as `longmamba eval` does, and `longmamba
    report` draws it for the table it measured; without it the report refuses the file."""
    model = load(DEMO_MODEL)
    table = lmt.load_export(demo_table)
    fingerprint = lmt.fingerprint(DEMO_MODEL)
    assert fingerprint == table.fingerprint
    pk = lmt.passkey(model, DEMO_TOKENIZER, table, theta=THETA, lengths=[256], depths=[0, 1], trials=2, seed=7,
                     fingerprint=fingerprint)
    assert pk.model_fingerprint == fingerprint
    path = tmp_path / "passkey.json"
    path.write_text(pk.to_json())
    db = tmp_path / "cal.sqlite"      # the report reads its table from a store: the same calibration as the export
    run_longmamba("calibrate", "--model", DEMO_MODEL, "--corpus", os.path.join(ROOT, "Fixtures", "demo-corpus", "train-sample.jsonl.zst"),
                  "--db", db, "--samples", "2", "--interval", "64", "--max-length", "1024", "--clamp", "0.1", "--aggregate", "max", "--quiet")
    run_longmamba("report", "--db", db, "--table", "1", "--theta", THETA, "--passkey", path, "--out", tmp_path / "r.html")
    assert "Passkey retrieval" in (tmp_path / "r.html").read_text()
    anonymous = tmp_path / "anonymous.json"
    anonymous.write_text(lmt.passkey(model, DEMO_TOKENIZER, table, theta=THETA, lengths=[256], depths=[0], trials=1).to_json())
    refused = subprocess.run([longmamba_binary(), "report", "--db", str(db), "--table", "1", "--theta", str(THETA),
                              "--passkey", str(anonymous), "--out", str(tmp_path / "r2.html")], capture_output=True, text=True)
    assert refused.returncode != 0 and str(anonymous) in refused.stderr

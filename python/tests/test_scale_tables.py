"""Per-layer scale tables (schema 5) in a store made by the CLI: a table written here by hand (its
content hash computed here from docs/store-format.md) is read by the package and by the CLI, and
applied to transformers models gives the logits of the Swift runner (`record --logits --db --table`)
for delta_scale and a_power on the demo model (Mamba-2), the Zamba2 fixture, Mamba-1 and
Falcon-Mamba; `eval` and `tune --method delta_scale,a_power` give the CLI's results and rows. A
method this package does not know is refused by name (as the CLI words it), the store left as it
was and its other tables readable; a v4 store still opens."""
import hashlib
import json
import os
import shutil
import sqlite3
import struct
from contextlib import closing

import numpy as np
import pytest

import longmamba_tables as lmt
from conftest import DEMO_MODEL, ZAMBA2_MODEL, run_longmamba, write_tokens
from test_apply import read_recording as read_logits  # noqa: E402

torch = pytest.importorskip("torch", reason="torch is not installed here")
transformers = pytest.importorskip("transformers", reason="transformers is not installed here")


def parameters_json(lengths, training_length, seed=0):
    return (f'{{"lengths":[{",".join(map(str, lengths))}],"perturbation":0.1,"sample_count":2,'
            f'"samples_hash":"{"0" * 64}","seed":{seed},"stability":5,"step_size":0.5,"steps":3,'
            f'"training_length":{training_length}}}')


def write_scale_table(db, method, lengths, scales, training_length, run_id=1, seed=0, row_kind="per_layer"):
    """A scale table inserted with sqlite3 alone, its hash by the documented rule; returns its id."""
    scales = np.asarray(scales, dtype="<f4")                  # [layers, T]
    params = parameters_json(lengths, training_length, seed)
    with closing(sqlite3.connect(db)) as c:
        (fingerprint,) = c.execute("SELECT m.fingerprint FROM calibration_runs r JOIN models m ON m.id = r.model_id "
                                   "WHERE r.id = ?", (run_id,)).fetchone()
        lengths_blob = struct.pack(f"<{len(lengths)}q", *lengths)
        h = hashlib.sha256()
        for text in (method, params, fingerprint):
            h.update(text.encode() + b"\0")
        for i, row in enumerate(scales):
            h.update(f"layer {i} scales".encode() + b"\0" + lengths_blob + row.tobytes())
        cursor = c.execute(
            "INSERT INTO threshold_tables (run_id, method, parameters_json, training_length, layer_count, length_count, "
            "content_hash, tool_version, schema_version, created_at, row_kind) VALUES (?, ?, ?, ?, ?, ?, ?, 'test', 5, "
            "'2026-12-05T00:00:00.000Z', ?)",
            (run_id, method, params, training_length, len(scales), len(lengths), h.hexdigest(), row_kind))
        table_id = cursor.lastrowid
        c.executemany("INSERT INTO table_scales VALUES (?, ?, ?, ?, ?)",
                      [(table_id, i, len(lengths), lengths_blob, row.tobytes()) for i, row in enumerate(scales)])
        c.commit()
    return table_id, h.hexdigest()


# (model, the store demo_table / zamba2_table calibrated, training length, table lengths, prompt length, its row)
CASES = {"demo": (DEMO_MODEL, "demo_table", 128, [200, 400], 300, 200),
         "zamba2": (ZAMBA2_MODEL, "zamba2_table", 256, [400, 800], 600, 400)}


@pytest.fixture(scope="module")
def scale_stores(request, tmp_path_factory):
    """{case: (store copy with a delta_scale and an a_power table, {method: table id}, prompt)}."""
    out = {}
    for name, (model, fixture, L, lengths, S, _) in CASES.items():
        source = os.path.join(os.path.dirname(request.getfixturevalue(fixture)), "cal.sqlite")
        db = str(tmp_path_factory.mktemp(f"scales-{name}") / "cal.sqlite")
        shutil.copy(source, db)
        run_longmamba("migrate", "--db", db)          # a store of an older tool: v5 first
        layers = json.load(open(os.path.join(model, "config.json")))["num_hidden_layers"]
        rng = np.random.default_rng(11)
        ids = {}
        for method in lmt.SCALE_METHODS:
            # Every layer scaled at the prompt's row; the other row far off (a wrong row shows).
            scales = np.stack([rng.uniform(0.4, 2.5, layers), np.full(layers, 7.0)], axis=1)
            ids[method] = write_scale_table(db, method, lengths, scales, L)[0]
        vocab = 2000 if name == "zamba2" else 2048
        out[name] = (db, ids, np.random.default_rng(5).integers(0, vocab, S))
    return out


def test_a_hand_written_scale_table_reads_with_its_hash_verified(scale_stores):
    db, ids, _ = scale_stores["demo"]
    with lmt.open(db) as store:
        for method, table_id in ids.items():
            t = store.table(table_id)
            assert isinstance(t, lmt.ScaleTable) and t.method == method and t.training_length == 128
            assert t.lengths.tolist() == [200, 400] and t.scales.shape == (4, 2) and t.scales.dtype == np.float32
            assert t.row(300).length == 200 and t.row(301).length == 400 and t.row(10 ** 5).beyond_last_length
            assert t.row(300).scales.tolist() == t.scales[:, 0].tolist()
        infos = {i.id: i for i in store.tables()}
        assert infos[ids["a_power"]].row_kind == "per_layer" and infos[ids["a_power"]].lengths == (200, 400)
        assert infos[1].row_kind == "per_channel" and infos[1].method == "longmamba"
        assert isinstance(store.table(1), lmt.Table)
        assert store.check() == []
    assert lmt.check(db) == []


@pytest.mark.parametrize("case", list(CASES))
def test_scaled_transformers_logits_equal_the_swift_runner(scale_stores, tmp_path, case):
    model_dir, _, L, _, S, row = CASES[case]
    db, ids, prompt = scale_stores[case]
    write_tokens(tmp_path / "prompt.tokens", prompt)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    x = torch.tensor(prompt, dtype=torch.long)[None]
    with torch.no_grad():
        vanilla = model(x).logits[0].numpy()
        vanilla_short = model(x[:, :S // 2]).logits[0].numpy()
    for method, table_id in ids.items():
        out = tmp_path / f"{method}.safetensors"
        run_longmamba("record", "--model", model_dir, "--tokens", tmp_path / "prompt.tokens", "--out", out, "--logits",
                      "--db", db, "--table", table_id)
        swift, _ = read_logits(out)
        table = lmt.open(db).table(table_id)
        with torch.no_grad():
            with lmt.apply_longmamba(model, table, fingerprint=lmt.fingerprint(model_dir)) as handle:
                scaled = model(x).logits[0].numpy()
                short = model(x[:, :S // 2]).logits[0].numpy()       # below the filter start: vanilla
            after = model(x).logits[0].numpy()
        reference = swift[:, :scaled.shape[1]]
        error = np.abs(scaled - reference).max() / np.abs(reference).max()
        print(f"{case} {method}: row {handle.last_row.length}, relative error {error:.2e}")
        assert error <= 1e-4, (case, method, error)
        assert handle.last_row.length == row
        assert np.abs(scaled - vanilla).max() > 1e-3, (case, method, "the scales changed nothing")
        assert np.array_equal(after, vanilla), "remove() restores the model"
        assert np.array_equal(short, vanilla_short)


def test_decode_steps_use_the_models_own_delta_and_A(scale_stores):
    db, ids, prompt = scale_stores["demo"]
    model = transformers.AutoModelForCausalLM.from_pretrained(DEMO_MODEL, dtype=torch.float32).eval()
    x = torch.tensor(prompt, dtype=torch.long)[None]
    for method, table_id in ids.items():
        table = lmt.open(db).table(table_id)
        with torch.no_grad(), lmt.apply_longmamba(model, table):
            out = model(x, use_cache=True)
            step = model(x[:, -1:], cache=out.cache, use_cache=True).logits[0, -1]
        with torch.no_grad(), lmt.apply_longmamba(model, table):
            out2 = model(x, use_cache=True)
        # The same prefill state, then a vanilla decode step: what the patched decode gave.
        with torch.no_grad():
            vanilla_step = model(x[:, -1:], cache=out2.cache, use_cache=True).logits[0, -1]
        assert torch.equal(step, vanilla_step), method


def test_beyond_the_largest_length_is_refused_unless_allowed(scale_stores):
    db, ids, prompt = scale_stores["demo"]
    model = transformers.AutoModelForCausalLM.from_pretrained(DEMO_MODEL, dtype=torch.float32).eval()
    table = lmt.open(db).table(ids["delta_scale"])
    long = torch.tensor(np.tile(prompt, 2)[:500], dtype=torch.long)[None]
    with torch.no_grad():
        with lmt.apply_longmamba(model, table):
            with pytest.raises(lmt.LongMambaTableError, match="length 500 is beyond the scale table's largest "
                                                              "calibrated length 400"):
                model(long)
        with lmt.apply_longmamba(model, table, allow_beyond_table=True) as handle:
            model(long)
        assert handle.last_row.length == 400
    with pytest.raises(lmt.ModelMismatchError):
        lmt.apply_scales(model, table, fingerprint="f" * 64)


def _snapshot(db):
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return [c.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall()
                for t in ("threshold_tables", "table_scales", "table_layers")]


def test_an_unknown_method_is_refused_by_name_and_the_rest_of_the_store_reads(scale_stores, tmp_path):
    db = str(tmp_path / "cal.sqlite")
    shutil.copy(scale_stores["demo"][0], db)
    newer, _ = write_scale_table(db, "time_warp", [200], np.ones((4, 1)), 128)
    odd_kind, _ = write_scale_table(db, "delta_scale", [200], np.ones((4, 1)), 128, seed=1, row_kind="per_token")
    before = open(db, "rb").read()
    with lmt.open(db) as store:
        with pytest.raises(lmt.UnknownMethodError) as e:
            store.table(newer)
        assert str(e.value) == (f"{db}: table {newer} has the method 'time_warp' (per_layer rows), which this tool does "
                                f"not know; written by a newer tool? Upgrade longmamba to use it; it was left in the store.")
        with pytest.raises(lmt.UnknownMethodError, match=f"table {odd_kind} has the method 'delta_scale' \\(per_token "
                                                         f"rows\\), which this tool does not know"):
            store.table(odd_kind)
        listed = {i.id: i for i in store.tables()}
        assert listed[newer].method == "time_warp" and "written by a newer tool?" in listed[newer].problem
        assert listed[1].problem is None and isinstance(store.table(1), lmt.Table)
        assert all(isinstance(store.table(i), lmt.ScaleTable) for i in scale_stores["demo"][1].values())
        problems = store.check()
        assert problems == [str(e.value), str(store_error(store, odd_kind))]
    assert open(db, "rb").read() == before
    # The CLI refuses them in the same words, and so does an evaluation.
    import subprocess
    from conftest import longmamba_binary
    write_tokens(tmp_path / "prompt.tokens", scale_stores["demo"][2])
    cli = subprocess.run([longmamba_binary(), "record", "--model", DEMO_MODEL, "--tokens", tmp_path / "prompt.tokens", "--out",
                          str(tmp_path / "x.safetensors"), "--db", db, "--table", str(newer)], capture_output=True, text=True)
    assert cli.returncode != 0 and str(e.value) in cli.stderr, cli.stderr
    assert open(db, "rb").read() == before


def store_error(store, table_id):
    try:
        store.table(table_id)
    except lmt.LongMambaTableError as e:
        return e


def test_an_altered_scale_is_caught_by_the_content_hash(scale_stores, tmp_path):
    db = str(tmp_path / "cal.sqlite")
    shutil.copy(scale_stores["demo"][0], db)
    table_id = scale_stores["demo"][1]["a_power"]
    with closing(sqlite3.connect(db)) as c:
        c.execute("DROP TRIGGER table_scales_are_immutable")
        blob = bytearray(c.execute("SELECT scales_f32 FROM table_scales WHERE table_id = ? AND layer_index = 2",
                                   (table_id,)).fetchone()[0])
        blob[0] ^= 1
        c.execute("UPDATE table_scales SET scales_f32 = ? WHERE table_id = ? AND layer_index = 2", (bytes(blob), table_id))
        c.commit()
    with lmt.open(db) as store:
        with pytest.raises(lmt.LongMambaTableError, match="the store was altered after the table was written"):
            store.table(table_id)
        assert len(store.check()) == 1


def test_a_v4_store_still_opens(scale_stores, tmp_path):
    """The store as schema 4 had it (no row_kind, no scale tables): read as before."""
    db = str(tmp_path / "v4.sqlite")
    with closing(sqlite3.connect(os.path.join(os.path.dirname(scale_stores["demo"][0]), "cal.sqlite"))) as src, \
            closing(sqlite3.connect(db)) as dst:
        src.backup(dst)
        for t in ("table_scales", "scale_steps", "scale_jobs"):
            dst.execute(f"DROP TABLE {t}")
        dst.executescript("DROP TRIGGER threshold_tables_are_never_deleted; "
                          "DELETE FROM threshold_tables WHERE row_kind = 'per_layer'; "
                          "ALTER TABLE threshold_tables DROP COLUMN row_kind; PRAGMA user_version = 4;")
    with lmt.open(db) as store:
        assert [i.id for i in store.tables()] == [1] and store.tables()[0].row_kind == "per_channel"
        assert store.table(1).lookup(300).length == 320
        assert store.check() == []


def cli_json(*args):
    out = run_longmamba("eval", "--json", "-", "--quiet", *args)
    return json.loads(out[:out.rindex("}") + 1])


def close(a, b, path=""):
    """The CLI's JSON and ours: the same keys and values, floats to 1e-5 relative."""
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), (path, sorted(a), sorted(b))
        for k in a:
            close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_perplexity_and_passkey_with_a_scale_table_are_the_clis(scale_stores):
    from conftest import ROOT
    db, ids, _ = scale_stores["demo"]
    text = os.path.join(ROOT, "Fixtures", "demo-corpus", "eval.txt")
    tokenizer = os.path.join(DEMO_MODEL, "tokenizer.json")
    model = transformers.AutoModelForCausalLM.from_pretrained(DEMO_MODEL, dtype=torch.float32)
    fingerprint = lmt.fingerprint(DEMO_MODEL)
    for method, table_id in ids.items():
        table = lmt.open(db).table(table_id)
        common = ["--model", DEMO_MODEL, "--db", db, "--table", table_id]
        swift = cli_json(*common, "--text", text, "--lengths", "150,300", "--windows", "2", "--by-position", "100")
        ours = lmt.perplexity(model, tokenizer, table, text=text, lengths=[150, 300], windows=2, by_position=100,
                              fingerprint=fingerprint, model_name=DEMO_MODEL)
        mine = json.loads(ours.to_json())
        assert mine.pop("table").endswith(f"#{table_id}") and swift.pop("table").endswith(f"#{table_id}")
        mine["text"] = swift["text"]
        close(swift, mine)
        assert mine["points"][1]["long_mamba_perplexity"] != mine["points"][1]["vanilla_perplexity"]
        swift = cli_json(*common, "--task", "passkey", "--lengths", "250", "--trials", "2", "--depths", "0,0.5,1")
        ours = lmt.passkey(model, tokenizer, table, lengths=[250], trials=2, depths=[0, 0.5, 1], fingerprint=fingerprint,
                           model_name=DEMO_MODEL)
        mine = json.loads(ours.to_json())
        for d in (swift, mine):
            d.pop("table"), d.pop("prompts_per_second")
        close(swift, mine)


def test_a_filter_method_or_a_longer_prompt_is_refused_with_a_scale_table(scale_stores):
    import subprocess
    from conftest import longmamba_binary
    db, ids, _ = scale_stores["demo"]
    model = transformers.AutoModelForCausalLM.from_pretrained(DEMO_MODEL, dtype=torch.float32)
    table = lmt.open(db).table(ids["a_power"])
    tokenizer = os.path.join(DEMO_MODEL, "tokenizer.json")
    with pytest.raises(lmt.EvaluationError) as e:
        lmt.passkey(model, tokenizer, table, lengths=[250], trials=1, method="alpha")
    cli = subprocess.run([longmamba_binary(), "eval", "--model", DEMO_MODEL, "--db", db, "--table", str(ids["a_power"]),
                          "--task", "passkey", "--lengths", "250", "--trials", "1", "--method", "alpha"],
                         capture_output=True, text=True)
    assert cli.returncode != 0 and str(e.value) in cli.stderr, (str(e.value), cli.stderr)
    with pytest.raises(lmt.EvaluationError, match=r"length 500 is beyond the scale table's largest calibrated length "
                                                  r"400; calibrate it with `longmamba calibrate-scales --lengths …,500`"):
        lmt.passkey(model, tokenizer, table, lengths=[500], trials=1)
    assert lmt.passkey(model, tokenizer, table, lengths=[500], trials=1, depths=[0],
                       allow_beyond_table=True).points[0].tabulated_length == 400


def _points(db):
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return sorted(c.execute("SELECT point_key, evaluation_key, table_id, theta, task, length, metric, value, "
                                "detail_json, text_hash, backend FROM evaluations").fetchall())


def test_tune_with_scale_methods_is_the_clis(scale_stores, tmp_path):
    """`tune --method delta_scale,a_power`: every scale table of the run, no θ; the same ranking,
    keys, θ NULL and details as `longmamba tune`, and each side reuses the other's points."""
    import subprocess
    import sys
    from conftest import ROOT, longmamba_binary
    db, ids, _ = scale_stores["demo"]
    cli_db, py_db = (shutil.copy(db, tmp_path / f"{n}.sqlite") for n in ("cli", "py"))
    text = os.path.join(ROOT, "Fixtures", "demo-corpus", "eval.txt")
    args = ["--run", "1", "--model", DEMO_MODEL, "--method", "delta_scale,a_power", "--lengths", "150,300", "--text",
            text, "--windows", "2", "--clamp", "0.1"]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(lmt.__file__))),
               OMP_NUM_THREADS="1")
    cli = subprocess.run([longmamba_binary(), "tune", "--db", str(cli_db), *args], capture_output=True, text=True)
    py = subprocess.run([sys.executable, "-m", "longmamba_tables", "tune", "--db", str(py_db), *args], capture_output=True,
                        text=True, env=env)
    assert cli.returncode == 0, cli.stderr
    assert py.returncode == 0, py.stderr
    print(cli.stdout)
    same_ranking(py.stdout, cli.stdout)
    assert "best: table " in py.stdout and "per-layer scales" in py.stdout
    swift_points, python_points = _points(cli_db), _points(py_db)
    assert len(python_points) == 2 + 2 * len(ids)
    for s, p in zip(swift_points, python_points):
        assert s[:7] == p[:7] and s[8:10] == p[8:10], (s, p)     # keys, table, θ, task, length, metric, detail
        assert p[7] == pytest.approx(s[7], rel=1e-5) and (s[10], p[10]) == ("swift", "torch")
    assert {p[3] for p in python_points} == {None}
    assert any(p[8].endswith(',"method":"delta_scale"}') and '"tabulated_length":200' in p[8] for p in python_points)
    assert any(p[8] == '{"filtered":false,"method":"a_power"}' for p in python_points)
    # Each side reuses the other's points.
    again = subprocess.run([longmamba_binary(), "tune", "--db", str(py_db), *args], capture_output=True, text=True)
    assert again.returncode == 0 and "0 points evaluated" in again.stderr, again.stderr
    best = subprocess.run([sys.executable, "-m", "longmamba_tables", "tune", "--db", str(cli_db), *args, "--best"],
                          capture_output=True, text=True, env=env)
    cli_best = subprocess.run([longmamba_binary(), "tune", "--db", str(cli_db), *args, "--best"], capture_output=True,
                              text=True)
    assert best.stdout == cli_best.stdout and best.stdout.split()[1] == "-", (best.stdout, cli_best.stdout)


def cli_exports_scales(db, table_id, path):
    import subprocess
    from conftest import longmamba_binary
    done = subprocess.run([longmamba_binary(), "export", "--db", db, "--table", str(table_id), "--format",
                           "safetensors", "--out", str(path)], capture_output=True, text=True)
    return done.returncode == 0


def test_an_exported_scale_table_reads_as_the_stored_one(scale_stores, tmp_path):
    db, ids, prompt = scale_stores["demo"]
    for method, table_id in ids.items():
        path = tmp_path / f"{method}.safetensors"
        if not cli_exports_scales(db, table_id, path):
            pytest.skip("the longmamba binary cannot export a scale table yet: rebuild the tool")
        exported, stored = lmt.load_export(str(path)), lmt.open(db).table(table_id)
        assert isinstance(exported, lmt.ScaleTable) and exported.method == method
        assert exported.lengths.tolist() == stored.lengths.tolist()
        assert np.array_equal(exported.scales, stored.scales)
        assert exported.training_length == 128 and exported.fingerprint == stored.fingerprint
        assert exported.content_hash == stored.content_hash
        assert exported.metadata.get("row_kind") == "per_layer"
        json_path = tmp_path / f"{method}.json"
        run_longmamba("export", "--db", db, "--table", table_id, "--format", "json", "--out", json_path)
        from_json = lmt.load_export(str(json_path))
        assert np.array_equal(from_json.scales, stored.scales) and from_json.method == method
        assert from_json.content_hash == stored.content_hash and from_json.training_length == 128


@pytest.mark.parametrize("name", ["mamba-tiny-hf", "falcon_mamba-tiny-hf"])
def test_scaled_mamba1_logits_equal_the_swift_runner(tables, tmp_path, name):
    """Mamba-1 and Falcon-Mamba (Δ per d_inner channel, A [C, N]): both methods against `record --logits`."""
    from conftest import MODELS
    source, _, prompt = tables[name]
    db = str(tmp_path / "cal.sqlite")
    shutil.copy(source, db)
    model_dir = os.path.join(MODELS, name)
    layers = json.load(open(os.path.join(model_dir, "config.json")))["num_hidden_layers"]
    write_tokens(tmp_path / "prompt.tokens", prompt)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    x = torch.tensor(prompt, dtype=torch.long)[None]
    rng = np.random.default_rng(4)
    for method in lmt.SCALE_METHODS:
        scales = np.stack([np.full(layers, 5.0), rng.uniform(0.3, 3.0, layers)], axis=1)   # the prompt's row: 192
        table_id, _ = write_scale_table(db, method, [64, 192], scales, 32)
        out = tmp_path / f"{method}.safetensors"
        run_longmamba("record", "--model", model_dir, "--tokens", tmp_path / "prompt.tokens", "--out", out, "--logits",
                      "--db", db, "--table", table_id)
        reference = read_logits(out)[0]
        with torch.no_grad():
            vanilla = model(x).logits[0].numpy()
            with lmt.apply_longmamba(model, lmt.open(db).table(table_id)) as handle:
                scaled = model(x).logits[0].numpy()
        reference = reference[:, :scaled.shape[1]]
        error = np.abs(scaled - reference).max() / np.abs(reference).max()
        print(f"{name} {method}: row {handle.last_row.length}, relative error {error:.2e}")
        assert handle.last_row.length == 192 and error <= 1e-4, (name, method, error)
        assert np.abs(scaled - vanilla).max() > 1e-3


def test_row_lookup_is_the_clis(scale_stores):
    db, ids, _ = scale_stores["demo"]
    for method, table_id in ids.items():
        table = lmt.open(db).table(table_id)
        for S in (1, 200, 299, 300, 301, 400, 401, 5000):
            cli = json.loads(run_longmamba("lookup", "--db", db, "--table", table_id, "--length", S))
            row = table.row(S)
            assert (cli["method"], cli["length"], cli["tabulated_length"], cli["beyond_table"]) == \
                (method, S, row.length, row.beyond_last_length)
            # The CLI writes each float32 in its shortest decimal: the same float32.
            assert np.array_equal(np.asarray([l["scale"] for l in cli["layers"]], dtype=np.float32), row.scales)
            assert cli["filter_from_default"] == lmt.default_filter_start(table.training_length)


def same_ranking(python_out, cli_out):
    """The same lines, word for word, but a printed value may differ in its last digit (the two
    runners' float32 forwards differ by ~1e-7: 23.8545 can print 23.854 on one side, 23.855 on the
    other)."""
    a, b = python_out.replace("torch cpu", "swift cpu").splitlines(), cli_out.splitlines()
    assert len(a) == len(b), (python_out, cli_out)
    for x, y in zip(a, b):
        wx, wy = x.split(), y.split()
        assert len(wx) == len(wy), (x, y)
        for u, v in zip(wx, wy):
            try:
                assert abs(float(u.rstrip(":")) - float(v.rstrip(":"))) <= 0.0011, (x, y)
            except ValueError:
                assert u == v, (x, y)


def test_tune_halving_and_shards_with_scale_methods_are_the_clis(scale_stores, tmp_path):
    import subprocess
    import sys
    from conftest import ROOT, longmamba_binary
    db, _, _ = scale_stores["demo"]
    text = os.path.join(ROOT, "Fixtures", "demo-corpus", "eval.txt")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(lmt.__file__))),
               OMP_NUM_THREADS="1")
    base = ["--run", "1", "--model", DEMO_MODEL, "--method", "dt_thre,a_power,delta_scale", "--lengths", "150,300",
            "--text", text, "--clamp", "0.1", "--theta", "0.05", "--quiet"]
    for extra in (["--halving", "--windows", "3"], ["--shard", "1/3"]):
        stores = {n: str(shutil.copy(db, tmp_path / f"{n}-{extra[0][2:]}.sqlite")) for n in ("cli", "py")}
        cli = subprocess.run([longmamba_binary(), "tune", "--db", stores["cli"], *base, *extra], capture_output=True,
                             text=True)
        py = subprocess.run([sys.executable, "-m", "longmamba_tables", "tune", "--db", stores["py"], *base, *extra],
                            capture_output=True, text=True, env=env)
        assert cli.returncode == 0 and py.returncode == 0, (cli.stderr, py.stderr)
        same_ranking(py.stdout.replace(stores["py"], "DB"), cli.stdout.replace(stores["cli"], "DB"))
        assert [p[:7] for p in _points(stores["py"])] == [p[:7] for p in _points(stores["cli"])]

"""Evaluation points with the CLI's keys: the keys Python computes equal those of the rows a real
`longmamba tune` wrote (perplexity and passkey, default and custom filter start, filler and
custom haystack); points Python writes are reused by `longmamba tune`, and the reverse; a
Python writer and the CLI writing the same store at once lose nothing; stores of other schemas
are refused untouched."""
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from conftest import MODELS, ROOT, longmamba_binary, run_longmamba
from longmamba_tables.errors import NewerSchemaError, NotAStoreError, UnknownTableError, LongMambaTableError
from longmamba_tables.evaluations import (UNFILTERED_DETAIL, WRITER_SCHEMA, Evaluation, EvaluationWriter, OlderSchemaError,
                                          evaluation_key, passkey_detail, passkey_settings, perplexity_detail,
                                          point_key, read_evaluations, token_ids_hash, tokenizer_hash)
from longmamba_tables.fingerprint import fingerprint
from longmamba_tables.store import SUPPORTED_SCHEMA, Store

MODEL = os.path.join(MODELS, "mamba2-tiny-calib")
TOKENIZER = os.path.join(MODEL, "tokenizer.json")
CORPUS = os.path.join(ROOT, "Fixtures", "corpus", "fixture.jsonl.zst")
V1_STORE = os.path.join(ROOT, "Fixtures", "store", "v1.sqlite")
V4_MIGRATION = "v4: where evaluations were measured"
H100 = "cuda:0 (NVIDIA H100 80GB HBM3)"


# ---- stores ----------------------------------------------------------------------------------------

def user_version(db) -> int:
    with sqlite3.connect(db) as c:
        return c.execute("PRAGMA user_version").fetchone()[0]


def at_schema(db, version):
    """Converts a store between schema 3, 4 and 5 in place, as the CLI's migrations do (or undoes
    them, a step at a time: a schema-3 or 4 store once the binary writes 5)."""
    c = sqlite3.connect(db, isolation_level=None)
    try:
        now = c.execute("PRAGMA user_version").fetchone()[0]
        while now == 5 and version < 5:      # v5 undone: no scale tables, no row_kind
            c.executescript("""BEGIN;
                DROP TABLE table_scales; DROP TABLE scale_steps; DROP TABLE scale_jobs;
                DROP TRIGGER threshold_tables_are_never_deleted;
                DELETE FROM threshold_tables WHERE row_kind != 'per_channel';
                CREATE TRIGGER threshold_tables_are_never_deleted BEFORE DELETE ON threshold_tables
                    BEGIN SELECT RAISE(ABORT, 'threshold tables are immutable'); END;
                ALTER TABLE threshold_tables DROP COLUMN row_kind;
                DELETE FROM grdb_migrations WHERE identifier LIKE 'v5%';
                PRAGMA user_version = 4; COMMIT;""")
            now = 4
        if now == 3 and version == 4:
            c.executescript(f"""BEGIN;
                ALTER TABLE evaluations ADD COLUMN backend TEXT NOT NULL DEFAULT 'swift';
                ALTER TABLE evaluations ADD COLUMN device TEXT NOT NULL DEFAULT 'cpu';
                ALTER TABLE evaluations ADD COLUMN dtype TEXT NOT NULL DEFAULT 'float32';
                INSERT INTO grdb_migrations VALUES ('{V4_MIGRATION}');
                PRAGMA user_version = 4; COMMIT;""")
        elif now == 4 and version == 3:
            c.executescript("""BEGIN;
                ALTER TABLE evaluations DROP COLUMN dtype;
                ALTER TABLE evaluations DROP COLUMN device;
                ALTER TABLE evaluations DROP COLUMN backend;
                DELETE FROM grdb_migrations WHERE identifier LIKE 'v4%';
                PRAGMA user_version = 3; COMMIT;""")
        else:
            assert now == version, f"cannot convert schema {now} to {version}"
        c.execute("PRAGMA journal_mode = DELETE")
    finally:
        c.close()
    return db


def file_state(path):
    """The file's bytes (hashed) and whether a -wal / -shm lies beside it."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return digest, os.path.exists(f"{path}-wal"), os.path.exists(f"{path}-shm")


@pytest.fixture(scope="module")
def cli_schema(tmp_path_factory):
    """The schema the longmamba binary writes (it migrates a copy of the v1 fixture)."""
    db = tmp_path_factory.mktemp("schema") / "v1.sqlite"
    shutil.copy(V1_STORE, db)
    run_longmamba("migrate", "--db", db)
    return user_version(db)


@pytest.fixture
def cli_v4(cli_schema):
    if cli_schema < 4:
        pytest.skip(f"the longmamba binary writes schema {cli_schema}: rebuild it with migration v4")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A store with one complete calibration run of the fixture model (2 samples of 64 tokens, grid
    32…512, tables 1 and 2 at p = 0.05 and 0.2), a perplexity text and a haystack with its token ids."""
    d = tmp_path_factory.mktemp("calibrated")
    db = d / "cal.sqlite"
    run_longmamba("calibrate", "--model", MODEL, "--corpus", CORPUS, "--db", db, "--samples", 2, "--length", 64,
                  "--interval", 32, "--max-length", 512, "--clamp", "0.05,0.2", "--quiet")
    ids = np.random.default_rng(3).integers(0, 2048, 300)
    tokens = d / "text.tokens"
    tokens.write_text(" ".join(map(str, ids)) + "\n")
    haystack = d / "haystack.txt"
    haystack.write_text("In the beginning the hay was dry and the stack was tall. " * 4)
    haystack_ids = [int(t) for t in run_longmamba("tokenize", "--tokenizer", TOKENIZER, "--input", haystack).split()]
    return dict(db=str(db), tokens=str(tokens), ids=ids, haystack=str(haystack), haystack_ids=haystack_ids)


@pytest.fixture
def store(calibrated, tmp_path):
    """A copy of the calibrated store (schema as the binary wrote it)."""
    db = tmp_path / "cal.sqlite"
    shutil.copy(calibrated["db"], db)
    return str(db)


@pytest.fixture
def store_v4(store):
    """A store of the schema the writer writes (the name is older than schema 5)."""
    return at_schema(store, WRITER_SCHEMA)


def rows(db):
    c = sqlite3.connect(db)
    c.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in c.execute("SELECT * FROM evaluations ORDER BY id")]
    finally:
        c.close()


def tune(db, *args):
    done = subprocess.run([longmamba_binary(), "tune", "--db", db, "--run", "1", "--model", MODEL, *map(str, args)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


# ---- keys ------------------------------------------------------------------------------------------

def test_key_rules_by_hand():
    text = "perplexity|fp|th|windows 3|default"
    assert evaluation_key("perplexity", "fp", "th", "windows 3") == hashlib.sha256(text.encode()).hexdigest()
    assert evaluation_key("perplexity", "fp", "th", "windows 3", dtype="float32") == hashlib.sha256(text.encode()).hexdigest()
    assert evaluation_key("perplexity", "fp", "th", "windows 3", 3072, "bfloat16") == hashlib.sha256(
        b"perplexity|fp|th|windows 3|3072|bfloat16").hexdigest()
    assert point_key("k", None, None, 4096, "perplexity") == hashlib.sha256(b"k|vanilla|-|4096|perplexity").hexdigest()
    assert point_key("k", 3, 0.05, 4096, "accuracy") == hashlib.sha256(b"k|3|0.05|4096|accuracy").hexdigest()
    assert point_key("k", 3, 1e-05, 8, "accuracy") == hashlib.sha256(b"k|3|1e-05|8|accuracy").hexdigest()
    assert point_key("k", 3, 1, 8, "accuracy") == hashlib.sha256(b"k|3|1.0|8|accuracy").hexdigest()
    assert passkey_settings([0, 0.25, 0.5], 10, 0) == "depths [0.0, 0.25, 0.5] trials 10 seed 0"
    assert passkey_settings([1e-05, 0.1, 1], 2, 2 ** 64 - 1) == "depths [1e-05, 0.1, 1.0] trials 2 seed 18446744073709551615"
    assert token_ids_hash([1, 2, -1]) == hashlib.sha256(np.array([1, 2, -1], "<i4").tobytes()).hexdigest()
    assert perplexity_detail(3) == '{"windows":3,"kept_share":1.0,"tabulated_length":null}'
    assert passkey_detail([0, 0.5], [1, 0.25], 4) == '{"depths":[0.0, 0.5],"accuracy_by_depth":[1.0, 0.25],"trials":4}'
    with pytest.raises(LongMambaTableError):
        evaluation_key("perplexity", "fp", "th", "windows 3", dtype="float64")
    with pytest.raises(LongMambaTableError):
        Evaluation("ranking", "fp", "th", "windows 1")


def test_the_keys_of_a_cli_tune_are_computed_in_python(calibrated, store):
    """Four real `longmamba tune` runs (perplexity with the default and a given filter start,
    passkey with the filler and with a custom haystack): every row's evaluation key, text hash,
    point key and detail_json is what this package computes."""
    tune(store, "--task", "perplexity", "--tokens", calibrated["tokens"], "--lengths", "64,128,256", "--windows", 2,
         "--theta", "0.05,0.1,1e-05", "--clamp", "0.05,0.2", "--quiet")
    tune(store, "--task", "perplexity", "--tokens", calibrated["tokens"], "--lengths", "128", "--filter-from", 100,
         "--theta", "0.3", "--clamp", "0.05", "--quiet")
    tune(store, "--task", "passkey", "--lengths", "128", "--depths", "0,1e-05,0.5,1", "--trials", 1,
         "--theta", "0.05", "--clamp", "0.05", "--quiet")
    tune(store, "--task", "passkey", "--haystack", calibrated["haystack"], "--lengths", "128,160", "--depths", "0.1,0.9",
         "--trials", 1, "--seed", 7, "--filter-from", 150, "--theta", "0.05", "--clamp", "0.05", "--quiet")
    fp = fingerprint(MODEL)
    ids = calibrated["ids"]
    evaluations = [Evaluation.perplexity(fp, ids, windows=2),
                   Evaluation.perplexity(fp, ids, windows=1, filter_from=100),
                   Evaluation.passkey(fp, TOKENIZER, depths=[0, 1e-05, 0.5, 1], trials=1, seed=0),
                   Evaluation.passkey(fp, TOKENIZER, depths=[0.1, 0.9], trials=1, seed=7,
                                      haystack_ids=calibrated["haystack_ids"], filter_from=150)]
    by_key = {e.key: e for e in evaluations}
    stored = rows(store)
    assert len(stored) == (3 + 2 * 3 * 3) + (1 + 1) + (1 + 1) + (2 + 2)
    assert {r["evaluation_key"] for r in stored} == set(by_key)
    for r in stored:
        e = by_key[r["evaluation_key"]]
        assert r["text_hash"] == e.text_hash and r["task"] == e.task and r["metric"] == e.metric
        assert r["point_key"] == e.point_key(r["table_id"], r["theta"], r["length"])
        assert r["point_key"] == point_key(e.key, r["table_id"], r["theta"], r["length"], e.metric)
        detail = json.loads(r["detail_json"])
        if "filtered" in detail:
            assert r["detail_json"] == UNFILTERED_DETAIL
        elif e.task == "perplexity":
            assert r["detail_json"] == perplexity_detail(detail["windows"], detail["kept_share"], detail["tabulated_length"])
        else:
            assert r["detail_json"] == passkey_detail(detail["depths"], detail["accuracy_by_depth"], detail["trials"])
    # θ = 1e-05 really went into a key as Swift writes it.
    assert any(r["theta"] == 1e-05 for r in stored)
    assert tokenizer_hash(TOKENIZER) == hashlib.sha256(open(TOKENIZER, "rb").read()).hexdigest()
    # The reader gives the same rows: the CLI measured them (swift, cpu, float32).
    points = read_evaluations(store)
    assert [p.point_key for p in points] == [r["point_key"] for r in stored]
    assert {(p.backend, p.device, p.dtype) for p in points} == {("swift", "cpu", "float32")}


# ---- schema ----------------------------------------------------------------------------------------

def test_older_and_newer_stores_are_refused_untouched(store, tmp_path):
    v1 = tmp_path / "v1.sqlite"
    shutil.copy(V1_STORE, v1)
    v4 = tmp_path / "v4.sqlite"
    shutil.copy(store, v4)
    at_schema(str(v4), 4)
    v3 = at_schema(store, 3)
    for path, version in ((str(v1), 1), (v3, 3), (str(v4), 4)):
        before = file_state(path)
        with pytest.raises(OlderSchemaError) as e:
            EvaluationWriter(path)
        assert str(e.value) == (f"{path}: was written by an older longmamba (schema {version}): run "
                                f"`longmamba migrate --db {path}` first")
        assert file_state(path) == before
    newer = tmp_path / "v6.sqlite"
    shutil.copy(v4, newer)
    with sqlite3.connect(newer) as c:
        c.execute("PRAGMA user_version = 6")
    before = file_state(newer)
    with pytest.raises(NewerSchemaError, match="schema version 6; this tool understands up to 5"):
        EvaluationWriter(newer)
    with pytest.raises(NewerSchemaError, match="schema version 6; this tool understands up to 5"):
        Store(str(newer))
    assert file_state(newer) == before
    with pytest.raises(NotAStoreError, match="no such database"):
        EvaluationWriter(tmp_path / "missing.sqlite")
    assert not os.path.exists(tmp_path / "missing.sqlite")


def test_the_reader_accepts_schema_4(store):
    at_schema(store, 4)
    assert SUPPORTED_SCHEMA == 5 and user_version(store) == 4
    with Store(store) as s:
        infos = s.tables()
        assert [i.id for i in infos] == [1, 2]
        assert s.table(2).training_length == 64
        assert s.check() == []


def test_writer_semantics(store_v4, calibrated):
    ev = Evaluation.perplexity(fingerprint(MODEL), calibrated["ids"], windows=1)
    with EvaluationWriter(store_v4, backend="torch", device=H100) as w:
        p = w.add(ev, length=128, value=12.5, detail_json=perplexity_detail(1))
        assert p.inserted and p.value == 12.5 and p.table_id is None and p.theta is None
        assert (p.backend, p.device, p.dtype) == ("torch", H100, "float32")
        assert p.tool_version == "longmamba_tables 0.1.0"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", p.created_at)
        assert p.point_key == ev.point_key(None, None, 128) and p.evaluation_key == ev.key
        again = w.add(ev, length=128, value=99.0)
        assert not again.inserted and again.value == 12.5 and again.id == p.id
        t = w.add(ev, length=128, value=13.0, table_id=1, theta=0.05,
                  detail_json=perplexity_detail(1, kept_share=0.25, tabulated_length=128))
        assert w.point(ev.point_key(1, 0.05, 128)).value == 13.0 and t.detail_json.endswith('"tabulated_length":128}')
        assert w.point(ev.point_key(1, 0.1, 128)) is None
        assert [q.point_key for q in w.points(ev.key)] == [p.point_key, t.point_key]
        with pytest.raises(UnknownTableError, match="no threshold table with id 42"):
            w.add(ev, length=128, value=1.0, table_id=42, theta=0.05)
        with pytest.raises(LongMambaTableError, match="a vanilla point has no θ"):
            w.add(ev, length=128, value=1.0, theta=0.05)
        with EvaluationWriter(store_v4, dtype="bfloat16") as other, \
                pytest.raises(LongMambaTableError, match="keyed for float32 but this writer records points measured in"):
            other.add(ev, length=128, value=1.0)
        with pytest.raises(LongMambaTableError, match="θ must be > 0"):
            w.add(ev, length=128, value=1.0, table_id=1, theta=0)
    # Closed: the file is at rest again (one file, no -wal).
    assert not os.path.exists(store_v4 + "-wal")
    with pytest.raises(LongMambaTableError, match="the evaluation writer is closed"):
        w.point(p.point_key)
    assert len(read_evaluations(store_v4)) == 2


# ---- with the CLI ----------------------------------------------------------------------------------

def test_points_written_by_python_are_reused_by_the_cli_and_the_reverse(cli_v4, calibrated, store):
    fp = fingerprint(MODEL)
    ev = Evaluation.perplexity(fp, calibrated["ids"], windows=1)
    bf16 = Evaluation.perplexity(fp, calibrated["ids"], windows=1, dtype="bfloat16")
    assert ev.key != bf16.key
    with EvaluationWriter(store, device=H100) as w:
        w.add(ev, length=64, value=111.0, detail_json=perplexity_detail(1))
        w.add(ev, length=128, value=222.0, detail_json=perplexity_detail(1))
    with EvaluationWriter(store, device=H100, dtype="bfloat16") as w:
        w.add(bf16, length=256, value=999.0, detail_json=perplexity_detail(1))
    done = tune(store, "--task", "perplexity", "--tokens", calibrated["tokens"], "--lengths", "64,128,256",
                "--theta", "0.05", "--clamp", "0.05")
    # vanilla at 64 and 128 reused; table 1 at 64 (below the filter start 96) reuses vanilla's 111.
    assert re.search(r"\b4 points evaluated\b.*, 2 reused", done.stderr), done.stderr
    vanilla = next(line for line in done.stdout.splitlines() if "vanilla" in line.split())
    assert "111.000" in vanilla and "222.000" in vanilla and "999.000" not in vanilla
    stored = {r["point_key"]: r for r in rows(store)}
    below = stored[ev.point_key(1, 0.05, 64)]
    assert below["value"] == 111.0 and below["detail_json"] == UNFILTERED_DETAIL and below["backend"] == "swift"
    # The CLI's points, read back in Python with the keys Python computes.
    with EvaluationWriter(store) as w:
        p = w.point(ev.point_key(1, 0.05, 256))
        assert (p.backend, p.device, p.dtype, p.tool_version) == ("swift", "cpu", "float32", "0.1.0")
        assert p.value == stored[p.point_key]["value"] and p.value != 999.0
        assert w.point(bf16.point_key(None, None, 256)).value == 999.0
    assert run_longmamba("check", "--db", store) is not None


WRITER_SCRIPT = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from longmamba_tables.evaluations import Evaluation, EvaluationWriter
db, stop, minimum = sys.argv[2], sys.argv[3], int(sys.argv[4])
ev = Evaluation("perplexity", "python-writer", "0" * 64, "windows 1")
written = 0
with EvaluationWriter(db, device="cuda:0 (test)", busy_timeout=30) as w:
    while written < minimum or not os.path.exists(stop):
        assert w.add(ev, length=written + 1, value=float(written)).inserted
        written += 1
        time.sleep(0.002)  # a tight loop would starve the other writer (SQLite's busy wait is not fair)
        if written == 1:
            print("started", flush=True)
print(written, flush=True)
"""


def test_a_python_writer_and_the_cli_writing_at_once_lose_nothing(cli_v4, calibrated, store, tmp_path):
    """A Python process inserting points in a loop while two `longmamba tune` processes write
    theirs into the same store: afterwards every point of both is there and the store checks."""
    import longmamba_tables
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(longmamba_tables.__file__)))
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, package_root, store, str(stop), "200"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cli = []
    try:
        assert writer.stdout.readline().strip() == "started", writer.stderr.read()
        base = [longmamba_binary(), "tune", "--db", store, "--run", "1", "--model", MODEL, "--quiet",
                "--clamp", "0.05,0.2", "--theta", "0.01,0.05,0.1,0.3"]
        cli += [subprocess.Popen(base + ["--task", "perplexity", "--tokens", calibrated["tokens"],
                                        "--lengths", "96,128,160,192,224,256"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
               subprocess.Popen(base + ["--task", "passkey", "--lengths", "128,160", "--depths", "0,1", "--trials", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
        outputs = [p.communicate(timeout=120) for p in cli]
        python_running_throughout = writer.poll() is None
        stop.touch()
        out, err = writer.communicate(timeout=120)
    finally:
        for p in [writer] + cli:
            if p.poll() is None:
                p.kill()
    for p, (_, err_cli) in zip(cli, outputs):
        assert p.returncode == 0, err_cli
    assert writer.returncode == 0, err
    assert python_running_throughout, "the Python writer finished before the CLI: no overlap was tested"
    written = int(out.split()[-1])
    stored = rows(store)
    python_rows = [r for r in stored if r["backend"] == "torch"]
    cli_rows = [r for r in stored if r["backend"] == "swift"]
    assert sorted(r["length"] for r in python_rows) == list(range(1, written + 1))
    assert len(cli_rows) == (6 + 2 * 4 * 6) + (2 + 2 * 4 * 2)
    assert run_longmamba("check", "--db", store) is not None
    with Store(store) as s:
        assert s.check() == []

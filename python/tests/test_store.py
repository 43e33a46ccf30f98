"""The store reader and the lookup rule against the Swift tool's own answers (numpy only)."""
import json
import os
import shutil
import sqlite3
import subprocess

import numpy as np
import pytest

import longmamba_tables as lmt
from conftest import longmamba_binary, run_longmamba


def test_nearest_length_rule_matches_the_cli_boundary_cases():
    grid = [1000, 2000, 3000]
    nearest = lambda s: grid[lmt.nearest_index(s, grid)]  # noqa: E731
    cases = {1: 1000, 1000: 1000, 1499: 1000, 1500: 1000, 1501: 2000, 2499: 2000, 2500: 2000, 2501: 3000,
             3000: 3000, 1_000_000: 3000}
    assert {s: nearest(s) for s in cases} == cases
    with pytest.raises(lmt.LongMambaTableError):
        lmt.nearest_index(5, [])


def test_a_stored_table_equals_its_safetensors_and_json_exports(tables, tmp_path):
    db, table_id, _ = tables["mamba-tiny-hf"]
    stored = lmt.open(db).table(table_id)
    run_longmamba("export", "--db", db, "--table", table_id, "--format", "safetensors", "--out", tmp_path / "t.safetensors")
    run_longmamba("export", "--db", db, "--table", table_id, "--format", "json", "--out", tmp_path / "t.json")
    for exported in (lmt.load_export(str(tmp_path / "t.safetensors")), lmt.load_export(str(tmp_path / "t.json"))):
        assert np.array_equal(exported.lengths, stored.lengths)
        assert exported.training_length == stored.training_length == 32
        assert exported.fingerprint == stored.fingerprint and exported.content_hash == stored.content_hash
        for a, b in zip(exported.layers, stored.layers):
            for field in ("delta_threshold", "kept_fraction", "decay_budget", "cumulative_decay", "A"):
                assert np.array_equal(getattr(a, field), getattr(b, field)), field


def test_tables_lists_what_the_cli_lists(tables):
    db, table_id, _ = tables["mamba2-tiny-hf"]
    infos = lmt.open(db).tables()
    assert [t.id for t in infos] == [table_id]
    assert infos[0].architecture == "mamba2" and infos[0].training_length == 32 and infos[0].aggregation == "max"
    assert abs(infos[0].clamp_fraction - 0.2) < 1e-12


@pytest.mark.parametrize("length", [1, 32, 40, 48, 56, 100, 256, 10_000])
def test_lookup_equals_the_cli_lookup(tables, length):
    db, table_id, _ = tables["mamba2-tiny-hf"]
    table = lmt.open(db).table(table_id)
    theta = float(np.median(np.concatenate([l.cumulative_decay for l in table.layers])))
    cli = json.loads(run_longmamba("lookup", "--db", db, "--table", table_id, "--length", length, "--theta", repr(theta)))
    row = table.lookup(length, theta=theta)
    assert row.length == cli["length"] and row.beyond_last_length == cli["beyond_last_length"]
    assert row.rounding == cli["rounding"]
    for ours, theirs in zip(row.layers, cli["layers"]):
        assert np.array_equal(ours.delta_threshold, np.asarray(theirs["delta_threshold"], dtype=np.float32))
        assert ours.global_channel.tolist() == theirs["global_channel"]


def cli_error(*args):
    done = subprocess.run([longmamba_binary(), *map(str, args)], capture_output=True, text=True)
    assert done.returncode != 0
    return done.stderr


def test_a_newer_schema_is_refused_with_the_cli_message_and_left_unmodified(tables, tmp_path):
    db, _, _ = tables["mamba-tiny-hf"]
    newer = tmp_path / "newer.sqlite"
    shutil.copy(db, newer)
    with sqlite3.connect(newer) as c:
        c.execute("PRAGMA user_version = 7")
    before = newer.read_bytes()
    with pytest.raises(lmt.NewerSchemaError) as e:
        lmt.open(str(newer))
    assert "schema version 7; this tool understands up to 5" in str(e.value)
    assert str(e.value) in cli_error("tables", "--db", newer)
    assert newer.read_bytes() == before


def test_files_that_are_not_stores_are_refused_by_name(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(lmt.NotAStoreError, match="junk.sqlite: not a longmamba SQLite database"):
        lmt.open(str(junk))
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE t (x)")
    with pytest.raises(lmt.NotAStoreError, match="other.sqlite: not a longmamba SQLite database"):
        lmt.open(str(other))
    with pytest.raises(lmt.NotAStoreError, match="missing.sqlite"):
        lmt.open(str(tmp_path / "missing.sqlite"))


def test_unknown_table_and_bad_theta_are_refused_with_the_cli_wording(tables):
    db, table_id, _ = tables["mamba-tiny-hf"]
    store = lmt.open(db)
    with pytest.raises(lmt.UnknownTableError) as e:
        store.table(99)
    assert str(e.value) == f"{db}: no threshold table with id 99 (list them with `longmamba tables --db {db}`)"
    with pytest.raises(lmt.LongMambaTableError, match=r"θ must be > 0, got 0.0"):
        store.table(table_id).lookup(100, theta=0)


def test_an_export_that_is_not_a_table_is_refused(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}   ")
    with pytest.raises(lmt.LongMambaTableError, match="x.safetensors"):
        lmt.load_export(str(bad))
    notjson = tmp_path / "x.json"
    notjson.write_text('{"format": "something else"}')
    with pytest.raises(lmt.LongMambaTableError, match="not a longmamba JSON table"):
        lmt.load_export(str(notjson))


def test_a_schema_one_database_reads_as_the_cli_reads_it_after_migrating(tmp_path):
    """Fixtures/store/v1.sqlite (written by the schema-v1 tool) reads unmigrated; after
    `longmamba migrate` the same tables come back with the run's calibration key."""
    fixture = os.path.join(os.path.dirname(__file__), "..", "..", "Fixtures", "store", "v1.sqlite")
    v1 = tmp_path / "v1.sqlite"
    shutil.copy(fixture, v1)
    with lmt.open(str(v1)) as store:
        before = store.table(1)
    assert before.metadata["recorded_length"] == "256" and before.metadata["calibration_key"] == ""
    subprocess.run([longmamba_binary(), "migrate", "--db", str(v1)], check=True, capture_output=True)
    with lmt.open(str(v1)) as store:
        after = store.table(1)
        assert [t.content_hash for t in store.tables()] == [before.metadata["content_hash"], store.table(2).metadata["content_hash"]]
    assert after.metadata["recorded_length"] == "256" and len(after.metadata["calibration_key"]) == 64
    assert np.array_equal(after.lengths, before.lengths)
    for a, b in zip(after.layers, before.layers):
        assert np.array_equal(a.delta_threshold, b.delta_threshold) and np.array_equal(a.cumulative_decay, b.cumulative_decay)

"""A store altered outside the tool (its immutability triggers dropped, rows rewritten with
sqlite3) never makes the reader crash or answer from inconsistent rows: every alteration raises
LongMambaTableError naming the table, the layer and the column, and `check()` reports it."""
import os
import shutil
import sqlite3
import struct
from contextlib import closing
from types import SimpleNamespace

import numpy as np
import pytest

import longmamba_tables as lmt
from conftest import PROMPT_LENGTH

V1_FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "Fixtures", "store", "v1.sqlite")
TRIGGERS = ["threshold_tables_are_immutable", "threshold_tables_are_never_deleted",
            "table_layers_are_immutable", "table_layers_are_never_deleted"]


# ---- altering a copy -----------------------------------------------------------------------------

def describe(db, table_id):
    """What the unaltered table holds, for the expected messages."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        T, layers, interval, max_length = c.execute(
            "SELECT length_count, layer_count, interval_tokens, max_length FROM threshold_tables WHERE id = ?",
            (table_id,)).fetchone()
        C, shape = c.execute("SELECT channel_count, a_shape_json FROM table_layers WHERE table_id = ? AND layer_index = 0",
                             (table_id,)).fetchone()
    return SimpleNamespace(id=table_id, T=T, C=C, layers=layers, interval=interval, max_length=max_length, shape=shape)


def altered_copy(db, path, alter):
    """A copy of the store with the triggers dropped and `alter(connection)` applied; returns alter's result."""
    with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(path)) as dst:
        src.backup(dst)
        for trigger in TRIGGERS:
            dst.execute(f"DROP TRIGGER {trigger}")
        result = alter(dst)
        dst.commit()
    return result


def get(con, column, table_id, layer):
    return con.execute(f"SELECT {column} FROM table_layers WHERE table_id = ? AND layer_index = ?",
                       (table_id, layer)).fetchone()[0]


def put(con, column, value, table_id, layer):
    con.execute(f"UPDATE table_layers SET {column} = ? WHERE table_id = ? AND layer_index = ?", (value, table_id, layer))


def set_float(con, column, index, value, table_id, layer):
    a = np.frombuffer(get(con, column, table_id, layer), dtype="<f4").copy()
    a[index] = value
    put(con, column, a.tobytes(), table_id, layer)


def set_table(con, column, value, table_id):
    con.execute(f"UPDATE threshold_tables SET {column} = ? WHERE id = ?", (value, table_id))


# ---- the alterations: each applies itself and returns the parts its message must name ------------

CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


@case
def truncated_thresholds(con, s):
    put(con, "delta_thresholds_f32", get(con, "delta_thresholds_f32", s.id, 0)[:100], s.id, 0)
    return [f"table {s.id} layer 0: delta_thresholds_f32 holds 100 bytes, expected {4 * s.T * s.C} "
            f"(T={s.T} × C={s.C} × 4)"]


@case
def truncated_lengths(con, s):
    put(con, "lengths_i64", get(con, "lengths_i64", s.id, 1)[:-8], s.id, 1)
    return [f"table {s.id} layer 1: lengths_i64 holds {8 * s.T - 8} bytes, expected {8 * s.T} (T={s.T} × 8)"]


@case
def extended_cumulative_decays(con, s):
    put(con, "cumulative_decays_f32", get(con, "cumulative_decays_f32", s.id, 1) + b"\0\0\0\0", s.id, 1)
    return [f"table {s.id} layer 1: cumulative_decays_f32 holds {4 * s.C + 4} bytes, expected {4 * s.C} (C={s.C} × 4)"]


@case
def extended_a_values(con, s):
    put(con, "a_values_f32", get(con, "a_values_f32", s.id, 0) + b"\0" * 4, s.id, 0)
    return [f"table {s.id} layer 0: a_values_f32 holds", "expected", "a_shape"]


@case
def one_threshold_flipped(con, s):
    """One bit of one τ > 0: sizes and ranges intact, so only the content hash tells."""
    tau = np.frombuffer(get(con, "delta_thresholds_f32", s.id, 0), dtype="<f4").copy()
    k = int(np.flatnonzero(tau > 0)[0])
    tau.view(np.uint32)[k] ^= 1
    put(con, "delta_thresholds_f32", tau.tobytes(), s.id, 0)
    return [f"table {s.id}: content_hash", "does not match its rows", "the store was altered after the table was written"]


@case
def one_kept_fraction_changed(con, s):
    alpha = np.frombuffer(get(con, "kept_fractions_f32", s.id, 1), dtype="<f4")
    set_float(con, "kept_fractions_f32", alpha.size - 1, alpha[-1] / 2, s.id, 1)
    return [f"table {s.id}: content_hash", "the store was altered after the table was written"]


@case
def content_hash_rewritten(con, s):
    set_table(con, "content_hash", "0" * 64, s.id)
    return [f"table {s.id}: content_hash 000000000000… does not match its rows", "altered after the table was written"]


@case
def table_length_count_changed(con, s):
    set_table(con, "length_count", s.T + 1, s.id)
    return [f"table {s.id}: length_count is {s.T + 1}, expected {s.T} (interval {s.interval} up to max_length {s.max_length})"]


@case
def layer_length_count_changed(con, s):
    put(con, "length_count", s.T - 1, s.id, 1)
    return [f"table {s.id} layer 1: length_count is {s.T - 1}, the table's length_count is {s.T}"]


@case
def channel_count_changed(con, s):
    put(con, "channel_count", s.C + 1, s.id, 0)
    return [f"table {s.id} layer 0: a_shape_json is {s.shape}, its first dimension should be channel_count {s.C + 1}"]


@case
def channel_count_and_shape_changed(con, s):
    """channel_count and A's shape agree, the blobs still hold the old C."""
    C = s.C // 2
    put(con, "channel_count", C, s.id, 1)
    shape = [C] + [int(d) for d in s.shape.strip("[]").split(",")[1:]]
    put(con, "a_shape_json", "[" + ",".join(map(str, shape)) + "]", s.id, 1)
    return [f"table {s.id} layer 1: delta_thresholds_f32 holds {4 * s.T * s.C} bytes, expected {4 * s.T * C} "
            f"(T={s.T} × C={C} × 4)"]


@case
def lengths_reordered(con, s):
    lengths = list(struct.unpack(f"<{s.T}q", get(con, "lengths_i64", s.id, 0)))
    lengths[0], lengths[1] = lengths[1], lengths[0]
    put(con, "lengths_i64", struct.pack(f"<{s.T}q", *lengths), s.id, 0)
    return [f"table {s.id} layer 0: lengths_i64 is not strictly increasing "
            f"(lengths[1] = {s.interval} after {2 * s.interval})"]


@case
def lengths_off_the_grid(con, s):
    """Increasing, the same in every layer, but not the grid the parameters say."""
    lengths = [2 * s.interval * (t + 1) for t in range(s.T)]
    for layer in range(s.layers):
        put(con, "lengths_i64", struct.pack(f"<{s.T}q", *lengths), s.id, layer)
    return [f"table {s.id} layer 0: lengths_i64[0] is {2 * s.interval}, expected {s.interval} "
            f"(the table's grid: interval {s.interval} up to max_length {s.max_length})"]


@case
def threshold_nan(con, s):
    set_float(con, "delta_thresholds_f32", 2 * s.C + 5, np.nan, s.id, 1)
    return [f"table {s.id} layer 1: delta_thresholds_f32 holds nan at length {3 * s.interval} (row 2) channel 5",
            "expected finite thresholds ≥ 0"]


@case
def threshold_negative(con, s):
    set_float(con, "delta_thresholds_f32", 3, -0.5, s.id, 0)
    return [f"table {s.id} layer 0: delta_thresholds_f32 holds -0.5 at length {s.interval} (row 0) channel 3"]


@case
def threshold_infinite(con, s):
    set_float(con, "delta_thresholds_f32", (s.T - 1) * s.C, np.inf, s.id, 0)
    return [f"table {s.id} layer 0: delta_thresholds_f32 holds inf at length {s.T * s.interval}"]


@case
def kept_fraction_zero(con, s):
    set_float(con, "kept_fractions_f32", 0, 0.0, s.id, 0)
    return [f"table {s.id} layer 0: kept_fractions_f32 holds 0.0", "expected kept fractions in (0, 1]"]


@case
def cumulative_decay_above_one(con, s):
    set_float(con, "cumulative_decays_f32", 1, 1.5, s.id, 1)
    return [f"table {s.id} layer 1: cumulative_decays_f32 holds 1.5 at channel 1", "expected cumulative decays in [0, 1]"]


@case
def decay_budget_negative(con, s):
    set_float(con, "decay_budgets_f32", 0, -2.0, s.id, 0)
    return [f"table {s.id} layer 0: decay_budgets_f32 holds -2.0 at channel 0", "expected finite decay budgets ≥ 0"]


@case
def parameters_garbled(con, s):
    set_table(con, "parameters_json", '{"aggregation":"max","clamp_fr', s.id)
    return [f"table {s.id}: parameters_json is", "expected a JSON object with aggregation, clamp_fraction"]


@case
def parameters_without_a_key(con, s):
    set_table(con, "parameters_json", '{"aggregation":"max","clamp_fraction":0.2,"interval":16,"max_length":256}', s.id)
    return [f"table {s.id}: parameters_json has no training_length"]


@case
def parameters_disagree_with_columns(con, s):
    set_table(con, "interval_tokens", 2 * s.interval, s.id)
    return [f"table {s.id}: interval_tokens is {2 * s.interval}, parameters_json says {s.interval}"]


@case
def a_shape_garbled(con, s):
    put(con, "a_shape_json", "[8,", s.id, 1)
    return [f"table {s.id} layer 1: a_shape_json is '[8,', expected a JSON list of positive integers"]


@case
def blob_replaced_by_text(con, s):
    put(con, "decay_budgets_f32", "abc", s.id, 0)
    return [f"table {s.id} layer 0: decay_budgets_f32 is the text 'abc', expected a blob"]


@case
def layer_deleted(con, s):
    con.execute("DELETE FROM table_layers WHERE table_id = ? AND layer_index = 1", (s.id,))
    return [f"table {s.id}: layer 1 is missing from table_layers (layer_count is {s.layers}, {s.layers - 1} stored)"]


@case
def layer_added(con, s):
    con.execute("INSERT INTO table_layers SELECT table_id, ?, channel_count, length_count, lengths_i64, "
                "delta_thresholds_f32, kept_fractions_f32, decay_budgets_f32, cumulative_decays_f32, a_values_f32, "
                "a_shape_json FROM table_layers WHERE table_id = ? AND layer_index = 0", (s.layers, s.id))
    return [f"table {s.id} layer {s.layers}: layer_index {s.layers} is beyond the table's layer_count {s.layers}"]


@case
def unknown_method(con, s):
    set_table(con, "method", "longmamba-v9", s.id)
    return [f"table {s.id} has the method 'longmamba-v9' (per_channel rows), which this tool does not know; written by "
            f"a newer tool?"]


@case
def run_gone(con, s):
    set_table(con, "run_id", 999, s.id)
    return [f"table {s.id}: run_id 999 names no row of calibration_runs"]


# ---- the tests -----------------------------------------------------------------------------------

def refused(db, table_id):
    """The error table(id) + lookup raise; it must be LongMambaTableError itself (or, for a method
    it does not know, its UnknownMethodError), nothing else."""
    with lmt.open(db) as store:
        with pytest.raises(lmt.LongMambaTableError) as e:
            store.table(table_id).lookup(PROMPT_LENGTH)
    assert type(e.value) in (lmt.LongMambaTableError, lmt.UnknownMethodError), repr(e.value)
    return str(e.value)


@pytest.mark.parametrize("name", list(CASES))
def test_an_altered_table_is_refused_by_name_and_check_reports_it(tables, tmp_path, name):
    db, table_id, _ = tables["mamba-tiny-hf"]
    copy = str(tmp_path / "cal.sqlite")
    expected = altered_copy(db, copy, lambda con: CASES[name](con, describe(db, table_id)))
    message = refused(copy, table_id)
    assert message.startswith(f"{copy}: table {table_id}"), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    problems = lmt.check(copy)
    assert message in problems, problems
    # The listing reads the table rows only: a damaged row is refused there too, never a crash.
    with lmt.open(copy) as store:
        try:
            store.tables()
        except lmt.LongMambaTableError:
            pass


@pytest.mark.parametrize("model", ["mamba-tiny-hf", "mamba2-tiny-hf", "falcon_mamba-tiny-hf"])
def test_one_flipped_float_is_caught_by_the_content_hash_alone(tables, tmp_path, model):
    db, table_id, _ = tables[model]
    copy = str(tmp_path / "cal.sqlite")
    altered_copy(db, copy, lambda con: one_threshold_flipped(con, describe(db, table_id)))
    message = refused(copy, table_id)
    assert "the store was altered after the table was written" in message
    assert lmt.check(copy) == [message]


def test_check_collects_every_problem_of_a_table(tables, tmp_path):
    db, table_id, _ = tables["mamba-tiny-hf"]
    copy = str(tmp_path / "cal.sqlite")

    def alter(con):
        s = describe(db, table_id)
        return truncated_thresholds(con, s) + extended_cumulative_decays(con, s) + layer_added(con, s)
    expected = altered_copy(db, copy, alter)
    problems = lmt.check(copy)
    for part in expected:
        assert any(part in p for p in problems), (part, problems)
    assert any("the store was altered after the table was written" in p for p in problems), problems
    assert refused(copy, table_id) in problems  # table(id) raises the first of them


# Any value of the wrong type or size in any column the reader relies on: refused, never a crash.
TABLE_COLUMNS = ["run_id", "method", "parameters_json", "clamp_fraction", "aggregation", "interval_tokens",
                 "max_length", "training_length", "layer_count", "length_count", "content_hash"]
LAYER_COLUMNS = ["table_id", "layer_index", "channel_count", "length_count", "lengths_i64", "delta_thresholds_f32",
                 "kept_fractions_f32", "decay_budgets_f32", "cumulative_decays_f32", "a_values_f32", "a_shape_json"]
ODD_VALUES = {"text": "x", "int": 7, "huge int": 2 ** 62, "negative": -1, "real": 1.5, "empty blob": b"",
              "blob": b"\0\1\2", "not utf-8": sqlite3.Binary(b"\xff\xfe")}


@pytest.mark.parametrize("value", list(ODD_VALUES))
@pytest.mark.parametrize("column", [f"threshold_tables.{c}" for c in TABLE_COLUMNS]
                         + [f"table_layers.{c}" for c in LAYER_COLUMNS])
def test_any_odd_value_in_any_column_is_refused_never_a_crash(tables, tmp_path, column, value):
    db, table_id, _ = tables["mamba-tiny-hf"]
    copy = str(tmp_path / "cal.sqlite")
    table, name = column.split(".")
    v = ODD_VALUES[value]
    # Stored as TEXT with bytes that are not UTF-8 (the fetch itself must not fail).
    expr = "CAST(? AS TEXT)" if value == "not utf-8" else "?"
    where = "id = ?" if table == "threshold_tables" else "table_id = ? AND layer_index = 1"
    altered_copy(db, copy, lambda con: con.execute(f"UPDATE {table} SET {name} = {expr} WHERE {where}", (v, table_id)))
    message = refused(copy, table_id)
    assert f"table {table_id}" in message
    assert message in lmt.check(copy)


@pytest.mark.parametrize("model", ["mamba-tiny-hf", "mamba2-tiny-hf", "falcon_mamba-tiny-hf"])
def test_an_unaltered_store_checks_clean_and_reads_as_before(tables, model):
    db, table_id, _ = tables[model]
    assert lmt.check(db) == []
    with lmt.open(db) as store:
        assert store.check() == []
        table = store.table(table_id)
        assert table.lengths.tolist() == list(range(16, 257, 16))
        assert table.content_hash == store.tables()[0].content_hash


def test_the_schema_one_fixture_checks_clean():
    assert lmt.check(V1_FIXTURE) == []


def recording_cases(con):
    """Alters three recordings of run 1; returns the parts each message must name."""
    rows = con.execute("SELECT sample_index, layer_index, token_count, channel_count, delta_blob FROM recordings "
                       "WHERE run_id = 1 ORDER BY sample_index, layer_index").fetchall()
    (s0, l0, L, C, blob0), (s1, l1, _, _, blob1), (s2, l2, _, _, _) = rows[:3]
    flipped = bytearray(blob0)
    flipped[len(flipped) // 2] ^= 0x01
    con.execute("UPDATE recordings SET delta_blob = ? WHERE run_id = 1 AND sample_index = ? AND layer_index = ?",
                (bytes(flipped), s0, l0))
    con.execute("UPDATE recordings SET delta_blob = ? WHERE run_id = 1 AND sample_index = ? AND layer_index = ?",
                (blob1[:-4], s1, l1))
    con.execute("UPDATE recordings SET encoding = 'exact-f64-v9' WHERE run_id = 1 AND sample_index = ? AND layer_index = ?",
                (s2, l2))
    return [[f"run 1 sample {s0} layer {l0}: content_hash", "the store was altered after the recording was written"],
            [f"run 1 sample {s1} layer {l1}: delta_blob holds {4 * L * C - 4} bytes, expected {4 * L * C} "
             f"(L={L} × C={C} × 4)"],
            [f"run 1 sample {s2} layer {l2}: encoding is 'exact-f64-v9', expected exact-f32-v1 or logrice-v1"]]


def test_altered_recordings_are_reported_by_check(tables, tmp_path):
    db, table_id, _ = tables["mamba-tiny-hf"]
    copy = str(tmp_path / "cal.sqlite")
    expected = altered_copy(db, copy, recording_cases)
    problems = lmt.check(copy)
    assert len(problems) == len(expected), problems
    for parts, problem in zip(expected, problems):
        assert problem.startswith(f"{copy}: run 1 sample"), problem
        for part in parts:
            assert part in problem, (part, problem)
    # The table's own rows are intact: it still reads (the recordings are not part of it).
    with lmt.open(copy) as store:
        store.table(table_id).lookup(PROMPT_LENGTH)


def test_orphaned_rows_are_reported_by_foreign_key_check(tables, tmp_path):
    db, table_id, _ = tables["mamba-tiny-hf"]
    copy = str(tmp_path / "cal.sqlite")
    altered_copy(db, copy, lambda con: con.execute("DELETE FROM threshold_tables WHERE id = ?", (table_id,)))
    problems = lmt.check(copy)
    assert problems and all("table_layers row" in p and "refers to a row of threshold_tables that does not exist" in p
                            for p in problems), problems
    with lmt.open(copy) as store, pytest.raises(lmt.UnknownTableError):
        store.table(table_id)


def test_a_model_row_gone_is_refused_by_name(tables, tmp_path):
    db, table_id, _ = tables["mamba-tiny-hf"]
    copy = str(tmp_path / "cal.sqlite")
    altered_copy(db, copy, lambda con: con.execute("DELETE FROM models"))
    message = refused(copy, table_id)
    assert message == f"{copy}: table {table_id}: the model of its run 1 is not in models"
    problems = lmt.check(copy)
    assert message in problems and any("calibration_runs row 1 refers to a row of models" in p for p in problems)


def test_damaged_pages_are_reported_not_raised(tables, tmp_path):
    """table_layers' root page zeroed: SQLite's own checks fail; the reader says so by name."""
    db, table_id, _ = tables["mamba-tiny-hf"]
    copy = tmp_path / "cal.sqlite"
    shutil.copy(db, copy)
    with closing(sqlite3.connect(f"file:{copy}?mode=ro", uri=True)) as c:
        page_size = c.execute("PRAGMA page_size").fetchone()[0]
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name = 'table_layers'").fetchone()[0]
    data = bytearray(copy.read_bytes())
    data[(root - 1) * page_size:root * page_size] = bytes(page_size)
    copy.write_bytes(bytes(data))
    with lmt.open(str(copy)) as store, pytest.raises(lmt.LongMambaTableError) as e:
        store.table(table_id)
    assert type(e.value) is lmt.LongMambaTableError
    assert str(e.value).startswith(f"{copy}: table {table_id} cannot be read (")
    problems = lmt.check(str(copy))
    assert any(p.startswith(f"{copy}: integrity_check") for p in problems), problems
    assert str(e.value) in problems
    # Damage that reaches the schema itself: refused as open() refuses a file that is not a store.
    data[page_size:] = bytes(len(data) - page_size)
    copy.write_bytes(bytes(data))
    with pytest.raises(lmt.NotAStoreError, match="not a longmamba SQLite database"):
        lmt.check(str(copy))

"""docs/store-format.md is enough to read a store: Δ decoders and hash checks written from that
page alone (numpy and the standard library; no longmamba code), compared with the Swift tool's own
answers (`longmamba recording`) bit for bit."""
import hashlib
import json
import math
import os
import sqlite3
import struct

import numpy as np
import pytest

from conftest import MODELS, run_longmamba, vocab_size, write_tokens


# ---- the document's decoders ---------------------------------------------------------------------

class StoreFormatError(ValueError):
    """The blob is damaged (or was written by something this page does not describe)."""


class BitReader:
    """A big-endian bit stream: most significant bit first within each byte and across bytes."""

    def __init__(self, data, start_byte):
        self.data = data
        self.pos = start_byte * 8  # in bits

    def bits(self, count):
        if self.pos + count > len(self.data) * 8:
            raise StoreFormatError("the blob ends inside a record")
        value = 0
        for _ in range(count):
            byte = self.data[self.pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def rice(self, k):
        quotient = 0
        while self.bits(1) == 1:
            quotient += 1
            if quotient > 2 ** 40:
                raise StoreFormatError("a Rice quotient over 2^40")
        return (quotient << k) | (self.bits(k) if k else 0)

    def byte_boundary(self):
        self.pos = (self.pos + 7) // 8 * 8
        return self.pos // 8


def decode_zone(reader, m, q):
    """The m values of one zone as float32: a 64-bit signed first code, then Rice-coded gaps in
    blocks of up to 128, each value float32(exp(code · q)) with exp in double precision."""
    if m == 0:
        return []
    first = reader.bits(64)
    code = first - 2 ** 64 if first >= 2 ** 63 else first
    codes = [code]
    remaining = m - 1
    while remaining > 0:
        k = reader.bits(5)
        assert k <= 23, f"block Rice parameter k = {k}, the page says 0 … 23"
        for _ in range(min(128, remaining)):
            code -= reader.rice(k)
            codes.append(code)
        remaining -= min(128, remaining)
    return [np.float32(math.exp(c * q)) for c in codes]


def decode_logrice_v1(blob, channels, length, records=None):
    """[C, L] float32: each channel's Δ sorted descending. With a list `records`, appends per
    channel (e, n, how many values the final non-increasing pass lowered)."""
    out = np.zeros((channels, length), dtype=np.float32)
    reader = BitReader(blob, 0)
    for c in range(channels):
        e = reader.bits(5)
        assert e <= 20, f"channel {c}: top-zone exponent e = {e}, the page says 0 … 20"
        n = reader.bits(32)
        if n > length:
            raise StoreFormatError(f"channel {c}: record claims n = {n} > L = {length}")
        cut = min(n, (length + 1) // 2)
        values = decode_zone(reader, cut, 2.0 ** -e) + decode_zone(reader, n - cut, 2.0 ** -max(e - 3, 0))
        row = np.zeros(length, dtype=np.float32)  # the L − n others are 0
        row[:n] = values
        lowered = 0
        for i in range(max(cut, 1), n):  # the final non-increasing pass
            if row[i] > row[i - 1]:
                row[i] = row[i - 1]
                lowered += 1
        if records is not None:
            records.append((e, n, lowered))
        out[c] = row
        reader.byte_boundary()  # each record starts on a byte boundary
    if reader.pos // 8 != len(blob):
        raise StoreFormatError(f"{len(blob) - reader.pos // 8} bytes after the last record")
    return out


def decode_exact_f32_v1(blob, channels, length):
    """[C, L] float32 in token order."""
    if len(blob) != channels * length * 4:
        raise StoreFormatError(f"exact-f32-v1 blob of {len(blob)} bytes for C = {channels}, L = {length}")
    return np.frombuffer(blob, dtype="<f4").reshape(channels, length).astype(np.float32)


def recording_hash(encoding, delta_blob, a_values):
    return hashlib.sha256(encoding.encode("utf-8") + bytes(delta_blob) + bytes(a_values)).hexdigest()


def table_hash(con, table_id):
    method, parameters, fingerprint = con.execute(
        "SELECT t.method, t.parameters_json, m.fingerprint FROM threshold_tables t "
        "JOIN calibration_runs r ON r.id = t.run_id JOIN models m ON m.id = r.model_id WHERE t.id = ?",
        (table_id,)).fetchone()
    h = hashlib.sha256()
    for text in (method, parameters, fingerprint):
        h.update(text.encode("utf-8") + b"\0")
    rows = con.execute("SELECT layer_index, channel_count, a_shape_json, lengths_i64, delta_thresholds_f32, "
                       "kept_fractions_f32, decay_budgets_f32, cumulative_decays_f32, a_values_f32 "
                       "FROM table_layers WHERE table_id = ? ORDER BY layer_index", (table_id,)).fetchall()
    for layer, channels, shape_json, *blobs in rows:
        shape = "[" + ", ".join(str(int(d)) for d in json.loads(shape_json)) + "]"
        h.update(f"layer {layer} channels {channels} A {shape}".encode("utf-8") + b"\0")
        for blob in blobs:
            h.update(bytes(blob))
    return h.hexdigest()


# ---- stores made by the tool ---------------------------------------------------------------------

def make_store(directory, model_name, representation, samples=3, length=32, interval=16, max_length=256):
    """A store imported from `longmamba record` outputs on random tokens, solved once."""
    model = os.path.join(MODELS, model_name)
    rng = np.random.default_rng(11)
    recordings = []
    for k in range(samples):
        tokens = directory / f"sample-{k}.tokens"
        write_tokens(tokens, rng.integers(0, vocab_size(model), length))
        recordings.append(directory / f"sample-{k}.safetensors")
        run_longmamba("record", "--model", model, "--tokens", tokens, "--out", recordings[-1])
    db = directory / "store.sqlite"
    run_longmamba("solve", "--db", db, "--recordings", *recordings, "--clamp", "0.2", "--aggregate", "max",
                  "--interval", interval, "--max-length", max_length, "--training-length", length,
                  "--representation", representation, "--quiet")
    return str(db)


@pytest.fixture(scope="module")
def sketch_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("sketch"), "mamba-tiny-hf", "sketch")


@pytest.fixture(scope="module")
def long_sketch_store(tmp_path_factory):
    """L = 600: zones of 300 values, so several Rice blocks per zone and an e below the maximum."""
    return make_store(tmp_path_factory.mktemp("sketch-long"), "mamba-tiny-hf", "sketch", samples=2, length=600,
                      interval=300, max_length=1200)


@pytest.fixture(scope="module")
def exact_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("exact"), "mamba2-tiny-hf", "exact")


def open_ro(db):
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def recordings_of(db):
    with open_ro(db) as con:
        return con.execute("SELECT run_id, sample_index, layer_index, token_count, channel_count, encoding, "
                           "delta_blob, a_shape_json, a_values, content_hash FROM recordings "
                           "ORDER BY run_id, sample_index, layer_index").fetchall()


def tool_recording(db, run, sample, layer):
    return json.loads(run_longmamba("recording", "--db", db, "--run", run, "--sample", sample, "--layer", layer))


def check_store(db, encoding, decode):
    rows = recordings_of(db)
    assert rows, "no recordings"
    for run, sample, layer, L, C, enc, blob, shape_json, a_values, stored_hash in rows:
        where = f"run {run} sample {sample} layer {layer}"
        assert enc == encoding, where
        assert stored_hash == recording_hash(enc, blob, a_values), where
        ours = decode(blob, C, L)
        tool = tool_recording(db, run, sample, layer)
        assert (tool["length"], tool["channels"], tool["encoding"]) == (L, C, enc), where
        theirs = np.asarray(tool["sorted_delta"], dtype=np.float64).astype(np.float32)
        assert theirs.shape == (C, L), where
        # Bitwise: the tool prints float32 in a form that reads back exactly.
        assert np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)), \
            f"{where}: {np.count_nonzero(ours != theirs)} of {ours.size} values differ"
        shape = json.loads(shape_json)
        assert list(tool["a_shape"]) == shape, where
        a = np.frombuffer(a_values, dtype="<f4")
        assert a.size == math.prod(shape), where
        assert np.array_equal(a.view(np.uint32),
                              np.asarray(tool["A"], dtype=np.float64).astype(np.float32).ravel().view(np.uint32)), where
    return rows


def check_table_hashes(db):
    with open_ro(db) as con:
        tables = con.execute("SELECT id, content_hash FROM threshold_tables").fetchall()
        assert tables, "no tables"
        for table_id, stored in tables:
            assert table_hash(con, table_id) == stored, f"table {table_id}"


# ---- the tests -----------------------------------------------------------------------------------

def sorted_from_sketch(blob, channels, length):
    return decode_logrice_v1(bytes(blob), channels, length)


def sorted_from_exact(blob, channels, length):
    # The solver sorts each token-order row itself: descending.
    return -np.sort(-decode_exact_f32_v1(bytes(blob), channels, length), axis=1)


def test_logrice_v1_recordings_decode_to_what_the_tool_prints(sketch_store):
    rows = check_store(sketch_store, "logrice-v1", sorted_from_sketch)
    assert {r[4] for r in rows} == {128} and len(rows) == 3 * 2  # Mamba-1: d_inner channels, 3 samples × 2 layers


def test_long_logrice_v1_recordings_span_several_rice_blocks(long_sketch_store):
    rows = check_store(long_sketch_store, "logrice-v1", sorted_from_sketch)
    records = []
    for row in rows:
        decode_logrice_v1(bytes(row[6]), row[4], row[3], records)
    # A top zone of more than 129 values needs a second Rice block; at L = 600 the byte budget
    # (460 per channel and sample) should also force e below its maximum somewhere.
    assert max(min(n, 300) for _, n, _ in records) > 129
    assert min(e for e, _, _ in records) < 20, sorted({e for e, _, _ in records})
    # Coverage of the final pass: with q₂ = 8·q₁ some bottom-zone value rounds above the top zone's last.
    assert sum(lowered for _, _, lowered in records) > 0


def test_exact_f32_v1_recordings_sort_to_what_the_tool_prints(exact_store):
    rows = check_store(exact_store, "exact-f32-v1", sorted_from_exact)
    assert all(json.loads(r[7]) == [r[4]] for r in rows)  # Mamba-2: A per head


@pytest.mark.parametrize("store", ["sketch_store", "long_sketch_store", "exact_store"])
def test_table_content_hash_follows_the_documented_rule(store, request):
    check_table_hashes(request.getfixturevalue(store))


def test_damaged_sketch_records_are_refused():
    # One channel of L = 4: e = 0, n = 5 > L.
    claims_too_many = (0 << 35 | 5 << 3).to_bytes(5, "big")
    with pytest.raises(StoreFormatError, match="n = 5"):
        decode_logrice_v1(claims_too_many, 1, 4)
    # n = 1 but the 64-bit first code is missing.
    with pytest.raises(StoreFormatError, match="ends inside"):
        decode_logrice_v1((1 << 3).to_bytes(5, "big"), 1, 4)


def test_decoder_on_a_hand_made_record():
    """A record built by hand from the page: L = 5, e = 1 (q₁ = 1/2, q₂ = 1), n = 4 → cut = 3.
    Top zone codes 2, 2, 0 (first 2, then k = 0 gaps 0 and 2 = '0', '110'); bottom zone code 0
    (first only) → values e¹, e¹, e⁰, then e⁰ from the bottom zone, then one zero."""
    bits = "00001" + format(4, "032b")
    bits += format(2, "064b") + "00000" + "0" + "110"
    bits += format(0, "064b")
    bits += "0" * (-len(bits) % 8)
    blob = int(bits, 2).to_bytes(len(bits) // 8, "big")
    row = decode_logrice_v1(blob, 1, 5)[0]
    expected = np.array([math.exp(1), math.exp(1), 1, 1, 0], dtype=np.float32)
    assert np.array_equal(row, expected)

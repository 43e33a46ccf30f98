"""Reading LongMamba threshold tables: the longmamba SQLite store, and the safetensors / JSON exports.

A table holds, per layer i, for tabulated lengths S_0 < S_1 < … (lengths, [T]):
  delta_threshold  τ_c(S)  float32 [T, C]   (keep Δ only where Δ > τ in global channels)
  kept_fraction    α_c(S)  float32 [T, C]
  decay_budget     D_c     float32 [C]
  cumulative_decay a_c     float32 [C]      (global channel ⇔ a_c > θ)
  A                        float32 (the layer's A, [C, N] or [C])
See docs/method.md and docs/contracts.md in the repository.
"""
from __future__ import annotations

import builtins
import json
import os
import sqlite3
import struct
from dataclasses import dataclass, field

import numpy as np

from .errors import LongMambaTableError, NewerSchemaError, NotAStoreError, UnknownTableError

#: The store schema this package reads (the Swift tool's `CalibrationStore.schemaVersion`).
SUPPORTED_SCHEMA = 3
#: The authors' channel threshold for mamba2-1.3b; the CLI's default θ.
DEFAULT_THETA = 0.05
#: The lookup rule, word for word as `longmamba lookup` reports it.
TIE_RULE = "nearest tabulated length; exactly halfway takes the shorter length; beyond the grid clamps to its ends"


def nearest_index(length: int, lengths) -> int:
    """Index of the tabulated length nearest `length` (lengths ascending). Exactly halfway takes
    the shorter length, as the authors' `min(keys, key=lambda x: abs(S - x))`; below the grid the
    first entry, above it the last."""
    n = len(lengths)
    if n == 0:
        raise LongMambaTableError("the table has no tabulated lengths")
    lo = int(np.searchsorted(np.asarray(lengths), length, side="left"))  # first entry ≥ length
    if lo == 0:
        return 0
    if lo == n:
        return n - 1
    below, above = length - int(lengths[lo - 1]), int(lengths[lo]) - length
    return lo if above < below else lo - 1


def default_filter_start(training_length: int) -> int:
    """The CLI's default filter start: 1.5 × the training length (integer arithmetic as in Swift)."""
    return training_length * 3 // 2


@dataclass
class LayerTable:
    layer: int
    delta_threshold: np.ndarray   # [T, C] float32
    kept_fraction: np.ndarray     # [T, C] float32
    decay_budget: np.ndarray      # [C] float32
    cumulative_decay: np.ndarray  # [C] float32
    A: np.ndarray                 # its own shape, float32

    @property
    def channels(self) -> int:
        return int(self.cumulative_decay.shape[0])


@dataclass
class RowLayer:
    layer: int
    delta_threshold: np.ndarray   # [C] float32: τ_c(S)
    kept_fraction: np.ndarray     # [C] float32: α_c(S)
    cumulative_decay: np.ndarray  # [C] float32: a_c
    global_channel: np.ndarray    # [C] bool: a_c > θ

    @property
    def global_channel_count(self) -> int:
        return int(self.global_channel.sum())


@dataclass
class Row:
    """One lookup: the table row for `requested_length` and the global-channel masks for θ."""
    requested_length: int
    length: int
    beyond_last_length: bool
    theta: float
    layers: list
    rounding: str = TIE_RULE


def check_theta(theta) -> float:
    theta = float(theta)
    if not np.isfinite(theta):
        raise LongMambaTableError(f"θ = {theta} must be a finite number")
    if theta <= 0:
        raise LongMambaTableError(f"θ must be > 0, got {theta}")
    return theta


@dataclass
class Table:
    lengths: np.ndarray           # [T] int64, ascending
    layers: list                  # [LayerTable], in layer order
    metadata: dict = field(default_factory=dict)
    source: str = ""

    # Metadata, typed.
    @property
    def id(self):
        v = self.metadata.get("table_id")
        return int(v) if v not in (None, "") else None

    @property
    def training_length(self) -> int:
        return int(self.metadata.get("training_length") or 0)

    @property
    def fingerprint(self):
        return self.metadata.get("model_fingerprint") or None

    @property
    def architecture(self):
        return self.metadata.get("architecture") or None

    @property
    def clamp_fraction(self):
        v = self.metadata.get("clamp_fraction")
        return float(v) if v not in (None, "") else None

    @property
    def aggregation(self):
        return self.metadata.get("aggregation") or None

    @property
    def content_hash(self):
        return self.metadata.get("content_hash") or None

    @property
    def channels(self) -> list:
        return [l.channels for l in self.layers]

    def lookup(self, length: int, theta: float = DEFAULT_THETA) -> Row:
        """Thresholds at the tabulated length nearest `length` and the global mask a_c > θ.
        The comparison is made in float32, as the Swift runner's filter makes it."""
        length = int(length)
        if length <= 0:
            raise LongMambaTableError(f"length {length} must be a positive number of tokens")
        theta = check_theta(theta)
        t = nearest_index(length, self.lengths)
        layers = [RowLayer(layer=l.layer,
                           delta_threshold=l.delta_threshold[t].copy(),
                           kept_fraction=l.kept_fraction[t].copy(),
                           cumulative_decay=l.cumulative_decay.copy(),
                           global_channel=l.cumulative_decay > np.float32(theta))
                  for l in self.layers]
        return Row(requested_length=length, length=int(self.lengths[t]),
                   beyond_last_length=length > int(self.lengths[-1]), theta=theta, layers=layers)


@dataclass
class TableInfo:
    id: int
    run_id: int
    method: str
    clamp_fraction: float
    aggregation: str
    interval: int
    max_length: int
    training_length: int
    layer_count: int
    length_count: int
    content_hash: str
    architecture: str
    model_fingerprint: str
    created_at: str


def _floats(blob: bytes, count: int, what: str, path: str) -> np.ndarray:
    if len(blob) != 4 * count:
        raise LongMambaTableError(f"{path}: {what} holds {len(blob)} bytes, expected {4 * count}")
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


class Store:
    """A longmamba calibration database, opened read-only."""

    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):
            raise NotAStoreError(f"{path}: not a longmamba SQLite database (no such file)")
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            names = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as e:
            raise NotAStoreError(f"{path}: not a longmamba SQLite database ({e})") from None
        if version > SUPPORTED_SCHEMA:
            self._db.close()
            raise NewerSchemaError(
                f"{path}: written by a newer longmamba (schema version {version}; this tool understands up "
                f"to {SUPPORTED_SCHEMA}). Upgrade longmamba; the database was not modified.")
        # v2 renamed calibration_runs.training_length (it holds the recorded sample length) and
        # added calibration_key; a v1 file not yet migrated by the CLI is read as it is.
        self._schema = version
        self._sample_length = "r.sample_length" if version >= 2 else "r.training_length"
        missing = {"models", "calibration_runs", "threshold_tables", "table_layers"} - names
        if missing:
            self._db.close()
            raise NotAStoreError(f"{path}: not a longmamba SQLite database (no {', '.join(sorted(missing))} table)")

    def close(self):
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def tables(self) -> list:
        rows = self._db.execute("""
            SELECT t.id, t.run_id, t.method, t.clamp_fraction, t.aggregation, t.interval_tokens, t.max_length,
                   t.training_length, t.layer_count, t.length_count, t.content_hash, m.architecture, m.fingerprint, t.created_at
            FROM threshold_tables t JOIN calibration_runs r ON r.id = t.run_id JOIN models m ON m.id = r.model_id
            ORDER BY t.id""").fetchall()
        return [TableInfo(*r) for r in rows]

    def table(self, table_id: int) -> Table:
        sample_length = self._sample_length
        calibration_key = "r.calibration_key" if self._schema >= 2 else "NULL"
        row = self._db.execute(f"""
            SELECT t.id, t.method, t.parameters_json, t.clamp_fraction, t.aggregation, t.interval_tokens, t.max_length,
                   t.training_length, t.layer_count, t.length_count, t.content_hash, t.tool_version, t.schema_version,
                   t.created_at, m.fingerprint, m.architecture, m.config_json, r.id, r.sample_count, {sample_length},
                   r.seed, r.tokenizer_hash, {calibration_key}
            FROM threshold_tables t JOIN calibration_runs r ON r.id = t.run_id JOIN models m ON m.id = r.model_id
            WHERE t.id = ?""", (int(table_id),)).fetchone()
        if row is None:
            raise UnknownTableError(f"{self.path}: no threshold table with id {table_id} "
                                    f"(list them with `longmamba tables --db {self.path}`)")
        keys = ["table_id", "method", "parameters", "clamp_fraction", "aggregation", "interval", "max_length",
                "training_length", "layer_count", "length_count", "content_hash", "tool_version", "schema_version",
                "created_at", "model_fingerprint", "architecture", "model_config", "run_id", "sample_count",
                "recorded_length", "seed", "tokenizer_hash", "calibration_key"]
        metadata = {k: ("" if v is None else str(v)) for k, v in zip(keys, row)}
        layer_count, length_count = int(row[8]), int(row[9])
        layers, lengths = [], None
        for (i, C, T, lengths_blob, tau, alpha, budget, decay, a_values, a_shape) in self._db.execute("""
                SELECT layer_index, channel_count, length_count, lengths_i64, delta_thresholds_f32, kept_fractions_f32,
                       decay_budgets_f32, cumulative_decays_f32, a_values_f32, a_shape_json
                FROM table_layers WHERE table_id = ? ORDER BY layer_index""", (int(table_id),)):
            where = f"{self.path}: table {table_id} layer {i}"
            if T != length_count or len(lengths_blob) != 8 * T:
                raise LongMambaTableError(f"{where}: {T} lengths, the table says {length_count}")
            layer_lengths = np.frombuffer(lengths_blob, dtype="<i8").astype(np.int64)
            if lengths is None:
                lengths = layer_lengths
            elif not np.array_equal(lengths, layer_lengths):
                raise LongMambaTableError(f"{where}: its lengths differ from layer 0's")
            shape = json.loads(a_shape)
            layers.append(LayerTable(
                layer=int(i),
                delta_threshold=_floats(tau, T * C, "delta_thresholds_f32", where).reshape(T, C),
                kept_fraction=_floats(alpha, T * C, "kept_fractions_f32", where).reshape(T, C),
                decay_budget=_floats(budget, C, "decay_budgets_f32", where),
                cumulative_decay=_floats(decay, C, "cumulative_decays_f32", where),
                A=_floats(a_values, int(np.prod(shape)), "a_values_f32", where).reshape(shape)))
        if len(layers) != layer_count:
            raise LongMambaTableError(f"{self.path}: table {table_id} has {len(layers)} layers stored, the table says {layer_count}")
        return Table(lengths=lengths, layers=layers, metadata=metadata, source=f"{self.path}#{table_id}")


def open(path: str) -> Store:  # noqa: A001 - the documented name
    """Opens a longmamba calibration database read-only (a newer schema is refused)."""
    return Store(path)


def _read_safetensors(path: str):
    """A minimal safetensors reader (numpy only): returns ({name: array}, metadata)."""
    dtypes = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}
    with builtins.open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise LongMambaTableError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        size = os.path.getsize(path)
        if n > size - 8:
            raise LongMambaTableError(f"{path}: not a safetensors file (header length {n} exceeds the file)")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            raise LongMambaTableError(f"{path}: the safetensors header is not valid JSON ({e})") from None
        data = f.read()
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        dtype = dtypes.get(info.get("dtype"))
        if dtype is None:
            raise LongMambaTableError(f"{path}: tensor '{name}' has unsupported dtype {info.get('dtype')}")
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= len(data):
            raise LongMambaTableError(f"{path}: tensor '{name}' lies outside the file (bytes {start}..{end})")
        tensors[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"])
    return tensors, metadata


def load_export(path: str) -> Table:
    """Reads `longmamba export --format safetensors` or `--format json`."""
    if path.endswith(".json"):
        try:
            with builtins.open(path, "r", encoding="utf-8") as f:
                doc = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise LongMambaTableError(f"{path}: not a longmamba JSON table ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != "longmamba-table":
            raise LongMambaTableError(f"{path}: not a longmamba JSON table (no \"format\": \"longmamba-table\")")
        lengths = np.asarray(doc["lengths"], dtype=np.int64)
        layers = [LayerTable(layer=int(l["layer"]),
                             delta_threshold=np.asarray(l["threshold"], dtype=np.float32).reshape(len(lengths), l["channels"]),
                             kept_fraction=np.asarray(l["kept_fraction"], dtype=np.float32).reshape(len(lengths), l["channels"]),
                             decay_budget=np.asarray(l["decay_budget"], dtype=np.float32),
                             cumulative_decay=np.asarray(l["cumulative_decay"], dtype=np.float32),
                             A=np.asarray(l["A"], dtype=np.float32).reshape(l["A_shape"]))
                  for l in doc["layers"]]
        return Table(lengths=lengths, layers=layers, metadata=dict(doc.get("metadata", {})), source=path)
    tensors, metadata = _read_safetensors(path)
    if "lengths" not in tensors or "layer.0.threshold" not in tensors:
        raise LongMambaTableError(f"{path}: tensor 'layer.0.threshold' not found: not a longmamba table export")
    lengths = tensors["lengths"].astype(np.int64)
    layers, i = [], 0
    while f"layer.{i}.threshold" in tensors:
        g = lambda k: tensors[f"layer.{i}.{k}"].astype(np.float32)  # noqa: E731
        layers.append(LayerTable(layer=i, delta_threshold=g("threshold"), kept_fraction=g("kept_fraction"),
                                 decay_budget=g("decay_budget"), cumulative_decay=g("cumulative_decay"), A=g("A")))
        i += 1
    metadata = {k: v for k, v in metadata.items() if k != "longmamba_table"}
    return Table(lengths=lengths, layers=layers, metadata=metadata, source=path)

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
import hashlib
import json
import math
import os
import sqlite3
import struct
from dataclasses import dataclass, field

import numpy as np

from .errors import LongMambaTableError, NewerSchemaError, NotAStoreError, UnknownMethodError, UnknownTableError

#: The store schema this package reads (the Swift tool's `CalibrationStore.schemaVersion`); v1–v4 read too.
SUPPORTED_SCHEMA = 5
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
class ScaleRow:
    """One lookup of a per-layer scale table: the calibrated length nearest `requested_length`
    and each layer's scale s_l there."""
    requested_length: int
    length: int
    beyond_last_length: bool
    method: str
    scales: np.ndarray            # [layers] float32
    rounding: str = TIE_RULE


@dataclass
class ScaleTable:
    """A per-layer scale table (v5): `delta_scale` (MambaExtend: Δ := s_l·Δ) or `a_power` (Mamba
    Modulation: A := −exp(s_l·A_log)), s_l(S) for each layer l and calibrated length S."""
    id: int
    run_id: int
    method: str
    lengths: np.ndarray           # [T] int64, ascending
    scales: np.ndarray            # [layers, T] float32, finite > 0
    parameters: dict              # parameters_json, parsed
    training_length: int
    fingerprint: str
    content_hash: str
    metadata: dict = field(default_factory=dict)
    source: str = ""
    row_kind: str = "per_layer"

    @property
    def architecture(self):
        return self.metadata.get("architecture") or None

    @property
    def layer_count(self) -> int:
        return int(self.scales.shape[0])

    def row(self, length: int) -> ScaleRow:
        """The scales at the calibrated length nearest `length` (the lookup's rounding rule:
        exactly halfway the shorter; beyond the last, the last)."""
        length = int(length)
        if length <= 0:
            raise LongMambaTableError(f"length {length} must be a positive number of tokens")
        t = nearest_index(length, self.lengths)
        return ScaleRow(requested_length=length, length=int(self.lengths[t]),
                        beyond_last_length=length > int(self.lengths[-1]), method=self.method,
                        scales=self.scales[:, t].copy())

    lookup = row


#: The paper's table grid, for runs that recorded none (the CLI's `TableService.defaultGrid`).
DEFAULT_GRID = (1000, 256_000)


@dataclass
class RunInfo:
    """A calibration run (`Store.run`): interval and max_length are the grid its tables are
    solved on when none is given (the one `calibrate` stored, else its first table's)."""
    id: int
    status: str
    sample_length: int
    sample_count: int
    layer_count: int
    fingerprint: str
    architecture: str
    interval: int
    max_length: int


@dataclass
class TableInfo:
    """A table's row (`Store.tables()`). Per-layer scale tables (v5) have no clamp fraction,
    aggregation, interval or max_length (None) and their calibrated `lengths`. A table whose
    method this package does not know is listed with `problem` set (and what could be read)."""
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
    row_kind: str = "per_channel"
    lengths: tuple = None
    #: why the table cannot be read by this package (a newer tool's method), else None
    problem: str = None


# ---- decoding rows: every check of a record type in one place ------------------------------------
# A store altered outside the tool (the triggers dropped, a blob rewritten) may hold anything in
# any column: each decoder below checks types, sizes and values before numpy sees a byte, so a
# damaged row is refused by name rather than crashing or answering from inconsistent rows.

#: Methods this reader knows (`threshold_tables.method`): per-channel Δ thresholds, and (v5) the
#: per-layer scales of MambaExtend (`delta_scale`) and Mamba Modulation (`a_power`).
SCALE_METHODS = ("delta_scale", "a_power")
KNOWN_METHODS = ("longmamba",) + SCALE_METHODS
#: `threshold_tables.row_kind` (v5; every earlier table is per_channel) of each method.
ROW_KINDS = {"longmamba": "per_channel", "delta_scale": "per_layer", "a_power": "per_layer"}
#: The keys of a scale table's `parameters_json`.
SCALE_PARAMETER_KEYS = ("lengths", "perturbation", "sample_count", "samples_hash", "seed", "stability", "step_size",
                        "steps", "training_length")
#: The keys of a longmamba table's `parameters_json`.
PARAMETER_KEYS = ("aggregation", "clamp_fraction", "interval", "max_length", "training_length")
AGGREGATIONS = ("max", "mean")
#: Δ encodings of `recordings`; any other was written by a newer tool.
ENCODINGS = ("exact-f32-v1", "logrice-v1")
ALTERED = "the store was altered after the {} was written"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _kind(v) -> str:
    """A SQLite value in words, for messages (an altered column may hold any type)."""
    if v is None:
        return "NULL"
    if isinstance(v, bytes):
        return f"a blob of {len(v)} bytes"
    if isinstance(v, str):
        return f"the text {v[:80]!r}"
    return repr(v)


def _key(v) -> str:
    """A key column (layer, run, sample) for a message's prefix: altered, it may be any type."""
    return str(v) if _is_int(v) else repr(v)


def _integer(where: str, column: str, v, minimum: int) -> int:
    if not _is_int(v):
        raise LongMambaTableError(f"{where}: {column} is {_kind(v)}, expected an integer")
    if v < minimum:
        raise LongMambaTableError(f"{where}: {column} is {v}, expected ≥ {minimum}")
    return v


def _text(where: str, column: str, v) -> str:
    if not isinstance(v, str):
        raise LongMambaTableError(f"{where}: {column} is {_kind(v)}, expected text")
    return v


def _blob(where: str, column: str, v, expected=None, rule: str = "") -> bytes:
    if not isinstance(v, bytes):
        raise LongMambaTableError(f"{where}: {column} is {_kind(v)}, expected a blob")
    if expected is not None and len(v) != expected:
        raise LongMambaTableError(f"{where}: {column} holds {len(v)} bytes, expected {expected} ({rule})")
    return v


def _json(text: str):
    """json.loads, or None for text that is not JSON (deep nesting included)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _shape(where: str, column: str, v) -> list:
    text = _text(where, column, v)
    shape = _json(text)
    if not (isinstance(shape, list) and shape and all(_is_int(d) and d > 0 for d in shape)):
        raise LongMambaTableError(f"{where}: {column} is {text[:80]!r}, expected a JSON list of positive integers "
                                  f"([C] or [C,N])")
    return shape


def _floats(where: str, column: str, v, count: int, rule: str) -> np.ndarray:
    return np.frombuffer(_blob(where, column, v, 4 * count, rule), dtype="<f4").astype(np.float32)


def _check_values(where: str, column: str, values: np.ndarray, ok: np.ndarray, expected: str, lengths=None):
    if ok.all():
        return
    bad = np.argwhere(~ok)
    at = tuple(int(i) for i in bad[0])
    place = f"length {int(lengths[at[0]])} (row {at[0]}) channel {at[1]}" if len(at) == 2 else f"channel {at[0]}"
    more = f" ({len(bad)} such values)" if len(bad) > 1 else ""
    raise LongMambaTableError(f"{where}: {column} holds {float(values[at])} at {place}{more}, expected {expected}")


@dataclass
class _TableRecord:
    """A `threshold_tables` row with its run and model, checked by `_decode_table_row`."""
    id: int
    run_id: int
    method: str
    parameters_json: str
    aggregation: str
    clamp_fraction: float
    interval: int
    max_length: int
    training_length: int
    layer_count: int
    length_count: int
    content_hash: str
    fingerprint: str
    architecture: str
    created_at: str
    metadata: dict


# Table.metadata keys, in the order of _table_query's columns (two more follow: whether the run
# and the model exist).
_TABLE_KEYS = ["table_id", "method", "parameters", "clamp_fraction", "aggregation", "interval", "max_length",
               "training_length", "layer_count", "length_count", "content_hash", "tool_version", "schema_version",
               "created_at", "model_fingerprint", "architecture", "model_config", "run_id", "sample_count",
               "recorded_length", "seed", "tokenizer_hash", "calibration_key", "row_kind"]
# The columns that repeat parameters_json (the schema lets them be NULL): metadata key, column, parameter.
_PARAMETER_COLUMNS = [("clamp_fraction", "clamp_fraction", "clamp_fraction"), ("aggregation", "aggregation", "aggregation"),
                      ("interval", "interval_tokens", "interval"), ("max_length", "max_length", "max_length"),
                      ("training_length", "training_length", "training_length")]


def _table_query(schema: int) -> str:
    # v2 renamed calibration_runs.training_length (it holds the recorded sample length) and
    # added calibration_key; a v1 file not yet migrated by the CLI is read as it is. LEFT JOINs:
    # a table whose run or model is gone is reported, not mistaken for an unknown id.
    sample_length = "r.sample_length" if schema >= 2 else "r.training_length"
    calibration_key = "r.calibration_key" if schema >= 2 else "NULL"
    row_kind = "t.row_kind" if schema >= 5 else "'per_channel'"   # v5 added it; earlier tables are per channel
    return f"""
        SELECT t.id, t.method, t.parameters_json, t.clamp_fraction, t.aggregation, t.interval_tokens, t.max_length,
               t.training_length, t.layer_count, t.length_count, t.content_hash, t.tool_version, t.schema_version,
               t.created_at, m.fingerprint, m.architecture, m.config_json, t.run_id, r.sample_count, {sample_length},
               r.seed, r.tokenizer_hash, {calibration_key}, {row_kind}, r.id IS NOT NULL, m.id IS NOT NULL
        FROM threshold_tables t LEFT JOIN calibration_runs r ON r.id = t.run_id LEFT JOIN models m ON m.id = r.model_id"""


def _decode_table_row(path: str, row) -> _TableRecord:
    """Every check of one `threshold_tables` row: its method, parameters (and the columns that
    repeat them), counts, hash text, run and model. The one place a table's row is decoded."""
    values = dict(zip(_TABLE_KEYS, row))
    run_found, model_found = row[len(_TABLE_KEYS)], row[len(_TABLE_KEYS) + 1]
    table_id = values["table_id"]
    where = f"{path}: table {table_id}"
    if not run_found:
        raise LongMambaTableError(f"{where}: run_id {values['run_id']!r} names no row of calibration_runs")
    if not model_found:
        raise LongMambaTableError(f"{where}: the model of its run {values['run_id']} is not in models")
    method = _text(where, "method", values["method"])
    row_kind = _text(where, "row_kind", values["row_kind"])
    if ROW_KINDS.get(method) != row_kind:
        # The CLI's words (StoreError.unknownTableMethod): a (method, row kind) this tool does not know.
        raise UnknownMethodError(f"{path}: table {table_id} has the method '{method}' ({row_kind} rows), which this "
                                 f"tool does not know; written by a newer tool? Upgrade longmamba to use it; it was "
                                 f"left in the store.")
    if method in SCALE_METHODS:
        return _decode_scale_table_row(path, values, where, method)
    parameters_json = _text(where, "parameters_json", values["parameters"])
    p = _json(parameters_json)
    if not isinstance(p, dict):
        raise LongMambaTableError(f"{where}: parameters_json is {parameters_json[:80]!r}, expected a JSON object "
                                  f"with {', '.join(PARAMETER_KEYS)}")
    missing = [k for k in PARAMETER_KEYS if k not in p]
    if missing:
        raise LongMambaTableError(f"{where}: parameters_json has no {', '.join(missing)} "
                                  f"(expected {', '.join(PARAMETER_KEYS)})")
    if p["aggregation"] not in AGGREGATIONS:
        raise LongMambaTableError(f"{where}: parameters_json aggregation is {p['aggregation']!r}, expected max or mean")
    clamp = p["clamp_fraction"]
    if not (isinstance(clamp, (int, float)) and not isinstance(clamp, bool) and np.isfinite(clamp) and 0 < clamp <= 1):
        raise LongMambaTableError(f"{where}: parameters_json clamp_fraction is {clamp!r}, expected a number in (0, 1]")
    interval = _integer(where, "parameters_json interval", p["interval"], 1)
    max_length = _integer(where, "parameters_json max_length", p["max_length"], interval)
    if max_length >= 2 ** 63:  # lengths are stored as i64
        raise LongMambaTableError(f"{where}: parameters_json max_length is {max_length}, beyond an i64 length")
    training_length = _integer(where, "parameters_json training_length", p["training_length"], 1)
    metadata = {k: ("" if v is None else str(v)) for k, v in values.items()}
    for key, column, parameter in _PARAMETER_COLUMNS:
        v = values[key]
        if v is None:
            metadata[key] = str(p[parameter])
        elif isinstance(v, bool) or v != p[parameter]:
            raise LongMambaTableError(f"{where}: {column} is {_kind(v)}, parameters_json says {p[parameter]!r}")
    layer_count = _integer(where, "layer_count", values["layer_count"], 1)
    length_count = _integer(where, "length_count", values["length_count"], 1)
    if length_count != max_length // interval:
        raise LongMambaTableError(f"{where}: length_count is {length_count}, expected {max_length // interval} "
                                  f"(interval {interval} up to max_length {max_length})")
    content_hash = _text(where, "content_hash", values["content_hash"])
    if len(content_hash) != 64 or any(ch not in "0123456789abcdef" for ch in content_hash):
        raise LongMambaTableError(f"{where}: content_hash is {content_hash[:80]!r}, expected 64 lowercase hex digits")
    fingerprint = _text(where, "the model's fingerprint", values["model_fingerprint"])
    return _TableRecord(id=table_id, run_id=values["run_id"], method=method, parameters_json=parameters_json,
                        aggregation=p["aggregation"], clamp_fraction=float(clamp), interval=interval,
                        max_length=max_length, training_length=training_length, layer_count=layer_count,
                        length_count=length_count, content_hash=content_hash, fingerprint=fingerprint,
                        architecture=metadata["architecture"], created_at=metadata["created_at"], metadata=metadata)


def _choices(values) -> str:
    """'a, b or c'."""
    values = list(values)
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


@dataclass
class _ScaleRecord:
    """A `threshold_tables` row of a per-layer scale table (v5), checked by `_decode_scale_table_row`."""
    id: int
    run_id: int
    method: str
    parameters_json: str
    parameters: dict
    lengths: np.ndarray           # [T] int64, from parameters_json
    training_length: int
    layer_count: int
    length_count: int
    content_hash: str
    fingerprint: str
    architecture: str
    created_at: str
    metadata: dict


def _positive_int(where: str, name: str, v, minimum: int = 1) -> int:
    if not _is_int(v) or v < minimum:
        raise LongMambaTableError(f"{where}: {name} is {v!r}, expected an integer ≥ {minimum}")
    return v


def _finite_number(where: str, name: str, v, positive: bool = True) -> float:
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)):
        raise LongMambaTableError(f"{where}: {name} is {v!r}, expected a finite number{' > 0' if positive else ''}")
    return float(v)


def check_scale_parameters(where: str, parameters_json: str) -> dict:
    """A scale table's (or scale job's) parameters_json, every key checked: lengths strictly
    increasing, K, seed, the SPSA gains, L. Returns the parsed object."""
    p = _json(parameters_json)
    if not isinstance(p, dict):
        raise LongMambaTableError(f"{where}: parameters_json is {parameters_json[:80]!r}, expected a JSON object "
                                  f"with {', '.join(SCALE_PARAMETER_KEYS)}")
    missing = [k for k in SCALE_PARAMETER_KEYS if k not in p]
    if missing:
        raise LongMambaTableError(f"{where}: parameters_json has no {', '.join(missing)} "
                                  f"(expected {', '.join(SCALE_PARAMETER_KEYS)})")
    lengths = p["lengths"]
    if not (isinstance(lengths, list) and lengths and all(_is_int(S) and 2 <= S < 2 ** 63 for S in lengths)):
        raise LongMambaTableError(f"{where}: parameters_json lengths is {str(lengths)[:80]}, expected a non-empty "
                                  f"list of lengths ≥ 2 tokens")
    if any(b <= a for a, b in zip(lengths, lengths[1:])):
        raise LongMambaTableError(f"{where}: parameters_json lengths {lengths} are not strictly increasing")
    _positive_int(where, "parameters_json sample_count", p["sample_count"])
    _positive_int(where, "parameters_json steps", p["steps"], 0)
    _positive_int(where, "parameters_json training_length", p["training_length"])
    _positive_int(where, "parameters_json seed", p["seed"], 0)
    if p["seed"] >= 2 ** 64:
        raise LongMambaTableError(f"{where}: parameters_json seed is {p['seed']}, beyond a u64")
    _finite_number(where, "parameters_json perturbation", p["perturbation"])
    _finite_number(where, "parameters_json step_size", p["step_size"])
    _positive_int(where, "parameters_json stability", p["stability"], 0)
    h = p["samples_hash"]
    if not (isinstance(h, str) and len(h) == 64 and all(ch in "0123456789abcdef" for ch in h)):
        raise LongMambaTableError(f"{where}: parameters_json samples_hash is {str(h)[:80]!r}, expected 64 lowercase "
                                  f"hex digits")
    canonical = scale_parameters_json(p)
    if canonical != parameters_json:
        raise LongMambaTableError(f"{where}: parameters_json is not in canonical form (expected {canonical})")
    return p


def scale_parameters_json(p: dict) -> str:
    """A scale table's canonical parameters_json: keys sorted, no spaces, the two real numbers as
    Swift writes a Double (0.1, 0.5, 1.0)."""
    from .fingerprint import swift_description
    return (f'{{"lengths":[{",".join(str(int(S)) for S in p["lengths"])}],'
            f'"perturbation":{swift_description(float(p["perturbation"]))},"sample_count":{int(p["sample_count"])},'
            f'"samples_hash":"{p["samples_hash"]}","seed":{int(p["seed"])},"stability":{int(p["stability"])},'
            f'"step_size":{swift_description(float(p["step_size"]))},"steps":{int(p["steps"])},'
            f'"training_length":{int(p["training_length"])}}}')


def _decode_scale_table_row(path: str, values: dict, where: str, method: str) -> _ScaleRecord:
    """Every check of a per-layer scale table's `threshold_tables` row (v5): its parameters, the
    columns that repeat them (clamp_fraction, aggregation, interval_tokens, max_length NULL;
    training_length L), counts and hash text."""
    parameters_json = _text(where, "parameters_json", values["parameters"])
    p = check_scale_parameters(where, parameters_json)
    lengths = np.asarray(p["lengths"], dtype=np.int64)
    for key, column in (("clamp_fraction", "clamp_fraction"), ("aggregation", "aggregation"),
                        ("interval", "interval_tokens"), ("max_length", "max_length")):
        if values[key] is not None:
            raise LongMambaTableError(f"{where}: {column} is {_kind(values[key])}, expected NULL (a {method} table "
                                      f"has no per-channel grid)")
    training_length = p["training_length"]
    v = values["training_length"]
    if v is not None and (isinstance(v, bool) or v != training_length):
        raise LongMambaTableError(f"{where}: training_length is {_kind(v)}, parameters_json says {training_length!r}")
    layer_count = _integer(where, "layer_count", values["layer_count"], 1)
    length_count = _integer(where, "length_count", values["length_count"], 1)
    if length_count != len(lengths):
        raise LongMambaTableError(f"{where}: length_count is {length_count}, expected {len(lengths)} "
                                  f"(parameters_json lengths {p['lengths']})")
    content_hash = _text(where, "content_hash", values["content_hash"])
    if len(content_hash) != 64 or any(ch not in "0123456789abcdef" for ch in content_hash):
        raise LongMambaTableError(f"{where}: content_hash is {content_hash[:80]!r}, expected 64 lowercase hex digits")
    fingerprint = _text(where, "the model's fingerprint", values["model_fingerprint"])
    metadata = {k: ("" if v is None else str(v)) for k, v in values.items()}
    metadata["training_length"] = str(training_length)
    return _ScaleRecord(id=values["table_id"], run_id=values["run_id"], method=method, parameters_json=parameters_json,
                        parameters=p, lengths=lengths, training_length=training_length, layer_count=layer_count,
                        length_count=length_count, content_hash=content_hash, fingerprint=fingerprint,
                        architecture=metadata["architecture"], created_at=metadata["created_at"], metadata=metadata)


_SCALE_LAYER_QUERY = """
    SELECT layer_index, length_count, lengths_i64, scales_f32 FROM table_scales WHERE table_id = ? ORDER BY layer_index"""


def _decode_scale_layer_row(path: str, table: _ScaleRecord, row) -> tuple:
    """One `table_scales` row against its table: (layer, scales float32 [T])."""
    i, T, lengths_blob, scales = row
    where = f"{path}: table {table.id} layer {_key(i)}"
    i = _integer(where, "layer_index", i, 0)
    if i >= table.layer_count:
        raise LongMambaTableError(f"{where}: layer_index {i} is beyond the table's layer_count {table.layer_count}")
    T = _integer(where, "length_count", T, 1)
    if T != table.length_count:
        raise LongMambaTableError(f"{where}: length_count is {T}, the table's length_count is {table.length_count}")
    lengths = np.frombuffer(_blob(where, "lengths_i64", lengths_blob, 8 * T, f"T={T} × 8"), dtype="<i8").astype(np.int64)
    if not np.array_equal(lengths, table.lengths):
        k = int(np.flatnonzero(lengths != table.lengths)[0])
        raise LongMambaTableError(f"{where}: lengths_i64[{k}] is {lengths[k]}, expected {table.lengths[k]} "
                                  f"(the table's calibrated lengths {table.lengths.tolist()})")
    scales = _floats(where, "scales_f32", scales, T, f"T={T} × 4")
    ok = np.isfinite(scales) & (scales > 0)
    if not ok.all():
        k = int(np.flatnonzero(~ok)[0])
        more = f" ({int((~ok).sum())} such values)" if (~ok).sum() > 1 else ""
        raise LongMambaTableError(f"{where}: scales_f32 holds {float(scales[k])} at length {int(lengths[k])} (entry {k})"
                                  f"{more}, expected finite scales > 0")
    return i, scales


def scale_table_hash(method: str, parameters_json: str, fingerprint: str, layers) -> str:
    """A scale table's content hash (docs/store-format.md, "Scale tables"): SHA-256 over method,
    parameters_json and the model's fingerprint, each followed by a 0 byte, then per layer in
    increasing index `layer {i} scales` and a 0 byte, its lengths_i64 and scales_f32 as stored.
    layers: (index, lengths_i64 bytes, scales_f32 bytes) in increasing index."""
    h = _ScaleHash(method, parameters_json, fingerprint)
    for i, lengths, scales in layers:
        h.add_layer((i, None, lengths, scales))
    return h.value


_LAYER_QUERY = """
    SELECT layer_index, channel_count, length_count, lengths_i64, delta_thresholds_f32, kept_fractions_f32,
           decay_budgets_f32, cumulative_decays_f32, a_values_f32, a_shape_json
    FROM table_layers WHERE table_id = ? ORDER BY layer_index"""


def _decode_layer_row(path: str, table: _TableRecord, row) -> LayerTable:
    """Every check of one `table_layers` row against its table: counts, blob sizes, the lengths
    grid, A's shape, and the ranges of τ, α, D and a. The one place a layer is decoded."""
    i, C, T, lengths_blob, tau, alpha, budget, decay, a_values, a_shape_json = row
    where = f"{path}: table {table.id} layer {_key(i)}"
    i = _integer(where, "layer_index", i, 0)
    if i >= table.layer_count:
        raise LongMambaTableError(f"{where}: layer_index {i} is beyond the table's layer_count {table.layer_count}")
    C = _integer(where, "channel_count", C, 1)
    T = _integer(where, "length_count", T, 1)
    if T != table.length_count:
        raise LongMambaTableError(f"{where}: length_count is {T}, the table's length_count is {table.length_count}")
    lengths = np.frombuffer(_blob(where, "lengths_i64", lengths_blob, 8 * T, f"T={T} × 8"), dtype="<i8").astype(np.int64)
    steps = np.flatnonzero(np.diff(lengths) <= 0)
    if steps.size:
        k = int(steps[0]) + 1
        raise LongMambaTableError(f"{where}: lengths_i64 is not strictly increasing "
                                  f"(lengths[{k}] = {lengths[k]} after {lengths[k - 1]})")
    grid = table.interval * np.arange(1, T + 1, dtype=np.int64)
    if not np.array_equal(lengths, grid):
        k = int(np.flatnonzero(lengths != grid)[0])
        raise LongMambaTableError(f"{where}: lengths_i64[{k}] is {lengths[k]}, expected {grid[k]} "
                                  f"(the table's grid: interval {table.interval} up to max_length {table.max_length})")
    shape = _shape(where, "a_shape_json", a_shape_json)
    if shape[0] != C:
        raise LongMambaTableError(f"{where}: a_shape_json is {a_shape_json}, its first dimension should be "
                                  f"channel_count {C}")
    tc = f"T={T} × C={C} × 4"
    tau = _floats(where, "delta_thresholds_f32", tau, T * C, tc).reshape(T, C)
    alpha = _floats(where, "kept_fractions_f32", alpha, T * C, tc).reshape(T, C)
    budget = _floats(where, "decay_budgets_f32", budget, C, f"C={C} × 4")
    decay = _floats(where, "cumulative_decays_f32", decay, C, f"C={C} × 4")
    A = _floats(where, "a_values_f32", a_values, math.prod(shape), f"a_shape {shape} × 4").reshape(shape)
    _check_values(where, "delta_thresholds_f32", tau, np.isfinite(tau) & (tau >= 0), "finite thresholds ≥ 0", lengths)
    _check_values(where, "kept_fractions_f32", alpha, (alpha > 0) & (alpha <= 1), "kept fractions in (0, 1]", lengths)
    _check_values(where, "decay_budgets_f32", budget, np.isfinite(budget) & (budget >= 0), "finite decay budgets ≥ 0")
    _check_values(where, "cumulative_decays_f32", decay, (decay >= 0) & (decay <= 1), "cumulative decays in [0, 1]")
    return LayerTable(layer=i, delta_threshold=tau, kept_fraction=alpha, decay_budget=budget, cumulative_decay=decay, A=A)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # the stored bytes, even where they are not UTF-8


class _TableHash:
    """The table's content hash (docs/store-format.md, "Content hashes"), fed one stored layer at
    a time; `value` is None once a row lacks what the rule hashes (its decoder says what)."""

    def __init__(self, method, parameters_json, fingerprint):
        self._h = None
        if all(isinstance(s, str) for s in (method, parameters_json, fingerprint)):
            self._h = hashlib.sha256()
            for s in (method, parameters_json, fingerprint):
                self._h.update(_utf8(s) + b"\0")

    def add_layer(self, row):
        if self._h is None:
            return
        i, C, _, *blobs, a_shape_json = row
        shape = _json(a_shape_json) if isinstance(a_shape_json, str) else None
        if not (isinstance(shape, list) and all(_is_int(d) for d in shape) and all(isinstance(b, bytes) for b in blobs)):
            self._h = None
            return
        self._h.update(_utf8(f"layer {i} channels {C} A [{', '.join(map(str, shape))}]") + b"\0")
        for b in blobs:
            self._h.update(b)

    @property
    def value(self):
        return None if self._h is None else self._h.hexdigest()


class _ScaleHash(_TableHash):
    """The scale table's content hash (same preamble as `_TableHash`), fed one stored
    `table_scales` row (index, length_count, lengths_i64, scales_f32) at a time."""

    def add_layer(self, row):
        if self._h is None:
            return
        i, _, lengths, scales = row
        if not (_is_int(i) and isinstance(lengths, bytes) and isinstance(scales, bytes)):
            self._h = None
            return
        self._h.update(_utf8(f"layer {i} scales") + b"\0")
        self._h.update(lengths)
        self._h.update(scales)


_RECORDING_QUERY = """
    SELECT run_id, sample_index, layer_index, token_count, channel_count, encoding, delta_blob, a_shape_json,
           a_values, content_hash
    FROM recordings ORDER BY run_id, sample_index, layer_index"""


def _check_recording_row(path: str, row):
    """Every check of one `recordings` row: its counts, the encoding, the Δ blob's size where the
    encoding fixes it (exact-f32-v1: L·C·4), A against its shape, and the content hash."""
    run, sample, layer, L, C, encoding, blob, a_shape_json, a_values, stored = row
    where = f"{path}: run {_key(run)} sample {_key(sample)} layer {_key(layer)}"
    L = _integer(where, "token_count", L, 1)
    C = _integer(where, "channel_count", C, 1)
    encoding = _text(where, "encoding", encoding)
    if encoding not in ENCODINGS:
        raise LongMambaTableError(f"{where}: encoding is {encoding!r}, expected {' or '.join(ENCODINGS)} "
                                  f"(written by a newer longmamba? upgrade it)")
    if encoding == "exact-f32-v1":
        _blob(where, "delta_blob", blob, 4 * L * C, f"L={L} × C={C} × 4")
    else:  # logrice-v1: a bit stream whose size follows from its records; the hash covers it
        _blob(where, "delta_blob", blob)
    shape = _shape(where, "a_shape_json", a_shape_json)
    if shape[0] != C:
        raise LongMambaTableError(f"{where}: a_shape_json is {a_shape_json}, its first dimension should be "
                                  f"channel_count {C}")
    _blob(where, "a_values", a_values, 4 * math.prod(shape), f"a_shape {shape} × 4")
    stored = _text(where, "content_hash", stored)
    computed = hashlib.sha256(_utf8(encoding) + blob + a_values).hexdigest()
    if computed != stored:
        raise LongMambaTableError(f"{where}: content_hash {stored[:12]}… does not match encoding ‖ delta_blob ‖ "
                                  f"a_values ({computed[:12]}…): {ALTERED.format('recording')}")


def _check_run_sample_row(path: str, row):
    """One `run_samples` row: the token ids hold token_count i32 values."""
    run, sample, count, ids = row
    where = f"{path}: run {_key(run)} sample {_key(sample)}"
    count = _integer(where, "token_count", count, 0)
    _blob(where, "token_ids_i32", ids, 4 * count, f"token_count {count} × 4")


class Store:
    """A longmamba calibration database, opened read-only."""

    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):
            raise NotAStoreError(f"{path}: not a longmamba SQLite database (no such file)")
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            # Text that is not UTF-8 (an altered row) comes back as it is stored rather than failing the fetch.
            self._db.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            names = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as e:
            raise NotAStoreError(f"{path}: not a longmamba SQLite database ({e})") from None
        if version > SUPPORTED_SCHEMA:
            self._db.close()
            raise NewerSchemaError(
                f"{path}: written by a newer longmamba (schema version {version}; this tool understands up "
                f"to {SUPPORTED_SCHEMA}). Upgrade longmamba; the database was not modified.")
        self._schema = version
        self._names = names
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
        """Every table's row, checked (not its layers: `table(id)` and `check()` read those)."""
        try:
            rows = self._db.execute(_table_query(self._schema) + " ORDER BY t.id").fetchall()
        except sqlite3.DatabaseError as e:
            raise LongMambaTableError(f"{self.path}: threshold_tables cannot be read ({e})") from None
        infos = []
        for row in rows:
            try:
                t = _decode_table_row(self.path, row)
            except UnknownMethodError as e:
                # A newer tool's table: listed as it is, never read; the others still are.
                v = dict(zip(_TABLE_KEYS, row))
                infos.append(TableInfo(v["table_id"], v["run_id"], v["method"], None, None, None, None,
                                       v["training_length"], v["layer_count"], v["length_count"], v["content_hash"],
                                       v["architecture"], v["model_fingerprint"], v["created_at"], v["row_kind"],
                                       problem=str(e)))
                continue
            if isinstance(t, _ScaleRecord):
                infos.append(TableInfo(t.id, t.run_id, t.method, None, None, None, None, t.training_length,
                                       t.layer_count, t.length_count, t.content_hash, t.architecture, t.fingerprint,
                                       t.created_at, "per_layer", tuple(int(S) for S in t.lengths)))
                continue
            infos.append(TableInfo(t.id, t.run_id, t.method, t.clamp_fraction, t.aggregation, t.interval, t.max_length,
                                   t.training_length, t.layer_count, t.length_count, t.content_hash, t.architecture,
                                   t.fingerprint, t.created_at))
        return infos

    def run(self, run_id: int) -> "RunInfo":
        """A calibration run: its status, model, L and the table grid it was calibrated with."""
        run_id = int(run_id)
        try:
            row = self._db.execute(
                "SELECT r.id, r.status, r.sample_length, r.sample_count, r.layer_count, r.recording_metadata_json, "
                "m.fingerprint, m.architecture FROM calibration_runs r JOIN models m ON m.id = r.model_id WHERE r.id = ?",
                (run_id,)).fetchone()
        except sqlite3.DatabaseError as e:
            raise LongMambaTableError(f"{self.path}: calibration_runs cannot be read ({e})") from None
        if row is None:
            raise LongMambaTableError(f"{self.path}: no calibration run with id {run_id}")
        where = f"run {run_id}"
        metadata = _json(row[5]) if isinstance(row[5], str) else None
        grid = None
        if isinstance(metadata, dict):
            interval, longest = metadata.get("table_interval"), metadata.get("table_max_length")
            if _is_int(interval) and _is_int(longest) and 0 < interval <= longest:
                grid = (interval, longest)
        if grid is None:   # runs of older tools: the grid of the run's first table, else the paper's
            first = next((t for t in self.tables() if t.run_id == run_id and t.method == "longmamba"), None)
            grid = (first.interval, first.max_length) if first else DEFAULT_GRID
        return RunInfo(id=run_id, status=_text(where, "status", row[1]),
                       sample_length=_integer(where, "sample_length", row[2], 1),
                       sample_count=_integer(where, "sample_count", row[3], 1),
                       layer_count=_integer(where, "layer_count", row[4], 1),
                       fingerprint=_text(where, "fingerprint", row[6]), architecture=_text(where, "architecture", row[7]),
                       interval=grid[0], max_length=grid[1])

    def table(self, table_id: int):
        """The table, every row checked and its content hash verified; a damaged or altered
        table raises LongMambaTableError naming the table, the layer and the column. A per-channel
        table (`longmamba`) is a `Table`, a per-layer one (`delta_scale`, `a_power`) a `ScaleTable`;
        a method this package does not know raises UnknownMethodError (the other tables still read)."""
        return self._read_table(int(table_id), None)

    def scale_table(self, table_id: int) -> "ScaleTable":
        """`table(id)`, refused unless it is a per-layer scale table."""
        table = self.table(table_id)
        if not isinstance(table, ScaleTable):
            raise LongMambaTableError(f"{self.path}: table {table_id} is a {table.metadata.get('method')} table, not a "
                                      f"per-layer scale table ({_choices(SCALE_METHODS)})")
        return table

    def _missing_layers(self, table_id: int, indices: list, layer_count: int, rows_table: str):
        """The error naming the first layers absent from `rows_table`, or None. Without enumerating
        layer_count (an altered one may be huge): the first missing layers are among the first
        len(indices) + 3."""
        present = set(indices)
        missing = [k for k in range(min(layer_count, len(indices) + 3)) if k not in present]
        if not missing:
            return None
        count = layer_count - sum(1 for i in present if _is_int(i) and 0 <= i < layer_count)
        shown = ", ".join(map(str, missing[:3])) + (", …" if count > 3 else "")
        return LongMambaTableError(
            f"{self.path}: table {table_id}: layer{'s' if count > 1 else ''} {shown} "
            f"{'are' if count > 1 else 'is'} missing from {rows_table} "
            f"(layer_count is {layer_count}, {len(indices)} stored)")

    def _hash_mismatch(self, table_id: int, stored_hash, computed):
        """The error for a content hash that does not match the rows it was recomputed from, or None."""
        if computed is None or computed == stored_hash:
            return None
        return LongMambaTableError(
            f"{self.path}: table {table_id}: content_hash {str(stored_hash)[:12]}… does not match its rows "
            f"(recomputed {computed[:12]}…): {ALTERED.format('table')}")

    def _read_scale_table(self, table_id: int, row, table: "_ScaleRecord", fail):
        """The rows of a per-layer scale table (`table_scales`), checked, and its content hash."""
        digest = _ScaleHash(row[1], row[2], row[14])
        scales, indices = {}, []
        try:
            for layer_row in self._db.execute(_SCALE_LAYER_QUERY, (table_id,)):
                digest.add_layer(layer_row)
                indices.append(layer_row[0])
                try:
                    i, values = _decode_scale_layer_row(self.path, table, layer_row)
                    scales[i] = values
                except LongMambaTableError as e:
                    fail(e)
        except sqlite3.DatabaseError as e:
            fail(LongMambaTableError(f"{self.path}: table {table_id} cannot be read ({e})"))
            return None
        missing = self._missing_layers(table_id, indices, table.layer_count, "table_scales")
        if missing:
            fail(missing)
            return None
        mismatch = self._hash_mismatch(table_id, table.content_hash, digest.value)
        if mismatch:
            fail(mismatch)
            return None
        if len(scales) != table.layer_count:
            return None
        return ScaleTable(id=table.id, run_id=table.run_id, method=table.method, lengths=table.lengths.copy(),
                          scales=np.stack([scales[i] for i in range(table.layer_count)]).astype(np.float32),
                          parameters=table.parameters, training_length=table.training_length,
                          fingerprint=table.fingerprint, content_hash=table.content_hash,
                          metadata=table.metadata, source=f"{self.path}#{table_id}")

    def _read_table(self, table_id: int, problems):
        """table(id) when `problems` is None (the first problem raises); check() passes a list
        and gets every problem of the table appended instead."""
        def fail(error):
            if problems is None:
                raise error
            problems.append(str(error))

        try:
            row = self._db.execute(_table_query(self._schema) + " WHERE t.id = ?", (table_id,)).fetchone()
            if row is None:
                raise UnknownTableError(f"{self.path}: no threshold table with id {table_id} "
                                        f"(list them with `longmamba tables --db {self.path}`)")
            try:
                table = _decode_table_row(self.path, row)
            except UnknownMethodError as e:
                fail(e)             # a newer tool's table: its rows are not this package's to judge
                return None
            except LongMambaTableError as e:
                fail(e)
                if row[1] in SCALE_METHODS:   # its rows are not table_layers': nothing more to check
                    return None
                table = None
            if isinstance(table, _ScaleRecord):
                result = self._read_scale_table(table_id, row, table, fail)
                return None if problems is not None else result
            digest = _TableHash(row[1], row[2], row[14])
            layers, indices = [], []
            # Row by row: the hash is fed as the layers stream, so a big table is held once.
            for layer_row in self._db.execute(_LAYER_QUERY, (table_id,)):
                digest.add_layer(layer_row)
                indices.append(layer_row[0])
                if table is not None:
                    try:
                        layers.append(_decode_layer_row(self.path, table, layer_row))
                    except LongMambaTableError as e:
                        fail(e)
        except sqlite3.DatabaseError as e:
            unreadable = LongMambaTableError(f"{self.path}: table {table_id} cannot be read ({e})")
        else:
            unreadable = None
        if unreadable is not None:  # raised here, not inside the except: no chained sqlite3 traceback
            fail(unreadable)
            return None
        if table is not None:
            missing = self._missing_layers(table_id, indices, table.layer_count, "table_layers")
            if missing:
                fail(missing)
        mismatch = self._hash_mismatch(table_id, row[10], digest.value)
        if mismatch:
            fail(mismatch)
        if problems is not None:
            return None
        # Every layer's lengths_i64 was checked equal to the grid.
        lengths = table.interval * np.arange(1, table.length_count + 1, dtype=np.int64)
        return Table(lengths=lengths, layers=layers, metadata=table.metadata, source=f"{self.path}#{table_id}")

    def check(self) -> list:
        """Verifies the whole store: SQLite's integrity_check and foreign_key_check, every table
        (its rows and content hash, as `table(id)` reads them), every recording (sizes and content
        hash) and every run's sampled token ids. Returns the problems, one line each; an empty
        list: the store is healthy."""
        problems = []

        def rows(what, query, check_row):
            # Each part on its own: a page SQLite cannot read is reported, and the rest still checked.
            try:
                for row in self._db.execute(query):
                    problem = check_row(row)
                    if problem:
                        problems.append(problem)
            except sqlite3.DatabaseError as e:
                problems.append(f"{self.path}: {what} failed ({e})")

        def checked(row, check_row):
            try:
                check_row(self.path, row)
            except LongMambaTableError as e:
                return str(e)

        rows("integrity_check", "PRAGMA integrity_check",
             lambda r: None if r[0] == "ok" else f"{self.path}: integrity_check: {r[0]}")
        rows("foreign_key_check", "PRAGMA foreign_key_check",
             lambda r: f"{self.path}: {r[0]} row {r[1]} refers to a row of {r[2]} that does not exist")
        table_ids = []
        rows("reading threshold_tables", "SELECT id FROM threshold_tables ORDER BY id", lambda r: table_ids.append(r[0]))
        for table_id in table_ids:
            self._read_table(table_id, problems)
        if "recordings" in self._names:
            rows("reading recordings", _RECORDING_QUERY, lambda r: checked(r, _check_recording_row))
        if "run_samples" in self._names:
            rows("reading run_samples", "SELECT run_id, sample_index, token_count, token_ids_i32 FROM run_samples "
                                        "ORDER BY run_id, sample_index", lambda r: checked(r, _check_run_sample_row))
        return problems
def open(path: str) -> Store:  # noqa: A001 - the documented name
    """Opens a longmamba calibration database read-only (a newer schema is refused)."""
    return Store(path)


def check(path: str) -> list:
    """Verifies a store (`Store.check()`): the problems found, one line each; empty when healthy."""
    with Store(path) as store:
        return store.check()


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


def _export_metadata_value(v):
    return "" if v is None else (v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), sort_keys=True))


def _scale_export(path: str, lengths, rows, metadata: dict) -> "ScaleTable":
    """A per-layer scale table from an export: lengths [T], rows [layers][T], the metadata."""
    method = metadata.get("method") or "(none)"
    if method not in SCALE_METHODS:
        raise UnknownMethodError(f"{path}: a table export of the method '{method}', which this tool does not know "
                                 f"(written by a newer tool?)")
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lengths.size == 0 or np.any(np.diff(lengths) <= 0):
        raise LongMambaTableError(f"{path}: lengths {lengths.tolist()} are not increasing calibrated lengths")
    scales = np.asarray(rows, dtype=np.float32)
    if scales.ndim != 2 or scales.shape[1] != lengths.size or scales.shape[0] == 0:
        raise LongMambaTableError(f"{path}: the layers' scales have shape {list(scales.shape)}, expected [layers, "
                                  f"{lengths.size}]")
    if not (np.isfinite(scales) & (scales > 0)).all():
        raise LongMambaTableError(f"{path}: the scales must be finite and > 0")
    metadata = {k: _export_metadata_value(v) for k, v in metadata.items()}
    parameters = _json(metadata.get("parameters", "") or "") or {}
    training = metadata.get("training_length") or parameters.get("training_length") or 0

    def integer(key):
        v = metadata.get(key)
        return int(v) if v not in (None, "") and str(v).lstrip("-").isdigit() else None
    return ScaleTable(id=integer("table_id"), run_id=integer("run_id"), method=method, lengths=lengths, scales=scales,
                      parameters=parameters if isinstance(parameters, dict) else {}, training_length=int(training),
                      fingerprint=metadata.get("model_fingerprint") or None, content_hash=metadata.get("content_hash") or None,
                      metadata=metadata, source=path)


def load_export(path: str):
    """Reads `longmamba export --format safetensors` or `--format json`: a `Table`, or for a
    per-layer scale table (tensors `lengths` and `layer.{i}.scale`, metadata `method`) a `ScaleTable`."""
    if path.endswith(".json"):
        try:
            with builtins.open(path, "r", encoding="utf-8") as f:
                doc = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise LongMambaTableError(f"{path}: not a longmamba JSON table ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != "longmamba-table":
            raise LongMambaTableError(f"{path}: not a longmamba JSON table (no \"format\": \"longmamba-table\")")
        metadata = doc.get("metadata", {}) if isinstance(doc.get("metadata"), dict) else {}
        layers = doc.get("layers") or []
        if (metadata.get("row_kind") == "per_layer" or metadata.get("method") not in (None, "longmamba")
                or (layers and isinstance(layers[0], dict) and "scale" in layers[0])):
            return _scale_export(path, doc.get("lengths", []), [l.get("scale") for l in layers], metadata)
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
    if "lengths" in tensors and "layer.0.scale" in tensors:
        rows, i = [], 0
        while f"layer.{i}.scale" in tensors:
            rows.append(tensors[f"layer.{i}.scale"].astype(np.float32).reshape(-1))
            i += 1
        return _scale_export(path, tensors["lengths"], rows, metadata)
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

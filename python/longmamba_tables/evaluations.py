"""Evaluation points of `longmamba tune`, with the CLI's keys: compute them, read them, write them.

`longmamba tune` stores every evaluated point in the store's `evaluations` table under a point
key; a later `tune` (or this module) that computes the same key finds the point and reuses it.
The keys (docs/store-format.md, "Evaluation keys"):

    evaluation_key = sha256("{task}|{fingerprint}|{text_hash}|{settings}|{filter_from or 'default'}"
                            + ("|{dtype}" unless dtype is float32))
    point_key      = sha256("{evaluation_key}|{table_id or 'vanilla'}|{theta or '-'}|{length}|{metric}")

with numbers written as Swift writes them (`swift_description`: θ 0.05 → "0.05", 1e-05 → "1e-05",
depths [0.0, 0.5, 1.0]). A float32 point is one evaluation whatever runner measured it (the Swift
CLI on the CPU, torch on a GPU); bfloat16 and float16 points are evaluations of their own.

    from longmamba_tables.evaluations import Evaluation, EvaluationWriter
    ev = Evaluation.perplexity(fingerprint(model_dir), token_ids, windows=1)
    with EvaluationWriter("cal.sqlite", backend="torch", device="cuda:0 (NVIDIA H100 80GB HBM3)") as w:
        if w.point(ev.point_key(table_id=3, theta=0.05, length=8192)) is None:
            w.add(ev, length=8192, value=ppl, table_id=3, theta=0.05,
                  detail_json=perplexity_detail(windows=1, kept_share=0.4, tabulated_length=8000))
"""
from __future__ import annotations

import hashlib
import math
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from .errors import LongMambaTableError, NewerSchemaError, NotAStoreError, UnknownTableError
from .fingerprint import swift_array_description, swift_description

#: The schema the writer writes: v4 added evaluations.backend, device and dtype; v5 (per-layer scale
#: tables) left evaluations as they were.
WRITER_SCHEMA = 5
#: Tasks and their metric (a row with another task or metric was written by a newer tool).
METRICS = {"perplexity": "perplexity", "passkey": "accuracy"}
#: Numeric types a point can be measured in; float32 keys are those of schema 3.
FLOAT32, BFLOAT16, FLOAT16 = "float32", "bfloat16", "float16"
DTYPES = (FLOAT32, BFLOAT16, FLOAT16)
#: Runners ('swift': the longmamba CLI; 'torch': this package's evaluation in transformers).
BACKENDS = ("swift", "torch")
#: detail_json of a table point below the filter start, where the vanilla value was reused.
UNFILTERED_DETAIL = '{"filtered":false}'


class OlderSchemaError(LongMambaTableError):
    """The store was written by an older longmamba: `longmamba migrate --db PATH` first."""


class StoreLockedError(LongMambaTableError):
    """Another writer held the store for longer than the busy timeout."""


# ---- keys ---------------------------------------------------------------------------------------

def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise LongMambaTableError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return dtype


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def evaluation_key(task: str, fingerprint: str, text_hash: str, settings: str, filter_from=None,
                   dtype: str = FLOAT32) -> str:
    """`EvaluationRecord.evaluationKey`: what was evaluated (task, model, text, settings, filter
    start, and the numeric type where it is not float32), as SHA-256 hex."""
    _check_dtype(dtype)
    if filter_from is not None and not _is_int(filter_from):
        raise LongMambaTableError(f"filter_from must be a whole number of tokens or None, got {filter_from!r}")
    text = f"{task}|{fingerprint}|{text_hash}|{settings}|{'default' if filter_from is None else int(filter_from)}"
    if dtype != FLOAT32:
        text += f"|{dtype}"
    return _sha256(text)


def theta_text(theta) -> str:
    """θ as the point key writes it: Swift's description of the Double ("0.05", "1e-05", "1.0")."""
    return "-" if theta is None else swift_description(float(theta))


def point_key(evaluation_key: str, table_id, theta, length: int, metric: str) -> str:
    """`EvaluationRecord.pointKey`: one point of an evaluation (table or vanilla, θ, length, metric)."""
    table = "vanilla" if table_id is None else str(int(table_id))
    return _sha256(f"{evaluation_key}|{table}|{theta_text(theta)}|{int(length)}|{metric}")


def perplexity_settings(windows: int) -> str:
    """The perplexity task's settings: `windows 3`."""
    if not _is_int(windows) or windows < 1:
        raise LongMambaTableError(f"windows must be a positive whole number, got {windows!r}")
    return f"windows {int(windows)}"


def passkey_settings(depths, trials: int, seed: int) -> str:
    """The passkey task's settings: `depths [0.0, 0.25, 0.5] trials 10 seed 0` (depths as Swift
    prints an [Double]; seed a UInt64)."""
    if not _is_int(trials):
        raise LongMambaTableError(f"trials must be a whole number, got {trials!r}")
    if not _is_int(seed) or not 0 <= seed < 2 ** 64:
        raise LongMambaTableError(f"seed must be a whole number in 0 … 2^64 − 1, got {seed!r}")
    return f"depths {swift_array_description([float(d) for d in depths])} trials {int(trials)} seed {int(seed)}"


def token_ids_hash(token_ids) -> str:
    """SHA-256 of token ids as i32 little-endian (the perplexity text hash; a custom passkey
    haystack's hash). Ids wrap to 32 bits as Swift's Int32(truncatingIfNeeded:)."""
    ids = np.asarray(token_ids)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise LongMambaTableError(f"token ids must be integers, got an array of {ids.dtype}")
    return hashlib.sha256(ids.astype(np.int64).reshape(-1).astype("<i4").tobytes()).hexdigest()


perplexity_text_hash = token_ids_hash


def tokenizer_hash(tokenizer_json) -> str:
    """SHA-256 of a tokenizer.json file's bytes (`BPETokenizer.sha256`)."""
    path = os.fspath(tokenizer_json)
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        raise LongMambaTableError(f"{path}: cannot read the tokenizer ({e.strerror})") from None


def passkey_text_hash(tokenizer_sha256: str, haystack_ids=None) -> str:
    """The passkey text hash: SHA-256 of "{tokenizer hash}|{haystack hash}", the haystack hash
    being "filler" for the built-in filler, else the SHA-256 of the haystack's token ids (i32 LE)."""
    haystack = "filler" if haystack_ids is None else token_ids_hash(haystack_ids)
    return _sha256(f"{tokenizer_sha256}|{haystack}")


def perplexity_detail(windows: int, kept_share=None, tabulated_length=None) -> str:
    """detail_json of a perplexity point, byte for byte as the CLI writes it."""
    share = swift_description(1.0 if kept_share is None else float(kept_share))
    tabulated = "null" if tabulated_length is None else str(int(tabulated_length))
    return f'{{"windows":{int(windows)},"kept_share":{share},"tabulated_length":{tabulated}}}'


def passkey_detail(depths, accuracy_by_depth, trials: int) -> str:
    """detail_json of a passkey point, byte for byte as the CLI writes it."""
    return (f'{{"depths":{swift_array_description([float(d) for d in depths])},'
            f'"accuracy_by_depth":{swift_array_description([float(a) for a in accuracy_by_depth])},'
            f'"trials":{int(trials)}}}')


def now() -> str:
    """The CLI's created_at: ISO 8601 UTC with milliseconds, `2026-12-05T20:57:50.364Z`."""
    t = datetime.now(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def tool_version() -> str:
    from . import __version__
    return f"longmamba_tables {__version__}"


@dataclass(frozen=True)
class Evaluation:
    """What is evaluated (one `evaluation_key`): its points differ by table, θ and length."""
    task: str
    fingerprint: str
    text_hash: str
    settings: str
    filter_from: int = None
    dtype: str = FLOAT32

    def __post_init__(self):
        if self.task not in METRICS:
            raise LongMambaTableError(f"task {self.task!r} is not one of {', '.join(METRICS)}")
        _check_dtype(self.dtype)

    @property
    def metric(self) -> str:
        return METRICS[self.task]

    @property
    def key(self) -> str:
        return evaluation_key(self.task, self.fingerprint, self.text_hash, self.settings, self.filter_from, self.dtype)

    def point_key(self, table_id=None, theta=None, length: int = 0) -> str:
        return point_key(self.key, table_id, theta, length, self.metric)

    @classmethod
    def perplexity(cls, fingerprint: str, token_ids, windows: int = 1, filter_from=None, dtype: str = FLOAT32):
        """Perplexity of `windows` windows of each length of the text with these token ids."""
        return cls("perplexity", fingerprint, token_ids_hash(token_ids), perplexity_settings(windows), filter_from, dtype)

    @classmethod
    def passkey(cls, fingerprint: str, tokenizer_json, depths=(0, 0.25, 0.5, 0.75, 1), trials: int = 10, seed: int = 0,
                haystack_ids=None, filter_from=None, dtype: str = FLOAT32):
        """Passkey retrieval with the tokenizer.json at that path (its bytes are hashed) and the
        built-in filler, or the haystack with these token ids."""
        return cls("passkey", fingerprint, passkey_text_hash(tokenizer_hash(tokenizer_json), haystack_ids),
                   passkey_settings(depths, trials, seed), filter_from, dtype)


@dataclass
class EvaluationPoint:
    """One row of `evaluations`."""
    id: int
    point_key: str
    evaluation_key: str
    table_id: int
    theta: float
    task: str
    length: int
    metric: str
    value: float
    detail_json: str
    text_hash: str
    tool_version: str
    created_at: str
    backend: str = "swift"
    device: str = "cpu"
    dtype: str = FLOAT32
    #: After `EvaluationWriter.add`: whether this call inserted the row (False: it was there).
    inserted: bool = None


_COLUMNS = ("id", "point_key", "evaluation_key", "table_id", "theta", "task", "length", "metric", "value", "detail_json",
            "text_hash", "tool_version", "created_at", "backend", "device", "dtype")


def _point(path: str, row) -> EvaluationPoint:
    p = EvaluationPoint(*row)
    if p.task not in METRICS or p.metric not in METRICS.values():
        raise LongMambaTableError(
            f"{path}: evaluation row {p.id} has task '{p.task}' and metric '{p.metric}', written by longmamba "
            f"{p.tool_version}, which this tool does not know; upgrade longmamba_tables (nothing was changed)")
    return p


def _select(schema: int) -> str:
    # Rows of schema 3 were all measured by the Swift runner on the CPU in float32.
    extra = "backend, device, dtype" if schema >= 4 else "'swift', 'cpu', 'float32'"
    return f"SELECT {', '.join(_COLUMNS[:13])}, {extra} FROM evaluations"


def _schema_version(path: str) -> int:
    """The store's user_version, read on a read-only connection (the file is not touched);
    NotAStoreError for a file that is no SQLite database or has no longmamba schema."""
    if not os.path.exists(path):
        raise NotAStoreError(f"{path}: no such database (create one with `longmamba calibrate --model DIR --corpus FILE "
                             f"--db {path}`)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise NotAStoreError(f"{path}: not a longmamba SQLite database ({e})") from None
    if version == 0 or "models" not in names:
        raise NotAStoreError(f"{path}: the file holds no longmamba schema; check the path, or create a store with "
                             f"`longmamba calibrate --db {path} …`")
    return version


def _newer(path: str, version: int, supported: int) -> NewerSchemaError:
    return NewerSchemaError(f"{path}: written by a newer longmamba (schema version {version}; this tool understands up "
                            f"to {supported}). Upgrade longmamba; the database was not modified.")


def read_evaluations(path, evaluation_key: str = None) -> list:
    """Every stored point (of one evaluation key, if given), oldest first, from a store of schema
    3 or 4 opened read-only. Rows of a task or metric this package does not know are refused."""
    path = os.fspath(path)
    version = _schema_version(path)
    if version > WRITER_SCHEMA:
        raise _newer(path, version, WRITER_SCHEMA)
    if version < 3:
        return []  # evaluations came with schema 3
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        query = _select(version) + (" WHERE evaluation_key = ?" if evaluation_key is not None else "") + " ORDER BY id"
        rows = db.execute(query, () if evaluation_key is None else (evaluation_key,)).fetchall()
    except sqlite3.DatabaseError as e:
        raise LongMambaTableError(f"{path}: evaluations cannot be read ({e})") from None
    finally:
        db.close()
    return [_point(path, r) for r in rows]


class EvaluationWriter:
    """Writes evaluation points into a store of schema 5, as `longmamba tune` does: each point in
    its own short transaction (BEGIN IMMEDIATE … COMMIT), a point already stored left as it is
    (INSERT … ON CONFLICT(point_key) DO NOTHING). Another writer (a running `longmamba tune` or
    `calibrate`) is waited for up to `busy_timeout` seconds. A store of an older schema is refused
    untouched (`longmamba migrate --db PATH` first), as is one of a newer schema.

    backend: 'torch' (this package) or 'swift'; device: e.g. 'cpu' or 'cuda:0 (NVIDIA H100 80GB
    HBM3)'; dtype: the numeric type the points are measured in (it must be the `Evaluation`'s).

    SQLite's lock is not fair: a loop inserting points back to back (no evaluation in between)
    can keep a concurrent CLI waiting past its 5 s busy timeout. A tune that evaluates between
    points leaves the lock free nearly all the time.
    """

    def __init__(self, path, backend: str = "torch", device: str = "cpu", dtype: str = FLOAT32,
                 busy_timeout: float = 60.0):
        self.path = os.fspath(path)
        if backend not in BACKENDS:
            raise LongMambaTableError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        if not isinstance(device, str) or not device:
            raise LongMambaTableError(f"device must be a non-empty text such as 'cpu' or 'cuda:0', got {device!r}")
        self.backend, self.device, self.dtype = backend, device, _check_dtype(dtype)
        version = _schema_version(self.path)
        if version > WRITER_SCHEMA:
            raise _newer(self.path, version, WRITER_SCHEMA)
        if version < WRITER_SCHEMA:
            raise OlderSchemaError(f"{self.path}: was written by an older longmamba (schema {version}): run "
                                   f"`longmamba migrate --db {self.path}` first")
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except sqlite3.DatabaseError as e:
            raise NotAStoreError(f"{self.path}: not a longmamba SQLite database ({e})") from None
        self._db.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            # WAL as the CLI's writer: readers never block the writer, nor the writer them.
            self._db.execute("PRAGMA journal_mode = WAL").fetchone()
            # Checked again on this connection: a migration may have run in between.
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.OperationalError as e:
            self._db.close()
            raise self._mapped(e) from None
        if version != WRITER_SCHEMA:
            self._db.close()
            raise _newer(self.path, version, WRITER_SCHEMA)

    def _mapped(self, e: sqlite3.DatabaseError) -> LongMambaTableError:
        text = str(e)
        if "locked" in text or "busy" in text:
            return StoreLockedError(f"{self.path}: the database is locked by another writer; retry when it has finished "
                                    f"(nothing was written)")
        if "readonly" in text or "read-only" in text:
            return LongMambaTableError(f"{self.path}: the database is read-only (nothing was written)")
        return LongMambaTableError(f"{self.path}: {text}")

    def _open(self):
        if self._db is None:
            raise LongMambaTableError(f"{self.path}: the evaluation writer is closed")

    def close(self):
        """Closes the connection; as the CLI does, the last connection returns the file to the
        rollback journal (one self-contained file); with other processes connected it stays in WAL."""
        if self._db is None:
            return
        try:
            self._db.execute("PRAGMA busy_timeout = 0")
            self._db.execute("PRAGMA journal_mode = DELETE").fetchone()
        except sqlite3.DatabaseError:
            pass  # busy: another connection is open; the file stays in WAL mode
        self._db.close()
        self._db = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add(self, evaluation: Evaluation, length: int, value: float, table_id=None, theta=None,
            detail_json: str = "{}") -> EvaluationPoint:
        """Stores one point of `evaluation` (vanilla: table_id and theta None; a per-layer scale
        table: theta None), unless a point with its key is already stored. Returns the stored row; `.inserted` says which happened."""
        if evaluation.dtype != self.dtype:
            raise LongMambaTableError(f"the evaluation is keyed for {evaluation.dtype} but this writer records points "
                                      f"measured in {self.dtype}")
        if not _is_int(length) or length < 1:
            raise LongMambaTableError(f"length must be a positive whole number of tokens, got {length!r}")
        if table_id is None and theta is not None:
            raise LongMambaTableError("a vanilla point has no θ (a table point has table_id, and θ unless the table "
                                      "holds per-layer scales)")
        if table_id is not None and not _is_int(table_id):
            raise LongMambaTableError(f"table_id must be a whole number, got {table_id!r}")
        if theta is not None:
            theta = float(theta)
            if not (math.isfinite(theta) and theta > 0):
                raise LongMambaTableError(f"θ must be > 0, got {theta}")
        value = float(value)
        if math.isnan(value):
            raise LongMambaTableError(f"the value of a point must be a number, got {value}")
        if not isinstance(detail_json, str):
            raise LongMambaTableError(f"detail_json must be a JSON text, got {type(detail_json).__name__}")
        self._open()
        key = evaluation.key
        pk = point_key(key, table_id, theta, length, evaluation.metric)
        row = (pk, key, None if table_id is None else int(table_id), theta, evaluation.task, int(length), evaluation.metric,
               value, detail_json, evaluation.text_hash, tool_version(), now(), self.backend, self.device, self.dtype)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                inserted = self._db.execute(
                    f"INSERT INTO evaluations ({', '.join(_COLUMNS[1:])}) VALUES ({', '.join('?' * (len(_COLUMNS) - 1))}) "
                    f"ON CONFLICT(point_key) DO NOTHING", row).rowcount == 1
                stored = self._db.execute(_select(WRITER_SCHEMA) + " WHERE point_key = ?", (pk,)).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as e:
            if "FOREIGN KEY" in str(e):
                raise UnknownTableError(f"{self.path}: no threshold table with id {table_id} (list them with "
                                        f"`longmamba tables --db {self.path}`)") from None
            raise LongMambaTableError(f"{self.path}: {e}") from None
        except sqlite3.DatabaseError as e:
            raise self._mapped(e) from None
        point = _point(self.path, stored)
        point.inserted = inserted
        return point

    def point(self, point_key: str):
        """The stored point with this key, or None."""
        self._open()
        try:
            row = self._db.execute(_select(WRITER_SCHEMA) + " WHERE point_key = ?", (point_key,)).fetchone()
        except sqlite3.DatabaseError as e:
            raise self._mapped(e) from None
        return None if row is None else _point(self.path, row)

    def points(self, evaluation_key: str = None) -> list:
        """Every stored point (of one evaluation key, if given), oldest first."""
        self._open()
        query = _select(WRITER_SCHEMA) + (" WHERE evaluation_key = ?" if evaluation_key is not None else "") + " ORDER BY id"
        try:
            rows = self._db.execute(query, () if evaluation_key is None else (evaluation_key,)).fetchall()
        except sqlite3.DatabaseError as e:
            raise self._mapped(e) from None
        return [_point(self.path, r) for r in rows]

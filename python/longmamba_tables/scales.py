"""Per-layer scale tables (MambaExtend's `delta_scale`, Mamba Modulation's `a_power`): their SPSA
calibration on a job prepared by `longmamba calibrate-scales … --prepare-only`, on any torch device.

    import longmamba_tables as lmt
    table_id = lmt.calibrate_scales("cal.sqlite", job_id=1, model="model_dir", device="cuda")
    python -m longmamba_tables calibrate-scales --db cal.sqlite --job 1 --model DIR --device cuda

The algorithm is docs/method.md's "Per-layer scale methods", step for step as the CLI runs it, for
each calibrated length S separately, in log space u_l = log s_l from u = 0:

    f(u)   mean NLL (float64) of tokens 1…S−1 of every sample's first S tokens, each sample one
           forward with s = f32(exp(u)) applied in prefill (every position)
    step k = 1…K_steps:
      a_k = a / (k + A)^0.602,  c_k = c / k^0.101
      a = step_size · (j + A)^0.602 / |ĝ_j| at the first step j with finite losses (it moves u by step_size)
      δ_k,l = ±1: the top bit of SplitMix64's l-th output, seeded seed ^ S·φ ^ k·0xBF58476D1CE4E5B9
      v± = f32(u ± c_k δ_k);  ĝ_l = (f+ − f−) / (2 c_k δ_k,l);  u := f32(clamp(u − clip(a_k ĝ, ±step_size), −3, 3))
      a non-finite f+ or f− rejects the step (u unchanged, recorded)
    best = the evaluated point with the lowest f; the table stores s = f32(exp(best u))

Every step is one `scale_steps` row committed on its own (backend torch, the device, the dtype),
so a killed calibration resumes after its last committed step; the CLI and this package continue
each other's jobs. When every length has all its steps, the table (a `threshold_tables` row with
row_kind per_layer and its `table_scales` rows) and `scale_jobs.table_id` are written in one
transaction; a table with the same content hash already in the run is reused.
"""
from __future__ import annotations

import hashlib
import math
import os
import sqlite3
from dataclasses import dataclass, field

import numpy as np

from .errors import CalibrationError, LongMambaTableError, ModelMismatchError, NotAStoreError
from .store import SCALE_METHODS, check_scale_parameters, scale_table_hash

#: The schema whose scale_jobs and scale_steps this module writes.
SCALE_SCHEMA = 5
#: SPSA's gain exponents (Spall's recommended α and γ) and the clamp of u (s in [e⁻³, e³]).
ALPHA, GAMMA, U_LIMIT = 0.602, 0.101, 3.0
_U64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX = 0xBF58476D1CE4E5B9


# ---- the pure parts: the δ stream, the gains, the roundings, the hashes ----------------------------

def _splitmix64(state: int):
    """(next state, output) of SplitMix64 (Corpus/SeededRandom.swift), in UInt64 arithmetic."""
    state = (state + _GOLDEN) & _U64
    z = state
    z = ((z ^ (z >> 30)) * _MIX) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return state, z ^ (z >> 31)


def perturbation_signs(seed: int, length: int, step: int, layers: int) -> np.ndarray:
    """δ_k [layers] (float64 ±1): the top bit of the l-th output of SplitMix64 seeded with
    seed ^ (S · 0x9E3779B97F4A7C15) ^ (k · 0xBF58476D1CE4E5B9) (wrapping u64); 0 → +1, 1 → −1."""
    state = (int(seed) & _U64) ^ ((int(length) * _GOLDEN) & _U64) ^ ((int(step) * _MIX) & _U64)
    signs = np.empty(int(layers), dtype=np.float64)
    for l in range(int(layers)):
        state, out = _splitmix64(state)
        signs[l] = -1.0 if out >> 63 else 1.0
    return signs


def gains(step: int, a: float, perturbation: float, stability: int):
    """(a_k, c_k) of step k: a / (k + A)^0.602 and c / k^0.101, in float64."""
    return float(a) / float(int(step) + int(stability)) ** ALPHA, float(perturbation) / float(step) ** GAMMA


def gain(step_size: float, stability: int, step: int, loss_plus: float, loss_minus: float, perturbation: float) -> float:
    """a, set from the first step j whose two losses are finite (Spall's advice): a = step_size ·
    (j + A)^0.602 / |ĝ_j|, |ĝ_j| = |f+ − f−| / (2 c_j), so that step moves every u_l by step_size;
    step_size itself where ĝ_j = 0."""
    g = abs(float(loss_plus) - float(loss_minus)) / (2 * (float(perturbation) / float(step) ** GAMMA))
    return float(step_size) * float(int(step) + int(stability)) ** ALPHA / g if g > 0 else float(step_size)


def first_gain(job: "ScaleJob", steps) -> float:
    """a from the stored steps of one length (the first with finite losses), or None."""
    p = job.parameters
    for r in steps:
        if r.step >= 1 and r.loss_plus is not None and r.loss_minus is not None:
            return gain(p["step_size"], p["stability"], r.step, r.loss_plus, r.loss_minus, p["perturbation"])
    return None


def f32(x) -> np.ndarray:
    """Rounded to float32 (nearest, ties to even), as an array."""
    return np.asarray(x, dtype=np.float64).astype(np.float32)


def scales_of(log_scales) -> np.ndarray:
    """s = f32(exp(u)): exp in float64, rounded once to float32."""
    return f32(np.exp(np.asarray(log_scales, dtype=np.float32).astype(np.float64)))


def candidates(u, signs, c_k):
    """(v+, v−) = f32(u ± c_k δ), computed in float64."""
    u = np.asarray(u, dtype=np.float32).astype(np.float64)
    return f32(u + c_k * signs), f32(u - c_k * signs)


def spsa_update(u, signs, a_k, c_k, loss_plus, loss_minus, step_size) -> np.ndarray:
    """u − clip(a_k ĝ, ±step_size), ĝ_l = (f+ − f−) / (2 c_k δ_l), clamped to [−3, 3], rounded to
    float32 (float64 before): no step moves a u_l by more than step_size."""
    u = np.asarray(u, dtype=np.float32).astype(np.float64)
    g = (float(loss_plus) - float(loss_minus)) / (2.0 * c_k * signs)
    move = np.clip(a_k * g, -float(step_size), float(step_size))
    return f32(np.clip(u - move, -U_LIMIT, U_LIMIT))


def samples_hash(token_ids) -> str:
    """SHA-256 of the samples' token ids as i32 little-endian, in sample order."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(token_ids, dtype=np.int64).astype("<i4")).tobytes()).hexdigest()


def job_key(run_id: int, method: str, parameters_json: str) -> str:
    """`scale_jobs.job_key`: SHA-256 of `{run_id}|{method}|{parameters_json}`."""
    return hashlib.sha256(f"{int(run_id)}|{method}|{parameters_json}".encode("utf-8")).hexdigest()


# ---- the job ---------------------------------------------------------------------------------------

@dataclass
class ScaleJob:
    """A `scale_jobs` row, checked."""
    id: int
    run_id: int
    method: str
    parameters_json: str
    parameters: dict
    token_ids: np.ndarray         # [K, sample_length] int64
    table_id: int = None
    fingerprint: str = ""
    layer_count: int = 0

    @property
    def lengths(self) -> list:
        return list(self.parameters["lengths"])

    @property
    def steps(self) -> int:
        return int(self.parameters["steps"])


@dataclass
class StepRecord:
    """A `scale_steps` row."""
    length: int
    step: int
    log_scales: np.ndarray        # [layers] float32
    loss_plus: float
    loss_minus: float
    best_loss: float
    best_log_scales: np.ndarray   # [layers] float32
    outcome: str
    backend: str = "torch"
    device: str = "cpu"
    dtype: str = "float32"


@dataclass
class CalibrationResult:
    table_id: int
    job_id: int
    method: str = ""
    lengths: list = field(default_factory=list)
    #: SPSA steps (k ≥ 1) this call committed, and forward passes of S tokens (one per sample) it ran
    steps_run: int = 0
    forward_passes: int = 0
    #: whether the job's table was there already (or an identical one of the run was linked)
    reused_table: bool = False
    #: best f per length (the loss of the table's scales on the job's samples)
    best_loss: dict = field(default_factory=dict)


def _now() -> str:
    from .evaluations import now
    return now()


def _tool_version() -> str:
    from .evaluations import tool_version
    return tool_version()


class _ScaleStore:
    """The writer connection (WAL, as the CLI's writer; back to the rollback journal on close)."""

    def __init__(self, path: str, busy_timeout: float = 60.0):
        from .evaluations import _newer, _schema_version, OlderSchemaError
        self.path = path
        version = _schema_version(path)
        if version > SCALE_SCHEMA:
            raise _newer(path, version, SCALE_SCHEMA)
        if version < SCALE_SCHEMA:
            raise OlderSchemaError(f"{path}: was written by an older longmamba (schema {version}): run "
                                   f"`longmamba migrate --db {path}` first")
        try:
            self.db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA journal_mode = WAL").fetchone()
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise NotAStoreError(f"{path}: not a longmamba SQLite database ({e})") from None
        if version != SCALE_SCHEMA:
            self.db.close()
            raise _newer(path, version, SCALE_SCHEMA)

    def close(self):
        try:
            self.db.execute("PRAGMA busy_timeout = 0")
            self.db.execute("PRAGMA journal_mode = DELETE").fetchone()
        except sqlite3.DatabaseError:
            pass
        self.db.close()

    def transaction(self, work):
        """work(db) inside BEGIN IMMEDIATE … COMMIT (rolled back on any error)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                result = work(self.db)
                self.db.execute("COMMIT")
                return result
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as e:
            text = str(e)
            if "locked" in text or "busy" in text:
                raise LongMambaTableError(f"{self.path}: the database is locked by another writer; retry when it has "
                                          f"finished") from None
            raise LongMambaTableError(f"{self.path}: {text}") from None


def read_job(db, path: str, job_id: int) -> ScaleJob:
    """The job's row and its run's model, every column checked."""
    row = db.execute("SELECT j.id, j.job_key, j.run_id, j.method, j.parameters_json, j.sample_count, j.sample_length, "
                     "j.token_ids_i32, j.table_id, m.fingerprint, r.layer_count FROM scale_jobs j "
                     "LEFT JOIN calibration_runs r ON r.id = j.run_id LEFT JOIN models m ON m.id = r.model_id "
                     "WHERE j.id = ?", (int(job_id),)).fetchone()
    if row is None:
        raise CalibrationError(f"{path}: no scale calibration job with id {job_id} (`longmamba calibrate-scales` prints "
                               f"the job it uses)")
    jid, key, run_id, method, parameters_json, K, length, blob, table_id, fingerprint, layers = row
    where = f"{path}: scale job {jid}"
    if method not in SCALE_METHODS:
        raise CalibrationError(f"{where}: method is {method!r}, expected {' or '.join(SCALE_METHODS)} (written by a "
                               f"newer longmamba? upgrade it)")
    if fingerprint is None:
        raise CalibrationError(f"{where}: its run {run_id} or the run's model is not in the store")
    if not isinstance(parameters_json, str):
        raise CalibrationError(f"{where}: parameters_json is not text")
    p = check_scale_parameters(where, parameters_json)
    if key != job_key(run_id, method, parameters_json):
        raise CalibrationError(f"{where}: job_key does not match {{run_id}}|{{method}}|{{parameters_json}}: the store was "
                               f"altered after the job was prepared")
    if not (isinstance(K, int) and isinstance(length, int) and K >= 1 and length >= 1):
        raise CalibrationError(f"{where}: sample_count {K!r} and sample_length {length!r} must be positive integers")
    if K != p["sample_count"] or length < max(p["lengths"]):
        raise CalibrationError(f"{where}: sample_count {K} and sample_length {length} do not match parameters_json "
                               f"(sample_count {p['sample_count']}, lengths up to {max(p['lengths'])})")
    if not isinstance(blob, bytes) or len(blob) != 4 * K * length:
        raise CalibrationError(f"{where}: token_ids_i32 holds {len(blob) if isinstance(blob, bytes) else blob!r} bytes, "
                               f"expected {4 * K * length} (K={K} × {length} × 4)")
    if hashlib.sha256(blob).hexdigest() != p["samples_hash"]:
        raise CalibrationError(f"{where}: token_ids_i32 does not match parameters_json samples_hash: the store was "
                               f"altered after the job was prepared")
    tokens = np.frombuffer(blob, dtype="<i4").astype(np.int64).reshape(K, length)
    return ScaleJob(id=jid, run_id=run_id, method=method, parameters_json=parameters_json, parameters=p,
                    token_ids=tokens, table_id=table_id, fingerprint=fingerprint, layer_count=int(layers))


_STEP_COLUMNS = ("length", "step", "log_scales_f32", "loss_plus", "loss_minus", "best_loss", "best_log_scales_f32",
                 "outcome", "backend", "device", "dtype")


def _step(row, layers: int, where: str) -> StepRecord:
    S, k, u, lp, lm, best, best_u, outcome, backend, device, dtype = row
    for name, blob in (("log_scales_f32", u), ("best_log_scales_f32", best_u)):
        if not isinstance(blob, bytes) or len(blob) != 4 * layers:
            raise CalibrationError(f"{where} length {S} step {k}: {name} must hold {4 * layers} bytes (f32 × {layers} "
                                   f"layers)")
    return StepRecord(S, k, np.frombuffer(u, dtype="<f4").astype(np.float32),
                      None if lp is None else float(lp), None if lm is None else float(lm), float(best),
                      np.frombuffer(best_u, dtype="<f4").astype(np.float32), outcome, backend, device, dtype)


def read_steps(db, job: ScaleJob, path: str = "") -> dict:
    """{length: [StepRecord in step order]} of the job."""
    steps = {S: [] for S in job.lengths}
    for row in db.execute(f"SELECT {', '.join(_STEP_COLUMNS)} FROM scale_steps WHERE job_id = ? ORDER BY length, step",
                          (job.id,)):
        record = _step(row, job.layer_count, f"{path}: scale job {job.id}")
        steps.setdefault(record.length, []).append(record)
    return steps


def _insert_step(store: _ScaleStore, job: ScaleJob, r: StepRecord) -> StepRecord:
    """Commits one step (its own transaction); when a concurrent writer committed this step first,
    the stored one wins and is returned."""
    def work(db):
        db.execute(f"INSERT INTO scale_steps (job_id, {', '.join(_STEP_COLUMNS)}, created_at) "
                   f"VALUES (?, {', '.join('?' * len(_STEP_COLUMNS))}, ?) ON CONFLICT(job_id, length, step) DO NOTHING",
                   (job.id, r.length, r.step, r.log_scales.astype("<f4").tobytes(), r.loss_plus, r.loss_minus,
                    r.best_loss, r.best_log_scales.astype("<f4").tobytes(), r.outcome, r.backend, r.device, r.dtype,
                    _now()))
        return db.execute(f"SELECT {', '.join(_STEP_COLUMNS)} FROM scale_steps WHERE job_id = ? AND length = ? "
                          f"AND step = ?", (job.id, r.length, r.step)).fetchone()
    return _step(store.transaction(work), job.layer_count, f"{store.path}: scale job {job.id}")


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def rejected_outcome(loss_plus: float, loss_minus: float) -> str:
    """The outcome of a step with a non-finite loss, as the CLI words it (Swift's Double text)."""
    from .fingerprint import swift_description
    return f"rejected: non-finite loss (f+ {swift_description(loss_plus)}, f− {swift_description(loss_minus)})"


def spsa_step(job: ScaleJob, S: int, k: int, previous: StepRecord, loss, a=None, **where):
    """Step k at length S from the previous step's state; loss(v) evaluates f at float32 log scales;
    a: the gain set by an earlier step (None: this step's finite losses set it). Returns (the
    step's record, a)."""
    p = job.parameters
    _, c_k = gains(k, 1.0, p["perturbation"], p["stability"])
    signs = perturbation_signs(p["seed"], S, k, job.layer_count)
    v_plus, v_minus = candidates(previous.log_scales, signs, c_k)
    f_plus, f_minus = float(loss(v_plus)), float(loss(v_minus))
    best, best_u = previous.best_loss, previous.best_log_scales
    for f, v in ((f_plus, v_plus), (f_minus, v_minus)):
        if math.isfinite(f) and f < best:
            best, best_u = f, v
    if math.isfinite(f_plus) and math.isfinite(f_minus):
        if a is None:
            a = gain(p["step_size"], p["stability"], k, f_plus, f_minus, p["perturbation"])
        a_k, _ = gains(k, a, p["perturbation"], p["stability"])
        u, outcome = spsa_update(previous.log_scales, signs, a_k, c_k, f_plus, f_minus, p["step_size"]), "step"
    else:
        u, outcome = previous.log_scales.copy(), rejected_outcome(f_plus, f_minus)
    record = StepRecord(S, k, u, f_plus if math.isfinite(f_plus) else None, f_minus if math.isfinite(f_minus) else None,
                        best, np.asarray(best_u, dtype=np.float32), outcome, **where)
    return record, a


def table_rows(job: ScaleJob, steps: dict):
    """(lengths_i64 bytes, [scales_f32 bytes per layer]) of the finished job: s = f32(exp(best u))."""
    lengths = np.asarray(job.lengths, dtype="<i8")
    best = np.stack([steps[S][-1].best_log_scales for S in job.lengths], axis=1)   # [layers, T]
    scales = scales_of(best)
    return lengths.tobytes(), [scales[i].astype("<f4").tobytes() for i in range(job.layer_count)]


def _write_table(store: _ScaleStore, job: ScaleJob, steps: dict):
    """The table and scale_jobs.table_id in one transaction; (table id, whether it was reused)."""
    lengths, layers = table_rows(job, steps)
    content_hash = scale_table_hash(job.method, job.parameters_json, job.fingerprint,
                                    [(i, lengths, b) for i, b in enumerate(layers)])

    def work(db):
        current = db.execute("SELECT table_id FROM scale_jobs WHERE id = ?", (job.id,)).fetchone()[0]
        if current is not None:
            return current, True
        found = db.execute("SELECT id FROM threshold_tables WHERE run_id = ? AND content_hash = ? ORDER BY id LIMIT 1",
                           (job.run_id, content_hash)).fetchone()
        if found is not None:
            table_id, reused = found[0], True
        else:
            cursor = db.execute(
                "INSERT INTO threshold_tables (run_id, method, parameters_json, clamp_fraction, aggregation, "
                "interval_tokens, max_length, training_length, layer_count, length_count, content_hash, tool_version, "
                "schema_version, created_at, row_kind) VALUES (?, ?, ?, NULL, NULL, NULL, NULL, ?, ?, ?, ?, ?, ?, ?, "
                "'per_layer')",
                (job.run_id, job.method, job.parameters_json, int(job.parameters["training_length"]), job.layer_count,
                 len(job.lengths), content_hash, _tool_version(), SCALE_SCHEMA, _now()))
            table_id, reused = cursor.lastrowid, False
            db.executemany("INSERT INTO table_scales (table_id, layer_index, length_count, lengths_i64, scales_f32) "
                           "VALUES (?, ?, ?, ?, ?)",
                           [(table_id, i, len(job.lengths), lengths, b) for i, b in enumerate(layers)])
        db.execute("UPDATE scale_jobs SET table_id = ? WHERE id = ?", (table_id, job.id))
        return table_id, reused
    return store.transaction(work)


# ---- the model -------------------------------------------------------------------------------------

class _Loss:
    """f(v): the mean NLL (float64) of tokens 1…S−1 of every sample's first S tokens, with the
    scales f32(exp(v)) applied to every multi-token forward; samples batched."""

    def __init__(self, model, method, layers, batch_size):
        import torch
        from .apply import apply_fixed_scales
        self.torch, self.model = torch, model
        self.handle = apply_fixed_scales(model, method, [1.0] * layers)
        self.device = next(model.parameters()).device
        self.batch_size = batch_size
        self.passes = 0

    def __call__(self, tokens: np.ndarray, v) -> float:
        from .evaluate import _negative_log_likelihoods
        torch = self.torch
        self.handle.set_scales(scales_of(v).tolist())
        K, S = tokens.shape
        self.passes += K
        n = K if self.batch_size is None else int(self.batch_size)
        total = 0.0
        with torch.no_grad():
            for a in range(0, K, n):
                ids = torch.as_tensor(tokens[a:a + n], dtype=torch.long, device=self.device)
                logits = self.model(input_ids=ids, use_cache=False).logits[:, :-1]
                nll = _negative_log_likelihoods(logits, ids[:, 1:]).cpu()
                del logits
                for row in nll:
                    total += float(row.sum())
        return total / (K * (S - 1))

    def close(self):
        self.handle.remove()


def other_model(job: ScaleJob, fingerprint: str) -> str:
    """The CLI's refusal of another model than the run's (ScaleCalibrationError.otherModel)."""
    return (f"run {job.run_id} was recorded on model {job.fingerprint[:12]}, not on this one ({fingerprint[:12]}): "
            f"scales are calibrated for the run's model")


def calibrate_scales(db, job_id: int, model, device=None, dtype=None, batch_size=None, progress=None,
                     fingerprint=None, loss=None) -> CalibrationResult:
    """Runs (or resumes) the SPSA calibration of job `job_id` of store `db` (prepared by `longmamba
    calibrate-scales … --prepare-only`, or a job the CLI started): every missing step of every
    length, each committed as it finishes, then the table. model: a model directory (loaded with
    transformers in float32, its fingerprint checked against the run's: scales are calibrated for
    the run's model) or a loaded transformers model (`fingerprint=` checked if given). device, dtype: where and in what the model
    runs ("cuda", "bf16"); batch_size: samples per forward (None: all K). progress: called with a
    line per step. loss: replaces f (tests: a loss that returns NaN). Returns the table id and
    what was run."""
    from .evaluate import _torch_dtype
    from .fingerprint import fingerprint as model_fingerprint
    from .tune import device_label, dtype_name

    from .evaluate import _number
    path = os.fspath(db)
    say = progress or (lambda line: None)
    if batch_size is not None and int(batch_size) < 1:
        raise CalibrationError(f"batch_size must be at least 1, got {batch_size}")
    numeric = dtype_name(dtype)
    store = _ScaleStore(path)
    handle = None
    training = None
    try:
        job = read_job(store.db, path, job_id)
        result = CalibrationResult(table_id=job.table_id, job_id=job.id, method=job.method, lengths=job.lengths)
        steps = read_steps(store.db, job, path)
        say(f"job {job.id}: resuming" if any(steps.get(S) for S in job.lengths) else f"job {job.id}")
        if job.table_id is not None:
            result.reused_table = True
            result.best_loss = {S: steps[S][-1].best_loss for S in job.lengths if steps.get(S)}
            return result
        if loss is not None:
            model = None
        elif isinstance(model, (str, os.PathLike)):
            model_dir = os.fspath(model)
            found = model_fingerprint(model_dir)
            if found != job.fingerprint:
                raise ModelMismatchError(other_model(job, found))
            todo = any(len(steps.get(S, [])) < job.steps + 1 for S in job.lengths)
            if todo:
                import torch
                import transformers
                model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
            else:
                model = None
        elif fingerprint and fingerprint != job.fingerprint:
            raise ModelMismatchError(other_model(job, fingerprint))
        where = {}
        if model is not None:
            torch_dtype = _torch_dtype(numeric)
            if device is not None or dtype is not None:
                model.to(device=device, dtype=torch_dtype)
            training = model.training
            model.eval()
            target = next(model.parameters()).device
            where = dict(backend="torch", device="cpu" if target.type == "cpu" else device_label(target), dtype=numeric)
            vocabulary = int(model.get_input_embeddings().weight.shape[0])
            if int(job.token_ids.max()) >= vocabulary or int(job.token_ids.min()) < 0:
                raise CalibrationError(f"{path}: scale job {job.id} has token ids outside the model's vocabulary "
                                       f"(ids 0 to {vocabulary - 1})")
            handle = _Loss(model, job.method, job.layer_count, batch_size)
        def note(r: StepRecord, start: float):
            losses = "" if r.loss_plus is None else \
                f"f+ {r.loss_plus:.5f} f− {r.loss_minus if r.loss_minus is not None else math.nan:.5f} · "
            rejected = f" · {r.outcome}" if r.outcome.startswith("rejected") else ""
            say(f"{job.method} length {r.length} step {r.step}/{job.steps}: {losses}best perplexity "
                f"{math.exp(r.best_loss):.4f} (start {start:.4f}){rejected}")

        for S in job.lengths:
            done = steps.get(S, [])
            tokens = job.token_ids[:, :S]
            f = (lambda v, S=S: loss(S, v)) if loss is not None else (lambda v, tokens=tokens: handle(tokens, v))
            if done:
                say(f"length {S}: {len(done) - 1} steps already stored")
            else:
                zero = np.zeros(job.layer_count, dtype=np.float32)
                f0 = float(f(zero))
                if not math.isfinite(f0):
                    raise CalibrationError(f"the vanilla model's loss at length {S} is not finite ({_number(f0)}); "
                                           f"nothing to calibrate from")
                done.append(_insert_step(store, job, StepRecord(S, 0, zero, None, None, f0, zero, "start", **where)))
                note(done[-1], math.exp(f0))
            start = math.exp(done[0].best_loss)
            while done[-1].step < job.steps:
                k = done[-1].step + 1
                record, _ = spsa_step(job, S, k, done[-1], f, first_gain(job, done), **where)
                # The stored step (another writer's, if it committed this step first) is what goes on.
                done.append(_insert_step(store, job, record))
                result.steps_run += 1
                note(done[-1], start)
            steps[S] = done
            result.best_loss[S] = done[-1].best_loss
        result.forward_passes = handle.passes if handle is not None else 0
        result.table_id, result.reused_table = _write_table(store, job, steps)
        return result
    finally:
        if handle is not None:
            handle.close()
        if training is not None:
            model.train(training)
        store.close()

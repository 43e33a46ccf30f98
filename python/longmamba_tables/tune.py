"""`python -m longmamba_tables tune`: `longmamba tune` on any torch device, into the same store.

Chooses θ and p by evaluation, as the paper did (Sec. 6.1) and as the CLI's `tune` does: every
(table, θ) of the grid and vanilla at every length, ranked (perplexity: geometric mean over the
lengths, lower is better; passkey: mean accuracy, higher is better). The tables must already be
in the store (this package does not solve: `longmamba sweep` does, and a missing one is an error
that prints that command). Every point is written to the store's `evaluations` table with the
CLI's keys as soon as it is measured, so

- a point measured here is reused by `longmamba tune`, drawn by `longmamba report` and chosen by
  `tune --best`, and the reverse;
- a killed tune resumes where it stopped; a CLI tune may write the same store at the same time;
- a float32 point is one evaluation whichever side measured it; a bfloat16/float16 point has a
  key of its own and is labelled with where it was measured.

`halving` (coarse to fine) and `shard` (every n-th point into a copy of the store, joined by
`longmamba merge`) are the CLI's, point for point (Sources/LongMamba/Evaluation/Tuning.swift).

`methods` (the CLI's `--method`) compares the authors' filter methods side by side on the same
prompts: every (table, θ) once per method. dt_thre's points keep their keys; another method's
evaluation settings end in ` method M` ("windows 3 method alpha") and its details name it;
vanilla points are dt_thre's (vanilla does not depend on the method). `delta_scale` and `a_power`
(per-layer scale tables, made by `calibrate-scales`) compare every such table of the run, once each
and without θ (stored θ NULL), with the same key and detail conventions.
"""
from __future__ import annotations

import builtins
import dataclasses
import math
import os
from dataclasses import dataclass, field

from .apply import METHODS
from .errors import LongMambaTableError, ModelMismatchError
from .evaluations import (FLOAT32, UNFILTERED_DETAIL, WRITER_SCHEMA, Evaluation, EvaluationWriter, OlderSchemaError,
                          _schema_version, passkey_detail, perplexity_detail)
from .fingerprint import fingerprint as model_fingerprint, swift_description
from .store import SCALE_METHODS, default_filter_start, open as open_store

#: The CLI's defaults (`longmamba tune --help`).
DEFAULT_THETAS = (0.01, 0.05, 0.1, 0.3)
DEFAULT_CLAMPS = (0.05, 0.1, 0.2)
DEFAULT_DEPTHS = (0, 0.25, 0.5, 0.75, 1)
_DTYPES = {"float32": "float32", "fp32": "float32", "f32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "f16": "float16", "half": "float16"}


class TuneError(LongMambaTableError):
    """A tune refused before anything was evaluated (the CLI's `TuneError`)."""


@dataclass
class TuneRow:
    """One row of the ranking: a (table, θ) or vanilla (table None)."""
    table: int = None
    clamp_fraction: float = None
    aggregation: str = None
    theta: float = None
    #: the metric at each of the lengths, in the order given (NaN: dropped by a halving before it)
    values: list = field(default_factory=list)
    score: float = math.nan
    #: halving: the length after which the row was dropped (None: evaluated at every length)
    dropped_after: int = None
    #: where its points were measured ("torch cuda:0 (…) bfloat16", "swift cpu"), distinct, in order
    measured_by: list = field(default_factory=list)
    #: how global channels were filtered (None: vanilla)
    method: str = None


@dataclass
class TuneResult:
    metric: str
    higher_is_better: bool
    lengths: list
    #: best first; vanilla among them; halving: rows that reached the last length first. Empty for a shard.
    ranked: list = field(default_factory=list)
    points_evaluated: int = 0
    points_reused: int = 0
    #: prompts (passkey) or windows (perplexity) run for the points evaluated now
    prompts_run: int = 0
    #: halving: trials or windows per point at each length (in the order of `lengths`)
    effort_by_length: list = field(default_factory=list)

    @property
    def best(self):
        return next((r for r in self.ranked if r.table is not None), None)


def score(values, higher_is_better: bool) -> float:
    """Passkey: mean accuracy; perplexity: geometric mean (NaN values, never evaluated, left out)."""
    v = [x for x in values if not math.isnan(x)]
    if higher_is_better:
        return sum(v) / len(v)
    return math.exp(sum(math.log(x) for x in v) / len(v))


def halving_effort(full: int, round_index: int, rounds: int) -> int:
    """Trials or windows at round r of k (r = 0 the shortest length): ⌈full / 3^(k−1−r)⌉, at least 1."""
    divisor = 3 ** (rounds - 1 - round_index)
    return max(1, -(-int(full) // divisor))


def halving_kept(n: int) -> int:
    """Points that go on to the next length: the best ⌈n/3⌉."""
    return (n + 2) // 3


def halving_survivors(values, higher_is_better: bool) -> list:
    """Indices of the points that go on: the best `halving_kept(n)` by value, ties in grid order."""
    order = sorted(range(len(values)), key=lambda i: (-values[i] if higher_is_better else values[i], i))
    return sorted(order[:halving_kept(len(values))])


def shard_points(tables, thetas, lengths, methods=None, scale_tables=()) -> list:
    """The points of a full grid in the order shards split them (the CLI's `TuneJob.points`):
    vanilla at every length, then each method, table, θ, length, then each scale table (id,
    method) at each length without θ. Point k belongs to shard k mod n. Points are (table, θ,
    length); with `methods` given, (table, θ, method, length) (vanilla's method None)."""
    points = [(None, None, None, S) for S in lengths]
    for m in (methods if methods is not None else ["dt_thre"]):
        if m in SCALE_METHODS:
            continue
        for t in tables:
            for th in thetas:
                for S in lengths:
                    points.append((t, th, m, S))
    for t, m in scale_tables:
        for S in lengths:
            points.append((t, None, m, S))
    return points if methods is not None else [(t, th, S) for t, th, _, S in points]


def method_evaluation(e: Evaluation, method) -> Evaluation:
    """The evaluation of `method`: dt_thre's (and vanilla's, method None) is `e` itself; another
    method's settings end in ` method M` (its own evaluation key)."""
    if method is None or method == "dt_thre":
        return e
    return dataclasses.replace(e, settings=f"{e.settings} method {method}")


def method_detail(detail: str, method) -> str:
    """A point's detail_json as the CLI writes it: another method than dt_thre is named last."""
    if method is None or method == "dt_thre":
        return detail
    return f'{detail[:-1]},"method":"{method}"}}'


def dtype_name(dtype) -> str:
    """'float32' | 'bfloat16' | 'float16' for a torch dtype or a name ("bf16", "fp32", …)."""
    if dtype is None:
        return FLOAT32
    name = str(dtype).replace("torch.", "").lower()
    if name not in _DTYPES:
        raise TuneError(f"--dtype {dtype}: use float32, bfloat16 (bf16) or float16 (fp16)")
    return _DTYPES[name]


def device_label(device) -> str:
    """How a point's device is stored: 'cpu', or 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    import torch
    d = torch.device(device if device is not None else "cpu")
    if d.type == "cuda":
        index = d.index if d.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(d)


def _measured_by(point) -> str:
    return f"{point.backend} {point.device}" + ("" if point.dtype == FLOAT32 else f" {point.dtype}")


def _sweep_command(db, run, missing, interval, max_length) -> str:
    clamps = ",".join(swift_description(float(p)) for p in sorted({p for p, _ in missing}))
    aggs = ",".join(sorted({a for _, a in missing}))
    return (f"longmamba sweep --db {db} --run {run} --clamp {clamps} --aggregate {aggs} "
            f"--interval {interval} --max-length {max_length}")


def _check_grid(thetas, clamps, aggregations, lengths, shard, methods=("dt_thre",)):
    for values, what in [(thetas, "--theta"), (clamps, "--clamp"), (aggregations, "--aggregate"), (lengths, "--lengths"),
                         (methods, "--method")]:
        if not values:
            raise TuneError(f"tune: give at least one value of {what}")
    for m in methods:
        if m not in METHODS + SCALE_METHODS:
            raise TuneError(f"--method {m}: use {', '.join(METHODS + SCALE_METHODS)}")
    for t in thetas:
        if not (t > 0):
            raise TuneError(f"tune: θ must be > 0, got {swift_description(float(t))}")
    for a in aggregations:
        if a not in ("max", "mean"):
            raise TuneError(f"--aggregate {a}: use max or mean")
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise TuneError(f"tune: --shard {i}/{n} is not a shard: give i/n with 0 ≤ i < n")


def tune(db, run: int, model_dir, thetas=DEFAULT_THETAS, clamps=DEFAULT_CLAMPS, aggregations=("max",), lengths=(),
         task: str = "perplexity", text=None, tokens=None, windows: int = 1, depths=DEFAULT_DEPTHS, trials: int = 10,
         seed: int = 0, haystack=None, filter_from=None, tokenizer=None, device=None, dtype=None, batch_size=None,
         halving: bool = False, shard=(0, 1), force: bool = False, progress=None, model=None, interval=None,
         max_length=None, methods=("dt_thre",)) -> TuneResult:
    """`longmamba tune` with transformers on `device` in `dtype` (see the module doc). model: an
    already loaded transformers model of `model_dir` (else it is loaded from there when the first
    point is measured: a grid whose points are all stored ranks without torch's work). progress:
    called with a line per point evaluated. interval, max_length: the grid of the tables to tune
    (the CLI's `--interval`, `--max-length`; None: the grid the run was calibrated with).
    methods: the filter methods compared (the CLI's `--method`; apply.METHODS), each (table, θ)
    evaluated once per method; delta_scale, a_power: every per-layer scale table of the run with
    that method, once each (no θ). With scale methods alone the θ × p grid is not needed."""
    from . import evaluate

    thetas, clamps = [float(t) for t in thetas], [float(p) for p in clamps]
    aggregations, lengths = list(aggregations), [int(S) for S in lengths]
    methods = [methods] if isinstance(methods, str) else list(methods)
    shard = (int(shard[0]), int(shard[1]))
    _check_grid(thetas, clamps, aggregations, lengths, shard, methods)
    sharded = shard[1] > 1
    if sharded and halving:
        raise TuneError("tune: --halving chooses each length's points from the previous length's results, so it cannot "
                        "be sharded; shard the full grid, or run the halving on one machine")
    if task not in ("perplexity", "passkey"):
        raise TuneError(f"--task {task}: use perplexity or passkey")
    if task == "perplexity" and text is None and tokens is None:
        raise TuneError("--task perplexity needs --text FILE or --tokens FILE")
    db, model_dir = os.fspath(db), os.fspath(model_dir)
    say = progress or (lambda line: None)

    # The store, the run, its tables, the model's identity and the lengths, all checked before the
    # model is loaded; a store this package cannot write is refused before anything else.
    version = _schema_version(db)
    if version < WRITER_SCHEMA:
        raise OlderSchemaError(f"{db}: was written by an older longmamba (schema {version}): run "
                               f"`longmamba migrate --db {db}` first")
    with open_store(db) as store:
        info = store.run(run)
        if info.status != "complete":
            raise LongMambaTableError(f"{db}: run {info.id} has status '{info.status}'; only complete runs can be tuned")
        interval = int(interval) if interval is not None else info.interval
        max_length = int(max_length) if max_length is not None else info.max_length
        grid, missing = [], []
        listed = store.tables()
        known = [t for t in listed if t.run_id == info.id and t.method == "longmamba"]
        # Threshold methods tune the θ × p grid; scale methods alone do not need it.
        threshold_methods = [m for m in methods if m not in SCALE_METHODS]
        scale_methods = [m for m in methods if m in SCALE_METHODS]
        for p in (clamps if threshold_methods else []):
            for a in aggregations:
                found = next((t for t in known if t.clamp_fraction == p and t.aggregation == a and t.interval == interval
                              and t.max_length == max_length and t.training_length == info.sample_length), None)
                if found is None:
                    missing.append((p, a))
                else:
                    grid.append(found)
        if missing:
            names = ", ".join(f"p = {swift_description(p)}, aggregate {a}" for p, a in missing)
            why = ("a shard only evaluates tables already in the store (every shard must agree on table ids)" if sharded
                   else "this package evaluates tables already in the store")
            raise TuneError(f"{db}: run {info.id} has no table for {names}; {why}: solve them first with\n  "
                            f"{_sweep_command(db, info.id, missing, interval, max_length)}")
        tables = {t.id: store.table(t.id) for t in grid}   # every row checked, content hash verified
        # Every scale table of the run with each scale method (in id order), as the CLI compares them.
        scale_tables = []
        for m in scale_methods:
            found = [t for t in listed if t.run_id == info.id and t.method == m and t.problem is None]
            if not found:
                raise TuneError(f"{db}: run {info.id} has no {m} table; calibrate one first:\n  longmamba calibrate-scales "
                                f"--db {db} --run {info.id} --model DIR --corpus FILES --method {m} --lengths …")
            for t in found:
                tables[t.id] = store.table(t.id)
                scale_tables.append((t.id, m))
    fingerprint = model_fingerprint(model_dir)
    if fingerprint != info.fingerprint and not force:
        raise ModelMismatchError(f"the table was calibrated on model {info.fingerprint[:12]}, not on {model_dir} "
                                 f"({fingerprint[:12]}); pass --force to use it anyway")
    numeric = dtype_name(dtype)
    # The tokenizer is needed for passkey prompts and a --text; --tokens are ids already (as the CLI).
    tokenizer_path = tokenizer or os.path.join(model_dir, "tokenizer.json")
    if (task == "passkey" or tokens is None) and not os.path.exists(tokenizer_path):
        raise LongMambaTableError(f"{model_dir} has no tokenizer.json; pass --tokenizer FILE")

    # What one round evaluates (the CLI's `Evaluator`): the task with its trials or windows.
    prompts = token_ids = None
    if task == "passkey":
        prompts = evaluate.PasskeyPrompts(tokenizer_path, haystack)
    elif tokens is not None:
        try:
            with builtins.open(tokens) as f:
                token_ids = [int(t) for t in f.read().split()]
        except (OSError, ValueError) as e:
            raise LongMambaTableError(f"{tokens}: not a file of whitespace-separated token ids ({e})") from None
    else:
        token_ids = evaluate._token_ids(tokenizer_path, text)[0]
    filter_start = int(filter_from) if filter_from is not None else default_filter_start(info.sample_length)
    # Lengths the evaluation would refuse midway (the CLI stores the points before such a length
    # first): refused here, with the evaluation's words, before anything is run or written.
    largest = min((int(tables[t.id].lengths[-1]) for t in grid), default=None)
    for S in lengths:
        if S < 1:
            raise TuneError(f"tune: length {S} must be a positive number of tokens")
    for S in lengths:                  # the tables first, then the text, as the CLI checks them
        if largest is not None and S >= filter_start and S > largest:
            need = -(-max(lengths) // interval) * interval
            command = _sweep_command(db, info.id, [(t.clamp_fraction, t.aggregation) for t in grid], interval, need)
            raise TuneError(f"tune: length {S} is beyond the tables' largest length {largest}; solve tables up to it first:"
                            f"\n  {command}\nthen tune with --interval {interval} --max-length {need}")
    for t, _ in scale_tables:          # then each scale table within its calibrated lengths
        biggest = int(tables[t].lengths[-1])
        beyond = next((S for S in lengths if S >= filter_start and S > biggest), None)
        if beyond is not None:
            raise TuneError(evaluate.beyond_scale_table(beyond, biggest, option="--allow-beyond-table"))
    for S in lengths:
        if token_ids is not None and len(token_ids) < S:
            raise LongMambaTableError(f"the text has {len(token_ids)} tokens, fewer than the requested length {S}")

    # The model's device: `device`, else where the given model is, else the CPU it loads on.
    if device is None and model is not None:
        target = next(model.parameters()).device
    else:
        target = device
    where = "cpu" if target is None or str(target) == "cpu" else device_label(target)
    loaded = [model]

    def the_model():
        if loaded[0] is None:
            import torch
            import transformers
            loaded[0] = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        return loaded[0]

    def evaluation(effort: int) -> Evaluation:
        if task == "passkey":
            return Evaluation.passkey(fingerprint, tokenizer_path, depths=depths, trials=effort, seed=seed,
                                      haystack_ids=prompts.haystack_unit if prompts.custom_haystack else None,
                                      filter_from=filter_from, dtype=numeric)
        return Evaluation.perplexity(fingerprint, token_ids, windows=effort, filter_from=filter_from, dtype=numeric)

    higher = task == "passkey"
    result = TuneResult(metric="accuracy" if higher else "perplexity", higher_is_better=higher, lengths=lengths)
    common = dict(filter_from=filter_from, device=target, dtype=numeric,
                  batch_size=batch_size, fingerprint=fingerprint, force=force)

    def measure(e: Evaluation, effort: int, table_id, theta, S, method):
        table = tables[table_id] if table_id is not None else None
        th = theta if theta is not None else 0.05
        # A scale table takes its method from the table: the evaluation's filter method stays dt_thre.
        kw = dict(common, method="dt_thre" if method is None or method in SCALE_METHODS else method)
        if task == "passkey":
            r = evaluate.passkey(the_model(), prompts, table=table, theta=th, lengths=[S], depths=depths, trials=effort,
                                 seed=seed, include_vanilla=table is None, **kw)
            accuracies = [p.vanilla_accuracy if table is None else
                          (p.longmamba_accuracy if p.longmamba_accuracy is not None else p.vanilla_accuracy) for p in r.points]
            return sum(accuracies) / len(accuracies), passkey_detail(depths, accuracies, effort), len(depths) * effort
        r = evaluate.perplexity(the_model(), token_ids, table=table, theta=th, lengths=[S], windows=effort,
                                include_vanilla=table is None, **kw)
        p = r.points[0]
        value = p.vanilla_perplexity if table is None else (p.longmamba_perplexity if p.longmamba_perplexity is not None
                                                             else p.vanilla_perplexity)
        return value, perplexity_detail(p.windows, p.kept_share, p.tabulated_length), p.windows

    with EvaluationWriter(db, backend="torch", device=where, dtype=numeric) as writer:
        def point(e: Evaluation, effort: int, table_id, theta, S, vanilla=None, method=None):
            e = method_evaluation(e, method)
            stored = writer.point(e.point_key(table_id, theta, S))
            if stored is not None:
                result.points_reused += 1
                return stored.value, _measured_by(stored)
            if table_id is not None and S < filter_start and vanilla is not None:
                value, detail = vanilla, UNFILTERED_DETAIL     # below the filter start LongMamba is vanilla
            else:
                named = "" if method in (None, "dt_thre") else f" ({method})"
                what = ("vanilla" if table_id is None else f"table {table_id}"
                        + ("" if theta is None else f" θ = {swift_description(theta)}"))
                say(f"evaluating {what}"
                    f"{named} at {S} tokens" + (f" ({effort} {'trials' if higher else 'windows'})" if halving else ""))
                value, detail, ran = measure(e, effort, table_id, theta, S, method)
                result.prompts_run += ran
            written = writer.add(e, S, value, table_id=table_id, theta=theta, detail_json=method_detail(detail, method))
            result.points_evaluated += 1
            return written.value, _measured_by(written)

        full = trials if task == "passkey" else int(windows)
        rows = [TuneRow()] + [TuneRow(table=t.id, clamp_fraction=t.clamp_fraction, aggregation=t.aggregation, theta=th,
                                      method=m)
                              for m in threshold_methods for t in grid for th in thetas]
        rows += [TuneRow(table=t, method=m) for t, m in scale_tables]

        def note(i, measured):
            if measured not in rows[i].measured_by:
                rows[i].measured_by.append(measured)

        if sharded:
            e = evaluation(full)
            vanilla_at = {}
            for k, (t, th, m, S) in enumerate(shard_points([t.id for t in grid], thetas, lengths, threshold_methods,
                                                          scale_tables)):
                if k % shard[1] == shard[0]:
                    value, _ = point(e, full, t, th, S, vanilla_at.get(S), m)
                    if t is None:
                        vanilla_at[S] = value
            return result

        if not halving:
            e = evaluation(full)
            for S in lengths:
                vanilla, measured = point(e, full, None, None, S)
                rows[0].values.append(vanilla)
                note(0, measured)
                for i in range(1, len(rows)):
                    value, measured = point(e, full, rows[i].table, rows[i].theta, S, vanilla, rows[i].method)
                    rows[i].values.append(value)
                    note(i, measured)
        else:
            order = sorted(range(len(lengths)), key=lambda i: lengths[i])
            for row in rows:
                row.values = [math.nan] * len(lengths)
            alive = list(range(1, len(rows)))
            effort_at = {}
            for r, li in enumerate(order):
                S = lengths[li]
                effort = halving_effort(full, r, len(order))
                effort_at[li] = effort
                e = evaluation(effort)
                vanilla, measured = point(e, effort, None, None, S)
                rows[0].values[li] = vanilla
                note(0, measured)
                for i in alive:
                    value, measured = point(e, effort, rows[i].table, rows[i].theta, S, vanilla, rows[i].method)
                    rows[i].values[li] = value
                    note(i, measured)
                if r + 1 == len(order):
                    break
                keep = {alive[k] for k in halving_survivors([rows[i].values[li] for i in alive], higher)}
                for i in alive:
                    if i not in keep:
                        rows[i].dropped_after = S
                alive = [i for i in alive if i in keep]
            result.effort_by_length = [effort_at[li] for li in range(len(lengths))]

    for row in rows:
        row.score = score(row.values, higher)
    ascending = sorted(lengths)
    reached = {id(row): (ascending.index(row.dropped_after) if row.dropped_after is not None else len(lengths))
               for row in rows}
    # Best first; ties keep the grid order (vanilla first among equals); rows a halving dropped
    # after those that reached the last length, the later dropped first.
    result.ranked = [row for _, row in sorted(
        enumerate(rows), key=lambda ir: (-reached[id(ir[1])], -ir[1].score if higher else ir[1].score, ir[0]))]
    return result


def shows_method(methods) -> bool:
    """Whether the ranking names the method: when another method than dt_thre alone is tuned."""
    return list(methods) != ["dt_thre"]


def format_result(result: TuneResult, halving: bool = False, task: str = "perplexity", methods=("dt_thre",)) -> list:
    """The CLI's ranked table and `best:` line, as lines (a "method" column after "agg", and the
    winner's method, unless dt_thre alone was tuned)."""
    show = shows_method(methods)
    def fmt(v):
        return f"{100 * v:.0f}%" if result.higher_is_better else f"{v:.3f}"

    def value(v):
        return "-" if math.isnan(v) else fmt(v)

    effort = [f" ({e})" for e in result.effort_by_length] if halving else [""] * len(result.lengths)
    header = (["rank", "table", "p", "agg"] + (["method"] if show else []) + ["θ"]
              + [f"{result.metric}@{S}{x}" for S, x in zip(result.lengths, effort)]
              + ["mean" if result.higher_is_better else "geo-mean", "measured by"] + (["dropped"] if halving else []))
    rows = []
    for i, r in enumerate(result.ranked):
        row = [str(i + 1), "vanilla" if r.table is None else str(r.table),
               "-" if r.clamp_fraction is None else swift_description(r.clamp_fraction), r.aggregation or "-"]
        row += ([r.method or "-"] if show else []) + ["-" if r.theta is None else swift_description(r.theta)]
        row += [value(v) for v in r.values] + [fmt(r.score), " + ".join(r.measured_by)]
        if halving:
            row.append("" if r.dropped_after is None else f"after {r.dropped_after}")
        rows.append(row)
    widths = [max(len(c[i]) for c in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in [header] + rows]
    if halving:
        per = "trials per depth" if task == "passkey" else "windows"
        lines.append("halving: " + ", ".join(f"{e} {per} at {S}" for S, e in zip(result.lengths, result.effort_by_length))
                     + "; the best third of each length went on to the next")
    w = result.best
    if w is not None and w.method in SCALE_METHODS:
        vanilla = next((r.score for r in result.ranked if r.table is None), math.nan)
        lines.append(f"best: table {w.table} ({w.method}, per-layer scales): {fmt(w.score)} against vanilla {fmt(vanilla)}")
    elif w is not None:
        vanilla = next((r.score for r in result.ranked if r.table is None), math.nan)
        how = f", method {w.method or 'dt_thre'}" if show else ""
        lines.append(f"best: table {w.table} (p = {swift_description(w.clamp_fraction)}, aggregate {w.aggregation}{how}) "
                     f"with θ = {swift_description(w.theta)}: {fmt(w.score)} against vanilla {fmt(vanilla)}")
    return lines

"""`python -m longmamba_tables tune …`: the CLI's `longmamba tune`, with transformers on any torch
device, into the same store (see tune.py); `python -m longmamba_tables calibrate-scales --job J …`:
the SPSA steps of a job `longmamba calibrate-scales --prepare-only` stored (see scales.py). Flags, defaults and output are the CLI's; `--device`,
`--dtype` and `--batch-size` are this side's own."""
from __future__ import annotations

import argparse
import math
import sys

from .apply import METHODS
from .errors import LongMambaTableError
from .tune import DEFAULT_CLAMPS, DEFAULT_DEPTHS, DEFAULT_THETAS, format_result, shows_method, tune


class _Usage(Exception):
    """A bad option value, refused in the CLI's words (its `ValidationError`)."""


def _values(parts, name, convert):
    """Repeat the option or comma-separate values (the CLI's list grammar, `listValues`)."""
    items = [v.strip() for part in parts for v in part.split(",")]
    if not items or items == [""]:
        raise _Usage(f"--{name} needs at least one value")
    out = []
    for v in items:
        try:
            out.append(convert(v))
        except ValueError:
            raise _Usage(f"--{name}: '{v}' is not a valid value") from None
    return out


def _theta_values(parts):
    """θ values, each a finite number > 0 (the CLI's `thetaValues`)."""
    from .fingerprint import swift_description
    values = _values(parts, "theta", float)
    for t in values:
        if not (math.isfinite(t) and t > 0):
            raise _Usage(f"--theta must be a finite number > 0, got {swift_description(t)}")
    return values


def _aggregation(v: str) -> str:
    if v not in ("max", "mean"):
        raise ValueError(v)
    return v


def _method(v: str) -> str:
    from .store import SCALE_METHODS
    if v not in METHODS + SCALE_METHODS:
        raise ValueError(v)
    return v


def _tokens(v: str) -> int:
    """Token counts take k = ×1000 (2k = 2000)."""
    n = float(v[:-1]) * 1000 if v.lower().endswith("k") else float(v)
    if not math.isfinite(n) or n != int(n) or n < 1:
        raise ValueError(v)
    return int(n)


def _shard(v: str):
    parts = v.split("/")
    try:
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise _Usage("--shard must look like i/n, e.g. 0/4")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longmamba_tables")
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("tune", help="Choose θ and p by evaluation on any torch device, into the store "
                                         "(the CLI's `longmamba tune`).")
    t.add_argument("--db", required=True, help="SQLite database.")
    t.add_argument("--run", required=True, type=int, help="Calibration run id.")
    t.add_argument("--model", required=True, help="Model directory (transformers format).")
    t.add_argument("--theta", action="append", help="θ values > 0 (repeat or comma-separate).")
    t.add_argument("--clamp", action="append", help="Clamp fractions p (repeat or comma-separate).")
    t.add_argument("--aggregate", action="append", help="Aggregations: max, mean (repeat or comma-separate).")
    t.add_argument("--interval", help="Tabulate every this many tokens: the grid of the tables to tune (default: the "
                                      "run's calibrated grid).")
    t.add_argument("--max-length", help="Longest tabulated length of the tables to tune (default: the run's calibrated "
                                        "grid).")
    t.add_argument("--task", default="perplexity", choices=["perplexity", "passkey"], help="perplexity or passkey.")
    t.add_argument("--text", help="Perplexity: text file.")
    t.add_argument("--tokens", help="Perplexity: instead of --text, whitespace-separated token ids.")
    t.add_argument("--windows", type=int, default=1, help="Perplexity: windows per length.")
    t.add_argument("--depths", action="append", help="Passkey: needle depths in [0, 1] (repeat or comma-separate).")
    t.add_argument("--trials", type=int, default=10, help="Passkey: trials per length and depth.")
    t.add_argument("--seed", type=int, default=0, help="Passkey: seed of the keys.")
    t.add_argument("--haystack", help="Passkey: haystack text file instead of the filler.")
    t.add_argument("--lengths", action="append", required=True, help="Lengths (repeat or comma-separate; k = ×1000).")
    t.add_argument("--filter-from", help="Filter only sequences of at least this many tokens (default 1.5 × L).")
    t.add_argument("--tokenizer", help="tokenizer.json (default: the model directory's).")
    t.add_argument("--method", action="append", help="Methods compared side by side (repeat or comma-separate): "
                                                     "dt_thre, alpha, bound, norm, channelwise_topk (modes of the θ × p "
                                                     "tables), delta_scale, a_power (every such table of the run, from "
                                                     "calibrate-scales) (default dt_thre).")
    t.add_argument("--device", help="torch device (default cpu), e.g. cuda, cuda:1.")
    t.add_argument("--dtype", default="float32", help="float32 (default), bf16 or fp16: the model's numeric type "
                                                       "(a bf16/fp16 point is stored apart from float32 ones).")
    t.add_argument("--batch-size", type=int, help="Prompts (windows) per forward; default: all trials of a length and depth.")
    t.add_argument("--halving", action="store_true", help="Coarse to fine: a ninth (then a third) of the trials or "
                                                           "windows at the shorter lengths, the best third on to the next.")
    t.add_argument("--shard", default="0/1", help="Evaluate only points k with k mod n = i (i/n) into this database; "
                                                   "`longmamba merge` joins the shards' evaluations.")
    t.add_argument("--best", action="store_true", help="Print only the winner: table id and θ.")
    t.add_argument("--force", action="store_true", help="Use a run calibrated on another model (fingerprint mismatch).")
    t.add_argument("--quiet", action="store_true", help="No progress on stderr.")
    c = commands.add_parser("calibrate-scales", help="Run (or resume) a per-layer scale calibration prepared by "
                                                     "`longmamba calibrate-scales … --prepare-only`, on any torch device.")
    c.add_argument("--db", required=True, help="SQLite database.")
    c.add_argument("--job", required=True, type=int, help="Scale calibration job id (`longmamba calibrate-scales "
                                                          "--prepare-only` prints it).")
    c.add_argument("--model", required=True, help="Model directory (the run's model; transformers format).")
    c.add_argument("--device", help="torch device (default cpu), e.g. cuda, cuda:1.")
    c.add_argument("--dtype", default="float32", help="float32 (default), bf16 or fp16: the model's numeric type.")
    c.add_argument("--batch-size", type=int, help="Samples per forward; default: all samples of a length.")
    c.add_argument("--quiet", action="store_true", help="No progress on stderr.")
    a = parser.parse_args(argv)
    if a.command == "calibrate-scales":
        return _calibrate_scales(a)

    def token_count(v, name):
        return None if v is None else _values([v], name, _tokens)[0]

    progress = None if a.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        shard = _shard(a.shard)
        options = dict(
            thetas=_theta_values(a.theta or [",".join(map(str, DEFAULT_THETAS))]),
            clamps=_values(a.clamp or [",".join(map(str, DEFAULT_CLAMPS))], "clamp", float),
            aggregations=_values(a.aggregate or ["max"], "aggregate", _aggregation),
            lengths=_values(a.lengths, "lengths", _tokens),
            depths=_values(a.depths or [",".join(map(str, DEFAULT_DEPTHS))], "depths", float),
            filter_from=token_count(a.filter_from, "filter-from"), interval=token_count(a.interval, "interval"),
            max_length=token_count(a.max_length, "max-length"),
            methods=_values(a.method or ["dt_thre"], "method", _method))
    except _Usage as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    try:
        result = tune(a.db, a.run, a.model, task=a.task, text=a.text, tokens=a.tokens, windows=a.windows, trials=a.trials,
                      seed=a.seed, haystack=a.haystack, tokenizer=a.tokenizer, device=a.device, dtype=a.dtype,
                      batch_size=a.batch_size, halving=a.halving, shard=shard, force=a.force, progress=progress,
                      **options)
    except LongMambaTableError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    unit = "prompts" if a.task == "passkey" else "windows"
    if shard[1] > 1:
        print(f"shard {a.shard}: {result.points_evaluated} points evaluated, {result.points_reused} already in {a.db} "
              f"({result.prompts_run} {unit} run)")
        print("join the shards with `longmamba merge --db MAIN SHARD…`; a tune with the same options on MAIN then "
              "ranks every point without evaluating")
        return 0
    if a.best:
        w = result.best
        if w is not None:
            from .fingerprint import swift_description
            # With another method than dt_thre alone, the winner's method follows: "table θ method".
            method = f" {w.method or 'dt_thre'}" if shows_method(options["methods"]) else ""
            theta = "-" if w.theta is None else swift_description(w.theta)     # a scale table has no θ
            print(f"{w.table} {theta}{method}")
        return 0
    for line in format_result(result, halving=a.halving, task=a.task, methods=options["methods"]):
        print(line)
    print(f"{result.points_evaluated} points evaluated ({result.prompts_run} {unit}), {result.points_reused} reused "
          f"from {a.db}; 0 tables solved", file=sys.stderr)
    return 0


def _calibrate_scales(a) -> int:
    import time
    from .scales import calibrate_scales
    progress = None if a.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.monotonic()
    try:
        r = calibrate_scales(a.db, a.job, a.model, device=a.device, dtype=a.dtype, batch_size=a.batch_size,
                             progress=progress)
    except LongMambaTableError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    wall = time.monotonic() - started
    print(f"table {r.table_id} ({r.method}, lengths {','.join(map(str, r.lengths))}) · job {r.job_id} · "
          f"{r.steps_run} steps, {r.forward_passes} forward passes · wall {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

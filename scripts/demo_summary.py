#!/usr/bin/env python3
"""The demonstration's figures, generated from `make run`'s own outputs (standard library only).

    python3 scripts/demo_summary.py [--name demo-model] [--check FILE ...]

Reads tables/NAME.sqlite (the tune grid in `evaluations`, the tables and their cumulative
decays), tables/NAME.passkey.json and tables/NAME.eval.json (and, where `make run` wrote them,
tables/NAME.{passkey,eval}.METHOD.json of the authors' other modes and the scale methods), and writes
tables/NAME.summary.md: the figures the READMEs quote, between the markers
`<!-- make-run figures -->` and `<!-- /make-run figures -->`. With --check, each FILE's block
between the same markers must equal the generated one; a difference is printed and the exit
status is 1 (`make run` runs the check and says so, without failing). Timings are not in the
block: they depend on the machine and are quoted beside it with the machine named.
"""
import argparse
import json
import math
import os
import sqlite3
import struct
import sys

BEGIN, END = "<!-- make-run figures -->", "<!-- /make-run figures -->"


def get(d, snake, camel):
    """A key of the eval JSON in either spelling (snake_case now, camelCase before)."""
    return d[snake] if snake in d else d.get(camel)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def global_heads(db, table, theta):
    """Global channels per layer at θ: a_c > θ compared in float32 (docs/store-format.md)."""
    t = f32(theta)
    rows = db.execute("SELECT layer_index, channel_count, cumulative_decays_f32 FROM table_layers WHERE table_id = ? ORDER BY layer_index",
                      (table,)).fetchall()
    return [sum(1 for (a,) in struct.iter_unpack("<f", blob) if a > t) for _, _, blob in rows], rows[0][1]


def pct(v):
    return f"{100 * v:.0f} %"


def block(name):
    db = sqlite3.connect(f"file:tables/{name}.sqlite?mode=ro", uri=True)
    passkey = json.load(open(f"tables/{name}.passkey.json"))
    ppl = json.load(open(f"tables/{name}.eval.json"))
    tables = {i: (p, a) for i, p, a in db.execute("SELECT id, clamp_fraction, aggregation FROM threshold_tables WHERE method = 'longmamba'")}
    L = db.execute("SELECT sample_length FROM calibration_runs ORDER BY id LIMIT 1").fetchone()[0]
    chosen = int(passkey["table"].split("#")[-1])
    theta = passkey["theta"]
    out = [BEGIN, ""]

    # The tune grid: mean accuracy over the tune lengths per (table, θ), vanilla first.
    points = db.execute("SELECT table_id, theta, length, value FROM evaluations WHERE task = 'passkey'").fetchall()
    lengths = sorted({p[2] for p in points})
    vanilla = {p[2]: p[3] for p in points if p[0] is None}
    thetas = sorted({p[1] for p in points if p[1] is not None})
    out.append(f"Tune (passkey at {', '.join(map(str, lengths))} tokens, mean accuracy per length; vanilla "
               + " / ".join(pct(vanilla[S]) for S in lengths) + "):")
    out.append("")
    out.append("| table | p | " + " | ".join(f"θ = {t}" for t in thetas) + " | global heads at θ = " + ", ".join(map(str, thetas)) + " |")
    out.append("|---|---|" + "---|" * len(thetas) + "---|")
    for table in sorted(tables):
        cells = []
        for t in thetas:
            v = [p[3] for S in lengths for p in points if p[0] == table and p[1] == t and p[2] == S]
            cells.append(" / ".join(pct(x) for x in v) if len(v) == len(lengths) else "-")
        heads = []
        for t in thetas:
            per_layer, C = global_heads(db, table, t)
            heads.append(f"{sum(per_layer)}")
        C = global_heads(db, table, thetas[0])[1]
        layers = len(global_heads(db, table, thetas[0])[0])
        out.append(f"| {table}{' (chosen)' if table == chosen else ''} | {tables[table][0]} | " + " | ".join(cells)
                   + f" | {', '.join(heads)} of {layers * C} |")
    out.append("")

    # Passkey with the chosen table and θ, by length: mean over depths.
    by_length = {}
    for p in passkey["points"]:
        by_length.setdefault(p["length"], []).append(p)
    depths = len(next(iter(by_length.values())))
    trials = passkey["points"][0]["trials"]
    out.append(f"Passkey with table {chosen} (p = {tables[chosen][0]}), θ = {theta}: {depths} depths × {trials} trials per length, "
               f"seed {passkey['seed']}, L = {L}:")
    out.append("")
    out.append("| S | × L | vanilla | LongMamba | kept share |")
    out.append("|---|---|---|---|---|")
    for S, ps in sorted(by_length.items()):
        v = sum(get(p, "vanilla_accuracy", "vanillaAccuracy") for p in ps) / len(ps)
        lm = [get(p, "long_mamba_accuracy", "longMambaAccuracy") for p in ps]
        kept = [get(p, "kept_share", "keptShare") for p in ps]
        lm_text = pct(sum(lm) / len(lm)) if all(x is not None for x in lm) else "-"
        kept_text = f"{sum(kept) / len(kept):.2f}" if all(x is not None for x in kept) else "-"
        out.append(f"| {S} | {S // L} | {pct(v)} | {lm_text} | {kept_text} |")
    out.append("")

    # Perplexity with the same table and θ.
    pts = ppl["points"]
    out.append(f"Perplexity with the same table and θ ({pts[0]['windows']} windows per length of "
               f"{os.path.basename(ppl['text'])}):")
    out.append("")
    out.append("| S | " + " | ".join(str(p["length"]) for p in pts) + " |")
    out.append("|---|" + "---|" * len(pts))
    out.append("| vanilla | " + " | ".join(f"{get(p, 'vanilla_perplexity', 'vanillaPerplexity'):.2f}" for p in pts) + " |")
    out.append("| LongMamba | " + " | ".join(f"{get(p, 'long_mamba_perplexity', 'longMambaPerplexity'):.2f}" for p in pts) + " |")
    change = [get(p, "long_mamba_perplexity", "longMambaPerplexity") / get(p, "vanilla_perplexity", "vanillaPerplexity") - 1
              for p in pts if p["length"] > L]
    out.append(f"| change | " + " | ".join(
        f"{100 * (get(p, 'long_mamba_perplexity', 'longMambaPerplexity') / get(p, 'vanilla_perplexity', 'vanillaPerplexity') - 1):+.1f} %"
        for p in pts) + " |")
    out.append("")
    out.append(f"Beyond L the table changes perplexity by {100 * min(change):+.1f} % to {100 * max(change):+.1f} %.")
    out.append("")

    # The authors' other modes with the same table and θ, beside dt_thre.
    methods = [("dt_thre", passkey, ppl)]
    for m in ["alpha", "bound", "norm", "channelwise_topk", "delta_scale", "a_power"]:
        pk_path, ppl_path = f"tables/{name}.passkey.{m}.json", f"tables/{name}.eval.{m}.json"
        if os.path.exists(pk_path) and os.path.exists(ppl_path):
            methods.append((m, json.load(open(pk_path)), json.load(open(ppl_path))))
    if len(methods) > 1:
        lengths_pk = sorted(by_length)
        scaled = [m for m, _, _ in methods if m in ("delta_scale", "a_power")]
        note = (f"; {' and '.join(scaled)}: their own per-layer tables from `calibrate-scales`, no θ" if scaled else "")
        out.append(f"Methods with table {chosen}, θ = {theta}{note} (passkey: mean over depths; perplexity: 3 windows):")
        out.append("")
        out.append("| method | " + " | ".join(f"passkey {S // L}× L" for S in lengths_pk) + " | "
                   + " | ".join(f"ppl {p['length'] // L}× L" for p in pts) + " |")
        out.append("|---|" + "---|" * (len(lengths_pk) + len(pts)))
        row = ["vanilla"]
        for S in lengths_pk:
            ps = by_length[S]
            row.append(pct(sum(get(p, "vanilla_accuracy", "vanillaAccuracy") for p in ps) / len(ps)))
        row += [f"{get(p, 'vanilla_perplexity', 'vanillaPerplexity'):.2f}" for p in pts]
        out.append("| " + " | ".join(row) + " |")
        for m, pk, pp in methods:
            row = [m]
            for S in lengths_pk:
                ps = [p for p in pk["points"] if p["length"] == S]
                row.append(pct(sum(get(p, "long_mamba_accuracy", "longMambaAccuracy") for p in ps) / len(ps)))
            row += [f"{get(p, 'long_mamba_perplexity', 'longMambaPerplexity'):.2f}" for p in pp["points"]]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def quoted(path):
    text = open(path, encoding="utf-8").read()
    if BEGIN not in text or END not in text:
        return None
    start = text.index(BEGIN)
    return text[start:text.index(END, start) + len(END)] + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="demo-model")
    ap.add_argument("--check", nargs="*", default=[])
    args = ap.parse_args()
    generated = block(args.name)
    out = f"tables/{args.name}.summary.md"
    with open(out, "w", encoding="utf-8") as f:
        f.write(generated)
    print(f"wrote {out}")
    status = 0
    for path in args.check:
        q = quoted(path)
        if q is None:
            print(f"{path}: no '{BEGIN}' block to check")
            status = 1
        elif q != generated:
            print(f"{path}: the quoted figures differ from this run's {out}:")
            for a, b in zip(q.splitlines(), generated.splitlines()):
                if a != b:
                    print(f"  quoted:    {a}\n  this run:  {b}")
            status = 1
        else:
            print(f"{path}: the quoted figures equal this run's")
    return status


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Checks docs/store-format.md from outside: builds examples/c/lookup.c (sqlite3 C API only,
# written from that page alone), makes a store with the tool on the repository's fixture, and
# compares the C reader with `longmamba lookup` for lengths between, below and beyond the rows
# and for θ exactly at (and one float32 step around) a channel's cumulative decay.
#   scripts/c-reader-test.sh            (LONGMAMBA_BIN overrides .build/release/longmamba)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${LONGMAMBA_BIN:-$ROOT/.build/release/longmamba}"
[ -x "$BIN" ] || { echo "c-reader: $BIN not found: build the tool first (make run) or set LONGMAMBA_BIN" >&2; exit 1; }
CC="${CC:-cc}"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/c-reader.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

"$CC" -O2 -Wall -Wextra -o "$TMP/lookup" "$ROOT/examples/c/lookup.c" -lsqlite3 -lm

DB="$TMP/s.sqlite"
"$BIN" calibrate --model "$ROOT/Fixtures/models/mamba2-tiny-calib" \
  --corpus "$ROOT/Fixtures/corpus/fixture.jsonl.zst" --db "$DB" \
  --samples 3 --interval 256 --max-length 4096 --quiet >"$TMP/calibrate.log" 2>&1 \
  || { cat "$TMP/calibrate.log" >&2; echo "c-reader: calibrate failed" >&2; exit 1; }

# The reader's refusals: a newer schema version, and a blob whose size disagrees with its counts.
# The store is in WAL mode and the tool may leave committed pages in s.sqlite-wal, so scratch
# copies are made with SQLite's backup API (a plain cp of s.sqlite alone can miss them); the
# triggers that keep tables immutable are dropped in the scratch copy only.
damaged_copy() {  # damaged_copy DEST SQL
  python3 -c 'import sqlite3, sys
src = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.executescript(sys.argv[3])
dst.commit()' "$DB" "$@"
}
refused() {  # refused WHAT EXPECTED-TEXT lookup-args…: the reader must fail and name the problem
  local what="$1" text="$2"; shift 2
  if "$TMP/lookup" "$@" >/dev/null 2>"$TMP/err"; then
    echo "c-reader: $what was not refused" >&2; exit 1
  fi
  grep -q -- "$text" "$TMP/err" || { echo "c-reader: unclear refusal of $what: $(cat "$TMP/err")" >&2; exit 1; }
  echo "c-reader: refuses $what: $(sed "s|$TMP/||" "$TMP/err")"
}
damaged_copy "$TMP/newer.sqlite" "PRAGMA user_version = 6;"
refused "schema version 6" "schema version 6" "$TMP/newer.sqlite" 1 1024 0 0.05
damaged_copy "$TMP/short.sqlite" "DROP TRIGGER table_layers_are_immutable;
  UPDATE table_layers SET delta_thresholds_f32 = substr(delta_thresholds_f32, 1, length(delta_thresholds_f32) - 4)
  WHERE table_id = 1 AND layer_index = 0;"
refused "a truncated delta_thresholds_f32" "delta_thresholds_f32" "$TMP/short.sqlite" 1 4096 0 0.05
# A per-layer scale table (schema 5) is not LongMamba thresholds: named and refused.
SCALE_TABLE=$("$BIN" calibrate-scales --db "$DB" --run 1 --model "$ROOT/Fixtures/models/mamba2-tiny-calib" \
  --corpus "$ROOT/Fixtures/corpus/fixture.jsonl.zst" --method delta_scale --lengths 512 --samples 1 --steps 0 --quiet \
  | sed -n 's/^table \([0-9]*\).*/\1/p')
[ -n "$SCALE_TABLE" ] || { echo "c-reader: calibrate-scales made no table" >&2; exit 1; }
refused "a delta_scale table" "method 'delta_scale'" "$DB" "$SCALE_TABLE" 512 0 0.05

# The cases and the comparison live in Python (json, sqlite3, struct: the standard library only),
# which runs both readers for every case.
python3 - "$BIN" "$TMP/lookup" "$DB" <<'PY'
import json, sqlite3, struct, subprocess, sys

tool, reader, db = sys.argv[1:4]
TABLE = 1

def f32(x):
    """x rounded to the nearest float32, as a Python float (exact)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]

def f32_step(x, steps):
    """The float32 `steps` ulps away from the positive float32 x."""
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    return struct.unpack("<f", struct.pack("<I", bits + steps))[0]

con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
layer_count, = con.execute("SELECT layer_count FROM threshold_tables WHERE id = ?", (TABLE,)).fetchone()
blob, = con.execute("SELECT lengths_i64 FROM table_layers WHERE table_id = ? AND layer_index = 0", (TABLE,)).fetchone()
lengths = list(struct.unpack(f"<{len(blob) // 8}q", blob))
decays = {}
for layer, blob in con.execute("SELECT layer_index, cumulative_decays_f32 FROM table_layers WHERE table_id = ?", (TABLE,)):
    decays[layer] = struct.unpack(f"<{len(blob) // 4}f", blob)
con.close()
assert len(lengths) >= 3 and layer_count >= 1, (lengths, layer_count)

# Lengths: below the first row, exact rows, exactly halfway (→ the shorter row), one either side
# of halfway, beyond the last row.
first, last = lengths[0], lengths[-1]
mid = lengths[len(lengths) // 2]
halves = [(a + b) // 2 for a, b in zip(lengths, lengths[1:]) if (a + b) % 2 == 0]
test_lengths = sorted({1, first // 2, first - 1, first, first + 1, mid, last, last + 1, 2 * last, 1000, 10 ** 9,
                       *halves[:2], halves[-1], halves[len(halves) // 2] - 1, halves[len(halves) // 2] + 1})

# θ: ordinary values, plus per layer the largest positive a_c exactly (that channel is not global:
# the comparison is strict), one float32 step below and above it, and a double just below a_c that
# rounds to a_c in float32 (global in double arithmetic, not global in float32).
thetas = {layer: ["0.05", "0.3", "1e-12"] for layer in decays}
for layer, a in decays.items():
    a_max = max(x for x in a if x > 0)
    thetas[layer] += [repr(a_max), repr(f32_step(a_max, -1)), repr(f32_step(a_max, 1)),
                      repr(a_max * (1 - 2 ** -30))]
    assert f32(a_max * (1 - 2 ** -30)) == a_max

def run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"c-reader: {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout)

failures = cases = 0
for layer in sorted(decays):
    for theta in thetas[layer]:
        for S in test_lengths:
            expected = run([tool, "lookup", "--db", db, "--table", str(TABLE), "--length", str(S),
                            "--layer", str(layer), "--theta", theta])
            got = run([reader, db, str(TABLE), str(S), str(layer), theta])
            want = expected["layers"][0]
            problems = []
            if expected["table"] != got["table"] or expected["requested_length"] != got["requested_length"]:
                problems.append("table/requested_length")
            if expected["length"] != got["length"]:
                problems.append(f"length {got['length']} != {expected['length']}")
            if want["layer"] != got["layer"]:
                problems.append("layer")
            if f32(float(expected["theta"])) != f32(float(got["theta"])):
                problems.append("theta")
            if [f32(x) for x in want["delta_threshold"]] != [f32(x) for x in got["delta_threshold"]]:
                problems.append("delta_threshold")
            if want["global_channel"] != got["global_channel"]:
                problems.append(f"global_channel {got['global_channel']} != {want['global_channel']}")
            if want["global_channel_count"] != got["global_channel_count"]:
                problems.append("global_channel_count")
            cases += 1
            verdict = "equal" if not problems else "DIFFERENT: " + "; ".join(problems)
            print(f"layer {layer} S {S:>10} -> {got['length']:>5}  θ {theta:<22} global "
                  f"{got['global_channel_count']}/{len(got['global_channel'])}  {verdict}")
            failures += bool(problems)
if failures:
    sys.exit(f"c-reader: {failures} of {cases} cases differ")
print(f"c-reader: {cases} cases equal")
PY

#!/bin/sh
# Regenerates Fixtures/store/v1.sqlite: a database written by the last schema-v1 tool (commit
# 4817062), for the migration tests. It builds that commit in a temporary worktree, runs a
# `calibrate` (2 × 256 tokens of the calibration fixture) and an imported `solve`, and checkpoints
# the WAL into the file. Takes a few minutes (one release build).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/v1" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/v1" 4817062 >/dev/null
(cd "$work/v1" && swift build -c release --product longmamba >/dev/null)
lm="$work/v1/.build/release/longmamba"
db="$work/v1.sqlite"
cd "$root"
"$lm" calibrate --model Fixtures/models/mamba2-tiny-calib --corpus Fixtures/corpus/fixture.jsonl.zst --db "$db" \
  --samples 2 --interval 256 --max-length 2048 --quiet >/dev/null
"$lm" solve --db "$db" --recordings Fixtures/solver/mamba2-sample0.safetensors Fixtures/solver/mamba2-sample1.safetensors \
  --clamp 0.1 --aggregate max --interval 1000 --max-length 4000 >/dev/null
sqlite3 "$db" "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;" >/dev/null
mkdir -p Fixtures/store
cp "$db" Fixtures/store/v1.sqlite
echo "wrote Fixtures/store/v1.sqlite (schema $(sqlite3 Fixtures/store/v1.sqlite 'PRAGMA user_version'))"

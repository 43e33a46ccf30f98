#!/bin/sh
# Runs every libFuzzer harness (Fuzz/Harnesses) for FUZZ_SECONDS each (default 60) and fails on
# the first crash, leak, timeout or out-of-memory. Usage: scripts/fuzz.sh [harness ...]
#   FUZZ_SECONDS=600 scripts/fuzz.sh store
# Builds into .build-fuzz (release, -sanitize=fuzzer,address). Working corpora grow in
# .build-fuzz/corpus/<harness> (seeded from Fuzz/seeds/<harness>); crashers are written to
# .build-fuzz/artifacts/<harness>/ and the log of each run to .build-fuzz/logs/<harness>.log.
set -eu
SECONDS_EACH=${FUZZ_SECONDS:-60}
SWIFT=${SWIFT:-swift}
HARNESSES=${*:-"safetensors torch-zip pickle tokenizer-json tokenizer-encode config pile-line zstd delta-blob token-file store store-rows"}
BIN=.build-fuzz/release/longmamba-fuzz

# The coverage kinds are spelled out: with -sanitize=fuzzer alone, swiftc's whole-module release
# build left the library uninstrumented (libFuzzer then saw no coverage in the parsers).

LONGMAMBA_FUZZ=1 $SWIFT build -c release --scratch-path .build-fuzz --sanitize=fuzzer --sanitize=address \
    -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp --product longmamba-fuzz
if [ ! -d Fuzz/seeds/delta-blob ]; then LONGMAMBA_FUZZ_MAKE_SEEDS=Fuzz/seeds/delta-blob "$BIN"; fi

status=0
summary=""
for h in $HARNESSES; do
    mkdir -p ".build-fuzz/corpus/$h" ".build-fuzz/artifacts/$h" .build-fuzz/logs
    log=".build-fuzz/logs/$h.log"
    echo "== $h: ${SECONDS_EACH} s"
    # -timeout: one input over 10 s is a hang; -rss_limit_mb: 2 GiB is an out-of-memory bug here.
    if LONGMAMBA_FUZZ_TARGET="$h" ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=Fuzz/lsan.supp SWIFT_BACKTRACE=enable=no "$BIN" -max_total_time="$SECONDS_EACH" -timeout=10 \
        -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -artifact_prefix=".build-fuzz/artifacts/$h/" \
        ".build-fuzz/corpus/$h" "Fuzz/seeds/$h" >"$log" 2>&1; then
        result=ok
    else
        result="FAILED (see $log and .build-fuzz/artifacts/$h/)"
        status=1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    line=$(printf '%-17s %10s execs  cov %6s  features %7s  %s' "$h" "$runs" "$cov" "$ft" "$result")
    echo "$line"
    summary="$summary$line
"
done
printf '\nharness              executions  coverage  features\n%s' "$summary"
exit $status

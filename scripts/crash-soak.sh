#!/bin/sh
# The crash soak and concurrency tests with more kills (default 200 per soak): SIGKILL of
# `calibrate`, `merge`, `solve` and `sweep` at seeded random moments, integrity_check after each.
#   KILLS=500 scripts/crash-soak.sh
set -eu
KILLS=${KILLS:-200}
swift build -c release --build-tests
LONGMAMBA_SOAK_KILLS=$KILLS swift test -c release --skip-build --filter ProcessFaultTests 2>&1 | grep -E "soak:|concurrency:|✘|Test run"

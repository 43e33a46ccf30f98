#!/usr/bin/env bash
# Installs ./python (the longmamba_tables package) into the reference venv and runs its tests.
# Needs the Swift tool built (make run / make test): the tests compare against it.
# Where CPU torch cannot be installed, a venv without it runs the store tests, and the
# transformers tests are skipped with a message saying so.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-/tmp/reference-venv}"
if ! VENV="$VENV" bash scripts/reference-venv.sh; then
  echo "python-tests: CPU torch could not be installed; the transformers tests will be skipped" >&2
  VENV="${VENV}-notorch"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || exit 1
fi
"$VENV/bin/pip" --disable-pip-version-check -q install ./python "pytest>=7" || exit 1
cd python && exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"

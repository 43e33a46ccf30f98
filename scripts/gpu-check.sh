#!/usr/bin/env bash
# The Python package's GPU checks (issue: evaluation at scale): float32 parity of passkey and
# perplexity on the GPU against the CPU, bfloat16 reported, and passkey at 16k on a
# mamba-130m-shaped and a mamba2-1.3b-shaped random checkpoint (prompts/s, peak GPU memory), and
# a prepared SPSA scale calibration run on the GPU against the CPU (steps equal, seconds per step).
# Without CUDA it says so and exits 0. Arguments go to scripts/gpu_check.py (e.g. --device cpu
# --length 512 runs the same steps on the CPU at a small size).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-/tmp/reference-venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  if ! VENV="$VENV" bash scripts/reference-venv.sh; then
    echo "gpu-check: no Python with torch could be set up; nothing checked" >&2
    exit 0
  fi
fi
exec "$PY" scripts/gpu_check.py "$@"

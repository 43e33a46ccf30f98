#!/usr/bin/env bash
# The Python venv that makes the golden files: CPU PyTorch plus scripts/requirements.txt.
# Idempotent: a venv that already imports everything is only checked.
#
#   VENV=/tmp/reference-venv bash scripts/reference-venv.sh
#
# torch: PyPI's Linux torch wheels are CUDA builds that pull several GB of nvidia-* wheels. The
# CPU build is taken, in this order, from
#   TORCH_WHEEL=/path/torch-2.13.0+cpu-….whl       a wheel file you have
#   pip's find-links folder (FIND_LINKS_DIR, default /opt/wheels) when it holds the CPU wheel
#   TORCH_INDEX_URL (default https://download.pytorch.org/whl/cpu), PyTorch's CPU index
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-/tmp/reference-venv}"
PY="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
FIND_LINKS_DIR="${FIND_LINKS_DIR:-/opt/wheels}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/pip" --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch; assert (torch.ones(2, 2) @ torch.ones(2, 2)).sum() == 8" 2>/dev/null; then
  shopt -s nullglob
  local_wheels=("$FIND_LINKS_DIR"/torch-"$TORCH_VERSION"+cpu-*.whl)
  shopt -u nullglob
  # The CPU wheel's own dependencies (it has no CUDA ones).
  deps=(filelock "typing_extensions>=4.10.0" "setuptools>=77.0.3" "sympy>=1.13.3" "networkx>=2.5.1" jinja2 "fsspec>=0.8.5" mpmath)
  if [ -n "${TORCH_WHEEL:-}" ]; then
    echo "reference-venv: torch from $TORCH_WHEEL"
    "${PIP[@]}" install --no-deps "$TORCH_WHEEL"; "${PIP[@]}" install "${deps[@]}"
  elif [ "${#local_wheels[@]}" -gt 0 ]; then
    echo "reference-venv: torch $TORCH_VERSION+cpu from $FIND_LINKS_DIR"
    "${PIP[@]}" install --no-deps "${local_wheels[0]}"; "${PIP[@]}" install "${deps[@]}"
  else
    echo "reference-venv: torch $TORCH_VERSION+cpu from $TORCH_INDEX_URL"
    "${PIP[@]}" install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION+cpu"
  fi
fi
"${PIP[@]}" install -r scripts/requirements.txt

"$VENV/bin/python" - <<'PYEOF'
import torch, transformers, safetensors, tokenizers, numpy, zstandard
from transformers import MambaForCausalLM, Mamba2ForCausalLM, FalconMambaForCausalLM  # noqa: F401
print("reference-venv ok: torch", torch.__version__, "| transformers", transformers.__version__,
      "| tokenizers", tokenizers.__version__, "| safetensors", safetensors.__version__,
      "| numpy", numpy.__version__, "| zstandard", zstandard.__version__)
PYEOF

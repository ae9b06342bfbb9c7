#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): extraction img/s with and without autocast, a
# CelebA-scale head (dp-score, dp, eo) on CUDA against CPU, and a 20-point eo sweep, into one
# JSON. Under 8 minutes on one H100/H200-class GPU; the test suite runs it with --tiny on CPU.
#
#   bash benchmarks/gpu_check.sh                      # JSON: $OUT/gpu_check.json, else benchmarks/results/
#   bash benchmarks/gpu_check.sh --tiny --device cpu  # the CPU smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
JSON="${OUT:-benchmarks/results}/gpu_check.json"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# 470 s: the check's own limit, inside the 8 minutes it promises (sections write as they end)
exec timeout --signal=INT --kill-after=10 "${GPU_CHECK_LIMIT_S:-470}" "$PYTHON" benchmarks/gpu_check.py --json "$JSON" "$@"

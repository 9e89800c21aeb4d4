#!/usr/bin/env bash
# The GPU checks, in one command, for a maintainer with one CUDA GPU (no network needed; about 5-8 minutes):
#
#   bash scripts/gpu_check.sh            # after bash scripts/setup.sh (or with PYTHON=/path/to/python)
#
#   1. the `gpu`-marked tests (tests/test_sft_gpu.py): one bf16 training step per attention implementation
#      (sdpa, eager, and flash_attention_2 when flash-attn is installed), fused AdamW on CUDA, and a 1-process
#      FSDP2 run (configs/accelerate/fsdp.yaml) whose export equals a plain single-GPU export byte for byte;
#   2. scripts/bench_train.py --shape 0.6b --device cuda: ours vs the official loop's port at the released 0.6B
#      width in bf16, on the GPU (printed, docs/benchmarks.md untouched).
#
# Prints one summary table. Without CUDA it says so and exits 0. With CUDA, a check that cannot run fails
# (exit 1): a gpu test skipped for any reason other than a missing optional package is a failure, never a
# silent skip.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU found (torch.cuda.is_available() is False): nothing to check here"
  exit 0
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

log="$(mktemp -d)"
declare -a rows
failed=0
record() {  # name, status, seconds, detail
  rows+=("| $1 | $2 | $3 | $4 |")
  [ "$2" = "ok" ] || failed=1
}

# 1. gpu tests; -rs lists every skip with its reason
start=$SECONDS
"$PY" -m pytest -m gpu tests/test_sft_gpu.py -v -rs -p no:cacheprovider >"$log/tests.txt" 2>&1
code=$?
tail -n 25 "$log/tests.txt"
passed=$(grep -c " PASSED" "$log/tests.txt" || true)
skips=$(grep "^SKIPPED" "$log/tests.txt" || true)
bad_skips=$(printf '%s\n' "$skips" | grep -v "is not installed" | grep -c "SKIPPED" || true)
detail="$passed passed"
[ -n "$skips" ] && detail="$detail; skipped: $(printf '%s' "$skips" | sed 's/^SKIPPED \[[0-9]*\] //' | tr '\n' ';')"
if [ "$code" -ne 0 ] || [ "$bad_skips" -ne 0 ] || [ "$passed" -eq 0 ]; then
  record "gpu tests (bf16 step per attention, fused AdamW, FSDP export)" "FAILED" $((SECONDS - start)) "$detail (see $log/tests.txt)"
else
  record "gpu tests (bf16 step per attention, fused AdamW, FSDP export)" "ok" $((SECONDS - start)) "$detail"
fi

# 2. the training loop at the released 0.6B width, ours vs the official loop's port, on the GPU
start=$SECONDS
"$PY" scripts/bench_train.py --shape 0.6b --device cuda --repeats 1 --no-write >"$log/bench.txt" 2>&1
code=$?
headline=$(grep -o "Ours / official[^(]*" "$log/bench.txt" | head -n 1 | tr -d '*')
if [ "$code" -ne 0 ] || [ -z "$headline" ]; then
  tail -n 20 "$log/bench.txt"
  record "bench_train --shape 0.6b --device cuda" "FAILED" $((SECONDS - start)) "exit $code (see $log/bench.txt)"
else
  grep -E "^\| (ours|official)" "$log/bench.txt" | head -n 4
  record "bench_train --shape 0.6b --device cuda" "ok" $((SECONDS - start)) "$headline"
fi

echo
echo "| check | status | seconds | detail |"
echo "|---|---|---:|---|"
printf '%s\n' "${rows[@]}"
echo "logs: $log"
exit "$failed"

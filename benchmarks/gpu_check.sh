#!/usr/bin/env bash
# GPU check: run this first on a machine with a CUDA GPU, as one command (< 8 minutes):
#
#     bash benchmarks/gpu_check.sh            # from the repository root
#
# Steps (each with its own timeout; a failing step is recorded and the next one runs):
#   1 info        nvidia-smi, torch/CUDA versions                         (20 s)
#   2 build       harness build-plugins --force: e3gnn, e3gnn_parallel, mace against the
#                 installed (CUDA) torch; needs the CUDA toolkit for torch's CMake config (240 s)
#   3 tests       pytest -m gpu: plugins on CUDA vs CPU (tests/test_gpu_plugins.py)     (100 s)
#   4 throughput  benchmarks/md_throughput.py, native route, ~500 and ~2,000 atoms        (60 s)
#   5 scaling     benchmarks/md_scaling.py on CUDA: 1 vs 2 vs 4 ranks sharing the GPU,
#                 ~1,400 and ~5,000 atoms, ms/step and ns/day                            (120 s)
# Everything lands in benchmarks/results/gpu-<UTC date>/ (commit that folder):
#   steps.json (name, exit status, seconds, log file per step), info.txt, *.log,
#   md_throughput-gpu.json, md_scaling-gpu.json.
# Environment: PYTHON (default .venv/bin/python, else python3), OUT_DIR (default above).
set -euo pipefail

cd "$(dirname "$0")/.."
STAMP="$(date -u +%Y%m%d-%H%M)"
OUT_DIR="${OUT_DIR:-benchmarks/results/gpu-${STAMP}}"
mkdir -p "$OUT_DIR"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
BIN="$(dirname "$PYTHON")"
export PATH="$BIN:$PATH"
STEPS_TSV="$OUT_DIR/steps.tsv"
: > "$STEPS_TSV"
T0=$(date +%s)

# run_step NAME TIMEOUT_S CMD... : runs CMD with a timeout, logs to $OUT_DIR/NAME.log,
# records the exit status and never stops the script
run_step() {
  local name=$1 limit=$2
  shift 2
  local start rc
  start=$(date +%s)
  echo "== $name (timeout ${limit}s): $*" | tee -a "$OUT_DIR/gpu_check.log"
  set +e
  timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  rc=$?
  set -e
  local took=$(( $(date +%s) - start ))
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$took" "$name.log" >> "$STEPS_TSV"
  if [[ $rc -eq 0 ]]; then
    echo "   ok (${took}s)" | tee -a "$OUT_DIR/gpu_check.log"
  else
    echo "   FAILED: exit $rc after ${took}s (124 = timeout); see $OUT_DIR/$name.log" \
      | tee -a "$OUT_DIR/gpu_check.log"
    tail -5 "$OUT_DIR/$name.log" | sed 's/^/   | /' | tee -a "$OUT_DIR/gpu_check.log" || true
  fi
  return 0
}

run_step info 20 bash -c "nvidia-smi || true; \"$PYTHON\" -c 'import torch, sys; \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", \
torch.cuda.is_available(), \"devices\", torch.cuda.device_count()); \
sys.exit(0 if torch.cuda.is_available() else 3)'"
cp "$OUT_DIR/info.log" "$OUT_DIR/info.txt"
HAVE_CUDA=0
if "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  HAVE_CUDA=1
fi

run_step build 240 "$BIN/harness" build-plugins --force

if [[ $HAVE_CUDA -eq 1 ]]; then
  run_step tests 100 "$PYTHON" -m pytest -m gpu -x -q -rs tests/test_gpu_plugins.py
  run_step throughput 60 "$PYTHON" benchmarks/md_throughput.py --device cuda \
    --models mace-tiny sevennet-0 --sizes 500 2000 --methods native \
    --steps 20 --warmup 5 --repeats 3 --out "$OUT_DIR/md_throughput-gpu.json"
  run_step scaling 120 "$PYTHON" benchmarks/md_scaling.py --device cuda \
    --models mace-tiny-test sevennet-0 --sizes 1400 5000 --ranks 1 2 4 \
    --steps 20 --sevennet-steps 10 --warmup 5 --repeats 2 --budget-s 60 \
    --out "$OUT_DIR/md_scaling-gpu.json"
else
  printf '%s\t%s\t%s\t%s\n' "gpu-steps" "skipped" "0" "torch sees no CUDA device" >> "$STEPS_TSV"
  echo "torch sees no CUDA device: GPU tests and benchmarks skipped" | tee -a "$OUT_DIR/gpu_check.log"
fi

"$PYTHON" - "$STEPS_TSV" "$OUT_DIR/steps.json" "$T0" <<'EOF'
import json, sys, time
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
steps = [{"name": n, "exit_status": rc, "seconds": int(s), "log": log} for n, rc, s, log in rows]
json.dump({"steps": steps, "total_s": int(time.time()) - int(sys.argv[3])},
          open(sys.argv[2], "w"), indent=1)
EOF
echo "done in $(( $(date +%s) - T0 ))s; results in $OUT_DIR (commit it)"

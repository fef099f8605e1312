#!/usr/bin/env bash
# The CUDA paths in one short run, for a session that is lent a GPU machine: capture of a training step on
# CUDA (with NVML telemetry), its replay on CUDA and on the CPU (a CUDA trace replays on the CPU), a CPU trace
# and PARAM's GPU traces replayed on CUDA, the exported runner with --device cuda, and a one-rank NCCL capture
# and replay under torchrun. Each step has its own time limit and one failing step does not stop the rest;
# the summary at the end reads the JSON results.
#
#   DEV=cuda OUT=/tmp/gpu bash benchmarks/gpu_paths.sh      (DEV=cpu SCALE=4: the same steps on the CPU)
#
# Uses `python3 -m benchmint` from src/ (PYTHONPATH), so benchmint need not be installed; torch, psutil,
# pyarrow, scipy, typer, rich, msgspec, orjson and nvidia-ml-py must be importable.
set -u
DEV=${DEV:-cuda}
OUT=${OUT:-/tmp/gpu_paths}
PY=${PY:-python3}
ONLY=${ONLY:-}     # e.g. ONLY='ddp_.*|param_pt2': run only the steps whose names match
SCALE=${SCALE:-1}  # multiplies every step's time limit (set on a slow machine: the PARAM traces are GPU-sized)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d)
mkdir -p "$OUT"
rm -f "$OUT"/*.json  # a step that fails this time must not show an earlier run's result
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" BENCHMINT_RESULTS="$W/results" PYTHONUNBUFFERED=1
LOG="$OUT/log.txt"
: > "$LOG"

step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$(( $2 * SCALE )); shift 2
  if [ -n "${ONLY:-}" ] && ! [[ $name =~ ^($ONLY)$ ]]; then return; fi
  local t0=$SECONDS
  echo "=== $name: $*" | tee -a "$LOG"
  timeout "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  echo "=== $name: rc $rc in $((SECONDS - t0)) s" | tee -a "$LOG"
}

cat > "$W/train.py" <<EOF
import torch
from torch import nn
dev = torch.device("$DEV")
torch.manual_seed(0)
layer = nn.TransformerEncoderLayer(256, nhead=8, dim_feedforward=1024, dropout=0.0, batch_first=True)
model = nn.Sequential(nn.TransformerEncoder(layer, 4), nn.Linear(256, 16)).to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.randn(16, 128, 256, device=dev)
y = torch.randn(16, 128, 16, device=dev)
for _ in range(80):
    opt.zero_grad(set_to_none=True)
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()
EOF

step env 60 $PY -m benchmint env
# 40 measured steps: a window long enough to hold NVML's own utilization samples (every 1/6 s to 1 s)
step capture 120 $PY -m benchmint capture --out "$W/cap" --warmup 10 --measure 40 --no-store -- $PY "$W/train.py"
step replay_same 90 $PY -m benchmint replay "$W/cap" --device "$DEV" --iters 60 --no-store --out "$W/runs" --report --json "$OUT/replay_same.json"
# where the replay's GPU time differs from the original's, kernel by kernel
step kernels 120 $PY "$ROOT/benchmarks/gpu_kernels.py" "$W/cap" --device "$DEV"
step export 60 $PY -m benchmint export "$W/cap" --out "$W/exp"
# the exported runner with torch alone: no benchmint on the path
step export_run 90 env -u PYTHONPATH $PY "$W/exp/run.py" --device "$DEV" --iters 20 --json "$OUT/export_run.json"
step replay_cpu 120 $PY -m benchmint replay "$W/cap" --device cpu --iters 5 --no-store --out "$W/runs" --json "$OUT/replay_cpu.json"
# one rank of NCCL (one GPU cannot hold two NCCL ranks); gloo when DEV=cpu
if [ "$DEV" = cpu ]; then export BENCHMINT_DDP_DEVICE=cpu; fi
step ddp_capture 120 $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m benchmint capture --out "$W/ddp" --warmup 5 --measure 10 --no-store -- $PY -m benchmint.models.ddp_train --steps 30
step ddp_replay 120 $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m benchmint replay "$W/ddp" --device "$DEV" --iters 10 --no-store --out "$W/runs" --json "$OUT/ddp_replay.json"
# the idle recorder's cost with CUPTI left attached (TEARDOWN_CUPTI=0) and released (benchmint's default), A B A B
cupti_ab() {
  for r in 1 2 3; do
    for td in 0 default; do
      if [ $td = 0 ]; then export TEARDOWN_CUPTI=0; else unset TEARDOWN_CUPTI; fi
      rm -rf "$W/ab_$td"
      if ! $PY -m benchmint capture --out "$W/ab_$td" --warmup 10 --measure 20 --no-store -- $PY "$W/train.py" > "$W/ab.log" 2>&1; then
        echo "TEARDOWN_CUPTI=$td round $r: capture failed"; tail -3 "$W/ab.log"; continue
      fi
      $PY -c "import json,sys; c=json.load(open(sys.argv[1]))['recording_cost']; v, p, a = c.get('idle_vs_unobserved'), c.get('idle_p_value'), c.get('after_recording_vs_unobserved'); print(f'TEARDOWN_CUPTI={sys.argv[2]} round $r: idle vs un-observed ' + (f'{v*100:+.1f}% (p={p:.3f})' if v is not None and p is not None else 'not measured') + '; the steps after the recording / un-observed ' + (', '.join(f'{x:.2f}' for x in a) if a else '-'))" "$W/ab_$td/capture.json" $td
    done
  done
  unset TEARDOWN_CUPTI
}
export -f cupti_ab; export W PY
step cupti_ab 200 bash -c cupti_ab
step tiny_on_dev 60 $PY -m benchmint replay "$ROOT/tests/data/tiny_capture" --device "$DEV" --iters 10 --no-store --out "$W/runs" --json "$OUT/tiny_on_dev.json"
step param_pt2 90 $PY -m benchmint replay "$ROOT/tests/data/param/pt2_et.json.tar.gz" --device "$DEV" --iters 10 --no-store --out "$W/runs" --json "$OUT/param_pt2.json"
step param_resnet 120 $PY -m benchmint replay "$ROOT/tests/data/param/resnet_et.json.gz" --kineto "$ROOT/tests/data/param/resnet_kineto.json.gz" --device "$DEV" --iters 10 --no-store --out "$W/runs" --json "$OUT/param_resnet.json"
step param_gpt2 150 $PY -m benchmint replay "$ROOT/tests/data/param/hf_GPT2_et.json.tar.gz" --device "$DEV" --iters 5 --no-store --out "$W/runs" --json "$OUT/param_gpt2.json"
cp "$W/cap/capture.json" "$OUT/capture.json" 2>/dev/null

$PY - "$OUT" <<'EOF' | tee -a "$LOG"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
keys = ["device", "trace_devices", "coverage", "iter_time_s", "original_iter_time_s", "error", "error_note"]
for f in sorted(out.glob("*.json")):
    d = json.loads(f.read_text())
    print(f"--- {f.name}")
    if f.name == "capture.json":
        print({k: d.get(k) for k in ("device", "torch_version", "step_time_s", "recording_cost")})
        print("system_metrics", d.get("system_metrics"))
        continue
    print({k: d.get(k) for k in keys if k in d})
    sm = d.get("system_metrics")
    if sm:
        print("system_metrics", json.dumps(sm)[:1500])
EOF
rm -rf "$W"

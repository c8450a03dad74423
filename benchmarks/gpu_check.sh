#!/usr/bin/env bash
# The GPU check (docs/gpu.md): on a machine with one GPU, a CUDA build of torch and no
# network, Java or TorchServe, run a small sweep of the MLP (batch size x workers on one
# GPU) with what `make gpu-bundle` packed here, and print the served throughput, the
# gpu_* columns and the device the workers used.
#
#   bash benchmarks/gpu_check.sh           probe the machine, install what it lacks from
#                                          build/gpu-bundle.tar.xz, run the check
#   bash benchmarks/gpu_check.sh --probe   only say what the machine has and lacks
#
# Exit status: 0 every trial served on a GPU with gpu_* columns; 1 the check ran but did
# not show that (or the sweep failed); 3 the machine lacks something the bundle does not
# carry: the last line is the `make gpu-bundle ...` that builds one with it. With $OUT set
# (a folder the caller collects) the run's tables, machine.json and report go there.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${GPU_CHECK_PYTHON:-$(command -v python3 || command -v python)}
WORK=${GPU_CHECK_DIR:-${TMPDIR:-/tmp}/sweeper-gpu-check}
BUNDLE=${GPU_CHECK_BUNDLE:-$REPO/build/gpu-bundle.tar.xz}
SWEEP_TIMEOUT_S=${GPU_CHECK_TIMEOUT_S:-420}
started=$(date +%s)

say() { printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - started ))"; }

mkdir -p "$WORK"
MANIFEST=""
if [ -f "$BUNDLE" ]; then
    say "unpacking $(basename "$BUNDLE") ($(du -h "$BUNDLE" | cut -f1))"
    rm -rf "$WORK/jre" "$WORK/wheels"
    if ! tar -xJf "$BUNDLE" -C "$WORK" 2>/dev/null; then
        # no xz program: Python's lzma reads it
        "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$BUNDLE" "$WORK" || exit 1
    fi
    MANIFEST=$WORK/wheels/manifest.json
fi

say "the machine"
"$PY" "$REPO/benchmarks/gpu_env.py" probe ${MANIFEST:+--manifest "$MANIFEST"}
probe_rc=$?
if [ "${1:-}" = "--probe" ]; then
    exit "$probe_rc"
fi
if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "no torch in $PY: the check runs on the machine's CUDA build of torch (set GPU_CHECK_PYTHON to the Python that has it)"
    exit 3
fi
if [ -z "$MANIFEST" ]; then
    echo "no bundle at $BUNDLE: build it here with make gpu-bundle and carry build/gpu-bundle.tar.xz"
    exit 3
fi

say "a venv on the machine's torch, with what it lacks from the bundle"
VENV=$WORK/venv
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv --system-site-packages "$VENV" 2>"$WORK/venv.err" ||
        "$PY" -m venv --without-pip --system-site-packages "$VENV" || { cat "$WORK/venv.err"; exit 1; }
fi
VPY=$VENV/bin/python
"$VPY" "$REPO/benchmarks/gpu_env.py" install --manifest "$MANIFEST"
rc=$?
[ "$rc" -eq 0 ] || exit "$rc"

export JAVA_HOME=$WORK/jre
export PATH=$VENV/bin:$JAVA_HOME/bin:$PATH
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
if ! java -version 2>&1 | head -1; then
    echo "the bundle's java does not run here (it was linked on glibc 2.34+: $(ldd --version 2>&1 | head -1))"
    exit 3
fi
cd "$REPO" || exit 1
# TorchServe's frontend counts GPUs with nvidia-smi unless CUDA_VISIBLE_DEVICES says which
ENV_GPU=""
if ! command -v nvidia-smi >/dev/null 2>&1 && [ -z "${CUDA_VISIBLE_DEVICES:-}" ]; then
    ENV_GPU="  CUDA_VISIBLE_DEVICES: \"0\""
fi
CHECK=$WORK/gpu_check.yaml
cat >"$CHECK" <<EOF
# written by benchmarks/gpu_check.sh: sweeps/gpu.yaml, smaller
name: gpu_check
description: The GPU check, the MLP's batch size x workers on one GPU.
model:
  name: mlp
  batch_size: [1, 8, 64]
  max_batch_delay_ms: 5
  min_workers: [1, 2]
server:
  number_of_gpu: 1
env:
  OMP_NUM_THREADS+MKL_NUM_THREADS: 1
$ENV_GPU
load:
  mode: closed
  concurrency: 32
  duration_s: 4
settings:
  repeats: 1
  warmup_s: 1
  server_warmup_s: 5
  server_warmup_max_s: 15
  registration_warmup_s: 1
  ready_timeout_s: 180
  slo_p99_ms: 50
EOF

say "sweeper plan (the preflight's GPU check)"
"$VPY" -m sweeper.cli plan "$CHECK" || exit 1

say "sweeper run (at most ${SWEEP_TIMEOUT_S}s)"
rm -rf "$WORK/runs"
timeout --signal=TERM --kill-after=30 "$SWEEP_TIMEOUT_S" "$VPY" -m sweeper.cli run "$CHECK" --out "$WORK/runs" --yes --no-report
run_rc=$?
RUN=$(ls -d "$WORK"/runs/*/ 2>/dev/null | tail -1)
if [ -z "$RUN" ]; then
    echo "no run directory (sweeper run exited $run_rc)"
    exit 1
fi

say "results ($RUN)"
"$VPY" - "$RUN" <<'EOF'
import json, sys
from pathlib import Path

import pandas as pd

run = Path(sys.argv[1])
machine = json.loads((run / "machine.json").read_text())
print("machine:", {k: machine.get(k) for k in ("gpus", "gpu_driver", "gpu_cuda_driver", "torch", "torch_cuda", "java", "cpu_model")})
df = pd.read_csv(run / "results.csv")
show = ["param_model_batch_size", "param_model_min_workers", "status", "client_throughput_rps", "client_latency_p99_ms",
        "client_device", "gpu_count", "gpu_util_pct_mean", "gpu_util_pct_max", "gpu_mem_used_mb_max", "gpu_power_w_mean",
        "gpu_sm_clock_mhz_mean", "gpu_temp_c_max", "gpu_throttle_reasons", "gpu_note", "error"]
with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
    print(df[[c for c in show if c in df.columns]].to_string(index=False))
ok = (len(df) > 0 and df["status"].eq("ok").all() and {"client_device", "gpu_count"} <= set(df.columns)
      and df["client_device"].astype(str).str.contains("cuda").all()
      and (pd.to_numeric(df["gpu_count"], errors="coerce") >= 1).all())
print("GPU CHECK:", "PASS: every trial served on a GPU, with gpu_* columns" if ok else "FAIL: see the table")
sys.exit(0 if ok else 1)
EOF
check_rc=$?

if "$VPY" -c 'import matplotlib' 2>/dev/null; then
    say "report (the GPU section)"
    "$VPY" -m sweeper.cli report "$RUN" && grep -c 'id="gpu"' "$RUN/report.html"
fi
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    for f in results.csv results.md machine.json sweep.yaml report.html report.md; do
        [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"
    done
    # the trials' logs, small: failures show why
    tar -czf "$OUT/trial-logs.tar.gz" -C "$RUN" --exclude='*.csv.gz' trials 2>/dev/null
fi
say "done (sweeper run exited $run_rc)"
[ "$run_rc" -eq 0 ] || exit 1
exit "$check_rc"

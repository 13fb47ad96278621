#!/usr/bin/env bash
# Per-block timeline of decode steps on a GPU machine: builds the CLI with the block trace
# compiled in (-DBITLIGHT_CUDA_BLOCK_TRACE=ON, as scripts/gpu_check.sh builds), and for each
# spec synthesizes the model, runs `bench -p 512 -n 16 -r 1` with the trace on and prints
# scripts/block_timeline.py's table (the last LAYERS layers, i.e. the last decode steps).
#
#   SPECS="llama3-8b:q4_0 llama3-1b:q4_0" scripts/gpu_block_trace.sh
#
# Environment: OUT (default build-trace/out), SPECS, LAYERS (default 64), BENCH_ARGS (default
# -p 512 -n 16 -r 1), ENV ("VAR=value ..." set for the bench runs, e.g. a backend switch).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build-trace/out}
SPECS=${SPECS:-llama3-8b:q4_0 llama3-1b:q4_0}
LAYERS=${LAYERS:-64}
BENCH_ARGS=${BENCH_ARGS:--p 512 -n 16 -r 1}
MODELS=${MODELS_DIR:-/tmp/bitlight-models}
mkdir -p "$OUT" "$MODELS"
OUT=$(cd "$OUT" && pwd)
T0=$SECONDS
BUILD_DIR=build-trace OUT=$OUT/build KERNEL_CHECKS=0 MODEL_CHECK=0 CMAKE_ARGS=-DBITLIGHT_CUDA_BLOCK_TRACE=ON \
  bash scripts/gpu_check.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "[build done at $((SECONDS - T0)) s]"
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/tmp/bitlight-gpu-deps/usr/lib/x86_64-linux-gnu
B=build-trace/bin/bitlight
for spec in $SPECS; do
  shape=${spec%%:*}; type=${spec##*:}
  m=$MODELS/$shape-$type.gguf
  [[ -f $m ]] || "$B" synth --shape "$shape" --type "$type" -o "$m" > /dev/null
  echo "## $shape $type"
  # shellcheck disable=SC2086
  env ${ENV:-} BITLIGHT_CUDA_BLOCK_TRACE_OUT="$OUT/trace_${shape}_$type.bin" \
    "$B" bench -m "$m" --device cuda $BENCH_ARGS 2>&1 | grep -E "^\| .*tg|block trace" || true
  python3 scripts/block_timeline.py "$OUT/trace_${shape}_$type.bin" --layers "$LAYERS"
  echo "[$spec done at $((SECONDS - T0)) s]"
done

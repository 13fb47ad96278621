#!/usr/bin/env bash
# Per-block timeline of decode steps on a GPU machine: builds the CLI with the block trace
# compiled in (-DBITLIGHT_CUDA_BLOCK_TRACE=ON, as scripts/gpu_check.sh builds), and for each
# spec synthesizes the model, runs `bench -p 512 -n 16 -r 1` with the trace on and prints
# scripts/block_timeline.py's table (the last LAYERS layers, i.e. the last decode steps).
#
#   SPECS="llama3-8b:q4_0 llama3-1b:q4_0" scripts/gpu_block_trace.sh
#
# Environment: OUT (default build-trace/out), SPECS, LAYERS (default 64), BENCH_ARGS (default
# -p 512 -n 16 -r 1), ENV ("VAR=value ..." set for the bench runs, e.g. a backend switch),
# VARIANTS (space-separated, each VAR=value[,VAR=value...] set for that variant's runs, e.g.
# BITLIGHT_CUDA_EXPERIMENT=1 or a backend switch; default BITLIGHT_CUDA_EXPERIMENT=0): each is
# traced, and with AB_ROUNDS > 0 also benched without the trace (AB_ARGS, default -p 512 -n 128
# -r 2), the variants alternating round by round.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build-trace/out}
SPECS=${SPECS:-llama3-8b:q4_0 llama3-1b:q4_0}
LAYERS=${LAYERS:-64}
VARIANTS=${VARIANTS:-BITLIGHT_CUDA_EXPERIMENT=0}
AB_ROUNDS=${AB_ROUNDS:-0}
AB_ARGS=${AB_ARGS:--p 512 -n 128 -r 2}
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
  for round in $(seq 1 "$AB_ROUNDS"); do
    for x in $VARIANTS; do
      # shellcheck disable=SC2086
      tg=$(env ${ENV:-} ${x//,/ } "$B" bench -m "$m" --device cuda $AB_ARGS 2>/dev/null | grep -E "^\| .*\| tg" | awk -F'|' '{print $7}')
      echo "ab $shape $type $x round $round: tg $tg"
    done
  done
  for x in $VARIANTS; do
    echo "## $shape $type, $x"
    # shellcheck disable=SC2086
    env ${ENV:-} ${x//,/ } BITLIGHT_CUDA_BLOCK_TRACE_OUT="$OUT/trace.bin" \
      "$B" bench -m "$m" --device cuda $BENCH_ARGS 2>&1 | grep -E "^\| .*tg" || true
    python3 scripts/block_timeline.py "$OUT/trace.bin" --layers "$LAYERS" | grep -E "^\| (-?[0-6]|offset) "
  done
  echo "[$spec done at $((SECONDS - T0)) s]"
done

#!/usr/bin/env bash
# A/B of builds on a GPU machine, for a change chosen at compile time: builds each of BUILDS
# (default "A B") as scripts/gpu_check.sh does (the CLI and the trace tool only; CMAKE_ARGS_<name>
# is added to that build's configure; SRC_<name>, a directory holding another checkout of the
# repository, e.g. an older commit from `git archive`, builds that one instead of this; ENV_<name>,
# "VAR=value ..." set for that build's runs: builds with the same source and arguments are built
# once, so variants of one build chosen by environment switches cost no second build), synthesizes each spec of SPECS once, benches it ROUNDS
# times with the builds alternating (A B A B ..., so drift of the machine hits all), prints decode tok/s
# per run as a markdown table ($OUT/ab.md), and writes each build's decode-step timeline for
# every spec (tools/kernel_trace, $OUT/timeline_<build>_<shape>_<type>.md).
#
#   CMAKE_ARGS_B=-DCMAKE_CUDA_FLAGS=-DNAME=1 SPECS="llama3-8b:q4_0" scripts/gpu_ab.sh
#
# Environment: OUT (default build-ab/out), BUILDS, SPECS (default llama3-1b:q4_0 llama3-8b:q4_0),
# ROUNDS (default 2), BENCH_ARGS (default -p 512 -n 128 -r 2), TRACE (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build-ab/out}
SPECS=${SPECS:-llama3-1b:q4_0 llama3-8b:q4_0}
ROUNDS=${ROUNDS:-2}
BUILDS=${BUILDS:-A B}
BENCH_ARGS=${BENCH_ARGS:--p 512 -n 128 -r 2}
MODELS=${MODELS_DIR:-/tmp/bitlight-models}
mkdir -p "$OUT" "$MODELS"
OUT=$(cd "$OUT" && pwd)
T0=$SECONDS

declare -A BIN LIB ENVS BUILT
for v in $BUILDS; do
  args_var=CMAKE_ARGS_$v; src_var=SRC_$v; env_var=ENV_$v
  src=$(cd "${!src_var:-.}" && pwd)
  ENVS[$v]=${!env_var:-}
  key="$src|${!args_var:-}"
  if [[ -n "${BUILT[$key]:-}" ]]; then
    echo "build $v: as build ${BUILT[$key]}, environment ${ENVS[$v]:-(none)}"
    BIN[$v]=${BIN[${BUILT[$key]}]}; LIB[$v]=${LIB[${BUILT[$key]}]}
    continue
  fi
  echo "build $v: $src ${!args_var:-(no extra arguments)}, environment ${ENVS[$v]:-(none)}"
  BUILD_DIR=build-ab-$v OUT=$OUT/build-$v KERNEL_CHECKS=0 MODEL_CHECK=0 CMAKE_ARGS="${!args_var:-}" \
    bash "$src/scripts/gpu_check.sh" > "$OUT/build_$v.log" 2>&1 || { tail -30 "$OUT/build_$v.log"; exit 1; }
  BIN[$v]=$src/build-ab-$v/bin/bitlight
  LIB[$v]=$src/build-ab-$v/lib/libbitlight_kernel_trace.so
  BUILT[$key]=$v
done
echo "[builds done at $((SECONDS - T0)) s]"
# What gpu_check.sh unpacked from .gpu-deps for the build, the binaries may need to run.
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/tmp/bitlight-gpu-deps/usr/lib/x86_64-linux-gnu

summary() {  # summary JSON: decode tok/s of each repetition and the mean fraction of HBM read, then prefill's
  python3 - "$1" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(" / ".join(f"{x:.1f}" for x in j["decode_tokens_per_second"]),
      f"| {100 * j['decode_fraction_of_bandwidth']:.1f} % | {j['read_bandwidth_gbps']:.0f} |",
      " / ".join(f"{x:.0f}" for x in j["prefill_tokens_per_second"]),
      f"| {100 * j['prefill_fraction_of_bf16_peak']:.1f} % |")
PY
}

{
  echo "bench $BENCH_ARGS, builds alternating"
  echo "| spec | build | round | decode tok/s per repetition | % of HBM read | HBM GB/s | prefill tok/s per repetition | % of bf16 peak |"
  echo "|---|---|---|---|---|---|---|---|"
} | tee "$OUT/ab.md"
for spec in $SPECS; do
  shape=${spec%%:*}; type=${spec##*:}
  m=$MODELS/$shape-$type.gguf
  "${BIN[${BUILDS%% *}]}" synth --shape "$shape" --type "$type" -o "$m" > /dev/null 2>&1
  for ((r = 0; r < ROUNDS; ++r)); do
    for v in $BUILDS; do
      # shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
      env ${ENVS[$v]} "${BIN[$v]}" bench -m "$m" --device cuda $BENCH_ARGS --json "$OUT/run.json" > /dev/null 2>&1
      echo "| $spec | $v | $r | $(summary "$OUT/run.json")" | tee -a "$OUT/ab.md"
    done
  done
  if [[ "${TRACE:-1}" == 1 ]]; then
    for v in $BUILDS; do
      [[ -f ${LIB[$v]} ]] || continue
      # shellcheck disable=SC2086  # ENVS holds VAR=value words
      env ${ENVS[$v]} CUDA_INJECTION64_PATH="${LIB[$v]}" BITLIGHT_KERNEL_TRACE="$OUT/trace.csv" \
        "${BIN[$v]}" bench -m "$m" --device cuda -p 512 -n 32 -r 1 > /dev/null 2>&1 &&
        { echo "decode step timeline, build $v, $spec (-p 512 -n 32, last 16 steps):";
          python3 scripts/kernel_timeline.py "$OUT/trace.csv" --steps 16; } > "$OUT/timeline_${v}_${shape}_$type.md"
      rm -f "$OUT/trace.csv"
    done
  fi
  rm -f "$m" "$OUT/run.json"
done
echo "[done at $((SECONDS - T0)) s]"

#!/usr/bin/env bash
# One command for a GPU machine: configure (Release, sm_90a), build the CUDA backend, its tests
# and the CLI with all cores; the GPU op tests and compute-sanitizer memcheck on them (as
# parallel processes); the kernel benchmark; the whole-model check and model benchmark
# (scripts/gpu_model_check.sh). Prints a short table last, with the seconds each part took.
#
# What it runs, and the seconds each part took on an H100 (16 cores) with the defaults
# (branch gpu-decode, runs 2 and 3; the script prints this table for each run):
#   configure + build (ninja, the test binaries + CLI)                         44-46 s
#   op tests (ops binary in SHARDS gtest shards, bl, prefill attention) side by
#   side with compute-sanitizer memcheck on the same (ops: CudaBackendOps,
#   CudaGraph, CudaMatmul, CudaAttention), all as parallel processes          38-45 s
#   GEMV kernel benchmark (cuda_bench_test)                                    18 s
#   whole model (gpu_model_check.sh): logits vs reference and greedy CUDA == CPU
#   on smollm2 shapes (q4_1, q8_0, bl4g64) ~19 s; bench of the README table's
#   7 specs (since the nineteenth session also llama3-1b bl4g128, ~15 s more) incl.
#   llama3-1b q4_0 / bl4g128 greedy CUDA == CPU and 8B pp2048 ~115-130 s    131-148 s
#   total                                                                      231-257 s
# (Before: ~10-11 minutes, op tests and memcheck one after another.) A command on the lent
# machines may run at most 10 minutes: keep the default run well under 8. Since then the tests
# and specs grew: the twentieth session's default run took 547 s (build 114, op tests + memcheck
# at 150 s a process 205, kernel bench 29, whole model 199), so memcheck now stops at 100 s a
# process (477 s with KERNEL_BENCH=0 and 5 bench specs); narrow BENCH_SPECS for a shorter run.
#
#   scripts/gpu_check.sh                 # on the GPU machine, from the repository root
#   scripts/gpu_check.sh --fetch-deps    # on a Debian/Ubuntu machine with apt, beforehand
#
# The GPU machine may lack the -dev packages bitlight builds against (PCRE2, GoogleTest,
# nlohmann-json, CLI11, pkg-config) and have no network. --fetch-deps downloads their Debian
# packages into .gpu-deps/debs (git-ignored through .git/info/exclude; carry it to the
# machine); this script unpacks them into a private prefix and uses whatever the system lacks.
#
# Environment: OUT (logs; default build-gpu/out), BUILD_DIR (default build-gpu), SERVER_CHECK
# (default 1: scripts/gpu_server_check.py where the build has the server),
# CUDA_ARCH (default 90a; 80-virtual runs the sm_80 build's PTX, JIT-compiled, on a Hopper
# GPU), MEMCHECK_SECONDS (default 100, per memcheck process), SHARDS (gtest shards of the op
# test binary, default 4), JOBS (default nproc), KERNEL_CHECKS (default 1),
# KERNEL_BENCH (default 1; 0 skips the GEMV benchmark only), MODEL_CHECK (default 1);
# BENCH_SPECS / MODEL_TYPES narrow the whole-model part; CMAKE_ARGS adds configure arguments
# (e.g. -DCMAKE_CUDA_FLAGS=-DNAME=1 for a build to compare, scripts/gpu_ab.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS=$ROOT/.gpu-deps

if [[ "${1:-}" == "--fetch-deps" ]]; then
  mkdir -p "$DEPS/debs"
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qx '/.gpu-deps/' "$exclude" 2>/dev/null || echo '/.gpu-deps/' >> "$exclude"
  # cpp-httplib for `bitlight serve`, with the -dev packages its pkg-config file requires.
  (cd "$DEPS/debs" && apt-get download libpcre2-dev libpcre2-8-0 nlohmann-json3-dev libcli11-dev libgtest-dev \
    pkgconf pkgconf-bin libpkgconf3 libcpp-httplib-dev libcpp-httplib0.11 libssl-dev zlib1g-dev libbrotli-dev)
  ls -la "$DEPS/debs"
  exit 0
fi

BUILD_DIR=${BUILD_DIR:-build-gpu}
OUT=${OUT:-$BUILD_DIR/out}
CUDA_ARCH=${CUDA_ARCH:-90a}
MEMCHECK_SECONDS=${MEMCHECK_SECONDS:-100}
JOBS=${JOBS:-$(nproc)}
SHARDS=${SHARDS:-4}
mkdir -p "$OUT"
export PATH=$PATH:/usr/local/cuda/bin
T0=$SECONDS
step() { echo; echo "=== [$((SECONDS - T0)) s] $*"; }
PARTS=""; T_PART=$SECONDS
part() {  # part NAME: the seconds since the last part ended, for the table at the end
  PARTS+="| $1 | $((SECONDS - T_PART)) |"$'\n'; T_PART=$SECONDS
}

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv || true
nvcc --version | tail -1
cmake --version | head -1

# Unpack carried packages for whatever the system lacks.
CMAKE_EXTRA=()
if [[ -d "$DEPS/debs" ]]; then
  step "dependencies from .gpu-deps"
  PREFIX=/tmp/bitlight-gpu-deps
  rm -rf "$PREFIX" && mkdir -p "$PREFIX"
  for f in "$DEPS"/debs/*.deb; do dpkg -x "$f" "$PREFIX"; done
  LIBDIR=$PREFIX/usr/lib/x86_64-linux-gnu
  sed -i "s|^prefix=.*|prefix=$PREFIX/usr|" "$LIBDIR"/pkgconfig/*.pc "$PREFIX"/usr/share/pkgconfig/*.pc
  if ! command -v pkg-config >/dev/null; then
    export PATH=$PATH:$PREFIX/usr/bin
    export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$LIBDIR
  fi
  export PKG_CONFIG_PATH=${PKG_CONFIG_PATH:+$PKG_CONFIG_PATH:}$LIBDIR/pkgconfig:$PREFIX/usr/share/pkgconfig
  CMAKE_EXTRA+=("-DCMAKE_PREFIX_PATH=$PREFIX/usr")
fi
# The server's cpp-httplib (carried above) needs these at run time; without them the build
# leaves the server out rather than link a binary that cannot start.
# (Named either way: a build dir's cache keeps the last value.)
SERVER_BUILD=AUTO
SYSTEM_LIBS=$(ldconfig -p)  # not piped into grep -q: under pipefail its early exit fails the pipe
for lib in libssl.so.3 libcrypto.so.3 libz.so.1 libbrotlidec.so.1 libbrotlienc.so.1; do
  if ! grep -q "$lib" <<< "$SYSTEM_LIBS"; then
    echo "no $lib on this machine: building without the HTTP server"
    SERVER_BUILD=OFF
    break
  fi
done
CMAKE_EXTRA+=("-DBITLIGHT_SERVER=$SERVER_BUILD")

step "configure ($BUILD_DIR, sm_$CUDA_ARCH, Release)"
# CMake < 3.26 does not know nvcc's C++20 flag; naming it is harmless for newer versions.
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBITLIGHT_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
  -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 "${CMAKE_EXTRA[@]}" ${CMAKE_ARGS:-} 2>&1 | tee "$OUT/configure.log" | tail -3

step "build (ninja -j$JOBS)"
TARGETS=(bitlight_cli)
[[ "${KERNEL_CHECKS:-1}" == 1 ]] && TARGETS+=(cuda_backend_ops_test cuda_bl_test cuda_prefill_attention_test
                                             cuda_sequence_batch_test cuda_stage_next_test cuda_rope_store_test cuda_bench_test)
ninja -C "$BUILD_DIR" -j"$JOBS" "${TARGETS[@]}" 2>&1 | tee "$OUT/build.log" | grep -E "error|warning|FAILED" || true
test -x "$BUILD_DIR/bin/bitlight"
[[ "${KERNEL_CHECKS:-1}" == 1 ]] && test -x "$BUILD_DIR/tests/cuda_backend_ops_test"
# The kernel timeline tool (tools/kernel_trace), where the toolkit has CUPTI.
ninja -C "$BUILD_DIR" -j"$JOBS" bitlight_kernel_trace >> "$OUT/build.log" 2>&1 || echo "(no kernel timeline tool: no CUPTI)"
part "configure + build"

# KERNEL_CHECKS=0 skips the op tests, memcheck and the kernel benchmark (whole model only).
TEST_RC=0; BENCH_RC=0; MEMCHECK=skipped
if [[ "${KERNEL_CHECKS:-1}" == 1 ]]; then
step "GPU op tests and compute-sanitizer memcheck, side by side (op test binary in $SHARDS gtest shards; memcheck at most ${MEMCHECK_SECONDS} s a process, 0 = skip)"
# They are correctness checks, not timings, and mostly CPU-bound (the reference backend, the
# sanitizer): run as parallel processes on the machine's cores, every case of every test still
# runs once plainly and once under memcheck (sharding splits the tests, it drops none).
MEMCHECK_FILTER='CudaBackendOps.*:CudaGraph.*:CudaMatmul.*:CudaAttention.*'
check_pids=(); check_names=()
start_check() {  # start_check LABEL LOG COMMAND...: in the background
  local label=$1 log=$2; shift 2
  "$@" > "$log" 2>&1 &
  check_pids+=($!); check_names+=("$label")
}
for name in cuda_backend_ops_test cuda_bl_test cuda_prefill_attention_test cuda_sequence_batch_test cuda_stage_next_test \
  cuda_rope_store_test; do
  shards=1; [[ $name == cuda_backend_ops_test ]] && shards=$SHARDS
  for ((i = 0; i < shards; ++i)); do
    start_check "test $name/$i" "$OUT/test_${name}_$i.log" env GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i \
      "$BUILD_DIR/tests/$name"
    if command -v compute-sanitizer >/dev/null && [[ $MEMCHECK_SECONDS -gt 0 ]]; then
      args=(); [[ $name == cuda_backend_ops_test ]] && args=(--gtest_filter="$MEMCHECK_FILTER")
      start_check "memcheck $name/$i" "$OUT/memcheck_${name}_$i.log" env GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i \
        timeout "$MEMCHECK_SECONDS" compute-sanitizer --tool memcheck --error-exitcode 99 "$BUILD_DIR/tests/$name" "${args[@]}"
    fi
  done
done
[[ $MEMCHECK_SECONDS -gt 0 ]] && command -v compute-sanitizer >/dev/null && MEMCHECK=""
set +e
for k in "${!check_pids[@]}"; do
  wait "${check_pids[$k]}"
  rc=$?
  label=${check_names[$k]}
  if [[ $label == test* ]]; then
    [[ $rc != 0 ]] && { TEST_RC=$rc; echo "$label FAILED (rc $rc)"; }
  else
    case $rc in
      0) MEMCHECK+="${label#memcheck } clean; " ;;
      124) MEMCHECK+="${label#memcheck } no error in the ${MEMCHECK_SECONDS} s run (timed out before the end); " ;;
      99) MEMCHECK+="${label#memcheck } ERRORS; " ;;
      *) MEMCHECK+="${label#memcheck } exit $rc; " ;;
    esac
  fi
done
set -e
cat "$OUT"/test_cuda_backend_ops_test_*.log > "$OUT/ops_test.log"
cat "$OUT"/test_cuda_bl_test_*.log > "$OUT/bl_test.log"
cat "$OUT"/test_cuda_prefill_attention_test_*.log > "$OUT/prefill_attention_test.log"
cat "$OUT"/test_cuda_sequence_batch_test_*.log > "$OUT/sequence_batch_test.log"
cat "$OUT"/test_cuda_stage_next_test_*.log "$OUT"/test_cuda_rope_store_test_*.log > "$OUT/stage_next_test.log"
grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) |max error|Failure|error:|Expected|Which is" "$OUT/ops_test.log" "$OUT/bl_test.log" \
  "$OUT/prefill_attention_test.log" "$OUT/sequence_batch_test.log" "$OUT/stage_next_test.log" | head -100 || true
grep -h "batch vs alone" "$OUT/sequence_batch_test.log" || true
grep -hE "ERROR SUMMARY|Invalid|^\[ *FAILED " "$OUT"/memcheck_*.log 2>/dev/null | sort | uniq -c || true
part "op tests + memcheck"

if [[ "${KERNEL_BENCH:-1}" == 1 ]]; then
step "kernel benchmark"
set +e
BITLIGHT_GPU_BENCH=1 "$BUILD_DIR/tests/cuda_bench_test" > "$OUT/bench.log" 2>&1
BENCH_RC=$?
set -e
grep -vE "^\[|^$|^Note" "$OUT/bench.log" | head -150 || true
part "kernel benchmark"
fi
fi

MODEL_RC=0
if [[ "${MODEL_CHECK:-1}" == 1 ]]; then
  step "whole model: CUDA against the reference and the CPU backend (synthetic smollm2-135m shapes)"
  set +e
  bash scripts/gpu_model_check.sh "$BUILD_DIR/bin/bitlight" "$OUT" 2>&1 | tee "$OUT/model_check.log"
  MODEL_RC=${PIPESTATUS[0]}
  set -e
  part "whole model: CUDA = CPU checks + model benchmark"
fi

# `bitlight serve` from its request threads on the GPU (where the build has the server).
SERVER_RC=0; SERVER=skipped
if [[ "${SERVER_CHECK:-1}" == 1 ]] && grep -q "HTTP server ON" "$OUT/configure.log"; then
  step "server: bitlight serve on the GPU against bitlight run (synthetic llama3-1b q4_0)"
  set +e
  SERVER_MODEL=$OUT/server-llama3-1b-q4_0.gguf
  if "$BUILD_DIR/bin/bitlight" synth --shape llama3-1b --type q4_0 -o "$SERVER_MODEL" > "$OUT/server_synth.log" 2>&1; then
    python3 scripts/gpu_server_check.py "$BUILD_DIR/bin/bitlight" "$SERVER_MODEL" --device cuda 2>&1 |
      tee "$OUT/server_check.log"
    SERVER_RC=${PIPESTATUS[0]}
  else
    SERVER_RC=1
    tail -3 "$OUT/server_synth.log"
  fi
  set -e
  rm -f "$SERVER_MODEL"
  SERVER=$([[ $SERVER_RC == 0 ]] && echo passed || echo "FAILED (rc $SERVER_RC)")
  part "server check"
fi

echo
echo "server: $SERVER"
if [[ "${MODEL_CHECK:-1}" == 1 ]]; then
  echo "whole model: $([[ $MODEL_RC == 0 ]] && echo passed || echo "FAILED (rc $MODEL_RC)")"
else
  echo "whole model: skipped (MODEL_CHECK=0)"
fi
[[ -f "$OUT/model_bench.md" ]] && cat "$OUT/model_bench.md"
if [[ "${KERNEL_CHECKS:-1}" == 1 ]]; then
  echo "op tests: $([[ $TEST_RC == 0 ]] && echo passed || echo "FAILED (rc $TEST_RC)"); memcheck: $MEMCHECK;" \
    "bench: $([[ $BENCH_RC == 0 ]] && echo ran || echo "FAILED (rc $BENCH_RC)"); total $((SECONDS - T0)) s"
else
  echo "op tests, memcheck and kernel bench: skipped (KERNEL_CHECKS=0); total $((SECONDS - T0)) s"
fi
[[ -f "$OUT/bench.log" ]] && { sed -n '/GEMV summary/,$p' "$OUT/bench.log" | grep -vE "^\[" || true; }
echo
echo "| time per part | s |"
echo "|---|---|"
printf "%s" "$PARTS"
echo "| total | $((SECONDS - T0)) |"
[[ $TEST_RC == 0 && $MODEL_RC == 0 && $SERVER_RC == 0 ]]

#!/usr/bin/env bash
# One command for a GPU machine: configure (Release, sm_90a), build the CUDA backend and its
# tests with all cores, run the GPU op tests, compute-sanitizer memcheck on them (bounded),
# then the kernel benchmark, whose summary table is printed last. Under 9 minutes on an H100.
#
#   scripts/gpu_check.sh                 # on the GPU machine, from the repository root
#   scripts/gpu_check.sh --fetch-deps    # on a Debian/Ubuntu machine with apt, beforehand
#
# The GPU machine may lack the -dev packages bitlight builds against (PCRE2, GoogleTest,
# nlohmann-json, CLI11, pkg-config) and have no network. --fetch-deps downloads their Debian
# packages into .gpu-deps/debs (git-ignored through .git/info/exclude; carry it to the
# machine); this script unpacks them into a private prefix and uses whatever the system lacks.
#
# Environment: OUT (logs; default build-gpu/out), BUILD_DIR (default build-gpu),
# CUDA_ARCH (default 90a), MEMCHECK_SECONDS (default 150), JOBS (default nproc), KERNEL_CHECKS
# (default 1), MODEL_CHECK (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS=$ROOT/.gpu-deps

if [[ "${1:-}" == "--fetch-deps" ]]; then
  mkdir -p "$DEPS/debs"
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qx '/.gpu-deps/' "$exclude" 2>/dev/null || echo '/.gpu-deps/' >> "$exclude"
  (cd "$DEPS/debs" && apt-get download libpcre2-dev libpcre2-8-0 nlohmann-json3-dev libcli11-dev libgtest-dev \
    pkgconf pkgconf-bin libpkgconf3)
  ls -la "$DEPS/debs"
  exit 0
fi

BUILD_DIR=${BUILD_DIR:-build-gpu}
OUT=${OUT:-$BUILD_DIR/out}
CUDA_ARCH=${CUDA_ARCH:-90a}
MEMCHECK_SECONDS=${MEMCHECK_SECONDS:-150}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT"
export PATH=$PATH:/usr/local/cuda/bin
T0=$SECONDS
step() { echo; echo "=== [$((SECONDS - T0)) s] $*"; }

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

step "configure ($BUILD_DIR, sm_$CUDA_ARCH, Release)"
# CMake < 3.26 does not know nvcc's C++20 flag; naming it is harmless for newer versions.
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBITLIGHT_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 \
  -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 "${CMAKE_EXTRA[@]}" 2>&1 | tee "$OUT/configure.log" | tail -3

step "build (ninja -j$JOBS)"
ninja -C "$BUILD_DIR" -j"$JOBS" cuda_backend_ops_test cuda_bl_test cuda_prefill_attention_test cuda_bench_test bitlight_cli 2>&1 | tee "$OUT/build.log" | grep -E "error|warning|FAILED" || true
test -x "$BUILD_DIR/tests/cuda_backend_ops_test"

# KERNEL_CHECKS=0 skips the op tests, memcheck and the kernel benchmark (whole model only).
TEST_RC=0; BENCH_RC=0; MEMCHECK=skipped
if [[ "${KERNEL_CHECKS:-1}" == 1 ]]; then
step "GPU op tests"
set +e
"$BUILD_DIR/tests/cuda_backend_ops_test" > "$OUT/ops_test.log" 2>&1
TEST_RC=$?
"$BUILD_DIR/tests/cuda_bl_test" > "$OUT/bl_test.log" 2>&1 || TEST_RC=$?
"$BUILD_DIR/tests/cuda_prefill_attention_test" > "$OUT/prefill_attention_test.log" 2>&1 || TEST_RC=$?
set -e
grep -E "^\[ *(OK|FAILED|PASSED|SKIPPED) |max error|Failure|error:|Expected|Which is" "$OUT/ops_test.log" "$OUT/bl_test.log" \
  "$OUT/prefill_attention_test.log" | head -100 || true

step "compute-sanitizer memcheck on the op, bl and prefill attention tests (at most ${MEMCHECK_SECONDS} s each; 0 = skip)"
MEMCHECK=skipped
if command -v compute-sanitizer >/dev/null && [[ $MEMCHECK_SECONDS -gt 0 ]]; then
  MEMCHECK=""
  for name in cuda_backend_ops_test cuda_bl_test cuda_prefill_attention_test; do
    args=()
    [[ $name == cuda_backend_ops_test ]] && args=(--gtest_filter='CudaBackendOps.*:CudaGraph.*:CudaMatmul.*')
    set +e
    timeout "$MEMCHECK_SECONDS" compute-sanitizer --tool memcheck --error-exitcode 99 "$BUILD_DIR/tests/$name" \
      "${args[@]}" > "$OUT/memcheck_$name.log" 2>&1
    rc=$?
    set -e
    case $rc in
      0) MEMCHECK+="$name clean; " ;;
      124) MEMCHECK+="$name no error in the ${MEMCHECK_SECONDS} s run (timed out before the end); " ;;
      99) MEMCHECK+="$name ERRORS (see memcheck_$name.log); " ;;
      *) MEMCHECK+="$name exit $rc (see memcheck_$name.log); " ;;
    esac
    grep -E "ERROR SUMMARY|Invalid|^\[ *(OK|FAILED) " "$OUT/memcheck_$name.log" | tail -15 || true
  done
fi

step "kernel benchmark"
set +e
BITLIGHT_GPU_BENCH=1 "$BUILD_DIR/tests/cuda_bench_test" > "$OUT/bench.log" 2>&1
BENCH_RC=$?
set -e
grep -vE "^\[|^$|^Note" "$OUT/bench.log" | head -150 || true
fi

MODEL_RC=0
if [[ "${MODEL_CHECK:-1}" == 1 ]]; then
  step "whole model: CUDA against the reference and the CPU backend (synthetic smollm2-135m shapes)"
  set +e
  bash scripts/gpu_model_check.sh "$BUILD_DIR/bin/bitlight" "$OUT" 2>&1 | tee "$OUT/model_check.log"
  MODEL_RC=${PIPESTATUS[0]}
  set -e
fi

echo
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
[[ $TEST_RC == 0 && $MODEL_RC == 0 ]]

#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in their own build dir and runs the
# GGUF reader fuzzer for a bounded time over a seed corpus: the malformed-file corpus of
# tests/reference/make_malformed_gguf.py plus its valid file. Fails on any crash, sanitizer
# report, leak or timeout.
#
#   scripts/run_fuzz.sh [SECONDS=60]
# Knobs: FUZZ_BUILD_DIR (default build-fuzz), CXX_FUZZ / CC_FUZZ (default clang++ / clang).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-60}"
build_dir="${FUZZ_BUILD_DIR:-build-fuzz}"
cxx="${CXX_FUZZ:-clang++}"
cc="${CC_FUZZ:-clang}"
python="python3"
[[ -x .venv/bin/python ]] && python=.venv/bin/python

if ! command -v "$cxx" > /dev/null; then
  echo "run_fuzz: $cxx not found (apt-get install clang)" >&2
  exit 1
fi

mkdir -p "$build_dir"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" \
  -DBITLIGHT_FUZZ=ON -DBITLIGHT_TESTS=OFF -DBITLIGHT_CUDA=OFF > "$build_dir/configure.log" 2>&1 ||
  { cat "$build_dir/configure.log" >&2; exit 1; }
ninja -C "$build_dir" -j"${JOBS:-2}" gguf_reader_fuzz

# Seeds are regenerated each run; the working corpus keeps what the fuzzer found before.
seeds="$build_dir/fuzz/seeds"
corpus="$build_dir/fuzz/corpus"
artifacts="$build_dir/fuzz/artifacts"
rm -rf "$seeds"
mkdir -p "$seeds" "$corpus" "$artifacts"
"$python" tests/reference/make_malformed_gguf.py "$seeds" > /dev/null
rm -f "$seeds/manifest.json"

echo "run_fuzz: gguf_reader_fuzz for ${seconds} s over $(ls "$seeds" | wc -l) seeds + $(ls "$corpus" | wc -l) corpus files"
# -max_len: the seeds are under 1 KiB; 4 KiB leaves room to grow them.
# -timeout: one input taking over 10 s is a hang. -rss_limit_mb: allocations stay bounded.
"$build_dir/fuzz/gguf_reader_fuzz" "$corpus" "$seeds" \
  -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$artifacts/" -print_final_stats=1 2>&1 | tail -n 25
status=${PIPESTATUS[0]}
if (( status != 0 )); then
  echo "run_fuzz: FAILED (exit $status); crashing input in $artifacts/" >&2
  exit 1
fi
echo "run_fuzz: no crash in ${seconds} s"

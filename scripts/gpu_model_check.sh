#!/usr/bin/env bash
# Whole-model checks and benchmarks on a GPU machine (called by scripts/gpu_check.sh):
#  1. logits of the CUDA backend against the scalar reference and the CPU backend (a 20-token
#     prompt; an 80-token one with an f16 KV cache against the CPU only), and greedy
#     continuations of CUDA and CPU, on synthetic smollm2-135m models (q4_1, q8_0, bl4g64: the
#     real SmolLM2 file is 98 MB, over what a call to the GPU machine carries); greedy CUDA vs
#     CPU also on the synthetic llama3-1b q4_0 (32 tokens) and bl4g128 (20) of the benchmark; the
#     same on a synthetic gemma3-270m q5_0, with a prompt past its sliding window (GEMMA_CHECK=0 skips);
#  2. `bitlight bench` on synthetic Llama-3 1B and 8B shapes, decode as % of the HBM read
#     bandwidth measured in the same run, prefill (pp512; 8B also pp2048 as one forward pass of
#     2048 tokens) as % of the bf16 peak measured in the same run, the board's joules per decoded
#     token where NVML has them (from one more run that decodes ~1.25 s a repetition: NVML's
#     counter updates every ~100 ms); a markdown summary goes to $OUT/model_bench.md;
#  3. for TIMELINE_SPECS (default llama3-1b:q4_0 llama3-8b:q4_0), the decode step's per-kernel
#     timeline inside the replayed graph (tools/kernel_trace + scripts/kernel_timeline.py) to
#     $OUT/timeline_<shape>_<type>.md, printed before the summary.
#
#   scripts/gpu_model_check.sh BITLIGHT_BIN OUT_DIR
set -uo pipefail
B=$1
OUT=$2
MODELS=${MODELS_DIR:-/tmp/bitlight-models}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TRACE_LIB=$(cd "$(dirname "$B")/.." && pwd)/lib/libbitlight_kernel_trace.so
TIMELINE_SPECS=${TIMELINE_SPECS:-llama3-1b:q4_0 llama3-8b:q4_0}
mkdir -p "$MODELS" "$OUT"
# The CPU backend is the oracle here: its bl lookup tables with two terms (not its default
# one, kernels/cpu/matmul.h), so that it stays within 1e-3 of the reference.
export BITLIGHT_CPU_LUT_ACT=${BITLIGHT_CPU_LUT_ACT:-int8x2}
failed=0
# 20 ids: eval runs them as one prefill step (more than 16 tokens: the cuBLAS path).
IDS=1,504,3575,282,4649,314,17,2188,30,198,504,2988,282,260,1345,3066,30,198,504,2988
# 80 ids with an f16 KV cache, as `run` and `bench` have it (eval defaults to f32, which keeps
# prompts on the fp32 split-KV attention), in chunks of 64 and 16 tokens (-b 64): 64 or more
# tokens in one step take the rope kernel a block per token and q rotated inside the
# tensor-core attention, 16 the skinny GEMM. Compared against the CPU
# backend (the scalar reference takes ~11 s a model there).
IDS_LONG=$(python3 -c "print(','.join(str((i * 397 + 11) % 49000) for i in range(80)))")

compare() {  # compare A.f32 B.f32 label tolerance: relative max error of B against A over all positions
  python3 - "$@" <<'PY'
import sys, numpy as np
a = np.fromfile(sys.argv[1], dtype=np.float32); b = np.fromfile(sys.argv[2], dtype=np.float32)
err = float(np.abs(a - b).max() / np.abs(a).max()) if a.size == b.size and np.isfinite(b).all() else float("inf")
ok = err <= float(sys.argv[4])
print(f"{sys.argv[3]}: relative max error {err:.2e} (limit {sys.argv[4]}) {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
}

greedy_cpu_equals_cuda() {  # MODEL N_TOKENS LABEL LOG_PREFIX [IDS]: the greedy continuations of the two backends
  local dev ids=${5:-$IDS}
  for dev in cpu cuda; do
    "$B" run -m "$1" --ids "$ids" -n "$2" --temp 0 --device $dev --no-display-prompt --json-out "$MODELS/$dev.json" \
      > /dev/null 2> "$OUT/$4_$dev.log" || return 1
  done
  python3 - "$MODELS/cpu.json" "$MODELS/cuda.json" "$3" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["generated_ids"]; b = json.load(open(sys.argv[2]))["generated_ids"]
same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print(f"{sys.argv[3]} greedy: cpu {len(a)} tokens, cuda {len(b)} tokens, identical for the first {same}")
sys.exit(0 if a == b else 1)
PY
}

# MODEL_TYPES / BENCH_SPECS narrow a run (defaults: everything below).
for type in ${MODEL_TYPES:-q4_1 q8_0 bl4g64}; do
  m=$MODELS/smollm2-$type.gguf
  "$B" synth --shape smollm2-135m --type "$type" -o "$m" || { failed=1; continue; }
  "$B" eval -m "$m" --ids $IDS --device ref --logits-out "$MODELS/ref.f32" &&
  "$B" eval -m "$m" --ids $IDS --device cpu --logits-out "$MODELS/cpu.f32" &&
  "$B" eval -m "$m" --ids $IDS --device cuda --logits-out "$MODELS/cuda.f32" || { failed=1; continue; }
  # CUDA prefill multiplies fp16 operands on tensor cores (fp32 accumulation): ~5e-4 relative
  # per operand, a few 1e-3 after 30 layers.
  compare "$MODELS/ref.f32" "$MODELS/cuda.f32" "$type cuda vs ref" 1e-2 || failed=1
  compare "$MODELS/ref.f32" "$MODELS/cpu.f32" "$type cpu vs ref" 1e-3 || failed=1
  "$B" eval -m "$m" --ids "$IDS_LONG" -b 64 --kv-type f16 --device cpu --logits-out "$MODELS/cpu_long.f32" &&
    "$B" eval -m "$m" --ids "$IDS_LONG" -b 64 --kv-type f16 --device cuda --logits-out "$MODELS/cuda_long.f32" &&
    compare "$MODELS/cpu_long.f32" "$MODELS/cuda_long.f32" "$type cuda vs cpu, 80-token prompt" 1e-2 || failed=1
  greedy_cpu_equals_cuda "$m" 48 "$type" run || failed=1
  rm -f "$m"
done

# Gemma 3 (synthetic gemma3-270m in q5_0, the real file's main type; the real file is 241 MB):
# CUDA against the reference and the CPU on 20 tokens, and against the CPU on a 600-token prompt
# and 48 greedy tokens after it, which cross the 512-slot window of its local layers.
if [[ "${GEMMA_CHECK:-1}" == 1 ]]; then
  m=$MODELS/gemma3-q5_0.gguf
  IDS_600=$(python3 -c "print(','.join(str((i * 7919 + 13) % 262000) for i in range(600)))")
  if "$B" synth --shape gemma3-270m --type q5_0 -o "$m" > /dev/null; then
    "$B" eval -m "$m" --ids $IDS --device ref --logits-out "$MODELS/ref.f32" &&
    "$B" eval -m "$m" --ids $IDS --device cpu --logits-out "$MODELS/cpu.f32" &&
    "$B" eval -m "$m" --ids $IDS --device cuda --logits-out "$MODELS/cuda.f32" &&
    compare "$MODELS/ref.f32" "$MODELS/cuda.f32" "gemma3 q5_0 cuda vs ref" 1e-2 &&
    compare "$MODELS/ref.f32" "$MODELS/cpu.f32" "gemma3 q5_0 cpu vs ref" 1e-3 || failed=1
    "$B" eval -m "$m" --ids "$IDS_600" -b 64 --kv-type f16 --device cpu --logits-out "$MODELS/cpu_long.f32" &&
      "$B" eval -m "$m" --ids "$IDS_600" -b 64 --kv-type f16 --device cuda --logits-out "$MODELS/cuda_long.f32" &&
      compare "$MODELS/cpu_long.f32" "$MODELS/cuda_long.f32" "gemma3 q5_0 cuda vs cpu, 600-token prompt" 1e-2 || failed=1
    greedy_cpu_equals_cuda "$m" 48 "gemma3 q5_0 after 600 tokens" run_gemma3 "$IDS_600" || failed=1
    "$B" bench -m "$m" --device cuda -p 512 -n 128 -r 3 --json "$OUT/bench_gemma3-270m_q5_0.json" | tail -4 || failed=1
  else
    failed=1
  fi
  rm -f "$m"
fi

echo "[whole-model CUDA = CPU checks: $SECONDS s]"
echo "| shape | format | GB | pp512 tok/s | % of bf16 peak | pp2048 tok/s | % of bf16 peak | tg128 tok/s | decode GB/s | % of HBM read | decode J/token | batch 16 tg32 tok/s | HBM read GB/s | bf16 TFLOP/s |" > "$OUT/model_bench.md"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" >> "$OUT/model_bench.md"
# The default specs are the README's CUDA table; bl4g128 / bl2g128 etc. by BENCH_SPECS.
for spec in ${BENCH_SPECS:-llama3-1b:f16 llama3-1b:q8_0 llama3-1b:q4_0 llama3-1b:q4_k llama3-1b:bl4g128 llama3-8b:q4_0 \
             llama3-8b:q8_0 llama3-8b:f16}; do
  shape=${spec%%:*}; type=${spec##*:}
  m=$MODELS/$shape-$type.gguf
  "$B" synth --shape "$shape" --type "$type" -o "$m" 2>&1 | tail -1 || { failed=1; continue; }
  "$B" bench -m "$m" --device cuda -p 512 -n 128 -r 3 --json "$OUT/bench_${shape}_$type.json" | tail -4 || failed=1
  # Greedy CUDA == CPU on a 2048-wide model too (the smollm2 shapes above are 576 wide): its
  # 8192-wide down projection takes the GEMV whose x is quantized once by a kernel of its own.
  if [[ $spec == llama3-1b:q4_0 ]]; then
    greedy_cpu_equals_cuda "$m" 32 "$spec" run_1b || failed=1
  elif [[ $spec == llama3-1b:bl4g128 ]]; then
    # 20 tokens: the 24th is a near-tie in this synthetic model (CPU's top-2 logits 0.0025 apart,
    # the backends' logits ~0.0027 apart at every position, old and new bl GEMV alike; docs/cuda.md
    # "Nineteenth session"), which the attention's float atomics can flip either way.
    greedy_cpu_equals_cuda "$m" 20 "$spec" run_1b || failed=1
  fi
  # Batch decode: 16 sequences, one token each per step (tok/s over all 16).
  "$B" bench -m "$m" --device cuda -p 16 -n 32 -r 2 -B 16 --json "$OUT/bench_${shape}_${type}_b16.json" | tail -2 || failed=1
  # Where each kernel's time goes inside the replayed decode graph (tools/kernel_trace, CUPTI;
  # built by gpu_check.sh where the toolkit has it): per-kernel shares of the last 16 of 32 steps.
  if [[ " $TIMELINE_SPECS " == *" $spec "* && -f $TRACE_LIB ]]; then
    CUDA_INJECTION64_PATH=$TRACE_LIB BITLIGHT_KERNEL_TRACE="$OUT/trace.csv" \
      "$B" bench -m "$m" --device cuda -p 512 -n 32 -r 1 > /dev/null 2>&1 &&
      { echo "decode step timeline, $spec (-p 512 -n 32, last 16 steps):"; python3 "$ROOT/scripts/kernel_timeline.py" \
        "$OUT/trace.csv" --steps 16; } > "$OUT/timeline_${shape}_$type.md" || echo "(no timeline for $spec)"
    rm -f "$OUT/trace.csv"
  fi
  # Energy per decoded token: NVML's board counter updates every ~100 ms (H100, 2026-11-24), so
  # a tg128 repetition (74-271 ms) is too short for bench to tell its joules (perf/energy_meter.h,
  # phase_energy); one more run decodes for ~1.25 s a repetition (+-16 % at 100 ms updates).
  energy="$OUT/bench_${shape}_${type}_energy.json"
  rm -f "$energy"
  n_energy=$(python3 -c "import json, math, statistics as st, sys; j = json.load(open(sys.argv[1])); \
print(max(128, math.ceil(1.25 * st.mean(j['decode_tokens_per_second']))))" "$OUT/bench_${shape}_$type.json") &&
    "$B" bench -m "$m" --device cuda -p 512 -n "$n_energy" -r 2 --json "$energy" | tail -1 || failed=1
  long="$OUT/bench_${shape}_${type}_pp2048.json"
  rm -f "$long"
  if [[ $shape == llama3-8b ]]; then
    "$B" bench -m "$m" --device cuda -p 2048 -b 2048 -n 0 -r 3 --json "$long" | tail -2 || failed=1
  fi
  rm -f "$m"
  echo "[$spec done at $SECONDS s]"
  python3 - "$OUT/bench_${shape}_$type.json" "$shape" "$type" "$long" "$OUT/bench_${shape}_${type}_b16.json" "$energy" \
    >> "$OUT/model_bench.md" <<'PY'
import json, os, sys, statistics as st
j = json.load(open(sys.argv[1]))
b16 = "-"
if os.path.exists(sys.argv[5]):
    b16 = f"{st.mean(json.load(open(sys.argv[5]))['decode_tokens_per_second']):.1f}"
pp = st.mean(j["prefill_tokens_per_second"]); tg = st.mean(j["decode_tokens_per_second"])
gbps = tg * j["decode_bytes_per_token"] / 1e9
long = "- | - |"
if os.path.exists(sys.argv[4]):
    k = json.load(open(sys.argv[4]))
    long = f"{st.mean(k['prefill_tokens_per_second']):.0f} | {100*k['prefill_fraction_of_bf16_peak']:.0f} % |"
# The GPU board's energy per decoded token (NVML, from the ~1.25 s decode run above: null where
# bench could not tell it), "-" where not told.
joules = json.load(open(sys.argv[6])).get("decode_joules_per_token") if os.path.exists(sys.argv[6]) else None
energy = f"{joules:.3f}" if isinstance(joules, (int, float)) else "-"
print(f"| {sys.argv[2]} | {sys.argv[3]} | {j['weight_bytes']/1e9:.2f} | {pp:.0f} | {100*j['prefill_fraction_of_bf16_peak']:.0f} % | {long} "
      f"{tg:.1f} | {gbps:.0f} | {100*j['decode_fraction_of_bandwidth']:.0f} % | {energy} | {b16} | {j['read_bandwidth_gbps']:.0f} | "
      f"{j['bf16_peak_tflops']:.0f} |")
PY
done
for t in "$OUT"/timeline_*.md; do [[ -f $t ]] && { cat "$t"; echo; }; done
cat "$OUT/model_bench.md"
exit $failed

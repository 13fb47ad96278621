#!/usr/bin/env bash
# Per-kernel profile of one batch-1 decode step on a GPU machine (Nsight Compute over the
# nodes of the replayed CUDA graph), next to the step time `bitlight bench` measures.
#
#   scripts/gpu_decode_profile.sh BITLIGHT_BIN OUT_DIR [shape:type ...]   (default llama3-1b:q4_0 llama3-8b:q4_0)
#
# For each spec: synth the model, `bench -p 512 -n 128 -r 3` (step time, read bandwidth of the
# card), then `ncu --graph-profiling node` over `bench -p 512 -n 3 -r 1` (warm-up and one repetition:
# each a 512-token prefill and 3 decode steps at ~512 slots of context). The table lists the
# kernels of the last decode step (after the second-to-last argmax) grouped by name: calls, us,
# DRAM bytes read, GB/s and % of the bench's bandwidth. ncu runs kernels one at a time with the
# clocks and caches left alone, so kernel times add up without PDL overlap: step time - sum of
# kernels ~ launch gaps (minus what PDL overlaps). About 60-90 s per 8B spec on an H100.
set -uo pipefail
B=$1
OUT=$2
shift 2
SPECS=${*:-llama3-1b:q4_0 llama3-8b:q4_0}
MODELS=${MODELS_DIR:-/tmp/bitlight-models}
NCU=${NCU:-$(command -v ncu || echo /usr/local/cuda/bin/ncu)}
mkdir -p "$MODELS" "$OUT"
for spec in $SPECS; do
  shape=${spec%%:*}; type=${spec##*:}
  m=$MODELS/$shape-$type.gguf
  [[ -f $m ]] || "$B" synth --shape "$shape" --type "$type" -o "$m" 2>&1 | tail -1
  "$B" bench -m "$m" --device cuda -p 512 -n 128 -r 3 --json "$OUT/profile_bench_${shape}_$type.json" | tail -3
  "$NCU" --graph-profiling node --cache-control none --clock-control none \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv --log-file "$OUT/ncu_${shape}_$type.csv" \
    "$B" bench -m "$m" --device cuda -p 512 -n 3 -r 1 > "$OUT/ncu_${shape}_$type.log" 2>&1 || tail -5 "$OUT/ncu_${shape}_$type.log"
  python3 - "$OUT/ncu_${shape}_$type.csv" "$OUT/profile_bench_${shape}_$type.json" "$shape $type" <<'PY'
import csv, json, re, statistics as st, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, rows = rows[0], rows[1:]
col = {n: i for i, n in enumerate(head)}
kernels = {}  # ID -> [name, grid, block, us, bytes]
for r in rows:
    k = kernels.setdefault(int(r[col["ID"]]), [r[col["Kernel Name"]], r[col["Grid Size"]], r[col["Block Size"]], 0.0, 0.0])
    v = float(r[col["Metric Value"]].replace(",", ""))
    unit = r[col["Metric Unit"]]
    if r[col["Metric Name"]] == "gpu__time_duration.sum":
        k[3] = v * {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(unit, 1e-3)
    else:
        k[4] = v * {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}.get(unit, 1)
seq = [kernels[i] for i in sorted(kernels)]
ends = [i for i, k in enumerate(seq) if "argmax" in k[0]]
if len(ends) < 2:
    sys.exit(f"{sys.argv[3]}: fewer than two argmax kernels in the profile")
step = seq[ends[-2] + 1: ends[-1] + 1]
j = json.load(open(sys.argv[2]))
gbps = j["read_bandwidth_gbps"]
step_us = 1e6 / st.mean(j["decode_tokens_per_second"])
short = lambda n: re.sub(r"\(.*", "", re.sub(r"^(void )?(bl::cuda::)?(\(anonymous namespace\)::)?", "", n))[:60]
groups = {}
for name, grid, block, us, b in step:
    key = (short(name) + ("<" + re.search(r"<(.*)>", name).group(1)[:40] + ">" if "<" in name else ""), grid, block)
    g = groups.setdefault(key, [0, 0.0, 0.0]); g[0] += 1; g[1] += us; g[2] += b
total_us = sum(k[3] for k in step); total_b = sum(k[4] for k in step)
print(f"\n## {sys.argv[3]}: one decode step, {len(step)} kernels, {total_us:.0f} us of kernels (ncu, serial) "
      f"vs {step_us:.0f} us a step measured (bench tg128, {st.mean(j['decode_tokens_per_second']):.1f} tok/s, "
      f"{100*j['decode_fraction_of_bandwidth']:.0f} % of {gbps:.0f} GB/s)")
print(f"bytes read {total_b/1e9:.3f} GB -> {total_b/1e3/total_us:.0f} GB/s over the kernels; "
      f"bytes at {gbps:.0f} GB/s = {total_b/1e3/gbps:.0f} us; step - kernels = {step_us-total_us:.0f} us (gaps, host)")
print("| kernel | grid | block | calls | us total | us/call | % of step | MB read | GB/s | % of HBM |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (name, grid, block), (n, us, b) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
    print(f"| {name} | {grid} | {block} | {n} | {us:.1f} | {us/n:.2f} | {100*us/step_us:.1f} | {b/1e6:.2f} | "
          f"{b/1e3/us:.0f} | {100*b/1e3/us/gbps:.0f} |")
PY
done

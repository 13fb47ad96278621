#!/usr/bin/env bash
# Issue 3's decode series on the CPU: ROUNDS rounds of `bitlight bench -p 16 -n 64 -r 3 -t 2` on the
# synthetic llama3-1b models of TYPES (made with `bitlight synth` into MODELS if missing), the
# binaries of BINS alternating within each round, so that drift of a shared machine hits them all.
# One line a run: round, type, binary, decode % of the read bandwidth probed beside it (mean, and
# per repetition), tok/s, and the probe's range. This project's 2-core VM flips between two
# bandwidth states (~35 and ~65 GB/s in 2026-11): compare runs whose probe ranges agree.
#
#   BINS="build/bin/bitlight /tmp/other/bitlight" ROUNDS=4 scripts/cpu_decode_series.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BINS=${BINS:-$ROOT/build/bin/bitlight}
ROUNDS=${ROUNDS:-4}
TYPES=${TYPES:-bl4g128 bl3g128 bl2g128}
MODELS=${MODELS:-/tmp}
first=${BINS%% *}
for t in $TYPES; do
  [[ -f $MODELS/m1b-$t.gguf ]] || "$first" synth --shape llama3-1b --type "$t" -o "$MODELS/m1b-$t.gguf" | tail -1
done
for r in $(seq 1 "$ROUNDS"); do
  for t in $TYPES; do
    for b in $BINS; do
      out=$("$b" bench -m "$MODELS/m1b-$t.gguf" -p 16 -n 64 -r 3 -t 2 2>&1)
      pct=$(grep -o "= [0-9.]* % of the measured" <<< "$out" | head -1 | awk '{print $2}')
      per=$(grep -o "repetition, against.*" <<< "$out" | head -1 | sed 's/.*: //; s/)$//')
      tps=$(grep "| tg64" <<< "$out" | head -1 | awk -F'|' '{print $7}')
      bw=$(grep -o "measured read bandwidth: [0-9.-]* GB/s" <<< "$out" | awk '{print $4}')
      echo "$r $t $b ${pct}% ($per) tg64 ${tps# } probe ${bw} GB/s"
    done
  done
done

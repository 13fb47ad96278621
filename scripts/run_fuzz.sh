#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in their own build dir and runs them
# for a bounded time in all: the GGUF reader fuzzer for half of it, over the malformed-file
# corpus of tests/reference/make_malformed_gguf.py plus its valid file; then for a quarter each
# the safetensors parser fuzzer and the Hugging Face JSON (config.json / tokenizer.json)
# translation fuzzer, over a few small files written here. Fails on any crash, sanitizer
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
ninja -C "$build_dir" -j"${JOBS:-2}" gguf_reader_fuzz safetensors_reader_fuzz hf_json_fuzz

# run_fuzzer NAME SECONDS SEEDS_DIR: the working corpus (build dir) keeps what earlier runs found.
run_fuzzer() {
  local name="$1" secs="$2" seeds="$3"
  local corpus="$build_dir/fuzz/corpus-$name" artifacts="$build_dir/fuzz/artifacts-$name"
  mkdir -p "$corpus" "$artifacts"
  echo "run_fuzz: $name for ${secs} s over $(ls "$seeds" | wc -l) seeds + $(ls "$corpus" | wc -l) corpus files"
  # -max_len: the seeds are under 1 KiB; 4 KiB leaves room to grow them.
  # -timeout: one input taking over 10 s is a hang. -rss_limit_mb: allocations stay bounded.
  set +e
  "$build_dir/fuzz/$name" "$corpus" "$seeds" -max_total_time="$secs" -max_len=4096 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 > "$build_dir/fuzz/$name.log" 2>&1
  local status=$?
  set -e
  grep -aE "^(Done|stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb)" "$build_dir/fuzz/$name.log" || true
  if (( status != 0 )); then
    tail -n 60 "$build_dir/fuzz/$name.log" >&2
    echo "run_fuzz: $name FAILED (exit $status); the crashing input is in $artifacts/" >&2
    return 1
  fi
}

# Seeds are regenerated each run.
gguf_seeds="$build_dir/fuzz/seeds-gguf"
st_seeds="$build_dir/fuzz/seeds-safetensors"
json_seeds="$build_dir/fuzz/seeds-hf-json"
rm -rf "$gguf_seeds" "$st_seeds" "$json_seeds"
mkdir -p "$gguf_seeds" "$st_seeds" "$json_seeds"
"$python" tests/reference/make_malformed_gguf.py "$gguf_seeds" > /dev/null
rm -f "$gguf_seeds/manifest.json"
"$python" - "$st_seeds" <<'PY'
import json, struct, sys
def st(header, data):
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data
out = sys.argv[1]
seeds = {
    "valid.safetensors": st({"__metadata__": {"format": "pt"},
                             "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                             "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]}}, bytes(32)),
    "scalar.safetensors": st({"s": {"dtype": "F16", "shape": [], "data_offsets": [0, 2]}}, bytes(2)),
    "overlap.safetensors": st({"a": {"dtype": "I32", "shape": [4], "data_offsets": [0, 16]},
                               "b": {"dtype": "I8", "shape": [8], "data_offsets": [8, 16]}}, bytes(16)),
    "bad_len.safetensors": struct.pack("<Q", 1 << 40) + b"{}",
}
for name, data in seeds.items():
    open(f"{out}/{name}", "wb").write(data)
PY
"$python" - "$json_seeds" <<'PY'
import json, sys
out = sys.argv[1]
config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
          "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
          "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "vocab_size": 8,
          "head_dim": 16, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": [2, 3],
          "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 64}}
bpe = {"added_tokens": [{"id": 5, "content": "<|endoftext|>", "special": True}],
       "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
           {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated"},
           {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": True}]},
       "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|endoftext|>"}}]},
       "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "c": 3, "abc": 4},
                 "merges": ["a b", ["ab", "c"]]},
       "bos_token": {"content": "<|endoftext|>"}, "chat_template": [{"name": "default", "template": "x"}]}
spm = {"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "_"}]},
       "model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>",
                 "vocab": {"<unk>": 0, "<0x0A>": 1, "_": 2, "t": 3, "_t": 4}, "merges": ["_ t"]}}
for name, obj in {"config.json": config, "bpe.json": bpe, "spm.json": spm, "both.json": {**config, **bpe}}.items():
    open(f"{out}/{name}", "w").write(json.dumps(obj))
PY

quarter=$(( seconds / 4 ))
(( quarter < 1 )) && quarter=1
gguf_secs=$(( seconds - 2 * quarter ))
(( gguf_secs < 1 )) && gguf_secs=1
failed=0
run_fuzzer gguf_reader_fuzz "$gguf_secs" "$gguf_seeds" || failed=1
run_fuzzer safetensors_reader_fuzz "$quarter" "$st_seeds" || failed=1
run_fuzzer hf_json_fuzz "$quarter" "$json_seeds" || failed=1
if (( failed )); then
  echo "run_fuzz: FAILED" >&2
  exit 1
fi
echo "run_fuzz: no crash in ${seconds} s"

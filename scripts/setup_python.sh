#!/usr/bin/env bash
# Creates .venv for the reference tests (tests/reference).
#
# The venv is built on Debian's /usr/bin/python3 (3.11) with --system-site-packages, so Debian's
# python3-torch (1.13.1) and python3-numpy (1.24) are used: a PyPI torch is several GB. Every
# PyPI package comes from scripts/requirements-test.txt with --no-deps, so pip resolves nothing
# by itself. Idempotent: a stamp holding the requirements' sha256 skips a venv that is complete.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQUIREMENTS="$ROOT/scripts/requirements-test.txt"
STAMP="$VENV/.bitlight-requirements.sha256"
# Not `python3` from PATH: that may be a pyenv or conda Python that cannot see Debian's torch.
SYSTEM_PYTHON=/usr/bin/python3

log() { echo "setup_python: $*"; }
die() { echo "setup_python: error: $*" >&2; exit 1; }

[[ -x "$SYSTEM_PYTHON" ]] || die "$SYSTEM_PYTHON not found; run scripts/setup.sh (Debian package python3)"
"$SYSTEM_PYTHON" -c 'import torch, numpy, venv, ensurepip' 2>/dev/null \
  || die "Debian's python3 lacks torch, numpy or venv; run scripts/setup.sh (python3-torch python3-numpy python3-venv)"

want_hash="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"

venv_is_ours() {
  # A venv made from another interpreter or without system site-packages cannot see Debian's torch.
  [[ -x "$VENV/bin/python" && -f "$VENV/pyvenv.cfg" ]] || return 1
  grep -qx 'home = /usr/bin' "$VENV/pyvenv.cfg" || return 1
  grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg" || return 1
}

if venv_is_ours && [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_hash" ]]; then
  log ".venv is up to date (requirements sha256 ${want_hash:0:12})"
  exit 0
fi

if [[ -e "$VENV" ]] && ! venv_is_ours; then
  log "removing $VENV: not a --system-site-packages venv of $SYSTEM_PYTHON"
  rm -rf "$VENV"
fi
if [[ ! -e "$VENV" ]]; then
  log "creating $VENV with $SYSTEM_PYTHON --system-site-packages"
  "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
fi
rm -f "$STAMP"

log "installing scripts/requirements-test.txt (--no-deps)"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
  "$VENV/bin/python" -m pip install --quiet --no-deps --requirement "$REQUIREMENTS"

# Prove the environment is what the tests expect: torch and numpy from Debian, the pinned
# packages importable, and no unmet dependency among the packages we installed.
"$VENV/bin/python" - "$REQUIREMENTS" <<'PY'
import re
import subprocess
import sys

import numpy
import torch

debian = "/usr/lib/python3/dist-packages/"
for mod in (torch, numpy):
    if not mod.__file__.startswith(debian):
        sys.exit(f"setup_python: error: {mod.__name__} comes from {mod.__file__}, not Debian's {debian}")

import accelerate, gguf, pytest, safetensors, tokenizers, transformers  # noqa: E401,F401
from transformers import LlamaForCausalLM, Qwen2ForCausalLM  # noqa: F401

pinned = set()
for line in open(sys.argv[1]):
    m = re.match(r"^([A-Za-z0-9_.-]+)==", line)
    if m:
        pinned.add(m.group(1).lower().replace("_", "-"))
# pip check also reports broken Debian packages that are none of our business; only a problem
# of a package we installed counts.
report = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True).stdout
ours = [l for l in report.splitlines() if l.split(" ")[0].lower().replace("_", "-") in pinned]
if ours:
    sys.exit("setup_python: error: unmet dependencies:\n  " + "\n  ".join(ours))
print(f"setup_python: torch {torch.__version__} and numpy {numpy.__version__} from Debian; "
      f"transformers {transformers.__version__}, gguf, pytest {pytest.__version__} from PyPI")
PY

echo "$want_hash" > "$STAMP"
log ".venv ready"

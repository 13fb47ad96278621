#!/usr/bin/env bash
# Installs everything `make demo` and `make test` need on Debian 12, then the Python test venv
# (scripts/setup_python.sh), the models (scripts/fetch_model.sh, scripts/fetch_gemma3.sh) and the
# text corpus (scripts/fetch_corpus.sh). Idempotent: apt runs only when a package is missing, and
# then `apt-get update` runs once first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Why each package is here: README.md, "Dependencies".
DEBIAN_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libpcre2-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  python3-venv python3-torch python3-numpy python3-jinja2
  bible-kjv
)

log() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

command -v dpkg-query >/dev/null || die "this script needs Debian (12, bookworm) or a derivative: dpkg-query not found"

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  if ! dpkg-query --show --showformat='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  log "Debian packages present (${#DEBIAN_PACKAGES[@]})"
else
  log "missing Debian packages: ${missing[*]}"
  if ((EUID == 0)); then
    as_root=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    die "installing them needs root. Run as root, or:
  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}
then run this script again."
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -q
  # --no-install-recommends: python3-torch recommends libtorch-dev and more, which nothing here uses.
  "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

bash "$ROOT/scripts/setup_python.sh"
bash "$ROOT/scripts/fetch_model.sh"
bash "$ROOT/scripts/fetch_gemma3.sh"
bash "$ROOT/scripts/fetch_corpus.sh"

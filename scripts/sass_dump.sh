#!/usr/bin/env bash
# The SASS of a CUDA object file's sm_90a code, on a machine without a GPU: the CUDA toolkit
# here has nvcc and ptxas but no cuobjdump / nvdisasm, so this fetches them once from PyPI
# (the nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm wheels) into .sass-tools/ (git-ignored
# through .git/info/exclude). Why: ptxas -v says how many bytes spill but not where, and a
# fence or a spill inside a kernel's hot loop is visible only in the SASS (docs/cuda.md,
# "Sixteenth session": a MEMBAR.ALL.GPU per k tile found this way).
#
#   scripts/sass_dump.sh build/src/CMakeFiles/bitlight.dir/kernels/cuda/attention.cu.o [FUNCTION_REGEX]
#
# Prints the functions' SASS (all of them, or those whose mangled name matches the regex), then
# a count of the fences, barriers and local-memory (spill) instructions per function.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OBJ=${1:?usage: scripts/sass_dump.sh OBJECT.o [FUNCTION_REGEX]}
FILTER=${2:-.}
TOOLS=$ROOT/.sass-tools
if [[ ! -x $TOOLS/bin/cuobjdump || ! -x $TOOLS/bin/nvdisasm ]]; then
  mkdir -p "$TOOLS/wheels" "$TOOLS/bin"
  exclude=$(git -C "$ROOT" rev-parse --git-path info/exclude)
  grep -qx '/.sass-tools/' "$exclude" 2>/dev/null || echo '/.sass-tools/' >> "$exclude"
  pip download --quiet --no-deps -d "$TOOLS/wheels" nvidia-cuda-cuobjdump==13.4.92 nvidia-cuda-nvdisasm==13.5.37
  for w in "$TOOLS"/wheels/*.whl; do python3 -m zipfile -e "$w" "$TOOLS/unpacked"; done
  cp "$(find "$TOOLS/unpacked" -name cuobjdump -type f)" "$(find "$TOOLS/unpacked" -name nvdisasm -type f)" "$TOOLS/bin/"
  chmod +x "$TOOLS"/bin/*
fi
export PATH=$TOOLS/bin:$PATH
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$OBJ" "$WORK/object.o"
(cd "$WORK" && cuobjdump -xelf all object.o > /dev/null)
for cubin in "$WORK"/*sm_90a*.cubin; do
  cuobjdump -sass "$cubin" | awk -v re="$FILTER" '/Function :/ {keep = ($3 ~ re)} keep' > "$WORK/sass.txt"
  cat "$WORK/sass.txt"
  echo
  echo "per function: fences, barriers, local memory (spills)"
  awk '/Function :/ {fn = $3} match($0, /(MEMBAR|ERRBAR|FENCE|STL|LDL)[A-Z0-9_.]*/) {n[fn " " substr($0, RSTART, RLENGTH)]++}
       END {for (k in n) print n[k], k}' "$WORK/sass.txt" | sort -k2
done

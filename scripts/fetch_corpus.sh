#!/usr/bin/env bash
# Puts the English text corpus for `bitlight perplexity` / `bitlight imatrix` in models/kjv.txt:
# the King James Bible (public domain, ~4.3 MB of prose) from Debian's bible-kjv package
# (installed by scripts/setup.sh), printed by its `bible` program with the verse numbers
# dropped. Skips when the file is already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORPUS="$ROOT/models/kjv.txt"

log() { echo "fetch_corpus: $*"; }
die() { echo "fetch_corpus: error: $*" >&2; exit 1; }

if [[ -s "$CORPUS" ]]; then
  log "models/kjv.txt present"
  exit 0
fi
command -v bible >/dev/null || die "the bible program is missing: install the Debian package bible-kjv"
mkdir -p "$ROOT/models"
# Genesis 1:1 to Revelation 22:21; lines are "  12 text" (verse) or "Book 3" (chapter heading).
bible "gen1:1-rev22:21" | sed -E 's/^ *[0-9]+ //' >"$CORPUS.tmp"
bytes=$(wc -c <"$CORPUS.tmp")
((bytes > 4000000)) || die "bible printed only $bytes bytes (expected ~4.3 MB)"
mv "$CORPUS.tmp" "$CORPUS"
log "wrote models/kjv.txt ($bytes bytes)"

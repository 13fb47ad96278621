# Shared by the model fetchers (scripts/fetch_model.sh, scripts/fetch_gemma3.sh), which source it
# after setting ROOT, MODEL (the file's path), MODEL_NAME and MODEL_SHA256 and defining log / die.

# Whether file $1 has the model's sha256.
sha_ok() { [[ -f "$1" ]] && echo "$MODEL_SHA256  $1" | sha256sum --check --status; }

# Exits the fetcher when the model is in place with its sha256; says so when a wrong one is there.
exit_if_model_present() {
  if sha_ok "$MODEL"; then
    log "models/$MODEL_NAME present (sha256 ok)"
    exit 0
  fi
  if [[ -e "$MODEL" ]]; then
    log "models/$MODEL_NAME has the wrong sha256; fetching it again"
  fi
}

# Sets PYTHON to a Python with pip: the project venv has one even where Debian's python3-pip is absent.
find_pip_python() {
  if [[ -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$ROOT/.venv/bin/python"
  elif /usr/bin/python3 -m pip --version >/dev/null 2>&1; then
    PYTHON=/usr/bin/python3
  else
    die "no pip found; run scripts/setup_python.sh first"
  fi
}

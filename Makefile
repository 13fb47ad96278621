# The two commands of the README: `make demo` and `make test`. Both install what is missing
# (scripts/setup.sh: Debian packages, .venv, the model), build, then run.
#
# Knobs: BUILD_DIR, JOBS (build and ctest parallelism; the project machines have 2 cores),
# MODEL, PROMPT, CMAKE_FLAGS (extra -D options, e.g. CMAKE_FLAGS=-DBITLIGHT_CUDA=OFF).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
# Targets run their prerequisites in the order written (setup before build before tests).
.NOTPARALLEL:

BUILD_DIR ?= build
JOBS ?= 2
MODEL ?= models/SmolLM2-135M-Instruct.Q4_1.gguf
PROMPT ?= The three most useful things to know about the sea are
CMAKE_FLAGS ?=
PYTHON := .venv/bin/python

# Warnings are errors in CI (CI=true there), not on a developer's machine; CI also must build
# the HTTP server (elsewhere it is left out when cpp-httplib is missing).
ifneq ($(filter-out false 0,$(CI)),)
  WERROR := -DBITLIGHT_WERROR=ON -DBITLIGHT_SERVER=ON
endif

# For tests/reference: the CLI under test and the build dir holding the gtest helpers.
export BITLIGHT_BIN := $(abspath $(BUILD_DIR))/bin/bitlight
export BITLIGHT_BUILD_DIR := $(abspath $(BUILD_DIR))

.PHONY: all setup configure build cli demo test bench clean

all: build

setup:
	bash scripts/setup.sh

# A build dir configured by another generator (e.g. Unix Makefiles) cannot be reused by Ninja:
# drop its cache so cmake starts over in the same dir.
configure:
	@if [[ -f $(BUILD_DIR)/CMakeCache.txt ]] && ! grep -qx 'CMAKE_GENERATOR:INTERNAL=Ninja' $(BUILD_DIR)/CMakeCache.txt; then \
	  echo "make: $(BUILD_DIR) was configured with another generator; reconfiguring it for Ninja"; \
	  rm -rf $(BUILD_DIR)/CMakeCache.txt $(BUILD_DIR)/CMakeFiles; \
	fi
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(WERROR) $(CMAKE_FLAGS)

build: configure
	ninja -C $(BUILD_DIR) -j$(JOBS)

# The demo and the benchmark need only the CLI, not the test executables.
cli: configure
	ninja -C $(BUILD_DIR) -j$(JOBS) bitlight_cli

demo: setup cli
	$(BITLIGHT_BIN) run -m $(MODEL) -p "$(PROMPT)" -n 64

# Every suite runs even when an earlier one fails, so one CI run reports all failures; the
# target fails if any suite did.
test: setup build
	@failed=(); \
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j$(JOBS) || failed+=(ctest); \
	$(PYTHON) -m pytest tests/reference -q || failed+=(pytest); \
	if [[ -f scripts/run_fuzz.sh ]]; then bash scripts/run_fuzz.sh 60 || failed+=(fuzz); fi; \
	if (( $${#failed[@]} )); then echo "make test: FAILED: $${failed[*]}"; exit 1; fi; \
	echo "make test: all suites passed"

bench: cli
	$(BITLIGHT_BIN) bench -m $(MODEL)

clean:
	rm -rf $(BUILD_DIR)

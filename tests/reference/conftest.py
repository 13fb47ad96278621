"""Fixtures for the reference tests: bitlight's CLI against independent implementations.

A missing prerequisite (the bitlight binary, the model file, a Python package) skips a test on
a developer's machine but FAILS it in CI (env CI=true), where `make test` must have provided
everything: a comparison that silently did not run is worse than a red build.

The CLI contract these tests drive (src/app/cmd_*.cpp):
  bitlight eval -m MODEL --ids 1,2,3 [--device ref|cpu] [-t N] --logits-out FILE
      FILE: float32 little-endian logits of every position, shape [n_ids, n_vocab] row-major.
  bitlight run -m MODEL (-p PROMPT | --ids 1,2,3) -n N --temp 0 [--device cpu|ref] --json-out FILE
      FILE: {"prompt_ids": [...], "generated_ids": [...], "text": "..."}
  bitlight synth --shape NAME --type TYPE -o FILE [--seed S]
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")

# One CLI call on the 135M model with the scalar reference backend takes seconds; this only
# stops a hung process from stalling CI.
CLI_TIMEOUT_S = 900


def require(condition: bool, reason: str) -> None:
    """Skips the calling test when `condition` is false, or fails it in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI must provide it; `make test` sets everything up)", pytrace=False)
    pytest.skip(reason)


def import_or_require(name: str):
    """Like pytest.importorskip, but a missing package fails in CI."""
    try:
        return __import__(name)
    except ImportError as e:
        require(False, f"Python package {name} not importable ({e}); run scripts/setup_python.sh")


class Bitlight:
    """Runs the bitlight CLI; every call checks the exit code and reports stderr on failure."""

    def __init__(self, binary: Path, work_dir: Path):
        self.binary = binary
        self.work_dir = work_dir
        self._n_calls = 0

    def _out_path(self, suffix: str) -> Path:
        self._n_calls += 1
        return self.work_dir / f"out{self._n_calls}{suffix}"

    def run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.binary), *map(str, args)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, (
            f"`{' '.join(cmd)}` exited with {r.returncode}\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}")
        return r

    def eval_logits(self, model: Path, ids, device: str, threads: int = 2) -> np.ndarray:
        """Logits of every position: float32 [len(ids), n_vocab]."""
        out = self._out_path(".f32")
        self.run("eval", "-m", model, "--ids", ",".join(map(str, ids)), "--device", device, "-t", threads,
                 "--logits-out", out)
        logits = np.fromfile(out, dtype="<f4")
        assert logits.size > 0 and logits.size % len(ids) == 0, (
            f"{out}: {logits.size} floats is not a whole number of rows for {len(ids)} ids")
        return logits.reshape(len(ids), -1)

    def generate(self, model: Path, ids, n_tokens: int, device: str, threads: int = 2) -> dict:
        """Greedy (--temp 0) continuation of `ids`; the parsed --json-out document."""
        out = self._out_path(".json")
        self.run("run", "-m", model, "--ids", ",".join(map(str, ids)), "-n", n_tokens, "--temp", 0,
                 "--device", device, "-t", threads, "--json-out", out)
        return json.loads(out.read_text())


@pytest.fixture(scope="session")
def bitlight_bin() -> Path:
    """The CLI under test: $BITLIGHT_BIN (the Makefile exports it), else build/bin/bitlight."""
    path = Path(os.environ.get("BITLIGHT_BIN") or ROOT / "build" / "bin" / "bitlight")
    require(path.is_file() and os.access(path, os.X_OK), f"bitlight binary not found at {path}; build it first")
    return path


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real model, SmolLM2-135M-Instruct in Q4_1 (scripts/fetch_model.sh puts it there)."""
    require(SMOLLM2.is_file(), f"{SMOLLM2} missing; run scripts/fetch_model.sh")
    return SMOLLM2


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    """A temporary dir shared by all tests of the session (models made once, outputs)."""
    return tmp_path_factory.mktemp("reference")


@pytest.fixture(scope="session")
def bitlight(bitlight_bin, session_tmp) -> Bitlight:
    return Bitlight(bitlight_bin, session_tmp)


def max_relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: one number per compared array, scale-free."""
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    scale = float(np.max(np.abs(expected)))
    assert scale > 0, "expected array is all zeros: the comparison would be meaningless"
    return float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) / scale

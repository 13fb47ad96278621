"""`bitlight info -m` on a corpus of malformed GGUF files (make_malformed_gguf.py).

Each must exit with code 1 (not a signal, not a hang), print "error: ..." to stderr, and name
the problem the case was built around. The valid file of the corpus must print its metadata
and tensor table with exit code 0, and gguf-py (when installed) must accept that valid file,
so the corpus breaks a file that an independent reader agrees is well formed.

The CLI is $BITLIGHT_BIN, default build/bin/bitlight under the repository root.
"""
import os
import signal
import subprocess
from pathlib import Path

import pytest

from make_malformed_gguf import build, cases

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("BITLIGHT_BIN", ROOT / "build" / "bin" / "bitlight"))
CASES = cases()


@pytest.fixture(scope="module")
def cli():
    if not BIN.exists():
        pytest.skip(f"bitlight CLI not found at {BIN} (build it, or set BITLIGHT_BIN)")
    return BIN


def run_info(cli, path):
    return subprocess.run([str(cli), "info", "-m", str(path)], capture_output=True, text=True, errors="replace",
                          timeout=30)


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_file_is_reported(cli, tmp_path, name):
    data, fragment = CASES[name]
    path = tmp_path / name
    path.write_bytes(data)
    r = run_info(cli, path)
    assert r.returncode >= 0, f"killed by signal {signal.Signals(-r.returncode).name}\n{r.stderr}"
    assert r.returncode == 1, f"exit code {r.returncode}, stderr: {r.stderr!r}"
    assert r.stderr.startswith("error: "), r.stderr
    assert fragment in r.stderr, f"expected {fragment!r} in stderr: {r.stderr!r}"
    assert len(r.stderr) < 2000, "error message should be one readable line"


def test_valid_file_is_listed(cli, tmp_path):
    path = tmp_path / "valid.gguf"
    path.write_bytes(build())
    r = run_info(cli, path)
    assert r.returncode == 0, r.stderr
    assert '"malformed-corpus"' in r.stdout
    assert "tokenizer.ggml.tokens" in r.stdout and '["a", "b", "ab"]' in r.stdout
    assert "test.i64" in r.stdout and "-1099511627776" in r.stdout
    assert "q4_0" in r.stdout and "[32, 1]" in r.stdout


def test_ggufpy_accepts_the_valid_file(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "valid.gguf"
    path.write_bytes(build())
    r = gguf.GGUFReader(str(path))
    assert [t.name for t in r.tensors] == ["a", "b", "q"]
    assert bytes(r.fields["general.name"].parts[-1]).decode() == "malformed-corpus"


def test_missing_file_is_reported(cli, tmp_path):
    r = run_info(cli, tmp_path / "does_not_exist.gguf")
    assert r.returncode == 1
    assert "does_not_exist.gguf" in r.stderr

"""`bitlight info -m` on a corpus of malformed GGUF files (make_malformed_gguf.py).

Each must exit with code 1 (not a signal, not a hang), print "error: ..." to stderr, and name
the problem the case was built around. The valid file of the corpus must print its metadata
and tensor table with exit code 0, and gguf-py (when installed) must accept that valid file,
so the corpus breaks a file that an independent reader agrees is well formed.

The other direction: a file bitlight writes (`bitlight synth`, through io/GgufWriter) is read
by gguf-py, and its keys, value types and tensor table must match what `bitlight info` reads.

The CLI is $BITLIGHT_BIN, default build/bin/bitlight under the repository root.
"""
import os
import re
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


GGUFPY_TYPE_NAMES = {"UINT8": "u8", "INT8": "i8", "UINT16": "u16", "INT16": "i16", "UINT32": "u32", "INT32": "i32",
                     "FLOAT32": "f32", "BOOL": "bool", "STRING": "string", "UINT64": "u64", "INT64": "i64",
                     "FLOAT64": "f64"}
INFO_TENSOR_ROW = re.compile(r"^\s+\d+\s+(\S+)\s+(\S+)\s+(\[[^\]]*\])\s+(\d+)\s+(\d+)$")


def test_ggufpy_reads_what_bitlight_writes(cli, tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "tiny.gguf"
    w = subprocess.run([str(cli), "synth", "--shape", "tiny", "--type", "q4_1", "-o", str(path)], capture_output=True,
                       text=True, timeout=120)
    assert w.returncode == 0, w.stderr
    r = gguf.GGUFReader(str(path))
    info = run_info(cli, path)
    assert info.returncode == 0, info.stderr

    # Metadata: every key gguf-py sees, with the same value type.
    listed = {}
    for line in info.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and line.startswith("  ") and not line.startswith("      "):
            listed[parts[0]] = parts[1]
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    assert keys, "gguf-py found no metadata"
    for key in keys:
        f = r.fields[key]
        assert key in listed, f"{key} missing from bitlight info"
        t = f.types[0].name
        if t == "ARRAY" and len(f.types) == 1:  # gguf-py records no element type for an empty array
            assert listed[key].startswith("[") and len(f.data) == 0, (key, listed[key])
        elif t == "ARRAY":
            assert listed[key] == "[" + GGUFPY_TYPE_NAMES[f.types[1].name] + ";", (key, listed[key])
        else:
            assert listed[key] == GGUFPY_TYPE_NAMES[t], (key, listed[key])

    # Tensor table: name, dtype, shape (ne order), offset in the data section, bytes.
    rows = [INFO_TENSOR_ROW.match(line) for line in info.stdout.splitlines()]
    rows = [m.groups() for m in rows if m]
    expected = [(t.name, t.tensor_type.name.lower(), "[" + ", ".join(str(int(n)) for n in t.shape) + "]",
                 str(int(t.data_offset) - r.data_offset), str(int(t.n_bytes))) for t in r.tensors]
    assert rows == expected
    assert r.data_offset % 32 == 0 and path.stat().st_size % 32 == 0

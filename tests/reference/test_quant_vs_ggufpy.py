"""bitlight's reference dequantizers against gguf-py (pip install gguf numpy pytest).

gguf-py is an independent implementation of the ggml block layouts. For each format we make
blocks (random bytes with finite fp16 scale fields, so every bit pattern of the quants is
exercised; for the formats gguf-py can quantize also its own quantized blocks), dequantize them
with gguf.quants.dequantize and with bitlight, and require bit-identical floats. The real model
file's Q4_1 / Q8_0 tensors are checked the same way when it is present.

bitlight runs through the quant_file_io_test gtest binary, which reads the job from BL_QUANT_*
environment variables (see tests/ops/quant_file_io_test.cpp). Its build dir is
$BITLIGHT_BUILD_DIR, else the newest build*/ under the repository root.
"""
import glob
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf import quants  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

# Byte offsets of the fp16 scale fields in each block (src/quant/blocks.h).
FP16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.TQ1_0: [52], T.TQ2_0: [64],
}


def find_tool():
    build = os.environ.get("BITLIGHT_BUILD_DIR")
    candidates = [Path(build) / "tests" / "quant_file_io_test"] if build else []
    candidates += sorted((Path(p) for p in glob.glob(str(ROOT / "build*" / "tests" / "quant_file_io_test"))),
                         key=lambda p: p.stat().st_mtime, reverse=True)
    for c in candidates:
        if c.exists():
            return c
    pytest.skip("quant_file_io_test not built (set BITLIGHT_BUILD_DIR)")


def bitlight(mode, type_name, data: bytes, tmp_path):
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    inp.write_bytes(data)
    env = dict(os.environ, BL_QUANT_MODE=mode, BL_QUANT_DTYPE=type_name, BL_QUANT_IN=str(inp), BL_QUANT_OUT=str(out))
    r = subprocess.run([str(find_tool()), "--gtest_filter=QuantFileIo.RunsTheJobFromEnvironment"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "SKIPPED" not in r.stdout, r.stdout + r.stderr
    return out.read_bytes()


def bl_dequantize(qtype, blocks: np.ndarray, tmp_path):
    out = bitlight("dequantize", qtype.name.lower(), blocks.tobytes(), tmp_path)
    return np.frombuffer(out, dtype=np.float32)


def random_blocks(qtype, n_blocks, rng):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for off in FP16_FIELDS[qtype]:
        scales = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
        raw[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw


def assert_same(ours, theirs, what):
    theirs = np.asarray(theirs, dtype=np.float32).reshape(-1)
    assert ours.shape == theirs.shape, what
    bad = np.flatnonzero(ours.view(np.uint32) != theirs.view(np.uint32))
    assert bad.size == 0, f"{what}: {bad.size} of {ours.size} differ, first at {bad[0]}: {ours[bad[0]]} vs {theirs[bad[0]]}"


@pytest.mark.parametrize("qtype", list(FP16_FIELDS), ids=lambda t: t.name)
def test_dequantize_random_blocks(qtype, tmp_path):
    rng = np.random.default_rng(int(qtype))
    raw = random_blocks(qtype, 37, rng)
    assert_same(bl_dequantize(qtype, raw, tmp_path), quants.dequantize(raw, qtype), qtype.name)


@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.TQ1_0, T.TQ2_0], ids=lambda t: t.name)
def test_dequantize_ggufpy_quantized(qtype, tmp_path):
    """gguf-py quantizes (its port of ggml's *_ref), both sides dequantize; and since the legacy
    and ternary quantizers are ggml's round-to-nearest reference, our bytes must match too."""
    rng = np.random.default_rng(100 + int(qtype))
    x = (rng.standard_normal(256 * 9) * 0.3).astype(np.float32)
    blocks = quants.quantize(x.reshape(1, -1), qtype)
    assert_same(bl_dequantize(qtype, blocks, tmp_path), quants.dequantize(blocks, qtype), qtype.name)
    ours = np.frombuffer(bitlight("quantize", qtype.name.lower(), x.tobytes(), tmp_path), dtype=np.uint8)
    assert np.array_equal(ours, blocks.reshape(-1)), f"{qtype.name}: quantized bytes differ from gguf-py"


@pytest.mark.parametrize("qtype", [T.F16, T.BF16], ids=lambda t: t.name)
def test_half_formats(qtype, tmp_path):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(1024) * 3).astype(np.float32)
    blocks = quants.quantize(x.reshape(1, -1), qtype)
    assert_same(bl_dequantize(qtype, blocks, tmp_path), quants.dequantize(blocks, qtype), qtype.name)
    ours = np.frombuffer(bitlight("quantize", qtype.name.lower(), x.tobytes(), tmp_path), dtype=np.uint8)
    assert np.array_equal(ours, blocks.reshape(-1).view(np.uint8)), f"{qtype.name}: rounding differs"


@pytest.mark.skipif(not MODEL.exists(), reason="real model not in models/")
def test_real_model_tensors(tmp_path):
    reader = gguf.GGUFReader(str(MODEL))
    seen = set()
    for t in reader.tensors:
        if t.tensor_type in (T.Q4_1, T.Q8_0, T.Q4_0, T.Q6_K, T.F16) and t.tensor_type not in seen:
            seen.add(t.tensor_type)
            raw = np.asarray(t.data).reshape(-1).view(np.uint8)
            raw = raw[: gguf.GGML_QUANT_SIZES[t.tensor_type][1] * 2048] if t.tensor_type != T.F16 else raw[:8192]
            ref = quants.dequantize(raw.reshape(1, -1), t.tensor_type)
            assert_same(bl_dequantize(t.tensor_type, raw, tmp_path), ref, f"{t.name} ({t.tensor_type.name})")
    assert T.Q4_1 in seen, "the Q4_1 model should hold Q4_1 tensors"

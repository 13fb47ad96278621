"""bitlight's GGUF writer (`bitlight synth`) read back by gguf-py, llama.cpp's own GGUF library.

For each weight type: gguf-py must parse the file, find the llama metadata with the values of the
"tiny" shape, the full tensor table with GGUF (ne0, ne1) shapes, each matrix in the requested type
and each norm in f32, tensor data aligned, and weights that dequantize (with gguf-py's
dequantizers) to finite, non-zero values in the range the writer promises.
"""
import numpy as np
import pytest

from conftest import import_or_require

gguf = import_or_require("gguf")

# The "tiny" entry of bitlight's synth shape table (src/runtime/synthetic_model.cpp), restated
# here so that a writer that drops or garbles a value is caught.
TINY = dict(n_layer=2, n_embd=256, n_ff=512, n_head=4, n_head_kv=2, n_vocab=1024, n_ctx=2048, tied=False)
WEIGHT_TYPES = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
    "q4_1": gguf.GGMLQuantizationType.Q4_1,
    "q4_k": gguf.GGMLQuantizationType.Q4_K,
}
REQUIRED_KEYS = [
    "general.architecture", "general.name",
    "llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
    "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count",
    "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
    "tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
]


def expected_tensors(s: dict) -> dict:
    """name -> GGUF shape (ne0 = row length first) of a llama model of shape `s`."""
    head_dim = s["n_embd"] // s["n_head"]
    q_dim, kv_dim = s["n_head"] * head_dim, s["n_head_kv"] * head_dim
    e, ff = s["n_embd"], s["n_ff"]
    shapes = {"token_embd.weight": (e, s["n_vocab"]), "output_norm.weight": (e,)}
    if not s["tied"]:
        shapes["output.weight"] = (e, s["n_vocab"])
    for il in range(s["n_layer"]):
        p = f"blk.{il}."
        shapes.update({
            p + "attn_norm.weight": (e,), p + "attn_q.weight": (e, q_dim), p + "attn_k.weight": (e, kv_dim),
            p + "attn_v.weight": (e, kv_dim), p + "attn_output.weight": (q_dim, e), p + "ffn_norm.weight": (e,),
            p + "ffn_gate.weight": (e, ff), p + "ffn_up.weight": (e, ff), p + "ffn_down.weight": (ff, e),
        })
    return shapes


def field(reader, key):
    f = reader.get_field(key)
    assert f is not None, f"metadata key {key} missing"
    return f.contents()


def synth(bitlight, path, type_name, seed=1, threads=2):
    bitlight.run("synth", "--shape", "tiny", "--type", type_name, "-o", path, "--seed", seed, "-t", threads)
    return path


@pytest.mark.parametrize("type_name", WEIGHT_TYPES)
def test_synth_file_reads_back_in_gguf_py(type_name, bitlight, session_tmp):
    path = synth(bitlight, session_tmp / f"tiny_{type_name}.gguf", type_name)
    reader = gguf.GGUFReader(path)

    for key in REQUIRED_KEYS:
        field(reader, key)
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "llama.block_count") == TINY["n_layer"]
    assert field(reader, "llama.embedding_length") == TINY["n_embd"]
    assert field(reader, "llama.feed_forward_length") == TINY["n_ff"]
    assert field(reader, "llama.attention.head_count") == TINY["n_head"]
    assert field(reader, "llama.attention.head_count_kv") == TINY["n_head_kv"]
    assert field(reader, "llama.context_length") == TINY["n_ctx"]
    assert field(reader, "llama.rope.dimension_count") == TINY["n_embd"] // TINY["n_head"]
    assert len(field(reader, "tokenizer.ggml.tokens")) == TINY["n_vocab"]
    assert len(field(reader, "tokenizer.ggml.token_type")) == TINY["n_vocab"]
    assert field(reader, "GGUF.tensor_count") == len(reader.tensors)

    expected = expected_tensors(TINY)
    tensors = {t.name: t for t in reader.tensors}
    assert len(reader.tensors) == len(tensors), "duplicate tensor names"
    assert set(tensors) == set(expected), (
        f"missing {sorted(set(expected) - set(tensors))}, unexpected {sorted(set(tensors) - set(expected))}")

    want_type = WEIGHT_TYPES[type_name]
    for name, t in tensors.items():
        shape = tuple(int(d) for d in t.shape)
        assert shape == expected[name], f"{name}: shape {shape}, expected {expected[name]}"
        is_norm = len(shape) == 1
        assert t.tensor_type == (gguf.GGMLQuantizationType.F32 if is_norm else want_type), (
            f"{name}: type {t.tensor_type.name}")
        assert t.data_offset % reader.alignment == 0, f"{name}: data at {t.data_offset}, alignment {reader.alignment}"

        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        assert values.size == int(np.prod(shape)), f"{name}: {values.size} values for shape {shape}"
        assert np.all(np.isfinite(values)), f"{name}: non-finite values"
        if is_norm:
            # Norm gains are 1 + U(-0.1, 0.1).
            assert np.all(np.abs(values - 1) <= 0.1 + 1e-6), f"{name}: gains outside [0.9, 1.1]"
        else:
            # Weights are U(-a, a) with a = 1/sqrt(row length); quantization may round a little past a.
            amplitude = 1 / np.sqrt(shape[0])
            assert np.max(np.abs(values)) <= 1.1 * amplitude, f"{name}: |w| up to {np.max(np.abs(values))} > {amplitude}"
            assert np.std(values) > 0.3 * amplitude, f"{name}: weights nearly constant (std {np.std(values)})"


def test_synth_is_deterministic_in_seed_and_threads(bitlight, session_tmp):
    one_thread = synth(bitlight, session_tmp / "seed7_t1.gguf", "q4_0", seed=7, threads=1).read_bytes()
    two_threads = synth(bitlight, session_tmp / "seed7_t2.gguf", "q4_0", seed=7, threads=2).read_bytes()
    other_seed = synth(bitlight, session_tmp / "seed8_t2.gguf", "q4_0", seed=8, threads=2).read_bytes()
    assert one_thread == two_threads, "same seed, different thread count: files differ"
    assert len(other_seed) == len(one_thread) and other_seed != one_thread, "a different seed gave the same weights"

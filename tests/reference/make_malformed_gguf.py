#!/usr/bin/env python3
"""Writes a corpus of malformed GGUF files, each next to the problem bitlight must report.

A small valid GGUF v3 file is made here with plain struct packing (independent of bitlight's
writer and of gguf-py): metadata of every value type, then three tensors (F32, F32, Q4_0).
Each case breaks one field of it. Used by tests/reference/test_malformed_gguf.py (which runs
`bitlight info -m` on every case) and by scripts/run_fuzz.sh (as the fuzzer's seed corpus).

    python3 tests/reference/make_malformed_gguf.py OUT_DIR

writes OUT_DIR/valid.gguf, OUT_DIR/<case>.gguf and OUT_DIR/manifest.json
({"<case>.gguf": "<fragment the error message must contain>"}).
"""
import json
import struct
import sys
from pathlib import Path

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
# GGML tensor types used here
T_F32, T_Q4_0 = 0, 2
ALIGNMENT = 32


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return u64(len(b)) + b


def kv(key, vtype, payload):
    return gstr(key) + u32(vtype) + payload


def tensor_info(name, ne, dtype, offset):
    return gstr(name) + u32(len(ne)) + b"".join(u64(n) for n in ne) + u32(dtype) + u64(offset)


def pad(b, alignment=ALIGNMENT):
    return b + b"\0" * (-len(b) % alignment)


def valid_kvs():
    return [
        kv("general.architecture", STRING, gstr("llama")),
        kv("general.name", STRING, gstr("malformed-corpus")),
        kv("test.u8", U8, struct.pack("<B", 200)),
        kv("test.i8", I8, struct.pack("<b", -100)),
        kv("test.u16", U16, struct.pack("<H", 60000)),
        kv("test.i16", I16, struct.pack("<h", -30000)),
        kv("llama.block_count", U32, u32(2)),
        kv("test.i32", I32, struct.pack("<i", -7)),
        kv("llama.rope.freq_base", F32, struct.pack("<f", 10000.0)),
        kv("test.bool", BOOL, b"\x01"),
        kv("test.u64", U64, u64(1 << 40)),
        kv("test.i64", I64, struct.pack("<q", -(1 << 40))),
        kv("test.f64", F64, struct.pack("<d", 0.125)),
        kv("tokenizer.ggml.tokens", ARRAY, u32(STRING) + u64(3) + gstr("a") + gstr("b") + gstr("ab")),
        kv("tokenizer.ggml.scores", ARRAY, u32(F32) + u64(3) + struct.pack("<3f", 0.0, -1.0, -2.0)),
    ]


VALID_TENSORS = [("a", [4, 2], T_F32, 0), ("b", [3], T_F32, 32), ("q", [32, 1], T_Q4_0, 64)]
DATA_BYTES = 64 + 18  # the Q4_0 block at 64 ends the data section


def build(kvs=None, tensors=None, version=3, n_kv=None, n_tensors=None, data_bytes=DATA_BYTES, magic=b"GGUF",
          extra_infos=b""):
    kvs = valid_kvs() if kvs is None else kvs
    tensors = VALID_TENSORS if tensors is None else tensors
    head = magic + u32(version) + u64(len(tensors) if n_tensors is None else n_tensors)
    head += u64(len(kvs) if n_kv is None else n_kv)
    body = b"".join(kvs) + b"".join(tensor_info(*t) for t in tensors) + extra_infos
    data = bytes((i * 7) & 0xFF for i in range(data_bytes))
    return pad(head + body) + data


def replace_kv(index, new):
    kvs = valid_kvs()
    kvs[index] = new
    return build(kvs=kvs)


def cases():
    """{file name: (bytes, fragment of the expected error message)}"""
    valid = build()
    c = {}
    c["empty.gguf"] = (b"", "too small")
    c["bad_magic.gguf"] = (b"GGML" + valid[4:], "bad magic")
    c["version_1.gguf"] = (build(version=1), "version 1")
    c["version_99.gguf"] = (build(version=99), "unknown GGUF version 99")
    c["big_endian.gguf"] = (build(version=0x03000000), "big-endian")
    c["truncated_header.gguf"] = (valid[:12], "truncated")
    c["kv_count_huge.gguf"] = (build(n_kv=1 << 60), "kv count")
    c["kv_count_too_many.gguf"] = (build(n_kv=5000), "kv count 5000 needs at least 65000 bytes")
    c["tensor_count_huge.gguf"] = (build(n_tensors=(1 << 64) - 1), "tensor count")
    c["key_length_past_end.gguf"] = (replace_kv(0, u64(1 << 20) + b"general.architecture"), "runs past the end")
    c["key_length_over_limit.gguf"] = (replace_kv(0, u64(1 << 62)), "exceeds the limit")
    c["string_past_end.gguf"] = (build(kvs=valid_kvs()[:1] + [kv("general.name", STRING, u64(99999) + b"x")]),
                                 "'general.name'")
    c["array_past_end.gguf"] = (
        build(kvs=[kv("tokenizer.ggml.scores", ARRAY, u32(F32) + u64(1 << 22) + b"\0" * 8)]), "array of 4194304 f32")
    c["array_length_huge.gguf"] = (build(kvs=[kv("tokenizer.ggml.tokens", ARRAY, u32(STRING) + u64(1 << 63))]),
                                   "'tokenizer.ggml.tokens'")
    c["unknown_value_type.gguf"] = (replace_kv(2, kv("test.u8", 13, b"\0")), "unknown value type 13")
    c["unknown_array_type.gguf"] = (replace_kv(14, kv("tokenizer.ggml.scores", ARRAY, u32(42) + u64(0))),
                                    "unknown array element type 42")
    c["nested_array.gguf"] = (replace_kv(14, kv("test.nested", ARRAY, u32(ARRAY) + u64(1) + u32(U8) + u64(1) + b"\1")),
                              "arrays of arrays")
    c["duplicate_key.gguf"] = (replace_kv(3, kv("test.u8", U8, b"\1")), "duplicate metadata key 'test.u8'")
    c["bad_alignment.gguf"] = (build(kvs=valid_kvs() + [kv("general.alignment", U32, u32(24))]), "general.alignment")
    c["unknown_dtype.gguf"] = (build(tensors=[("a", [4, 2], 4, 0)]), "unknown dtype id 4")
    c["not_block_multiple.gguf"] = (build(tensors=[("q", [16, 1], T_Q4_0, 0)]), "block size")
    c["shape_overflow.gguf"] = (build(tensors=[("big", [1 << 40, 1 << 40], T_F32, 0)]), "overflows")
    c["n_dims_zero.gguf"] = (build(tensors=[("s", [], T_F32, 0)]), "n_dims = 0")
    c["n_dims_five.gguf"] = (build(tensors=[("t", [1, 1, 1, 1, 1], T_F32, 0)]), "n_dims = 5")
    c["dim_zero.gguf"] = (build(tensors=[("z", [4, 0], T_F32, 0)]), "ne[1] = 0")
    c["data_past_end.gguf"] = (build(tensors=VALID_TENSORS[:2] + [("q", [32, 1], T_Q4_0, 4096)]),
                               "tensor 'q': data [offset 4096, 18 bytes] runs past the end of the file")
    c["data_offset_wraps.gguf"] = (build(tensors=[("w", [8], T_F32, (1 << 64) - 32)]), "runs past the end")
    c["overlapping_tensors.gguf"] = (build(tensors=[("a", [4, 2], T_F32, 0), ("b", [3], T_F32, 0)]), "overlap")
    c["duplicate_tensor.gguf"] = (build(tensors=[("a", [4], T_F32, 0), ("a", [4], T_F32, 32)]), "duplicate tensor 'a'")
    c["misaligned_offset.gguf"] = (build(tensors=[("a", [4], T_F32, 8)]), "not a multiple of the alignment")
    c["truncated_data.gguf"] = (valid[:-1], "runs past the end of the file")
    # Truncations inside the header, the metadata and the tensor table: any error will do, as
    # long as it is reported (exit code 1, "error:" on stderr) and nothing crashes.
    header_end = len(valid) - DATA_BYTES
    for cut in (4, 8, 23, 24, 40, 100, 200, 300, header_end - 40, header_end - 9, header_end - 1):
        if 0 < cut < header_end:
            c[f"truncated_at_{cut}.gguf"] = (valid[:cut], "")
    return c


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "valid.gguf").write_bytes(build())
    manifest = {}
    for name, (data, fragment) in cases().items():
        (out / name).write_bytes(data)
        manifest[name] = fragment
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(manifest)} malformed files and valid.gguf to {out}")


if __name__ == "__main__":
    main()

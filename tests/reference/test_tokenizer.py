"""bitlight's tokenizer against Hugging Face's on the same GGUF file.

The reference is `transformers.AutoTokenizer.from_pretrained(dir, gguf_file=name)`, which
rebuilds a `tokenizers` tokenizer from the GGUF's tokenizer.ggml.* keys. Its converter drops one
detail for SmolLM2 (tokenizer.ggml.pre = "smollm"): the model's own tokenizer.json splits every
digit off before the byte-level regex (Digits(individual_digits=True), then ByteLevel), but the
converted tokenizer has only ByteLevel. The two differ on whitespace before a digit ("a  1":
["a", " ", " 1"] against ["a", "  ", "1"]), so for "smollm" the reference gets the pre-tokenizer
of SmolLM2's tokenizer.json back; test_converter_differs_only_in_digit_split shows that this
is the only difference on the mixed text.

CLI contract (src/app/cmd_tokenize.cpp):
  bitlight tokenize -m MODEL (--text T | --file F) [--ids] [--no-bos] [--special]
    default: one line per token, "id<TAB>'piece'" (piece escaped: \\n \\t \\r \\' \\\\ \\xNN)
    --ids:   one line, a JSON list of ids
"""
import functools
import json
import os
import re
from pathlib import Path

import pytest

from conftest import SMOLLM2, import_or_require, require

# English, code with indentation, German umlauts, Chinese, emoji (incl. a ZWJ sequence and a
# flag), whitespace runs (spaces, tabs, newlines, before digits too), digit runs, contractions,
# and ChatML special tokens.
MIXED_TEXT = (
    "<|im_start|>user\nHello, World! It's a test; we'll see what's up.\n"
    "def fibonacci(n):\n    if n < 2:\n        return n\n\treturn fibonacci(n - 1) + fibonacci(n - 2)\n\n"
    "Grüße aus Köln: Äpfel, Öl und Übermaß — schön!\n"
    "你好，世界！我们今天学习分词器。\n"
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧 🇩🇪 done.\n"
    "Spaces:     five, tabs:\t\t\ttwo,  12 and   3456 and\n\n\n7.\n"
    "Digits: 1234567890 3.14159 1,000,000 0x1F 2024-11-22\n"
    "   leading and trailing   <|im_end|>\n<|im_start|>assistant\n"
)

# Texts where an error would show up first: each is checked on its own as well.
EDGE_TEXTS = [
    "",
    " ",
    "a  1",
    "\n\n\n",
    "x" * 300,
    "1" * 50,
    "émoji👍🏽split",
    "<|im_start|><|im_end|><|endoftext|>",
    "I'M HERE, YOU'RE THERE, WE'VE GONE",
]


@pytest.fixture(scope="module")
def model_path() -> Path:
    path = Path(os.environ.get("BITLIGHT_MODEL") or SMOLLM2)
    require(path.is_file(), f"{path} missing; run scripts/fetch_model.sh or set BITLIGHT_MODEL")
    return path


@functools.lru_cache(maxsize=None)
def gguf_fields(path: Path):
    return import_or_require("gguf").GGUFReader(str(path)).fields


def gguf_string(path: Path, key: str):
    field = gguf_fields(path).get(key)
    return None if field is None else bytes(field.parts[field.data[0]]).decode("utf-8")


def gguf_bool(path: Path, key: str):
    field = gguf_fields(path).get(key)
    return None if field is None else bool(field.parts[field.data[0]][0])


def converted_hf_tokenizer(path: Path):
    """transformers' own conversion of the GGUF tokenizer (a new object on every call)."""
    transformers = import_or_require("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def hf_tokenizer(model_path):
    """The reference: transformers' conversion, with SmolLM2's own pre-tokenizer for "smollm"."""
    tok = converted_hf_tokenizer(model_path)
    if gguf_string(model_path, "tokenizer.ggml.pre") == "smollm":
        pre_tokenizers = import_or_require("tokenizers").pre_tokenizers
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    return tok


def bitlight_ids(bitlight, model_path, text, *flags):
    out = bitlight.run("tokenize", "-m", model_path, "--text", text, "--ids", *flags).stdout
    lines = out.splitlines()
    assert len(lines) == 1, f"--ids must print exactly one line, got {len(lines)}: {out[:500]!r}"
    ids = json.loads(lines[0])
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids), lines[0]
    return ids


def hf_ids(tok, text):
    # BOS is not part of the comparison: SmolLM2's GGUF says add_bos_token = false, and the
    # converted tokenizer adds it anyway; BOS handling is checked in test_bos_follows_gguf_flag.
    return tok(text, add_special_tokens=False)["input_ids"]


def first_difference(a, b) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at index {i}: bitlight {a[i:i + 8]} vs HF {b[i:i + 8]}"
    return f"lengths differ: bitlight {len(a)} vs HF {len(b)}"


def test_mixed_text_matches_hf(bitlight, model_path, hf_tokenizer):
    ours = bitlight_ids(bitlight, model_path, MIXED_TEXT, "--no-bos", "--special")
    theirs = hf_ids(hf_tokenizer, MIXED_TEXT)
    assert len(theirs) > 100, "reference tokenization unexpectedly short"
    assert ours == theirs, first_difference(ours, theirs)


@pytest.mark.parametrize("text", EDGE_TEXTS, ids=lambda t: repr(t[:20]))
def test_edge_texts_match_hf(bitlight, model_path, hf_tokenizer, text):
    ours = bitlight_ids(bitlight, model_path, text, "--no-bos", "--special")
    assert ours == hf_ids(hf_tokenizer, text), first_difference(ours, hf_ids(hf_tokenizer, text))


def test_special_tokens_only_with_flag(bitlight, model_path, hf_tokenizer):
    text = "<|im_start|>user\nhi<|im_end|>"
    with_flag = bitlight_ids(bitlight, model_path, text, "--no-bos", "--special")
    without = bitlight_ids(bitlight, model_path, text, "--no-bos")
    im_start = hf_tokenizer.convert_tokens_to_ids("<|im_start|>")
    im_end = hf_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert with_flag[0] == im_start and with_flag[-1] == im_end, with_flag
    assert im_start not in without and im_end not in without, without
    # Without --special the markers are plain text, as with HF's split_special_tokens.
    assert without == hf_tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def test_bos_follows_gguf_flag(bitlight, model_path, hf_tokenizer):
    add_bos = gguf_bool(model_path, "tokenizer.ggml.add_bos_token")
    default = bitlight_ids(bitlight, model_path, "Hello")
    no_bos = bitlight_ids(bitlight, model_path, "Hello", "--no-bos")
    if add_bos:
        assert default == [hf_tokenizer.bos_token_id] + no_bos
    else:
        assert default == no_bos


def unescape_piece(piece: str) -> bytes:
    """Inverse of the CLI's piece escaping."""
    out = bytearray()
    i = 0
    while i < len(piece):
        if piece[i] != "\\":
            out += piece[i].encode("utf-8")
            i += 1
            continue
        nxt = piece[i + 1]
        if nxt == "x":
            out.append(int(piece[i + 2:i + 4], 16))
            i += 4
        else:
            out += {"n": b"\n", "t": b"\t", "r": b"\r", "'": b"'", "\\": b"\\"}[nxt]
            i += 2
    return bytes(out)


def test_decode_round_trip(bitlight, model_path, hf_tokenizer):
    out = bitlight.run("tokenize", "-m", model_path, "--text", MIXED_TEXT, "--no-bos", "--special").stdout
    ids, pieces = [], []
    for line in out.splitlines():
        m = re.fullmatch(r"(\d+)\t'(.*)'", line)
        assert m, f"line not in id<TAB>'piece' form: {line!r}"
        ids.append(int(m.group(1)))
        pieces.append(unescape_piece(m.group(2)))
    assert ids == hf_ids(hf_tokenizer, MIXED_TEXT)
    # Token pieces concatenate back to the exact input bytes, and HF decodes our ids to it too.
    assert b"".join(pieces) == MIXED_TEXT.encode("utf-8")
    assert hf_tokenizer.decode(ids) == MIXED_TEXT


def test_converter_differs_only_in_digit_split(model_path, hf_tokenizer):
    """Documents why the reference patches the converted pre-tokenizer (see module doc)."""
    if gguf_string(model_path, "tokenizer.ggml.pre") != "smollm":
        pytest.skip("only SmolLM2-style vocabularies need the patched reference")
    converted = converted_hf_tokenizer(model_path)
    assert hf_ids(converted, "a  1") != hf_ids(hf_tokenizer, "a  1")
    no_space_before_digit = re.sub(r"\s+(?=\d)", "", MIXED_TEXT)
    assert hf_ids(converted, no_space_before_digit) == hf_ids(hf_tokenizer, no_space_before_digit)

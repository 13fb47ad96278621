"""bitlight on Gemma 3 (the gemma3 architecture) against independent implementations, on the real
model Gemma 3 270M Q4_K_M (scripts/fetch_gemma3.sh).

References: gemma3_numpy.py (HF transformers' Gemma 3 forward, rewritten in numpy on gguf-py's
dequantized weights: transformers' own needs torch >= 2.0) and gemma3_tokenizer.py (Google's
SentencePiece on the GGUF's pieces). Token ids come from that tokenizer, so the model tests do not
depend on bitlight's.

1. Tokenizer: the ids of mixed texts equal the reference's, with and without special tokens.
2. Logits of every position: --device ref within 1e-4 (relative to the largest) of the numpy
   model (both float32-exact paths over the same dequantized weights), --device cpu within 2e-3
   (its activations are rounded to int8 / fp16 on the way).
3. Greedy decoding (`run`, the KV-cache decode path) on the CPU continues as the numpy model does.
4. Sliding windows: the file's window is 512, longer than prompts a test can afford on the scalar
   reference, so a copy of the file says 5; the numpy model with window 5 must differ from its
   own unwindowed logits (else the check below could not fail), and bitlight must follow the
   windowed one, in prefill (eval) and in decode (run).
"""
import shutil

import numpy as np
import pytest

from conftest import ROOT, import_or_require, max_relative_error, require

GEMMA3 = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
THREADS = 2
REF_RTOL = 1e-4
CPU_RTOL = 2e-3
TEST_WINDOW = 5
PROMPT = "The history of the Roman Empire begins with the founding of the city of Rome in 753 BC, when the brothers"
N_GREEDY = 24
EOS = 1  # tokenizer.ggml.eos_token_id: `run` stops there and does not report it

TEXTS = [
    "Hello, world! The  capital of   France is Paris.\n 1234 ümlaut 日本語",
    "def fibonacci(n):\n    if n < 2:\n        return n\n\treturn fibonacci(n - 1) + fibonacci(n - 2)\n\n\n",
    "  leading spaces and trailing   ",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧 🇩🇪 done, tabs\t\tand a rare char \u0f3a.",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "1234567890 3.14159 1,000,000 0x1F <h1>Title</h1>",
]


@pytest.fixture(scope="module")
def gemma3_path():
    require(GEMMA3.is_file(), f"{GEMMA3} missing; run scripts/fetch_gemma3.sh")
    return GEMMA3


@pytest.fixture(scope="module")
def tokenizer(gemma3_path):
    import_or_require("sentencepiece")
    import_or_require("gguf")
    from gemma3_tokenizer import Gemma3Tokenizer
    return Gemma3Tokenizer(gemma3_path)


@pytest.fixture(scope="module")
def model(gemma3_path):
    import_or_require("gguf")
    from gemma3_numpy import Gemma3Numpy
    return Gemma3Numpy(gemma3_path)


@pytest.fixture(scope="module")
def windowed_path(gemma3_path, tmp_path_factory):
    """A copy of the model whose attention.sliding_window is TEST_WINDOW."""
    gguf = import_or_require("gguf")
    path = tmp_path_factory.mktemp("gemma3") / "gemma3-window5.gguf"
    shutil.copyfile(gemma3_path, path)
    reader = gguf.GGUFReader(str(path), "r+")
    field = reader.fields["gemma3.attention.sliding_window"]
    field.parts[field.data[0]][0] = TEST_WINDOW
    reader.data.flush()
    del reader
    check = gguf.GGUFReader(str(path))
    f = check.fields["gemma3.attention.sliding_window"]
    assert f.parts[f.data[0]][0] == TEST_WINDOW
    return path


@pytest.mark.parametrize("special", [False, True])
def test_tokenizer_matches_sentencepiece(special, tokenizer, bitlight, gemma3_path):
    for text in TEXTS:
        args = ["tokenize", "-m", gemma3_path, "--text", text, "--ids"] + (["--special"] if special else [])
        got = [int(i) for i in bitlight.run(*args).stdout.strip().strip("[]").split(",") if i.strip()]
        assert got == tokenizer.encode(text, special=special), f"text {text!r} (special={special})"


@pytest.mark.parametrize("device,rtol", [("ref", REF_RTOL), ("cpu", CPU_RTOL)])
def test_logits_match_numpy_model(device, rtol, tokenizer, model, bitlight, gemma3_path):
    ids = tokenizer.encode(PROMPT)
    expected = model.logits(ids)
    actual = bitlight.eval_logits(gemma3_path, ids, device=device, threads=THREADS)
    err = max_relative_error(actual, expected)
    assert err <= rtol, f"{device}: max|bitlight - numpy| / max|numpy| = {err:.3g} > {rtol} (ids {ids})"
    assert np.array_equal(actual.argmax(axis=1), expected.argmax(axis=1)), "top-1 tokens differ"


def test_cpu_greedy_matches_numpy_model(tokenizer, model, bitlight, gemma3_path):
    ids = tokenizer.encode(PROMPT)
    result = bitlight.generate(gemma3_path, ids, N_GREEDY, device="cpu", threads=THREADS)
    assert result["prompt_ids"] == ids
    assert result["generated_ids"] == model.greedy(ids, N_GREEDY, eos=EOS), f"bitlight text {result.get('text')!r}"


def test_sliding_window_in_prefill_and_decode(tokenizer, model, bitlight, windowed_path):
    ids = tokenizer.encode(PROMPT)
    assert len(ids) > 2 * TEST_WINDOW
    expected = model.logits(ids, window=TEST_WINDOW)
    # The window must matter at this length, or following it would prove nothing.
    assert max_relative_error(model.logits(ids, window=len(ids)), expected) > 10 * CPU_RTOL
    for device, rtol in (("ref", REF_RTOL), ("cpu", CPU_RTOL)):
        err = max_relative_error(bitlight.eval_logits(windowed_path, ids, device=device, threads=THREADS), expected)
        assert err <= rtol, f"{device}: windowed logits off by {err:.3g} > {rtol}"
    result = bitlight.generate(windowed_path, ids, N_GREEDY, device="cpu", threads=THREADS)
    assert result["generated_ids"] == model.greedy(ids, N_GREEDY, window=TEST_WINDOW, eos=EOS), (
        f"bitlight text {result.get('text')!r}")


def test_synthetic_gemma3_shape_reads_as_gemma3(bitlight, tmp_path):
    """`synth --shape gemma3-270m` (the GPU machine's Gemma 3 model: the real file is too large to
    carry there) writes a file the numpy model reads as Gemma 3, and bitlight's CPU backend agrees
    with it, so the GPU checks on it check the architecture."""
    import_or_require("gguf")
    from gemma3_numpy import Gemma3Numpy
    path = tmp_path / "gemma3-synth.gguf"
    bitlight.run("synth", "--shape", "gemma3-270m", "--type", "q8_0", "-o", path)
    ids = [2, 9, 4000, 12345, 262000, 77, 100000, 5]
    synth = Gemma3Numpy(path)
    assert (synth.n_layer, synth.n_embd, synth.head_dim, synth.window) == (18, 640, 256, 512)
    expected = synth.logits(ids)
    err = max_relative_error(bitlight.eval_logits(path, ids, device="cpu", threads=THREADS), expected)
    assert err <= CPU_RTOL, f"cpu: max|bitlight - numpy| / max|numpy| = {err:.3g} > {CPU_RTOL}"

"""bitlight against transformers on tiny random Llama and Qwen2 models read from safetensors folders.

make_tiny_random.py writes each model with transformers' save_pretrained; bitlight loads the
folder (-m DIR) and computes the logits of every position for a few id sequences.
Tolerances, as max |bitlight - hf| / max |hf| over all positions:
  --device ref  1e-4: float32 throughout, only summation order differs.
  --device cpu  1e-2: the fast kernels may round activations (e.g. to 8 bits per block) and
                      weights to fp16/bf16 for speed.
"""
import numpy as np
import pytest

from conftest import import_or_require, max_relative_error

TOLERANCE = {"ref": 1e-4, "cpu": 1e-2}
THREADS = 2
N_VOCAB = 256


def _ids(n: int, seed: int) -> list:
    return np.random.default_rng(seed).integers(0, N_VOCAB, size=n).tolist()


ID_SEQUENCES = {
    "one_token": [17],
    "counting": [1, 2, 3, 4, 5, 6, 7],
    "random_33": _ids(33, seed=1),  # odd, longer than one SIMD block of positions
    "random_100": _ids(100, seed=2),  # close to max_position_embeddings (128): RoPE at large angles
}


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny(request, session_tmp):
    """(folder, transformers model) of one architecture, made once per test session."""
    import_or_require("transformers")
    import make_tiny_random

    folder = session_tmp / f"tiny_{request.param}"
    make_tiny_random.make_tiny_model(request.param, folder, seed=1234)
    return folder, make_tiny_random.load_tiny_model(folder)


def hf_logits(model, ids) -> np.ndarray:
    torch = import_or_require("torch")
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("device", ["ref", "cpu"])
@pytest.mark.parametrize("seq_name", ID_SEQUENCES)
def test_logits_match_transformers(tiny, seq_name, device, bitlight):
    folder, model = tiny
    ids = ID_SEQUENCES[seq_name]
    expected = hf_logits(model, ids)
    assert expected.shape == (len(ids), N_VOCAB)
    actual = bitlight.eval_logits(folder, ids, device=device, threads=THREADS)
    err = max_relative_error(actual, expected)
    assert err <= TOLERANCE[device], (
        f"{folder.name} {seq_name} --device {device}: max|bitlight - hf| / max|hf| = {err:.3g} > {TOLERANCE[device]}")


@pytest.mark.parametrize("seq_name", ["one_token", "counting"])
def test_q8_0_cpu_matches_reference(tiny, seq_name, bitlight, session_tmp):
    """A Q8_0 GGUF of the tiny model, `--device cpu` against `--device ref` on the same file.

    The CPU backend copies Q8_0 weights (16 rows interleaved), so the model joins Q/K/V (with
    Qwen2's biases) and gate/up into one matrix each, and a one-token forward runs one matmul
    for each: "one_token" takes that path, "counting" (7 tokens) the row ranges of the joined
    matrices (with one position, attention ignores K, so K's part of the joined bias is checked
    only through the row ranges). Tolerance 1e-3: the CPU sends activations as two 8-bit terms
    (~1e-4 at the logits; measured 4e-5).
    """
    folder, _ = tiny
    gguf = session_tmp / f"{folder.name}_q8_0.gguf"
    if not gguf.exists():
        bitlight.run("quantize", folder, gguf, "--type", "q8_0", "-t", THREADS)
    ids = ID_SEQUENCES[seq_name]
    want = bitlight.eval_logits(gguf, ids, device="ref", threads=THREADS)
    got = bitlight.eval_logits(gguf, ids, device="cpu", threads=THREADS)
    err = max_relative_error(got, want)
    assert err <= 1e-3, f"{gguf.name} {seq_name}: cpu vs ref max relative error {err:.3g}"

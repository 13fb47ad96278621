"""`bitlight bench --json`: the decode-vs-bandwidth arithmetic, recomputed from the numbers it reports.

The read-bandwidth probe runs before each timed repetition and after the last, and each
repetition's decode rate is judged against the larger probe on either side of it (a shared
machine's bandwidth drifts). This test checks that contract on the tiny synthetic model: probe
count, every fraction = tokens/s x bytes per token / max(neighbouring probes), and the reported
fraction their mean.
"""
import json
import subprocess

import pytest


def test_bench_judges_each_repetition_by_its_neighbouring_probes(bitlight, session_tmp):
    model = session_tmp / "bench_tiny_q4_0.gguf"
    bitlight.run("synth", "--shape", "tiny", "--type", "q4_0", "-o", model)
    out = session_tmp / "bench.json"
    reps = 3
    bitlight.run("bench", "-m", model, "-p", 8, "-n", 8, "-r", reps, "-t", 1, "--json", out)
    j = json.loads(out.read_text())

    probes = j["read_bandwidth_probes_gbps"]
    assert len(probes) == reps + 1 and all(p > 0 for p in probes), probes
    assert j["read_bandwidth_gbps"] == pytest.approx(max(probes))
    rates, fractions = j["decode_tokens_per_second"], j["decode_fraction_per_repetition"]
    assert len(rates) == reps and len(fractions) == reps
    for i, (rate, fraction) in enumerate(zip(rates, fractions)):
        limit = max(probes[i], probes[i + 1])
        assert fraction == pytest.approx(rate * j["decode_bytes_per_token"] / 1e9 / limit, rel=1e-9), i
    assert j["decode_fraction_of_bandwidth"] == pytest.approx(sum(fractions) / reps, rel=1e-9)


def test_bench_with_sequences_counts_weights_once_per_step(bitlight, session_tmp):
    """-B 2: two sequences per decode step. Per token, a step reads the weights once for both
    (W / 2) plus its own KV cache (kv): bytes per token b1 = W + kv at -B 1, b2 = W / 2 + kv at
    -B 2, so W = 2 (b1 - b2) must be the model's weights read by a step (at most its file's) and
    kv = 2 b2 - b1 must be positive."""
    model = session_tmp / "bench_tiny_q4_0.gguf"
    if not model.exists():
        bitlight.run("synth", "--shape", "tiny", "--type", "q4_0", "-o", model)
    docs = {}
    for seqs in (1, 2):
        out = session_tmp / f"bench_seqs{seqs}.json"
        bitlight.run("bench", "-m", model, "-p", 4, "-n", 4, "-r", 1, "-t", 1, "-B", seqs, "--json", out)
        docs[seqs] = json.loads(out.read_text())
    assert docs[2]["n_seq"] == 2 and len(docs[2]["decode_tokens_per_second"]) == 1
    b1, b2 = docs[1]["decode_bytes_per_token"], docs[2]["decode_bytes_per_token"]
    weights, kv = 2 * (b1 - b2), 2 * b2 - b1
    assert 0 < weights <= docs[1]["weight_bytes"], (b1, b2)
    assert kv > 0, (b1, b2)


def test_bench_context_size(bitlight, session_tmp):
    """bench allocates the cache its tests need (-p + -n slots) unless -c asks for more (as a
    server or `run -c` allocates up front); the bytes read per token do not depend on it, and a
    -c too small for the tests is refused with the reason."""
    model = session_tmp / "bench_tiny_q4_0.gguf"
    if not model.exists():
        bitlight.run("synth", "--shape", "tiny", "--type", "q4_0", "-o", model)
    docs = {}
    for ctx in (None, 64):
        out = session_tmp / f"bench_ctx{ctx}.json"
        extra = ["-c", ctx] if ctx else []
        bitlight.run("bench", "-m", model, "-p", 4, "-n", 4, "-r", 1, "-t", 1, *extra, "--json", out)
        docs[ctx] = json.loads(out.read_text())
    assert docs[None]["n_ctx"] == 8 and docs[64]["n_ctx"] == 64
    assert docs[64]["decode_bytes_per_token"] == docs[None]["decode_bytes_per_token"]
    cmd = [str(bitlight.binary), "bench", "-m", str(model), "-p", "4", "-n", "4", "-r", "1", "-t", "1", "-c", "6"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stderr
    assert "context of 6 slots cannot hold the 8 tokens" in r.stderr

"""`bitlight serve` over HTTP on the real SmolLM2 file (CPU): its answers against `bitlight run`
(whose greedy continuation test_hf_logits.py checks against transformers) and its chat prompt
against transformers' own rendering of the model's Jinja template; streaming against the whole
response; stop strings; every bad request refused with a JSON error and no other request
disturbed (a busy server, a client that leaves mid-stream); SIGTERM ends it cleanly."""
import http.client
import json
import signal
import subprocess
import threading
import time

import pytest

from conftest import import_or_require

START_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 300
N_CTX = 512
MAX_WAITING = 1  # requests that may wait past the ones generating (serve --max-waiting)


class Server:
    def __init__(self, process: subprocess.Popen, port: int, log_path, parallel: int):
        self.process = process
        self.port = port
        self.log_path = log_path
        self.parallel = parallel

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)

    def request(self, method: str, path: str, body=None, raw: bytes = None):
        """(status, parsed JSON body) of one request on a fresh connection."""
        conn = self.connection()
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        payload = r.read()
        conn.close()
        return r.status, json.loads(payload) if payload else None

    def post(self, path: str, body: dict):
        return self.request("POST", path, body)

    def stream(self, path: str, body: dict):
        """The events of a streamed response: parsed JSON objects, then the string "[DONE]"."""
        conn = self.connection()
        conn.request("POST", path, body=json.dumps({**body, "stream": True}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200, r.read()
        assert r.getheader("Content-Type").startswith("text/event-stream")
        events = []
        for event in r.read().decode().split("\n\n"):
            if not event:
                continue
            assert event.startswith("data: "), f"not a server-sent event: {event!r}"
            data = event[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
        conn.close()
        return events

    def post_at_once(self, path: str, bodies: list) -> list:
        """(status, body) of each request, all sent at once from threads of their own."""
        results = [None] * len(bodies)

        def ask(i):
            results[i] = self.post(path, bodies[i])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    def metric(self, name: str) -> float:
        conn = self.connection()
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        text = r.read().decode()
        conn.close()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"metric {name} not in /metrics:\n{text}")

    def wait_for_metric(self, name: str, value: float, timeout_s: float = 60):
        deadline = time.monotonic() + timeout_s
        while self.metric(name) != value:
            assert time.monotonic() < deadline, f"{name} stayed {self.metric(name)}, expected {value}"
            time.sleep(0.01)


# --parallel 1: one Session, requests take turns (SessionEngine); 4: continuous batching over a
# SequenceBatch of 4 sequences (BatchEngine). Every test runs against both.
@pytest.fixture(scope="module", params=[1, 4], ids=["parallel1", "parallel4"])
def server(request, bitlight_bin, smollm2_path, tmp_path_factory):
    parallel = request.param
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [str(bitlight_bin), "serve", "-m", str(smollm2_path), "--device", "cpu", "-t", "2", "-c", str(N_CTX),
         "--port", "0", "--max-waiting", str(MAX_WAITING), "--parallel", str(parallel)],
        stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
    port = None
    deadline = time.monotonic() + START_TIMEOUT_S
    while port is None:
        assert process.poll() is None, f"bitlight serve exited with {process.returncode}:\n{log_path.read_text()}"
        assert time.monotonic() < deadline, f"bitlight serve did not start:\n{log_path.read_text()}"
        for line in log_path.read_text().splitlines():
            if "listening on http://127.0.0.1:" in line:
                port = int(line.split("127.0.0.1:")[1].split()[0])
        time.sleep(0.05)
    yield Server(process, port, log_path, parallel)
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=60)
    finally:
        process.kill()
        log.close()
    assert code == 0, f"bitlight serve exited with {code} on SIGTERM:\n{log_path.read_text()}"


def run_text(bitlight, model, prompt: str, n: int, *flags) -> dict:
    """`bitlight run` on the same file: the --json-out document."""
    out = bitlight._out_path(".json")
    bitlight.run("run", "-m", model, "-p", prompt, "-n", n, "--device", "cpu", "-t", 2, "-c", N_CTX, "--json-out", out,
                 *flags)
    return json.loads(out.read_text())


def finish_of(run_doc: dict) -> str:
    """The finish_reason the server must give for what `run` reports."""
    return "stop" if run_doc["stop_reason"] == "eog" else "length"


PROMPT = "The three most useful things to know about the sea are"


def test_health_and_models(server):
    assert server.request("GET", "/health") == (200, {"status": "ok"})
    status, models = server.request("GET", "/v1/models")
    assert status == 200 and models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["SmolLM2-135M-Instruct.Q4_1"]
    assert models["data"][0]["meta"]["n_ctx"] == N_CTX


def test_greedy_completion_equals_run(server, bitlight, smollm2_path):
    expected = run_text(bitlight, smollm2_path, PROMPT, 24, "--temp", 0)
    for attempt in range(2):  # the second reuses the cached prompt prefix
        status, body = server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 24, "temperature": 0})
        assert status == 200, body
        assert body["object"] == "text_completion" and body["model"] == "SmolLM2-135M-Instruct.Q4_1"
        choice = body["choices"][0]
        assert choice["text"] == expected["text"], f"attempt {attempt}"
        assert choice["finish_reason"] == finish_of(expected)
        assert body["usage"]["prompt_tokens"] == len(expected["prompt_ids"])
        assert body["usage"]["completion_tokens"] == len(expected["generated_ids"])
        assert body["usage"]["total_tokens"] == len(expected["prompt_ids"]) + len(expected["generated_ids"])
    assert server.metric("bitlight_prompt_tokens_reused_total") >= len(expected["prompt_ids"]) - 1
    # Token ids as the prompt: the same continuation.
    status, by_ids = server.post("/v1/completions", {"prompt": expected["prompt_ids"], "max_tokens": 24,
                                                     "temperature": 0, "cache_prompt": False})
    assert status == 200 and by_ids["choices"][0]["text"] == expected["text"]


def test_seeded_sampling_equals_run(server, bitlight, smollm2_path):
    expected = run_text(bitlight, smollm2_path, PROMPT, 20, "--temp", 0.8, "--seed", 5)
    bodies = [server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 20, "temperature": 0.8, "seed": 5})
              for _ in range(2)]
    for status, body in bodies:
        assert status == 200, body
        assert body["choices"][0]["text"] == expected["text"]


def test_greedy_and_sampled_requests_together(server, bitlight, smollm2_path):
    # With --parallel 4 they share decode steps: the sampled row is drawn by the backend with
    # the sampler's numbers, the greedy row with a top_k 1 draw; each must still be run's text.
    greedy = run_text(bitlight, smollm2_path, PROMPT, 20, "--temp", 0)
    sampled = run_text(bitlight, smollm2_path, PROMPT, 20, "--temp", 0.8, "--seed", 7)
    bodies = [{"prompt": PROMPT, "max_tokens": 20, "temperature": 0},
              {"prompt": PROMPT, "max_tokens": 20, "temperature": 0.8, "seed": 7}]
    results = server.post_at_once("/v1/completions", bodies)
    assert results[0][0] == 200 and results[0][1]["choices"][0]["text"] == greedy["text"]
    assert results[1][0] == 200 and results[1][1]["choices"][0]["text"] == sampled["text"]


def test_chat_prompt_is_the_models_template_rendered_by_transformers(server, bitlight, smollm2_path):
    transformers = import_or_require("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    hf_ids = tok(rendered, add_special_tokens=False)["input_ids"]
    expected = run_text(bitlight, smollm2_path, rendered, 40, "--temp", 0)
    assert expected["prompt_ids"] == hf_ids, "bitlight run tokenized the rendered template differently"

    status, body = server.post("/v1/chat/completions", {"messages": messages, "max_tokens": 40, "temperature": 0})
    assert status == 200, body
    assert body["object"] == "chat.completion"
    assert body["usage"]["prompt_tokens"] == len(hf_ids)
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["content"] == expected["text"]
    assert body["choices"][0]["finish_reason"] == finish_of(expected)

    # A system message replaces the template's default one, as the Jinja template does.
    with_system = [{"role": "system", "content": "You answer in one word."}] + messages
    rendered = tok.apply_chat_template(with_system, add_generation_prompt=True, tokenize=False)
    status, body = server.post("/v1/chat/completions", {"messages": with_system, "max_tokens": 1, "temperature": 0})
    assert status == 200 and body["usage"]["prompt_tokens"] == len(tok(rendered, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 20, "temperature": 0}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 20,
                              "temperature": 0}),
])
def test_stream_equals_the_whole_response(server, path, body):
    status, whole = server.post(path, body)
    assert status == 200, whole
    events = server.stream(path, {**body, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks, usage, last = events[:-2], events[-2], events[-3]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    assert all(c["id"] == chunks[0]["id"] for c in chunks)
    if path.endswith("chat/completions"):
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        expected_text = whole["choices"][0]["message"]["content"]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    else:
        text = "".join(c["choices"][0]["text"] for c in chunks)
        expected_text = whole["choices"][0]["text"]
    assert text == expected_text
    assert last["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_stop_strings_cut_the_text(server):
    status, whole = server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 24, "temperature": 0})
    text = whole["choices"][0]["text"]
    words = text.split()
    assert len(words) >= 4, f"too short a continuation to test stop strings: {text!r}"
    stop = " " + words[3]  # a stop string that spans the token boundary
    expected = text[:text.index(stop)]
    body = {"prompt": PROMPT, "max_tokens": 24, "temperature": 0, "stop": ["never appears", stop]}
    status, cut = server.post("/v1/completions", body)
    assert status == 200
    assert cut["choices"][0]["text"] == expected and cut["choices"][0]["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] < whole["usage"]["completion_tokens"]
    events = server.stream("/v1/completions", body)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == expected
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


BAD_REQUESTS = {
    "not JSON": ("/v1/completions", b"{not json", 400, "not valid JSON"),
    "no prompt": ("/v1/completions", {"max_tokens": 4}, 400, "prompt is required"),
    "temperature out of range": ("/v1/completions", {"prompt": "x", "temperature": 7}, 400, "temperature"),
    "several choices": ("/v1/completions", {"prompt": "x", "n": 3}, 400, "n:"),
    "id outside the vocabulary": ("/v1/completions", {"prompt": [1, 49152]}, 400, "49152"),
    "prompt longer than the context": ("/v1/completions", {"prompt": "sea " * 600}, 400, "context holds 512"),
    "max_tokens past the context": ("/v1/completions", {"prompt": "x", "max_tokens": 600}, 400, "exceed the context"),
    "tool role": ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, 400, "role"),
    "image part": ("/v1/chat/completions",
                   {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
                   400, "image_url"),
    "no such endpoint": ("/v1/embeddings", {"input": "x"}, 404, "no such endpoint"),
    "body over the limit": ("/v1/completions", b"{\"prompt\": \"" + b"a" * (2 << 20) + b"\"}", 413, "larger than"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_requests_get_a_json_error_and_disturb_nothing(server, name):
    path, body, want_status, names = BAD_REQUESTS[name]
    if isinstance(body, bytes):
        status, error = server.request("POST", path, raw=body)
    else:
        status, error = server.post(path, body)
    assert status == want_status, f"{name}: {status} {error}"
    assert names in error["error"]["message"], f"{name}: {error}"
    assert error["error"]["type"] == "invalid_request_error"
    status, ok = server.post("/v1/completions", {"prompt": "Hello", "max_tokens": 2, "temperature": 0})
    assert status == 200 and ok["usage"]["completion_tokens"] >= 1


def test_concurrent_requests_each_get_their_own_answer(server):
    bodies = [{"prompt": p, "max_tokens": 16, "temperature": 0, "cache_prompt": False}
              for p in ("The sea is", "My favourite food is")]
    alone = [server.post("/v1/completions", b)[1]["choices"][0]["text"] for b in bodies]
    results = server.post_at_once("/v1/completions", bodies)
    for i in range(2):
        status, body = results[i]
        assert status == 200, body
        assert body["choices"][0]["text"] == alone[i]


# Greedy SmolLM2 counts on without an end-of-generation token: 400 tokens, ~1.5 s on 2 cores.
LONG_BODY = {"prompt": "1, 2, 3, 4, 5, 6, 7,", "max_tokens": 400, "temperature": 0}


def test_a_busy_server_refuses_past_max_waiting(server):
    # `parallel` requests generating and MAX_WAITING waiting fill the line; one more is refused.
    n_in_line = server.parallel + MAX_WAITING
    results = [None] * n_in_line

    def ask(i):
        results[i] = server.post("/v1/completions", LONG_BODY)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n_in_line)]
    for i, t in enumerate(threads):
        t.start()
        server.wait_for_metric("bitlight_requests_in_line", i + 1)
    refused_before = server.metric("bitlight_requests_refused_busy_total")
    status, error = server.post("/v1/completions", {"prompt": "x", "max_tokens": 1})
    assert status == 503 and "busy" in error["error"]["message"]
    assert server.metric("bitlight_requests_refused_busy_total") == refused_before + 1
    for t in threads:
        t.join()
    for status, body in results:
        assert status == 200, body
        assert body["usage"]["completion_tokens"] == 400, "a request ended early: the line was not full"
        assert body["choices"][0]["text"] == results[0][1]["choices"][0]["text"]


def test_a_client_leaving_mid_stream_stops_its_generation_only(server):
    cancelled = server.metric("bitlight_requests_cancelled_total")
    generated = server.metric("bitlight_generated_tokens_total")
    conn = server.connection()
    conn.request("POST", "/v1/completions", body=json.dumps({**LONG_BODY, "stream": True}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    first = r.fp.readline()
    assert first.strip(), first  # the first chunk's size line: the generation is under way
    conn.sock.close()
    conn.close()
    server.wait_for_metric("bitlight_requests_cancelled_total", cancelled + 1)
    server.wait_for_metric("bitlight_requests_in_line", 0)
    assert server.metric("bitlight_generated_tokens_total") - generated < LONG_BODY["max_tokens"]
    status, body = server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 4, "temperature": 0})
    assert status == 200 and body["usage"]["completion_tokens"] >= 1

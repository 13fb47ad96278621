"""Bad options and requests to the generation commands: exit code 1, one `error:` line that
names the problem, nothing on stdout (no prompt echoed, no partial text), and no output file."""
import subprocess

import pytest

CASES = {
    "missing model": (["run", "-m", "/nonexistent/model.gguf", "-p", "hi"], "cannot open"),
    "negative temperature": (["run", "-p", "hi", "--temp", "-1"], "temperature"),
    "zero context": (["run", "-p", "hi", "-c", "0"], "context size"),
    "id outside the vocabulary": (["run", "--ids", "1,99999", "-n", "2"], "99999"),
    "not an id": (["run", "--ids", "1,x", "-n", "2"], "'x'"),
    "two prompt sources": (["run", "-p", "hi", "--ids", "1"], "exactly one"),
    "unknown device": (["run", "-p", "hi", "--device", "tpu"], "unknown device"),
    "bad kv type": (["run", "-p", "hi", "--kv-type", "q4_0"], "--kv-type"),
    "eval id outside the vocabulary": (["eval", "--ids", "5,49152"], "49152"),
    "unknown synth shape": (["synth", "--shape", "llama9-1t", "--type", "q4_0"], "unknown shape"),
    "serve missing model": (["serve", "-m", "/nonexistent/model.gguf", "--port", "0"], "cannot open"),
    "serve port out of range": (["serve", "--port", "70000"], "--port"),
    "serve no sequences": (["serve", "--port", "0", "--parallel", "0"], "--parallel"),
    "serve tiny body limit": (["serve", "--port", "0", "--max-body", "10"], "--max-body"),
    "serve bad temperature": (["serve", "--port", "0", "--temp", "-2"], "temperature"),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_request_fails_cleanly(name, bitlight_bin, smollm2_path, tmp_path):
    args, expected = CASES[name]
    out = tmp_path / "out.bin"
    if args[0] == "eval":
        args = args + ["--logits-out", str(out)]
    elif args[0] == "synth":
        args = args + ["-o", str(out)]
    elif args[0] == "serve":
        pass  # writes no file; each case fails before it would listen
    else:
        args = args + ["--json-out", str(out)]
    r = subprocess.run([str(bitlight_bin), *args], capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL, cwd=smollm2_path.parents[1])
    assert r.returncode == 1, f"{name}: exit {r.returncode}\n{r.stderr}"
    assert r.stdout == "", f"{name}: printed to stdout before failing: {r.stdout!r}"
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], f"{name}: stderr {r.stderr!r} should name {expected!r}"
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists(), f"{name}: left an output file"

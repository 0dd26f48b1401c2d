"""Served runs' settings, checked before any request (no server needed here; tests/test_served.py
runs the real one)."""

import pytest

from lm_eval_longctx import served
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.registration import task_manager
from lm_eval_longctx.spec import GridSpec

URL = "http://127.0.0.1:9/v1/completions"


@pytest.fixture
def metadata(tiny_model_dir):
    return {
        "base_url": URL, "tokenizer": tiny_model_dir, "tokenized_requests": False,
        "max_seq_lengths": [240, 300], "depths": [0], "num_samples": 1,
    }  # fmt: skip


def test_token_id_requests_that_lm_eval_would_cut_are_refused(metadata):
    with_ids = {**metadata, "tokenized_requests": True, "max_length": 256}
    with pytest.raises(LongCtxError) as caught:
        task_manager(metadata=with_ids).load(["longctx_kv"])
    message = str(caught.value)
    assert "cuts them to max_length - 1 - max_gen_toks = 231 tokens (max_length=256)" in message
    assert "prompts of [240, 300] tokens" in message
    assert "tokenized_requests=False" in message and "max_length=325 or more" in message


def test_served_window_is_the_servers_not_the_tokenizers_config(metadata):
    # The tiny model's config says 512 positions; a served run leaves the window to the server.
    task = task_manager(metadata={**metadata, "max_seq_lengths": [240, 600]}).load(["longctx_kv"])["tasks"]["longctx_kv"]
    assert "exact_len_600" in task.aggregation()


def test_token_id_requests_are_built_without_bos_like_lm_eval_sends_them(metadata, tiny_model_dir):
    assert GridSpec.from_metadata({**metadata, "tokenized_requests": True}, "t").tokenizer.add_bos_token is False
    assert GridSpec.from_metadata(metadata, "t").tokenizer.add_bos_token is None  # the server's own rule
    chat = {**metadata, "base_url": "http://h/v1/chat/completions"}
    chat.pop("tokenized_requests")
    assert GridSpec.from_metadata(chat, "t").tokenizer.add_bos_token is None


def test_chat_endpoint_without_apply_chat_template_is_refused_before_any_request(metadata):
    chat = {**metadata, "base_url": "http://127.0.0.1:9/v1/chat/completions"}
    task = task_manager(metadata=chat).load(["longctx_kv"])["tasks"]["longctx_kv"]
    with pytest.raises(LongCtxError, match="is a chat endpoint; lm-eval's local-chat-completions needs --apply_chat_template"):
        task.build_all_requests(apply_chat_template=False)


def test_chat_list_to_a_text_endpoint_is_refused(metadata):
    task = task_manager(metadata=metadata).load(["longctx_kv"])["tasks"]["longctx_kv"]
    with pytest.raises(LongCtxError, match="Use --model local-chat-completions"):
        task.build_all_requests(apply_chat_template=True, chat_template=lambda m, **k: "x")


@pytest.mark.parametrize(
    ("given", "expected"),
    [("yarn:4:orig=8192", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192}),
     ("none", {"rope_type": "default"}),
     ({"rope_type": "linear", "factor": 2}, {"rope_type": "linear", "factor": 2.0})],
)  # fmt: skip
def test_server_rope_is_read_like_rope_scaling(given, expected):
    run = served.ServedRun.from_metadata({"base_url": URL, "server_rope": given}, "longctx_kv")
    assert run.rope == expected
    assert run.provenance(300, 300)["server_rope_parameters"] == expected


def test_bad_server_rope_and_base_url_name_the_value():
    with pytest.raises(LongCtxError, match=r"server_rope='warp:2': unknown kind 'warp'; known kinds: .* Write it like server_rope="):
        served.ServedRun.from_metadata({"base_url": URL, "server_rope": "warp:2"}, "longctx_kv")
    with pytest.raises(LongCtxError, match=r"base_url='127.0.0.1:8000' is not an http\(s\) URL"):
        served.ServedRun.from_metadata({"base_url": "127.0.0.1:8000"}, "longctx_kv")


def test_payload_is_what_lm_eval_sends():
    run = served.ServedRun.from_metadata({"base_url": URL, "model": "m", "tokenized_requests": "False"}, "t")
    assert run.payload("hi", None, 32) == {"max_tokens": 32, "temperature": 0, "model": "m", "prompt": "hi"}
    chat = served.ServedRun.from_metadata({"base_url": "http://h/v1/chat/completions"}, "t")
    assert chat.payload("hi", None, 16)["messages"] == [{"role": "user", "content": "hi"}]
    ids = served.ServedRun.from_metadata({"base_url": URL}, "t")
    assert ids.tokenized_requests and ids.payload("hi", [1, 2], 8)["prompt"] == [1, 2]


def test_context_refusals_from_vllm_and_llama_cpp_are_recognised():
    run = served.ServedRun.from_metadata({"base_url": URL}, "longctx_kv")
    vllm = '{"object":"error","message":"This model\'s maximum context length is 4096 tokens. However, you requested 8224 tokens","type":"BadRequestError"}'
    message = run._refusal_message("longctx_kv", 8192, 32, 400, vllm)
    assert "context is too short for the 8192-token prompt plus 32 answer tokens" in message
    assert "--max-model-len 8224" in message
    other = run._refusal_message("longctx_kv", 8192, 32, 401, '{"error": {"message": "invalid api key"}}')
    assert other == f"longctx_kv: the server at {URL} refused the 8192-token prompt (HTTP 401: invalid api key)."


def test_wrong_endpoint_says_base_url_is_the_full_endpoint():
    run = served.ServedRun.from_metadata({"base_url": "http://127.0.0.1:9/v1"}, "longctx_kv")
    message = run._refusal_message("longctx_kv", 4096, 32, 404, '{"detail": "Not Found"}')
    assert "refused the 4096-token prompt (HTTP 404: Not Found)." in message
    assert "base_url must be the full endpoint (e.g. http://host:port/v1/completions)" in message


def test_https_settings_follow_lm_eval_model_args():
    assert served.ServedRun.from_metadata({"base_url": URL}, "t").verify is True
    off = served.ServedRun.from_metadata({"base_url": URL, "verify_certificate": "False"}, "t")
    assert off.verify is False
    ca = served.ServedRun.from_metadata({"base_url": URL, "ca_cert_path": "/etc/ca.pem"}, "t")
    assert ca.verify == "/etc/ca.pem"

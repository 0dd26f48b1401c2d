"""Grid metadata: defaults and a clear error for every bad value."""

import json

import pytest

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.spec import (
    DEFAULT_DEPTHS,
    DEFAULT_LENGTHS,
    GRID_KEYS,
    MAX_LENGTH,
    MAX_PROMPTS,
    GridSpec,
    check_keys,
)


def test_defaults_and_model_args_as_tokenizer():
    spec = GridSpec.from_metadata({"pretrained": "/m", "gguf_file": "x.gguf", "revision": "r", "batch_size": 4}, "t")
    assert spec.max_seq_lengths == DEFAULT_LENGTHS and spec.depths == DEFAULT_DEPTHS
    assert (spec.tokenizer.name, spec.tokenizer.gguf_file, spec.tokenizer.revision) == ("/m", "x.gguf", "r")


def test_explicit_tokenizer_wins_and_lists_are_sorted():
    spec = GridSpec.from_metadata(
        {"pretrained": "/m", "tokenizer": "/t", "max_seq_lengths": [4096, 1024], "depths": "[1, 0.5]"}, "t"
    )
    assert spec.tokenizer.name == "/t" and spec.tokenizer.gguf_file is None
    assert spec.max_seq_lengths == (1024, 4096) and spec.depths == (0.5, 1.0)


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"max_seq_lengths": []}, r"max_seq_lengths is empty"),
        ({"max_seq_lengths": [1024, "big"]}, r"max_seq_lengths=\[1024, 'big'\] holds 'big', not an integer"),
        ({"max_seq_lengths": [1024.5]}, r"holds 1024.5, not a whole number"),
        ({"max_seq_lengths": [0]}, r"must be positive"),
        ({"max_seq_lengths": "[1024,"}, r"is not a list"),
        ({"depths": [0.5, 1.5]}, r"depths=\[0.5, 1.5\] holds 1.5, outside \[0, 1\]"),
        ({"depths": ["deep"]}, r"holds 'deep', not a number"),
        ({"num_samples": 0}, r"num_samples=0 must be at least 1"),
        ({"prompt_style": "alpaca"}, r"prompt_style='alpaca' is not a prompt format. The formats are plain: .*llama2_inst"),
        ({"answer_prefix": "sometimes"}, r"answer_prefix='sometimes' must be true or false"),
        ({"chat_template": "maybe"}, r"chat_template='maybe' must be true or false"),
        ({"pretrained": None}, r"no tokenizer to build prompts with"),
    ],
)
def test_bad_values_name_the_value_and_the_fix(metadata, message):
    with pytest.raises(LongCtxError, match=message) as info:
        GridSpec.from_metadata({"pretrained": "/m", **metadata}, "longctx_kv")
    assert str(info.value).startswith("longctx_kv: ")
    assert "--metadata" in str(info.value) or "true or false" in str(info.value)


# --- metadata keys: a typo of ours is an error; model arguments pass ------------------------


@pytest.mark.parametrize(
    ("key", "value", "right"),
    [
        ("max_seq_length", [256], "max_seq_lengths"),
        ("depth", [0.5], "depths"),
        ("num_sample", 4, "num_samples"),
        ("Depths", [0, 1], "depths"),
        ("max-seq-lengths", [256], "max_seq_lengths"),
        ("prompt_styles", "plain", "prompt_style"),
    ],
)
def test_a_key_close_to_ours_is_an_error_naming_both_and_an_example(key, value, right):
    with pytest.raises(LongCtxError) as info:
        GridSpec.from_metadata({"pretrained": "/m", key: value}, "longctx_kv")
    message = str(info.value)
    example = json.dumps({right: value})
    assert message == (
        f"longctx_kv: unknown metadata key {key!r}; did you mean {right!r}? Write --metadata '{example}'"
    )


def test_model_arguments_and_lm_eval_keys_are_not_flagged():
    metadata = {
        "pretrained": "/m", "batch_size": 4, "dtype": "bfloat16", "rope_scaling": "linear:2", "rope_theta": 1e6,
        "max_length": 8192, "device": "cuda", "trust_remote_code": True, "seq_length": 4096,
        "chat_template_args": {"enable_thinking": False}, "attn_implementation": "sdpa", "gguf_file": "m.gguf",
        "base_url": "http://h/v1/completions", "tokenized_requests": False, "num_concurrent": 4,
        "version": 1.0, "config_source": "/x.yaml", "longctx_served": {},
        "allow_large_grid": False, "server_rope": "none", "add_bos_token": True,
    }  # fmt: skip
    GridSpec.from_metadata(metadata, "t")


def _lm_eval_model_arguments() -> set[str]:
    """Every __init__ argument of every model in the installed lm-eval (read, not imported)."""
    import ast
    from pathlib import Path

    import lm_eval

    names = set()
    for source in (Path(lm_eval.__file__).parent / "models").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                names |= {a.arg for a in node.args.args + node.args.kwonlyargs}
    return names - {"self"}


def test_no_argument_of_lm_eval_s_models_is_taken_for_a_typo():
    names = _lm_eval_model_arguments()
    assert {"pretrained", "max_length", "base_url", "tokenized_requests"} <= names  # the reader still works
    flagged = []
    for name in sorted(names - set(GRID_KEYS)):
        try:
            check_keys({name: 1}, "t")
        except LongCtxError:
            flagged.append(name)
    assert flagged == [], f"add these lm-eval model arguments to spec.NOT_GRID_KEYS: {flagged}"


def test_every_grid_key_is_accepted():
    check_keys({key: None for key in GRID_KEYS}, "t")


# --- sizes: guards against typos that would run for days ------------------------------------


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (
            {"max_seq_lengths": [1024, 1_000_000_000]},
            "longctx_kv: max_seq_lengths holds 1,000,000,000 tokens, above the limit of 1,048,576 per prompt.",
        ),
        (
            {"num_samples": 1e6},
            "longctx_kv: the grid is 3 lengths x 3 depths x 1000000 samples = 9,000,000 prompts, above the "
            "limit of 100,000.",
        ),
        (
            {"max_seq_lengths": [1_000_000], "depths": [0, 0.25, 0.5, 0.75, 1], "num_samples": 500},
            "longctx_kv: the grid is 1 lengths x 5 depths x 500 samples = 2,500,000,000 prompt tokens, above "
            "the limit of 2,000,000,000.",
        ),
    ],
)
def test_a_grid_past_the_guards_is_refused_naming_the_override(metadata, message):
    with pytest.raises(LongCtxError) as info:
        GridSpec.from_metadata({"pretrained": "/m", **metadata}, "longctx_kv")
    assert str(info.value).startswith(message)
    assert str(info.value).endswith('If you mean it, add "allow_large_grid": true to --metadata.')
    spec = GridSpec.from_metadata({"pretrained": "/m", **metadata, "allow_large_grid": True}, "longctx_kv")
    assert "allow_large_grid" not in spec.key_fields()  # lifting a guard does not change the data


def test_a_grid_at_the_guards_passes():
    at_length = {"max_seq_lengths": [MAX_LENGTH], "depths": [0], "num_samples": 1}
    at_prompts = {"max_seq_lengths": [100, 200, 300, 400], "depths": [0, 1], "num_samples": MAX_PROMPTS // 8}
    for metadata in (at_length, at_prompts):
        GridSpec.from_metadata({"pretrained": "/m", **metadata}, "t")
    with pytest.raises(LongCtxError, match="allow_large_grid='maybe' must be true or false"):
        GridSpec.from_metadata({"pretrained": "/m", "allow_large_grid": "maybe"}, "t")


def test_no_tokenizer_names_the_fix_on_the_command_line_and_in_python():
    with pytest.raises(LongCtxError) as error:
        GridSpec.from_metadata({"max_seq_lengths": [256]}, "longctx_kv")
    message = str(error.value)
    assert "pretrained=DIR in --model_args" in message
    assert "lm_eval.simple_evaluate(model_args=" in message and "lm_eval_longctx.task_manager(metadata=" in message

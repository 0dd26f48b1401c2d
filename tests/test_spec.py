"""Grid metadata: defaults and a clear error for every bad value."""

import pytest

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.spec import DEFAULT_DEPTHS, DEFAULT_LENGTHS, GridSpec


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

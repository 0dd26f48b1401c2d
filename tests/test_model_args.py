"""Model arguments checked before anything loads: one line naming the value and the fix."""

import pytest
import torch

from lm_eval_longctx import model_args, window
from lm_eval_longctx.errors import LongCtxError

pytestmark = pytest.mark.tf4  # also run under transformers 4.x (scripts/test.sh)


@pytest.mark.parametrize("value", [-1, 0, "abc", 1.5, True, "4k", [4096]])
def test_a_bad_max_length_names_the_value_and_the_fix(value):
    with pytest.raises(LongCtxError) as info:
        model_args.max_length_arg(value, "the scaled window")
    assert str(info.value) == (
        f"max_length={value!r} is not a number of tokens: give a whole number of at least 1 "
        "(e.g. max_length=16384), or leave it out for the scaled window."
    )


@pytest.mark.parametrize(("value", "expected"), [(None, None), (4096, 4096), ("4096", 4096), (8192.0, 8192)])
def test_max_length_left_out_or_whole(value, expected):
    assert model_args.max_length_arg(value, "x") == expected


def test_the_stock_hf_window_check_reads_max_length_the_same_way():
    assert window.stock_hf_window({"max_length": 300}) == (300, "max_length in --model_args")
    with pytest.raises(LongCtxError, match=r"max_length='abc' is not a number of tokens.*leave it out for the context length in the model's config"):
        window.stock_hf_window({"max_length": "abc", "pretrained": "/m"})


@pytest.mark.parametrize("missing", ["/nonexistent/folder", "./no-model-here", "~/no-model-here-xyz", "a/b/c"])
def test_a_missing_local_folder_is_one_line(missing):
    with pytest.raises(LongCtxError) as info:
        model_args.pretrained_arg(missing)
    assert str(info.value).startswith(f"pretrained={missing}: no such folder. Give the folder of a saved model")


def test_a_hub_name_or_a_built_model_passes_unchanged():
    assert model_args.pretrained_arg("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert model_args.pretrained_arg("gpt2") == "gpt2"
    built = object()
    assert model_args.pretrained_arg(built) is built


def test_a_model_folder_passes_and_tilde_is_expanded(tiny_model_dir, monkeypatch, tmp_path):
    assert model_args.pretrained_arg(tiny_model_dir) == tiny_model_dir
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m").symlink_to(tiny_model_dir)
    assert model_args.pretrained_arg("~/m") == str(tmp_path / "m")


def test_a_file_a_folder_without_config_and_a_missing_gguf_file(tmp_path, tiny_model_dir):
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF")
    with pytest.raises(LongCtxError, match=r"is a file, not a model folder.*pretrained=<its folder>,gguf_file=<its name>"):
        model_args.pretrained_arg(str(weights))
    with pytest.raises(LongCtxError, match=r"has no config.json, so it is not a saved model folder"):
        model_args.pretrained_arg(str(tmp_path))
    assert model_args.pretrained_arg(str(tmp_path), gguf_file="model.gguf") == str(tmp_path)
    with pytest.raises(LongCtxError, match=r"gguf_file=other.gguf: no such file in "):
        model_args.pretrained_arg(str(tmp_path), gguf_file="other.gguf")


@pytest.mark.parametrize(
    ("check", "good", "bad", "message"),
    [
        (model_args.dtype_arg, [None, "auto", "bfloat16", "float16", torch.float32], ["flaot16", "float128", "torch.float16"], "is not a torch dtype"),
        (model_args.device_arg, [None, "auto", "cpu", "cuda", "cuda:1", "mps"], ["cdua", "gpu0"], "is not a device"),
        (model_args.attn_implementation_arg, [None, "sdpa", "eager", "flash_attention_2", "kernels-community/flash-attn"], ["flash", "sdpa2"], "is not one of"),
        (lambda v: model_args.batch_size_arg(v, "batch_size"), [None, 1, "8", "auto", "auto:4", "auto:1.5"], [0, -1, "abc", "auto:", "auto:x", 2.5, True], "use a whole number of at least 1, auto or auto:N"),
        (lambda v: model_args.batch_size_arg(v, "max_batch_size"), [None, 64, "64"], [0, "auto"], "use a whole number of at least 1, e.g. max_batch_size=8"),
    ],
)  # fmt: skip
def test_runtime_arguments(check, good, bad, message):
    for value in good:
        check(value)
    for value in bad:
        with pytest.raises(LongCtxError, match=message) as info:
            check(value)
        assert repr(value) in str(info.value) and "\n" not in str(info.value)

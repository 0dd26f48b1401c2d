"""Mistakes through the stock `lm_eval` command: exit 2, one line naming the value and the fix, no traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LM_EVAL = str(Path(sys.executable).parent / "lm_eval")


def lm_eval(args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([LM_EVAL, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("model", "model_args", "metadata", "line"),
    [
        ("hf", "", {"max_seq_length": [256]},
         "longctx_kv: unknown metadata key 'max_seq_length'; did you mean 'max_seq_lengths'? "
         "Write --metadata '{\"max_seq_lengths\": [256]}'"),
        ("hf", "", {"max_seq_lengths": [1000000000]},
         "longctx_kv: max_seq_lengths holds 1,000,000,000 tokens, above the limit of 1,048,576 per prompt. "
         "If you mean it, add \"allow_large_grid\": true to --metadata."),
        ("hf-longctx", ",max_length=abc", {}, "max_length='abc' is not a number of tokens"),
    ],
)  # fmt: skip
def test_a_mistake_is_one_line_and_exit_2(tmp_path, tiny_model_dir, model, model_args, metadata, line):
    args = ["--model", model, "--model_args", f"pretrained={tiny_model_dir}{model_args}", "--device", "cpu",
            "--tasks", "longctx_kv", "--metadata", json.dumps(metadata)]  # fmt: skip
    out = lm_eval(args, tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"lm-eval-longctx error: {line}" in out.stderr
    assert "Traceback" not in out.stderr and "building prompts" not in out.stderr  # refused before any work


def test_a_missing_pretrained_folder_is_one_line(tmp_path):
    out = lm_eval(["--model", "hf-longctx", "--model_args", "pretrained=/nonexistent/folder", "--tasks", "longctx_kv"], tmp_path)
    assert out.returncode == 2
    assert "lm-eval-longctx error: pretrained=/nonexistent/folder: no such folder." in out.stderr
    assert "Traceback" not in out.stderr


def test_a_cut_cache_file_is_rebuilt_and_the_run_scores_every_prompt(tmp_path, tiny_model_dir):
    args = ["--model", "hf", "--model_args", f"pretrained={tiny_model_dir}", "--device", "cpu", "--tasks", "longctx_kv",
            "--metadata", json.dumps({"max_seq_lengths": [256], "depths": [0, 1], "num_samples": 3}),
            "--output_path", str(tmp_path / "out"), "--log_samples"]  # fmt: skip
    assert lm_eval(args, tmp_path).returncode == 0
    (cached,) = (Path(os.environ["LM_EVAL_LONGCTX_CACHE"]) / "longctx_kv").glob("*.jsonl")
    cached.write_bytes(b"".join(cached.read_bytes().splitlines(keepends=True)[:3]))
    out = lm_eval(args, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"longctx_kv: cache file {cached} is damaged (it holds 2 of 6 records); set aside as" in out.stderr
    newest = max((tmp_path / "out").rglob("samples_longctx_kv_*.jsonl"), key=os.path.getmtime)
    assert len(newest.read_text().splitlines()) == 6


def test_two_rope_settings_in_model_args_are_one_line(tmp_path, tiny_model_dir):
    args = ["--model", "hf-longctx", "--model_args", f"pretrained={tiny_model_dir},rope_scaling=linear:2",
            'rope_scaling={"rope_type": "dynamic", "factor": 2.0}', "--tasks", "longctx_kv"]  # fmt: skip
    out = lm_eval(args, tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "lm-eval-longctx error: --model_args sets rope_scaling twice" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_shrinking_rope_factor_is_one_line(tmp_path, tiny_model_dir):
    out = lm_eval(["--model", "hf-longctx", "--model_args", f"pretrained={tiny_model_dir},rope_scaling=linear:0.5",
                   "--tasks", "longctx_kv"], tmp_path)  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    assert "lm-eval-longctx error: rope_scaling='linear:0.5': factor 0.5 < 1 shrinks the context window" in out.stderr
    assert "Traceback" not in out.stderr

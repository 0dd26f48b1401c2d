"""lm-eval argument mistakes users commonly make: one line with the fix, exit 2, no traceback.

The messages are pure functions (checked in-process); the stock ``lm_eval`` command is run in
subprocesses to check that the CLI wrapper prints them, and leaves every other error alone.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_longctx import arg_errors
from lm_eval_longctx.compat import lmeval_cli

LM_EVAL = str(Path(sys.executable).parent / "lm_eval")


def lm_eval(args, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([LM_EVAL, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def one_line(out: subprocess.CompletedProcess) -> str:
    """The error line: exit 2, the last line on stderr, no traceback."""
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("lm-eval-longctx error: "), out.stderr[-3000:]
    return last


# --------------------------------------------------------------------------- through lm_eval


def test_invalid_json_in_metadata(tmp_path):
    out = lm_eval(["--model", "hf", "--tasks", "longctx_kv", "--metadata", "{'max_seq_lengths': [256],}"], tmp_path)
    assert one_line(out) == (
        "lm-eval-longctx error: --metadata {'max_seq_lengths': [256],} is not valid JSON (Expecting property name "
        "enclosed in double quotes at character 2). Write one JSON object with double-quoted keys and strings, "
        "in single quotes for the shell: --metadata '{\"max_seq_lengths\": [256]}'"
    )


def test_dict_after_a_comma_in_model_args(tmp_path):
    model_args = 'pretrained=x,rope_scaling={"rope_type":"dynamic","factor":2.0}'
    out = lm_eval(["--model", "hf", "--model_args", model_args, "--tasks", "longctx_kv"], tmp_path)
    line = one_line(out)
    assert line.startswith(f"lm-eval-longctx error: --model_args {model_args}: lm-eval 0.4.13 cannot read")
    whole = {"pretrained": "x", "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}
    assert f"--model_args '{json.dumps(whole)}'" in line
    assert "with --model hf-longctx, write rope_scaling=dynamic:2" in line


@pytest.mark.parametrize("given, flag, lm_eval_value", [("batch_size=2", "--batch_size 2", "1"), ("device=cpu", "--device cpu", "cuda:0")])
def test_run_option_inside_model_args(tmp_path, given, flag, lm_eval_value):
    out = lm_eval(["--model", "hf", "--model_args", f"pretrained=/nonexistent,{given}", "--tasks", "longctx_kv"], tmp_path)
    name = given.partition("=")[0]
    assert one_line(out) == (
        f"lm-eval-longctx error: --model_args {given}: lm-eval passes --{name} (here {lm_eval_value}) to the model "
        f"itself, so the model would get {name} twice and fail. Remove {name} from --model_args and use {flag}."
    )


def test_missing_pretrained_folder_for_stock_hf(tmp_path):
    out = lm_eval(["--model", "hf", "--model_args", "pretrained=/nonexistent/folder", "--tasks", "longctx_kv",
                   "--device", "cpu"], tmp_path)  # fmt: skip
    line = one_line(out)
    assert line.startswith("lm-eval-longctx error: --model_args pretrained=/nonexistent/folder: no such folder.")
    assert "lm-eval-longctx smollm2" in line


def test_other_argument_errors_keep_lm_evals_own_message(tmp_path):
    out = lm_eval(["--model", "hf", "--model_args", "pretrained=x,oops", "--tasks", "longctx_kv"], tmp_path)
    assert out.returncode == 2
    assert "expected `key=value`, got 'oops'" in out.stderr
    assert "lm-eval-longctx error" not in out.stderr


# --------------------------------------------------------------------------- the messages


def test_invalid_json_object_without_a_python_reading_shows_an_example():
    message = arg_errors.invalid_json("--metadata", '{"max_seq_lengths": [256}')
    assert message.startswith("--metadata {\"max_seq_lengths\": [256} is not valid JSON (Expecting ',' delimiter")
    assert message.endswith(f"--metadata '{arg_errors.EXAMPLES['--metadata']}'")


def test_key_value_metadata_with_a_dict_becomes_one_json_object():
    message = arg_errors.invalid_json("--metadata", 'max_seq_lengths=[256,512],x={"a": 1}')
    assert "--metadata '{\"max_seq_lengths\": [256, 512], \"x\": {\"a\": 1}}'" in message
    assert "hf-longctx" not in message


@pytest.mark.parametrize(
    "scaling, shorthand",
    [
        ({"rope_type": "dynamic", "factor": 2.0}, "dynamic:2"),
        ({"type": "linear", "factor": 4}, "linear:4"),
        ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}, "yarn:4:orig=4096"),
        ({"rope_type": "longrope", "factor": 4, "short_factor": [1.0, 1.2], "long_factor": [2, 4]},
         "longrope:4:short=1/1.2:long=2/4"),
        ({"factor": 2.0}, None),
        ("dynamic:2", None),
    ],
)  # fmt: skip
def test_rope_shorthand_parses_back_to_the_same_dict(scaling, shorthand):
    from lm_eval_longctx.rope import parse_rope_scaling

    assert arg_errors.rope_shorthand(scaling) == shorthand
    if shorthand:
        expected = {("rope_type" if k == "type" else k): v for k, v in scaling.items()}
        assert parse_rope_scaling(shorthand) == expected


@pytest.mark.parametrize(
    "pretrained, problem",
    [
        ("HuggingFaceTB/SmolLM2-135M", None),  # a hub name: lm-eval's business
        ("gpt2", None),
        ("./not-here", "no such folder"),
        ("~/models/x", "no such folder"),
        ("a/b/c", "no such folder"),
        (None, None),
    ],
)
def test_missing_pretrained(pretrained, problem):
    message = arg_errors.missing_pretrained(pretrained)
    assert (message is None) if problem is None else (problem in message)


def test_pretrained_that_is_a_file_names_its_folder(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert arg_errors.missing_pretrained(str(gguf)) == (
        f"--model_args pretrained={gguf} is a file; give the folder of a Hugging Face model (the one holding "
        f"config.json) (with gguf_file=model.gguf for a GGUF file): pretrained={tmp_path}."
    )
    assert arg_errors.missing_pretrained(str(tmp_path)) is None


@pytest.mark.parametrize(
    "argv, found",
    [
        (["lm_eval", "--metadata", "{x"], ("--metadata", "{x")),
        (["lm_eval", "run", "-a", "{x"], ("--model_args", "{x")),
        (["lm_eval", "--model_args={x"], ("--model_args", "{x")),
        (["lm_eval", "--gen_kwargs", "{x"], None),  # not ours to explain
    ],
)
def test_which_option_held_the_invalid_json(argv, found):
    head, tail = lmeval_cli.INVALID_JSON
    assert lmeval_cli.failed_json_option(f"{head}{{x{tail}", argv) == found
    assert lmeval_cli.failed_json_option("some other error", argv) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--model_args", "pretrained=m,rope_scaling=linear:2", 'rope_scaling={"rope_type": "dynamic", "factor": 2.0}'],
        ["--model_args=pretrained=m,rope_scaling=linear:2", "--tasks", "x", "-a", "rope_scaling=yarn:2"],
        ["--model_args", '{"pretrained": "m", "rope_theta": 1e5}', "rope_theta=5e5"],
    ],
)
def test_a_model_arg_given_twice_is_named(argv):
    message = arg_errors.given_twice(argv)
    assert message is not None and "twice" in message
    assert "lm-eval would keep the last one without a word" in message


def test_a_model_arg_given_once_passes():
    argv = ["--model_args", "pretrained=m,rope_scaling=linear:2", "max_length=4096", "--metadata", '{"rope_scaling": 1}']
    assert arg_errors.given_twice(argv) is None

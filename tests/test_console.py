"""The stock `lm_eval` console script finds and runs our tasks with no --include_path."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent  # the console scripts of the environment running the tests


def script(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"console script {name} is not installed next to {sys.executable}")
    return str(path)


LM_EVAL = str(BIN / "lm_eval")


def run(args, tmp_path, **env):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **env}
    return subprocess.run(args, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=900)


def test_ls_tasks_lists_ours_from_the_installed_package(tmp_path):
    out = run([script("lm_eval"), "ls", "tasks"], tmp_path)
    assert out.returncode == 0, out.stderr
    for name in ("longctx_kv", "longctx_passkey", "longctx_pi_title", "longctx"):
        assert f"|{name} " in out.stdout.replace(" |", "|") or f"|{name}|" in out.stdout.replace(" ", "")


def test_switching_the_hook_off_hides_the_tasks(tmp_path):
    out = run([LM_EVAL, "ls", "tasks"], tmp_path, LM_EVAL_LONGCTX_NO_AUTOLOAD="1")
    assert out.returncode == 0, out.stderr
    assert "longctx_kv" not in out.stdout


def test_group_runs_beside_a_standard_task_in_one_call(tmp_path, tiny_model_dir):
    args = [
        LM_EVAL, "run", "--model", "hf", "--model_args", f"pretrained={tiny_model_dir}",
        "--tasks", "longctx,niah_single_1",
        "--metadata", json.dumps({"max_seq_lengths": [460], "depths": [0.5], "num_samples": 1}),
        "--limit", "3",  # RULER builds 500 samples per length; ours has 1 per task here
        "--output_path", str(tmp_path / "out"), "--log_samples",
    ]  # fmt: skip
    out = run(args, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (results_file,) = glob.glob(str(tmp_path / "out" / "*" / "results_*.json"))
    results = json.load(open(results_file))["results"]
    assert {"longctx", "longctx_kv", "longctx_passkey", "longctx_pi_title", "niah_single_1"} <= set(results)
    assert "exact_len_460,none" in results["longctx_kv"]
    assert "score,none" in results["longctx"]
    assert "|longctx" in out.stdout and "niah_single_1" in out.stdout


def test_user_mistake_is_one_clear_line_not_a_traceback(tmp_path, tiny_model_dir):
    args = [
        LM_EVAL, "run", "--model", "hf", "--model_args", f"pretrained={tiny_model_dir}",
        "--tasks", "longctx_kv", "--metadata", json.dumps({"depths": [2]}),
    ]  # fmt: skip
    out = run(args, tmp_path)
    assert out.returncode == 2
    assert "lm-eval-longctx error: longctx_kv: depths=[2] holds 2.0, outside [0, 1]" in out.stderr
    assert "Traceback" not in out.stderr


def test_helper_command_prints_the_task_folder(tmp_path):
    out = run([script("lm-eval-longctx"), "tasks-dir"], tmp_path)
    assert out.returncode == 0
    assert os.path.isfile(os.path.join(out.stdout.strip(), "longctx.yaml"))

"""lm-eval's consumers and run options with our tasks: samples files `datasets` loads, --check_integrity."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.registration import task_manager

LM_EVAL = str(Path(sys.executable).parent / "lm_eval")
GRID = {"max_seq_lengths": [256, 300], "depths": [0, 1], "num_samples": 2}


def lm_eval(args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([LM_EVAL, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def samples_rows(tiny_model_dir, tmp_path_factory):
    """The rows of a samples file the stock lm_eval command wrote (tiny model, two lengths)."""
    tmp_path = tmp_path_factory.mktemp("run")
    out = lm_eval(["--model", "hf", "--model_args", f"pretrained={tiny_model_dir}", "--device", "cpu", "--tasks",
                   "longctx_kv", "--metadata", json.dumps(GRID), "--output_path", str(tmp_path / "out"),
                   "--log_samples"], tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (path,) = (tmp_path / "out").rglob("samples_longctx_kv_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_samples_rows_carry_length_and_depth_as_plain_fields(samples_rows):
    assert len(samples_rows) == 8
    assert {(r["max_seq_length"], r["depth"]) for r in samples_rows} == {(256, 0.0), (256, 1.0), (300, 0.0), (300, 1.0)}
    assert all(r["max_seq_length"] == r["doc"]["max_seq_length"] for r in samples_rows)
    assert not [key for r in samples_rows for key in r if "_len_" in key or "_depth_" in key]
    assert all(set(r["metrics"]) <= set(r) for r in samples_rows)  # every metric it names is in the row


def _big_file(path: Path, rows: list[dict]) -> Path:
    """Write 256-token rows past the JSON loader's first 10 MB chunk, then the 300-token rows."""
    first = [r for r in rows if r["max_seq_length"] == 256]
    later = [r for r in rows if r["max_seq_length"] == 300]
    with path.open("w", encoding="utf-8") as fh:
        written = 0
        while written < 12 * 2**20:
            for row in first:
                line = json.dumps(row, ensure_ascii=False) + "\n"
                fh.write(line)
                written += len(line.encode())
        for row in later:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def test_a_samples_file_past_10_mb_loads_as_a_dataset_and_writes_parquet(samples_rows, tmp_path):
    import datasets

    path = _big_file(tmp_path / "samples_longctx_kv.jsonl", samples_rows)
    assert path.stat().st_size > 10 * 2**20
    loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
    assert set(loaded.unique("max_seq_length")) == {256, 300} and loaded.features["depth"].dtype == "float64"
    loaded.to_parquet(str(tmp_path / "samples.parquet"))
    assert datasets.Dataset.from_parquet(str(tmp_path / "samples.parquet")).num_rows == loaded.num_rows

    # The rows as lm-eval 0.4.13 alone writes them (a null per-cell field for every other cell) fail there.
    cells = [dict(r, exact_len_300=r["exact"] if r["max_seq_length"] == 300 else None) for r in samples_rows]
    old = _big_file(tmp_path / "old.jsonl", cells)
    with pytest.raises(datasets.exceptions.DatasetGenerationError) as failed:
        datasets.load_dataset("json", data_files=str(old), split="train", cache_dir=str(tmp_path / "hf_old"))
    assert "Couldn't cast array of type double to null" in str(failed.value.__cause__)


def test_check_integrity_leaves_our_tasks_to_their_own_checks(tiny_model_dir, caplog):
    import logging

    import lm_eval

    with caplog.at_level(logging.INFO, logger="lm_eval.longctx"):
        out = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": tiny_model_dir, "device": "cpu"},
                                      tasks=["longctx_kv"], check_integrity=True, bootstrap_iters=0, limit=1,
                                      task_manager=task_manager(metadata={"pretrained": tiny_model_dir, **GRID}))  # fmt: skip
    assert out["results"]["longctx_kv"]["exact,none"] in (0.0, 1.0)
    assert "--check_integrity: longctx_kv verify themselves" in caplog.text


def test_check_integrity_of_other_tasks_without_lm_eval_s_tests_is_one_line():
    from lm_eval import evaluator

    with pytest.raises(LongCtxError, match=r"--check_integrity for arc_easy: lm-eval runs its own tests/test_version_stable.py"):
        evaluator.run_task_tests(task_list=["arc_easy"])

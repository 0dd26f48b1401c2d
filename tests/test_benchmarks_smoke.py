"""The benchmarks' CPU parts run at tiny sizes, so a change of the generators' interface that
breaks a benchmark fails here (datagen.py called passkey_record without its task once)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    """Return the benchmark script ``benchmarks/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_datagen_measures_every_method_at_a_tiny_length(tiny_model_dir):
    from transformers import AutoTokenizer

    from lm_eval_longctx.tokens import PromptCounter

    datagen = load("datagen")
    counter = PromptCounter(AutoTokenizer.from_pretrained(tiny_model_dir))
    row = datagen.measure_length(400, 2, counter, None, 2)
    assert {"kv", "passkey", "tok_pass", "rust_pass", "reference", "reference_tokens"} <= set(row)
    assert all(value > 0 for value in datagen.speeds(row).values() if value is not None)
    first, again, prompts = datagen.cached_rerun({"pretrained": tiny_model_dir}, [300])
    assert prompts == 3 * 2 and first > 0 and again > 0


def test_datagen_main_prints_its_tables(tiny_model_dir, monkeypatch, capsys):
    datagen = load("datagen")
    monkeypatch.setattr(datagen, "ruler_generator", lambda tokenizer: None)  # RULER's own data: not ours to test
    monkeypatch.setattr(sys, "argv", ["datagen.py", "--lengths", "300", "--repeats", "1", "--tokenizer", tiny_model_dir])
    datagen.main()
    out = capsys.readouterr().out
    assert "| 300 |" in out and "measured 300" in out


def test_gpu_speed_metadata_builds_its_data_set_on_cpu(tiny_model_dir):
    pytest.importorskip("torch")
    from lm_eval_longctx.lmeval_task import dataset

    md = load("gpu_speed").metadata(tiny_model_dir, 300, 3)
    rows = dataset("longctx_kv", **md)["test"]
    assert [row["depth"] for row in rows] == [0.0, 0.5, 1.0] and {row["actual_tokens"] for row in rows} == {300}


def test_gpu_ppl_runs_tiny_on_cpu(tmp_path):
    rows = load("gpu_ppl").main(["--tiny", "--repeats", "1", "--out", str(tmp_path / "ppl.json")])
    assert [(row["length"], row["scored"]) for row in rows] == [(128, 127), (128, 127), (256, 255), (256, 255)]
    assert all(row["ratio"] > 0 and row["ours_tokens_per_s"] > 0 for row in rows)
    assert (tmp_path / "ppl.json").is_file()

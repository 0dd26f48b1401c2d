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


def agreement_sample(doc_id, length, answer, prompt="P"):
    return {
        "doc_id": doc_id, "doc": {"max_seq_length": length, "depth": 0.5}, "target": "42",
        "arguments": {"gen_args_0": {"arg_0": f"{prompt}{doc_id}"}}, "prompt_hash": f"h{prompt}{doc_id}",
        "resps": [[answer]], "filtered_resps": [answer],
    }  # fmt: skip


def test_vllm_agreement_counts_agreement_and_keeps_beyond_window_apart():
    agreement = load("vllm_agreement")
    beyond = agreement.BEYOND
    vllm = {("kv", 0): agreement_sample(0, 768, "42"), ("kv", 1): agreement_sample(1, 768, "41"),
            ("kv", 2): agreement_sample(2, 1536, beyond), ("kv", 3): agreement_sample(3, 1536, beyond)}  # fmt: skip
    hf = {("kv", 0): agreement_sample(0, 768, "42"), ("kv", 1): agreement_sample(1, 768, "40"),
          ("kv", 2): agreement_sample(2, 1536, beyond), ("kv", 3): agreement_sample(3, 1536, "42")}  # fmt: skip
    result = agreement.compare(vllm, hf)
    counts = result["counts"]
    assert {k: counts[k] for k in ("prompts", "ran_both", "agree", "beyond_both", "beyond_one")} == {
        "prompts": 4, "ran_both": 2, "agree": 1, "beyond_both": 1, "beyond_one": 1}  # fmt: skip
    assert counts["by_length"] == {768: [1, 2]}
    assert [(d["doc_id"], d["vllm"], d["hf"], d["same_first_chars"]) for d in result["differ"]] == [
        (1, "41", "40", 1), (3, beyond, "42", 0)]  # fmt: skip
    table = agreement.markdown({"linear:2": result}, 1024)
    assert "| `linear:2` | 4 | 2 | **1/2** | 768: 1/2 | 1 | 1 |" in table


def test_vllm_agreement_refuses_runs_that_saw_different_prompts():
    agreement = load("vllm_agreement")
    with pytest.raises(SystemExit, match="different prompts"):
        agreement.compare({("kv", 0): agreement_sample(0, 768, "42")},
                          {("kv", 0): agreement_sample(0, 768, "42", prompt="Q")})  # fmt: skip
    with pytest.raises(SystemExit, match="different documents"):
        agreement.compare({("kv", 0): agreement_sample(0, 768, "42")},
                          {("kv", 1): agreement_sample(1, 768, "42")})  # fmt: skip


def test_vllm_agreement_cuts_only_the_window_of_the_model_copy(tmp_path):
    import json

    agreement = load("vllm_agreement")
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"max_position_embeddings": 8192, "rope_theta": 1e5}))
    (source / "model.safetensors").write_bytes(b"weights")
    copy = agreement.cut_window(source, tmp_path / "cut", 1024)
    assert json.loads((copy / "config.json").read_text()) == {"max_position_embeddings": 1024, "rope_theta": 1e5}
    assert (copy / "model.safetensors").is_symlink() and (copy / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((source / "config.json").read_text())["max_position_embeddings"] == 8192

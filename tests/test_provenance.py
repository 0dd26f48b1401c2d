"""What the results file records for our tasks: the settings actually used, read back as lm-eval's
own consumers read it (json, lm-eval's EvaluationTracker files, the `datasets` JSON loader)."""

import glob
import hashlib
import json
import logging

import pytest

from lm_eval_longctx import provenance
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.registration import task_manager

GRID = {"max_seq_lengths": [240], "depths": [0, 1], "num_samples": 1}  # no pretrained: simple_evaluate's model_args say it
TASKS = ("longctx_kv", "longctx_passkey", "longctx_pi_title")
DEFAULT = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
ALT = "{% for m in messages %}[[{{ m.role }}]] {{ m.content }}{% endfor %}{% if add_generation_prompt %}[[assistant]] {% endif %}"


def evaluate(model, model_args=None, tasks=("longctx",), grid=GRID, **kwargs):
    import lm_eval

    return lm_eval.simple_evaluate(
        model=model, model_args=model_args, tasks=list(tasks), task_manager=task_manager(metadata=grid),
        bootstrap_iters=0, **kwargs,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    """One evaluation of the group through lm-eval's Python API, saved as `lm_eval --output_path` saves it."""
    from lm_eval.loggers import EvaluationTracker

    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LM_EVAL_LONGCTX_CACHE", str(out / "cache"))
        results = evaluate("hf", {"pretrained": tiny_model_dir, "device": "cpu"}, log_samples=True)
    tracker = EvaluationTracker(output_path=str(out / "results"))
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for name, rows in samples.items():
        tracker.save_results_samples(task_name=name, samples=rows)
    return results, out / "results"


def test_python_api_with_its_own_task_manager_needs_no_pretrained_in_metadata(run, tiny_model_dir):
    results, _ = run
    for task in TASKS:
        assert results["configs"][task]["metadata"]["pretrained"] == tiny_model_dir  # learned from model_args
        assert 0.0 <= results["results"][task]["score,none"] <= 1.0


def test_results_record_the_settings_actually_used(run, tiny_model_dir):
    from lm_eval_longctx.tokens import PromptCounter, TokenizerSource, load_tokenizer

    results, _ = run
    fingerprint = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir))).fingerprint()
    for task in TASKS:
        record = results["configs"][task]["metadata"]["longctx"]
        needle = task != "longctx_pi_title"
        assert record["max_seq_lengths"] == [240]
        assert record["depths"] == ([0.0, 1.0] if needle else [0.0])
        assert record["num_samples"] == 1 and record["num_prompts"] == (2 if needle else 1)
        # defaults nobody typed: seed, prompt style, answer prefix, no chat template
        assert (record["seed"], record["prompt_style"], record["answer_prefix"]) == (1234, "plain", True)
        assert record["chat_template"] is None
        assert record["tokenizer"]["name"] == tiny_model_dir and record["tokenizer"]["fingerprint"] == fingerprint
        assert record["generator_version"] == 3 and len(record["data_key"]) == 64


def test_the_group_s_version_has_the_type_of_its_tasks_versions(run):
    versions = run[0]["versions"]
    assert {versions[name] for name in ("longctx", *TASKS)} == {"2.0"}  # lm-eval writes group versions as str


def test_the_saved_files_load_with_json_and_with_datasets_as_lm_eval_s_hub_export_does(run, tmp_path):
    import datasets

    _, folder = run
    [results_file] = glob.glob(str(folder / "**" / "results_*.json"), recursive=True)
    saved = json.loads(open(results_file, encoding="utf-8").read())
    for task in TASKS:
        config = saved["configs"][task]
        assert config["process_results"] == f"lm_eval_longctx.lmeval_task.Scorer({task!r})"
        assert "0x" not in json.dumps(config)  # no object repr with a memory address: the same in every run
        assert config["metadata"]["longctx"]["seed"] == 1234
    # EvaluationTracker.recreate_metadata_card reads the latest results file with the JSON loader.
    table = datasets.load_dataset("json", data_files=results_file, split="train", cache_dir=str(tmp_path))
    table.to_parquet(str(tmp_path / "results.parquet"))
    for samples_file in glob.glob(str(folder / "**" / "samples_*.jsonl"), recursive=True):
        rows = datasets.load_dataset("json", data_files=samples_file, split="train", cache_dir=str(tmp_path))
        rows.to_parquet(str(tmp_path / "samples.parquet"))


# --- the chat template fed -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_template_model(tmp_path_factory, bpe_tokenizer_dir):
    """A tiny model whose tokenizer holds two named chat templates, "default" and "alt"."""
    from conftest import make_tiny_llama
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bpe_tokenizer_dir)
    tokenizer.chat_template = {"default": DEFAULT, "alt": ALT}
    tokenizer_dir = tmp_path_factory.mktemp("two_templates_tok")
    tokenizer.save_pretrained(tokenizer_dir)
    return make_tiny_llama(tmp_path_factory.mktemp("two_templates"), str(tokenizer_dir))


def fed_contexts_are_exact(results, model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for row in results["samples"]["longctx_kv"]:
        context = row["arguments"][0][0]
        assert len(tokenizer(context)["input_ids"]) == row["doc"]["max_seq_length"]
        yield context


def test_a_named_template_lm_eval_does_not_feed_is_warned_once_and_the_fed_one_recorded(two_template_model, caplog):
    # lm-eval 0.4.13 HFLM.apply_chat_template calls tokenizer.apply_chat_template(...) without the
    # name given to --apply_chat_template: the default template is fed.
    with caplog.at_level(logging.WARNING, logger="lm_eval.longctx"):
        results = evaluate(
            "hf", {"pretrained": two_template_model, "device": "cpu"}, tasks=TASKS[:2], grid={**GRID, "depths": [0]},
            apply_chat_template="alt", log_samples=True,
        )
    warnings = [r.getMessage() for r in caplog.records if "does not feed the template named 'alt'" in r.getMessage()]
    assert len(warnings) == 1, warnings  # two tasks, one warning
    assert '"chat_template_args": {"chat_template": "alt"}' in warnings[0]  # and the fix
    for task in TASKS[:2]:
        chat = results["configs"][task]["metadata"]["longctx"]["chat_template"]
        assert chat == {"name": "default", "sha256": hashlib.sha256(DEFAULT.encode()).hexdigest(), "args": None}
    assert all(context.startswith("<user>") for context in fed_contexts_are_exact(results, two_template_model))


def test_the_template_fed_through_chat_template_args_is_the_one_counted_and_recorded(two_template_model, caplog):
    model_args = {"pretrained": two_template_model, "device": "cpu", "chat_template_args": {"chat_template": "alt"}}
    with caplog.at_level(logging.WARNING, logger="lm_eval.longctx"):
        results = evaluate(
            "hf", model_args, tasks=TASKS[:1], grid={**GRID, "depths": [0]}, apply_chat_template="alt", log_samples=True
        )
    assert not [r for r in caplog.records if "does not feed" in r.getMessage()]
    chat = results["configs"]["longctx_kv"]["metadata"]["longctx"]["chat_template"]
    assert chat["name"] == "alt" and chat["sha256"] == hashlib.sha256(ALT.encode()).hexdigest()
    assert all(context.startswith("[[user]] ") for context in fed_contexts_are_exact(results, two_template_model))


# --- a model given as a built object ---------------------------------------------------------------


def test_a_built_model_object_gives_the_tasks_its_tokenizer_and_window(tiny_model_dir, hflm_cache):
    # No pretrained anywhere: the tasks learn the tokenizer and the 512-token window from the object.
    hflm = hflm_cache(tiny_model_dir)
    with pytest.raises(LongCtxError, match=r"prompts of \[600\] tokens do not fit the model's window of 512"):
        evaluate(hflm, tasks=TASKS[:1], grid={**GRID, "max_seq_lengths": [600]})
    assert provenance.model_settings(hflm, None)["tokenizer"] == tiny_model_dir


def test_model_settings_reads_model_args_as_lm_eval_does():
    assert provenance.model_settings("hf", "pretrained=/m,max_length=4096") == {"pretrained": "/m", "max_length": 4096}
    assert provenance.model_settings("hf", {"pretrained": "/m"}) == {"pretrained": "/m"}
    assert provenance.model_settings("hf", None) == {}


def test_chat_template_args_take_enable_thinking_as_lm_eval_s_hf_model_does():
    assert provenance.chat_template_args({"enable_thinking": False}, "t") == {"enable_thinking": False}
    assert provenance.chat_template_args({"chat_template_args": '{"chat_template": "alt"}'}, "t") == {"chat_template": "alt"}
    with pytest.raises(LongCtxError, match="chat_template_args=3 is not a dict"):
        provenance.chat_template_args({"chat_template_args": 3}, "t")

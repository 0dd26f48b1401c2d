"""The lm-eval glue: per-cell metrics, beyond-window scoring, refusals, a real evaluation."""

import pytest

from lm_eval_longctx import lmeval_task, window
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.registration import task_manager


def kv_doc(length=1024, depth=0.5, answer="1b2c"):
    return {"max_seq_length": length, "depth": depth, "answer": answer}


def test_kv_scores_and_beyond_window_flag():
    out = lmeval_task.process_kv(kv_doc(), ["The value is '1b2c'."])
    assert out == {"score": 1.0, "exact": 1.0, "contains": 1.0, "beyond_window": 0.0}
    assert lmeval_task.process_kv(kv_doc(), ["dead, or 1b2c"])["exact"] == 0.0


def test_beyond_window_counts_as_failed():
    out = lmeval_task.process_kv(kv_doc(length=8192), [window.BEYOND_WINDOW])
    assert out == {"score": 0.0, "exact": 0.0, "contains": 0.0, "beyond_window": 1.0}


def test_passkey_and_title_scores():
    assert lmeval_task.process_passkey(kv_doc(answer="12345"), [" 12345."])["exact"] == 1.0
    title = lmeval_task.process_pi_title({"max_seq_length": 6000}, ["Extending Context Window of Large Language Models"])
    assert title == {"score": 1.0, "found": 1.0, "beyond_window": 0.0}


@pytest.fixture
def metadata(tiny_model_dir):
    return {"pretrained": tiny_model_dir, "max_seq_lengths": [240, 300], "depths": [0, 1], "num_samples": 2}


def test_task_declares_a_metric_per_cell(metadata):
    task = task_manager(metadata=metadata).load(["longctx_kv"])["tasks"]["longctx_kv"]
    aggregations = task.aggregation()
    for name in ["exact_len_240", "exact_len_300", "contains_depth_0", "exact_depth_1", "beyond_window_len_300"]:
        assert name in aggregations
    assert task.higher_is_better()["exact_len_240"] is True
    assert task.higher_is_better()["beyond_window"] is False
    assert len(task.dataset["test"]) == 8


def test_lengths_the_stock_hf_model_would_truncate_are_refused(metadata):
    with pytest.raises(LongCtxError, match=r"prompts of \[600\] tokens do not fit the model's window of 512"):
        task_manager(metadata={**metadata, "max_seq_lengths": [240, 600]}).load(["longctx_kv"])


def test_apply_chat_template_alone_rebuilds_prompts_with_the_template(metadata, hflm_cache):
    hflm = hflm_cache(metadata["pretrained"])
    task = task_manager(metadata=metadata).load(["longctx_kv"])["tasks"]["longctx_kv"]
    task.build_all_requests(apply_chat_template=True, chat_template=hflm.apply_chat_template)
    assert task.higher_is_better()["exact_len_240"] is True
    for instance in task.instances:
        assert instance.doc["chat_template"] is True
        ids, _ = hflm.tok_batch_encode([instance.arguments[0]])
        assert ids.shape[1] == instance.doc["max_seq_length"]


def test_chat_template_contradicting_the_run_is_refused(metadata):
    task = task_manager(metadata={**metadata, "chat_template": False}).load(["longctx_kv"])["tasks"]["longctx_kv"]
    with pytest.raises(LongCtxError, match=r"built with chat_template=False but the run has --apply_chat_template"):
        task.build_all_requests(apply_chat_template=True, chat_template=lambda m, **k: "x")


def test_fewshot_and_system_prompts_are_refused(metadata):
    task = task_manager(metadata=metadata).load(["longctx_kv"])["tasks"]["longctx_kv"]
    doc = task.dataset["test"][0]
    with pytest.raises(LongCtxError, match="zero-shot"):
        task.fewshot_context(doc, 2)
    assert task.fewshot_context(doc, 0) == doc["prompt"]


def test_simple_evaluate_reports_every_cell(metadata):
    import lm_eval

    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": metadata["pretrained"], "device": "cpu"},
        tasks=["longctx"],
        task_manager=task_manager(metadata=metadata),
        log_samples=True,
        bootstrap_iters=0,
    )
    kv = results["results"]["longctx_kv"]
    for name in ["exact", "contains", "exact_len_240", "exact_len_300", "exact_depth_0", "exact_depth_1"]:
        assert 0.0 <= kv[f"{name},none"] <= 1.0
    assert kv["beyond_window,none"] == 0
    assert results["results"]["longctx"]["score,none"] == pytest.approx(
        sum(results["results"][t]["score,none"] for t in ("longctx_kv", "longctx_passkey", "longctx_pi_title")) / 3
    )
    assert results["higher_is_better"]["longctx"]["score"] is True
    samples = results["samples"]["longctx_kv"]
    assert len(samples) == 8 and {s["doc"]["actual_tokens"] for s in samples} == {240, 300}

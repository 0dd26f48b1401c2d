"""The lm-eval glue: per-cell metrics, beyond-window scoring, refusals, a real evaluation."""

import re

import pytest

from lm_eval_longctx import lmeval_task, window
from lm_eval_longctx.catalog import TASKS
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.registration import task_manager

process_kv = lmeval_task.Scorer(TASKS["longctx_kv"])
process_passkey = lmeval_task.Scorer(TASKS["longctx_passkey"])
process_pi_title = lmeval_task.Scorer(TASKS["longctx_pi_title"])


def kv_doc(length=1024, depth=0.5, answer="1b2c"):
    return {"max_seq_length": length, "depth": depth, "answer": answer}


def test_kv_scores_and_beyond_window_flag():
    out = process_kv(kv_doc(), ["The value is '1b2c'."])
    assert out == {"score": 1.0, "exact": 1.0, "contains": 1.0, "beyond_window": 0.0}
    assert process_kv(kv_doc(), ["dead, or 1b2c"])["exact"] == 0.0


def test_beyond_window_counts_as_failed():
    out = process_kv(kv_doc(length=8192), [window.BEYOND_WINDOW])
    assert out == {"score": 0.0, "exact": 0.0, "contains": 0.0, "beyond_window": 1.0}


def test_passkey_and_title_scores():
    assert process_passkey(kv_doc(answer="12345"), [" 12345."])["exact"] == 1.0
    title = process_pi_title({"max_seq_length": 6000}, ["Extending Context Window of Large Language Models"])
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
    prefix = task.doc_to_prefix(doc)
    assert prefix == doc["answer_prefix"] and prefix.startswith("The value of the key")
    assert task.fewshot_context(doc, 0, gen_prefix=prefix) == doc["prompt"] + " " + prefix


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


def test_each_evaluation_learns_its_own_model_s_window_rule(metadata):
    # lm-eval builds the model before the tasks and never shows it to them: what the tasks know of it
    # lasts one simple_evaluate call (window.evaluation), nothing carries into the next one.
    import lm_eval

    from lm_eval_longctx.model import HFLongCtxLM

    grid = {**metadata, "max_seq_lengths": [600], "depths": [0], "num_samples": 1}  # 600 > the 512 window
    tasks = task_manager(metadata=grid)  # one index for the three evaluations; each loads its tasks anew

    def evaluate(model, **kwargs):
        return lm_eval.simple_evaluate(model=model, tasks=["longctx_kv"], task_manager=tasks, bootstrap_iters=0, **kwargs)

    marked = evaluate("hf-longctx", model_args={"pretrained": grid["pretrained"], "device": "cpu"})
    assert marked["results"]["longctx_kv"]["beyond_window,none"] == 1
    with pytest.raises(LongCtxError, match=r"prompts of \[600\] tokens do not fit the model's window of 512"):
        evaluate("hf", model_args={"pretrained": grid["pretrained"], "device": "cpu"})  # right after: stock rule
    built = HFLongCtxLM(pretrained=grid["pretrained"], device="cpu")
    assert evaluate(built)["results"]["longctx_kv"]["beyond_window,none"] == 1  # a built object says so too
    assert window.model_marks_beyond_window() is False  # and outside any evaluation, the stock rule


# --- sizes checked before any prompt is built ---------------------------------------------------


def build(task, **metadata):
    return lmeval_task.dataset(longctx_task=task, **metadata)


@pytest.fixture
def no_prompts_built(monkeypatch):
    """Make building any prompt fail the test."""
    import dataclasses

    from lm_eval_longctx.catalog import TASKS

    def never(*args, **kwargs):
        raise AssertionError("prompts were built before the sizes were checked")

    for name, task in TASKS.items():
        monkeypatch.setitem(TASKS, name, dataclasses.replace(task, family=dataclasses.replace(task.family, generate=never)))


def test_the_window_is_checked_before_any_prompt_is_built(metadata, no_prompts_built):
    # 512 - the 24 answer tokens of longctx_kv = 488 of room
    with pytest.raises(LongCtxError, match=r"^longctx_kv: prompts of \[489, 600\] tokens do not fit the model's window of 512"):
        build("longctx_kv", **{**metadata, "max_seq_lengths": [240, 489, 600]})
    with pytest.raises(LongCtxError, match=r"^longctx_pi_title: prompts of \[600\] tokens do not fit"):
        build("longctx_pi_title", **{**metadata, "max_seq_lengths": [600]})
    with pytest.raises(LongCtxError, match=r"^max_length='abc' is not a number of tokens"):
        build("longctx_passkey", **{**metadata, "max_length": "abc"})


def test_the_budget_before_building_follows_the_prompt_mode(metadata, no_prompts_built):
    # Without the answer prefix, longctx_kv keeps the first version's 32 answer tokens: 480 of room.
    with pytest.raises(LongCtxError, match=r"prompts of \[481\] tokens do not fit"):
        build("longctx_kv", **{**metadata, "max_seq_lengths": [481], "answer_prefix": False})


def test_a_served_model_s_settings_are_checked_before_any_prompt_is_built(metadata, no_prompts_built):
    served_metadata = {
        "tokenizer": metadata["pretrained"], "base_url": "http://127.0.0.1:9/v1/completions", "max_seq_lengths": [4000],
    }  # fmt: skip
    with pytest.raises(LongCtxError, match=r"local-completions sends token ids and cuts them"):
        build("longctx_kv", **served_metadata)


def test_an_absurd_grid_is_refused_before_building_even_with_hf_longctx_loaded(metadata, no_prompts_built):
    with window.evaluation(model_marks_beyond_window=True):  # hf-longctx marks over-long prompts
        with pytest.raises(LongCtxError, match=r"max_seq_lengths holds 1,000,000,000 tokens.*allow_large_grid"):
            build("longctx_kv", **{**metadata, "max_seq_lengths": [1e9]})
        with pytest.raises(LongCtxError, match=r"9,000,000 prompts, above the limit of 100,000.*allow_large_grid"):
            build("longctx_passkey", **{**metadata, "max_seq_lengths": [240, 300, 400], "depths": [0, 0.5, 1], "num_samples": 1e6})


# --- progress: a bar with rate and ETA over every prompt token -----------------------------


def test_progress_advances_with_each_prompt_built_the_length_check_s_included():
    from lm_eval_longctx.fill import Layout, build_grid
    from lm_eval_longctx.spec import GridSpec

    class OneTokenCounter:
        def count(self, *texts):
            return 1

    events = []

    def record(length, depth, sample):
        events.append(("built", length))
        return {"length": length, "depth": depth, "sample": sample}

    spec = GridSpec(max_seq_lengths=(10, 20), depths=(0.0, 1.0), num_samples=3)
    layout = Layout("head", "needle", "tail", "\n")
    build_grid(spec, OneTokenCounter(), "t", lambda i: layout, record, lambda n: events.append(("progress", n)))
    # The length check builds all samples of the shortest length first; each shows at once.
    assert events[:6] == [("built", 10), ("progress", 10)] * 3
    assert events == [e for length in [10] * 6 + [20] * 6 for e in (("built", length), ("progress", length))]


def test_the_bar_of_each_task_ends_at_its_total_and_closes(metadata, monkeypatch):
    bars = []

    def recording(task, spec):
        bars.append(real(task, spec))
        return bars[-1]

    real = lmeval_task.progress_bar
    monkeypatch.setattr(lmeval_task, "progress_bar", recording)
    build("longctx_kv", **metadata)
    build("longctx_pi_title", **metadata)
    kv, title = bars
    assert (kv.total, kv.n) == ((240 + 300) * 2 * 2, (240 + 300) * 2 * 2)
    assert (title.total, title.n) == (240 + 300, 240 + 300)
    # What the bar shows one second in, after one token: elapsed<ETA and the rate.
    line = kv.format_meter(**{**kv.format_dict, "n": 1, "elapsed": 1.0})
    assert re.search(r"Building longctx_kv prompts: .*\[00:01<\d\d:\d\d, 1\.00tok/s\]", line), line
    assert kv.disable and title.disable  # closed: nothing redraws after the run's last line


# --- run options of lm-eval (issue 19): one line, or the right prompts -------------------------


def evaluate_kv(metadata, model="hf", model_args=None, **kwargs):
    import lm_eval

    return lm_eval.simple_evaluate(
        model=model,
        model_args={"pretrained": metadata["pretrained"], "device": "cpu", **(model_args or {})},
        tasks=["longctx_kv"],
        task_manager=task_manager(metadata={**metadata, **(model_args or {})}),
        bootstrap_iters=0,
        **kwargs,
    )


@pytest.mark.parametrize("limit", [0, -1, 0.0])
def test_a_limit_that_selects_no_prompt_is_one_line(metadata, limit):
    with pytest.raises(LongCtxError, match=r"longctx_kv: --limit selects -?\d+ of its 8 prompts. Give a whole number"):
        evaluate_kv(metadata, limit=limit)


@pytest.mark.parametrize(("samples", "what"), [([1, 99], "holds 99"), ([2, 2], "repeats an index"), ([-1], "holds -1")])
def test_samples_that_name_no_prompt_are_one_line(metadata, samples, what):
    with pytest.raises(LongCtxError, match=rf"--samples longctx_kv=\[.*\] {what}; give distinct prompt indices from 0 to 7"):
        evaluate_kv(metadata, samples={"longctx_kv": samples})


def test_a_gen_kwargs_answer_budget_counts_in_the_stock_window_check(metadata):
    # 300-token prompts + 230 answer tokens exceed the 512 window: lm-eval's hf would cut them.
    with pytest.raises(LongCtxError, match=r"prompts of \[300\] tokens do not fit .* \(max_gen_toks=230, from --gen_kwargs"):
        evaluate_kv(metadata, gen_kwargs="max_gen_toks=230")
    with pytest.raises(LongCtxError, match=r"max_gen_toks=5000 \(from --gen_kwargs.*\) leaves no room for a prompt"):
        evaluate_kv(metadata, gen_kwargs="max_gen_toks=5000")  # lm-eval's own assertion otherwise


def test_the_request_cache_holds_one_set_per_gen_kwargs_and_samples(metadata, tmp_path, monkeypatch):
    import lm_eval.caching.cache as request_cache

    monkeypatch.setattr(request_cache, "PATH", str(tmp_path / "requests"))
    first = evaluate_kv(metadata, cache_requests=True, log_samples=True, gen_kwargs="max_gen_toks=5")
    again = evaluate_kv(metadata, cache_requests=True, log_samples=True, gen_kwargs="max_gen_toks=7")
    assert {s["arguments"][0][1]["max_gen_toks"] for s in first["samples"]["longctx_kv"]} == {5}
    assert {s["arguments"][0][1]["max_gen_toks"] for s in again["samples"]["longctx_kv"]} == {7}
    picked = evaluate_kv(metadata, cache_requests=True, log_samples=True, samples={"longctx_kv": [3, 6]})
    docs = task_manager(metadata=metadata).load(["longctx_kv"])["tasks"]["longctx_kv"].dataset["test"]
    assert [s["doc"]["prompt"] for s in picked["samples"]["longctx_kv"]] == [docs[3]["prompt"], docs[6]["prompt"]]


def test_predict_only_writes_every_answer(metadata):
    out = evaluate_kv(metadata, predict_only=True, log_samples=True)
    rows = out["samples"]["longctx_kv"]
    assert len(rows) == 8 and all(isinstance(r["filtered_resps"][0], str) for r in rows)
    assert {(r["max_seq_length"], r["depth"]) for r in rows} == {(240, 0.0), (240, 1.0), (300, 0.0), (300, 1.0)}


def test_lengths_past_the_trained_window_without_scaling_are_warned_once_and_recorded(metadata, caplog):
    import logging

    grid = {**metadata, "max_seq_lengths": [300, 600, 700], "depths": [0], "num_samples": 1}
    with caplog.at_level(logging.WARNING, logger="lm_eval.longctx"):
        out = evaluate_kv(grid, model_args={"max_length": 1024})
    said = [r.getMessage() for r in caplog.records if "run past the model's trained window" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("prompts of [600, 700] tokens run past the model's trained window of 512")
    recorded = out["configs"]["longctx_kv"]["metadata"]["longctx_extrapolated"]
    assert recorded == {"native_window": 512, "max_length": 1024, "lengths": [600, 700]}
    inside = evaluate_kv({**grid, "max_seq_lengths": [300]}, model_args={"max_length": 1024})
    assert "longctx_extrapolated" not in inside["configs"]["longctx_kv"]["metadata"]


def test_depths_that_would_share_a_cell_are_refused(metadata, no_prompts_built):
    with pytest.raises(LongCtxError, match=r"depths 0.1234561, 0.1234564 would share one metric cell \(exact_depth_0.123456\)"):
        build("longctx_kv", **{**metadata, "depths": [0.1234561, 0.1234564]})

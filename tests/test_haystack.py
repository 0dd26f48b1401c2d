"""The kv family's records: placement, secrecy, determinism, the variants' needles and parameters
(exact lengths for every task and format: test_contract.py)."""

import re
import subprocess
import sys

import pytest
from conftest import generate, lm_eval_context

from lm_eval_longctx import haystack
from lm_eval_longctx.cache import dumps_records
from lm_eval_longctx.catalog import TASKS
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.fill import needle_depths
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter, TokenizerSource, load_tokenizer

LINE = re.compile(r"^'([0-9a-f]{8})' = '([0-9a-f]{4})'$")


def counter_for(model_dir, chat_template=False):
    return PromptCounter(load_tokenizer(TokenizerSource(model_dir)), chat_template=chat_template)


def generate_kv(spec, counter):
    return generate("longctx_kv", spec, counter)


def kv_record(spec, counter, length, depth, sample):
    return haystack.kv_record(TASKS["longctx_kv"], spec, counter, length, depth, sample).to_dict()


def test_bos_is_counted_for_tokenizers_that_add_it(sp_model_dir, hflm_cache):
    record = kv_record(GridSpec(), counter_for(sp_model_dir), 200, 0.5, 0)
    hflm = hflm_cache(sp_model_dir)
    ids, _ = hflm.tok_batch_encode([lm_eval_context(hflm, record, chat_template=False)])
    assert ids[0, 0].item() == load_tokenizer(TokenizerSource(sp_model_dir)).bos_token_id
    assert ids.shape[1] == 200


def test_prompt_format_follows_the_reference(tiny_model_dir):
    record = kv_record(GridSpec(), counter_for(tiny_model_dir), 400, 0.5, 0)
    header, body = record["prompt"].split("\n\n", 1)
    assert header == "## UUID key/value pairs to remember:"
    *lines, blank, question = body.split("\n")
    assert blank == ""
    assert question == f"What is the value of the key '{record['key']}'?"
    assert all(LINE.match(line) for line in lines)
    assert record["answer_prefix"] == f"The value of the key '{record['key']}' is '"


def test_llama2_inst_wraps_the_question_and_the_prefix_follows(tiny_model_dir):
    spec = GridSpec(prompt_style="llama2_inst")
    record = kv_record(spec, counter_for(tiny_model_dir), 400, 0.5, 0)
    assert record["prompt"].startswith("[INST] ## UUID key/value pairs to remember:\n\n")
    assert re.search(r"'\n\n\n What is the value of the key '[0-9a-f]{8}'\? \[/INST\]$", record["prompt"])
    assert record["answer_prefix"].startswith("The value of the key")


def test_first_version_prompts_have_no_prefix_and_the_old_wrapper(tiny_model_dir):
    spec = GridSpec(prompt_style="llama2_inst", answer_prefix=False)
    record = kv_record(spec, counter_for(tiny_model_dir), 400, 0.5, 0)
    assert re.search(r"'\n\n What is the value of the key '[0-9a-f]{8}'\? \[/INST\]$", record["prompt"])
    assert record["answer_prefix"] == ""


def test_secret_key_appears_once_and_its_value_nowhere_else(tokenizer_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tokenizer_dir)))
    for record in generate_kv(GridSpec(max_seq_lengths=(2000,), num_samples=3), counter):
        pairs = [LINE.match(line).groups() for line in record["prompt"].split("\n") if LINE.match(line)]
        keys = [k for k, _ in pairs]
        assert keys.count(record["key"]) == 1
        assert len(set(keys)) == len(keys)
        assert [v for k, v in pairs if v == record["answer"]] == [record["answer"]]
        assert dict(pairs)[record["key"]] == record["answer"]


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_needle_sits_at_its_depth(tiny_model_dir, depth):
    counter = counter_for(tiny_model_dir)
    record = kv_record(GridSpec(), counter, 1200, depth, 0)
    _, ids, _ = counter.encode(record["prompt"])
    tokenizer = counter.tokenizer
    needle_line = f"'{record['key']}' = '{record['answer']}'"
    # The token at the recorded offset starts the secret line.
    assert tokenizer.decode(ids[record["needle_token_offset"] :]).startswith(needle_line)
    # Text before it is depth x length, within one line, clamped to after the header and
    # before the question.
    first = counter.count("## UUID key/value pairs to remember:\n\n")
    last = 1200 - counter.count(record["prompt"][record["prompt"].index(needle_line) :], record["answer_prefix"])
    assert abs(record["needle_token_offset"] - min(max(depth * 1200, first), last)) <= 20


def test_same_inputs_give_byte_identical_records_in_another_process(tiny_model_dir):
    spec = GridSpec(max_seq_lengths=(300, 700), seed=7)
    here = dumps_records(generate_kv(spec, counter_for(tiny_model_dir)))
    code = (
        "import sys\n"
        "from lm_eval_longctx.cache import dumps_records\n"
        "from lm_eval_longctx.catalog import TASKS\n"
        "from lm_eval_longctx.spec import GridSpec\n"
        "from lm_eval_longctx.tokens import PromptCounter, TokenizerSource, load_tokenizer\n"
        f"c = PromptCounter(load_tokenizer(TokenizerSource({tiny_model_dir!r})))\n"
        "t = TASKS['longctx_kv']\n"
        "records = [r.to_dict() for r in t.generate(GridSpec(max_seq_lengths=(300, 700), seed=7), c)]\n"
        "sys.stdout.buffer.write(dumps_records(records))\n"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert there == here


def test_seed_changes_the_data(tiny_model_dir):
    counter = counter_for(tiny_model_dir)
    a = kv_record(GridSpec(seed=1), counter, 300, 0.5, 0)
    b = kv_record(GridSpec(seed=2), counter, 300, 0.5, 0)
    assert a["key"] != b["key"] and a["prompt"] != b["prompt"]


@pytest.mark.parametrize("prompt_style", ["plain", "llama2_inst"])
def test_too_small_a_length_says_a_minimum_that_works(tokenizer_dir, prompt_style):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tokenizer_dir)))
    spec = GridSpec(max_seq_lengths=(20, 500), num_samples=4, prompt_style=prompt_style)
    with pytest.raises(LongCtxError, match=r"length 20 in max_seq_lengths is too small.*Use lengths of at least (\d+)") as info:
        generate_kv(spec, counter)
    minimum = int(re.search(r"at least (\d+)", str(info.value)).group(1))
    fixed = GridSpec(max_seq_lengths=(minimum,), num_samples=4, prompt_style=prompt_style)
    assert {r["actual_tokens"] for r in generate_kv(fixed, counter)} == {minimum}


def test_a_sample_keeps_its_secret_across_lengths_and_depths(tiny_model_dir):
    records = generate_kv(GridSpec(max_seq_lengths=(300, 900), num_samples=2), counter_for(tiny_model_dir))
    for sample in (0, 1):
        assert len({(r["key"], r["answer"]) for r in records if r["sample"] == sample}) == 1
    assert len({r["key"] for r in records}) == 2


# --- the family's variants: needles, placement, parameters ------------------------------------


def variant_records(name, model_dir, metadata=None, **grid):
    task = TASKS[name]
    fields = {"max_seq_lengths": (1200,), "depths": (0.5,), "num_samples": 2, **grid}
    spec = GridSpec(**fields, params=task.parameters(metadata or {}))
    return [r.to_dict() for r in task.generate(spec, counter_for(model_dir))]


def haystack_pairs(record):
    return [LINE.match(line).groups() for line in record["prompt"].split("\n") if LINE.match(line)]


@pytest.mark.parametrize(
    "depth, count, expected",
    [(0.3, 1, (0.3,)), (0.5, 4, (0.5, 0.75, 0.0, 0.25)), (1.0, 4, (1.0, 0.25, 0.5, 0.75)), (0.0, 2, (0.0, 0.5))],
)
def test_several_needles_spread_evenly_from_the_asked_one(depth, count, expected):
    assert needle_depths(depth, count) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["longctx_kv_multikey", "longctx_kv_multivalue", "longctx_kv_multiquery"])
@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_each_needle_sits_at_its_depth(tiny_model_dir, name, depth):
    counter = counter_for(tiny_model_dir)
    (record, _) = variant_records(name, tiny_model_dir, depths=(depth,))
    _, ids, _ = counter.encode(record["prompt"])
    first = counter.count(haystack.HEADER)
    last = 1200 - counter.count(record["prompt"][record["prompt"].index("\n\n", len(haystack.HEADER)) :], record["answer_prefix"])
    depths = needle_depths(depth, len(record["needles"]))
    for (key, value), offset, needle_depth in zip(record["needles"], record["needle_token_offsets"], depths):
        assert counter.tokenizer.decode(ids[offset:]).startswith(f"'{key}' = '{value}'")
        # Within a line or two of its depth (four needles take room), clamped to the haystack.
        assert abs(offset - min(max(needle_depth * 1200, first), last)) <= 40


def test_multikey_distractors_start_like_the_asked_key_and_no_filler_key_does(tokenizer_dir):
    for record in variant_records("longctx_kv_multikey", tokenizer_dir, max_seq_lengths=(2000,), num_samples=3):
        asked, *distractors = [key for key, _ in record["needles"]]
        assert asked == record["key"] == record["keys"][0] and len(distractors) == 3
        assert record["prompt"].count(f"'{asked}'") == 2  # its line, and the question
        keys = [k for k, _ in haystack_pairs(record)]
        assert len(set(keys)) == len(keys)
        assert sorted(k for k in keys if k[:4] == asked[:4]) == sorted([asked, *distractors])
        assert record["values"] == [dict(haystack_pairs(record))[asked]] and record["answer"] == record["values"][0]


def test_multivalue_key_holds_exactly_its_values_and_no_other_line_carries_one(tokenizer_dir):
    for record in variant_records("longctx_kv_multivalue", tokenizer_dir, max_seq_lengths=(2000,), num_samples=3):
        pairs = haystack_pairs(record)
        key = record["key"]
        assert sorted(v for k, v in pairs if k == key) == sorted(record["values"]) and len(set(record["values"])) == 4
        assert [v for k, v in pairs if v in record["values"] and k != key] == []
        assert record["prompt"].endswith(f"What are all the values of the key '{key}'?")
        assert record["answer_prefix"] == f"The values of the key '{key}' are '"


def test_multiquery_asks_every_needle_key_in_one_question(tiny_model_dir):
    (record, _) = variant_records("longctx_kv_multiquery", tiny_model_dir)
    keys = record["keys"]
    assert keys == [key for key, _ in record["needles"]] and len(set(keys)) == 4
    assert record["prompt"].endswith(f"What are the values of the keys '{keys[0]}', '{keys[1]}', '{keys[2]}' and '{keys[3]}'?")
    assert record["values"] == [dict(haystack_pairs(record))[key] for key in keys]
    assert record["answer"] == "', '".join(record["values"])  # how the model continues "... are '"


def test_parameters_come_from_metadata(tiny_model_dir):
    from lm_eval_longctx.lmeval_task import dataset

    md = {"pretrained": tiny_model_dir, "max_seq_lengths": [400], "depths": [0.5], "num_samples": 1}
    six = dataset("longctx_kv_multikey", **md, num_keys=6)["test"][0]
    assert len(six["needles"]) == 6 and len({k[:4] for k, _ in six["needles"]}) == 1
    three = dataset("longctx_kv_multivalue", **md, num_values="3")["test"][0]
    assert len(three["values"]) == 3
    two = dataset("longctx_kv_multiquery", **md, num_queries=2)["test"][0]
    assert len(two["keys"]) == 2 and len(two["needles"]) == 4  # the other two are distractors
    # A task that does not take a parameter is defined without it (longctx_kv stays one needle).
    assert "needles" not in dataset("longctx_kv", **md, num_keys=6)["test"][0]


@pytest.mark.parametrize(
    "name, metadata, message",
    [
        ("longctx_kv_multikey", {"num_key": 3}, r"unknown metadata key 'num_key'; did you mean 'num_keys'\?"),
        ("longctx_kv_multikey", {"num_keys": 0}, r"num_keys=0 is outside 1\.\.64 \(needle keys"),
        ("longctx_kv_multivalue", {"num_values": 2.5}, r"num_values=2\.5 must be a whole number"),
        ("longctx_kv_multivalue", {"num_values": "many"}, r"num_values='many' is not an integer"),
        ("longctx_kv_multiquery", {"num_queries": 6}, r"num_queries=6 asks more keys than the haystack has \(num_keys=4\); set num_keys"),
        ("longctx_kv_multiquery", {"num_queries": 6, "num_keys": 5}, r"num_keys=5\); set num_queries"),
    ],
)
def test_a_wrong_parameter_is_one_line_naming_the_value_and_the_fix(tiny_model_dir, name, metadata, message):
    from lm_eval_longctx.lmeval_task import dataset

    with pytest.raises(LongCtxError, match=message) as info:
        dataset(name, pretrained=tiny_model_dir, max_seq_lengths=[500], **metadata)
    assert str(info.value).startswith(f"{name}: ") and "\n" not in str(info.value)


def test_another_parameter_value_is_another_data_set(tiny_model_dir):
    from lm_eval_longctx.lmeval_task import dataset

    md = {"pretrained": tiny_model_dir, "max_seq_lengths": [400], "depths": [0.5], "num_samples": 1}
    three, five = (dataset("longctx_kv_multikey", **md, num_keys=n)["test"] for n in (3, 5))
    assert three.info.description != five.info.description  # the cache key
    assert (len(three[0]["needles"]), len(five[0]["needles"])) == (3, 5)


def test_the_answer_budget_grows_with_the_values_asked():
    assert TASKS["longctx_kv"].max_gen_toks({}) == 24
    assert TASKS["longctx_kv_multivalue"].max_gen_toks({}) == 40
    assert TASKS["longctx_kv_multiquery"].max_gen_toks({"num_queries": 2}) == 24
    assert TASKS["longctx_kv_multivalue"].max_gen_toks({"num_values": 10}) == 88

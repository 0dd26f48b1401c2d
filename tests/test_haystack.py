"""longctx_kv records: exact lengths as lm-eval feeds them, placement, secrecy, determinism."""

import re
import subprocess
import sys

import pytest
from conftest import generate, lm_eval_context, lm_eval_token_count

from lm_eval_longctx import haystack
from lm_eval_longctx.cache import dumps_records
from lm_eval_longctx.catalog import TASKS
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter, TokenizerSource, load_tokenizer

LINE = re.compile(r"^'([0-9a-f]{8})' = '([0-9a-f]{4})'$")


def counter_for(model_dir, chat_template=False):
    return PromptCounter(load_tokenizer(TokenizerSource(model_dir)), chat_template=chat_template)


def generate_kv(spec, counter):
    return generate("longctx_kv", spec, counter)


def kv_record(spec, counter, length, depth, sample):
    return haystack.kv_record(TASKS["longctx_kv"], spec, counter, length, depth, sample).to_dict()


@pytest.mark.parametrize("answer_prefix", [True, False])
@pytest.mark.parametrize("prompt_style", ["plain", "llama2_inst"])
@pytest.mark.parametrize("chat_template", [False, True])
def test_every_prompt_is_exactly_its_length_as_lm_eval_encodes_it(
    family_model_dir, hflm_cache, prompt_style, chat_template, answer_prefix
):
    hflm = hflm_cache(family_model_dir)
    counter = counter_for(family_model_dir, chat_template)
    spec = GridSpec(
        max_seq_lengths=(150, 333, 1000), depths=(0.0, 0.37, 1.0), num_samples=2, prompt_style=prompt_style,
        chat_template=chat_template, answer_prefix=answer_prefix,
    )
    for record in generate_kv(spec, counter):
        assert bool(record["answer_prefix"]) == answer_prefix
        context = lm_eval_context(hflm, record, chat_template)
        assert lm_eval_token_count(hflm, context) == record["max_seq_length"] == record["actual_tokens"]


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

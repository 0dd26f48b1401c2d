"""What every task promises, checked for every task of the catalog x every prompt format x both
tokenizer families x chat template on/off x answer prefix on/off.

A new task (a row of ``catalog.TASKS``) or prompt format (a row of ``formats.FORMATS``) is
covered by declaring it. The promises: each prompt is exactly its length as lm-eval builds and
encodes the context (BOS, chat template and answer prefix counted); the same inputs give the
same bytes; each needle is in its prompt exactly once; the scorer gives the gold answer full
marks (also after a repeated answer prefix) and a neighbour's answer none. Lengths are small,
so the whole grid runs in CI.
"""

import itertools

import pytest
from conftest import lm_eval_context, lm_eval_token_count

from lm_eval_longctx.cache import dumps_records
from lm_eval_longctx.catalog import TASKS
from lm_eval_longctx.formats import FORMATS
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter, TokenizerSource, load_tokenizer

LENGTHS = (600, 900)  # above every task's fixed parts with the tiny tokenizers, and cheap
DEPTHS = (0.0, 0.5, 1.0)
CASES = list(itertools.product(TASKS, FORMATS, (False, True), (True, False)))


def case_id(case) -> str:
    task, fmt, chat, prefix = case
    return f"{task}-{fmt}-{'chat' if chat else 'nochat'}-{'prefix' if prefix else 'noprefix'}"


def build(model_dir, task_name, prompt_style, chat_template, answer_prefix) -> list[dict]:
    task = TASKS[task_name]
    grid = task.needle_grid
    spec = GridSpec(
        max_seq_lengths=LENGTHS, depths=DEPTHS if grid else (0.0,), num_samples=2 if grid else 1,
        prompt_style=prompt_style, chat_template=chat_template, answer_prefix=answer_prefix,
        params=task.parameters({}),
    )
    counter = PromptCounter(load_tokenizer(TokenizerSource(model_dir)), chat_template=chat_template)
    return [record.to_dict() for record in task.generate(spec, counter)]


@pytest.fixture(scope="session")
def built():
    """Records per (model folder, case), built once for all the promises."""
    cache = {}

    def get(model_dir, case):
        if (model_dir, case) not in cache:
            cache[model_dir, case] = build(model_dir, *case)
        return cache[model_dir, case]

    return get


@pytest.fixture(params=CASES, ids=case_id)
def case(request):
    return request.param


def test_every_prompt_is_exactly_its_length_as_lm_eval_builds_and_encodes_it(family_model_dir, hflm_cache, built, case):
    _, _, chat_template, answer_prefix = case
    hflm = hflm_cache(family_model_dir)
    records = built(family_model_dir, case)
    assert {r["max_seq_length"] for r in records} == set(LENGTHS)
    for record in records:
        assert bool(record["answer_prefix"]) == answer_prefix
        context = lm_eval_context(hflm, record, chat_template)
        assert lm_eval_token_count(hflm, context) == record["max_seq_length"] == record["actual_tokens"]


def test_same_inputs_give_the_same_bytes(family_model_dir, built, case):
    assert dumps_records(build(family_model_dir, *case)) == dumps_records(built(family_model_dir, case))


def test_every_needle_is_in_its_prompt_exactly_once(family_model_dir, built, case):
    task = TASKS[case[0]]
    for record in built(family_model_dir, case):
        needles = task.family.needles(record)
        assert needles and len(set(needles)) == len(needles)
        assert [record["prompt"].count(needle) for needle in needles] == [1] * len(needles)


def test_the_scorer_gives_the_gold_answer_full_marks(family_model_dir, built, case):
    task = TASKS[case[0]]
    for record in built(family_model_dir, case):
        gold = record["answer"]
        # An answer that repeats the prefix first (models often do), then the gold answer; a
        # sentence around it where the prompt has no prefix.
        repeated = (record["answer_prefix"] or "The answer is ") + gold
        for answer in (gold, repeated, f" {gold}'.\n"):
            scores = task.score(answer, record)
            assert set(scores) == set(task.metrics)
            assert scores[task.headline] == 1.0, (answer, scores)


def test_the_scorer_refuses_a_neighbours_answer(family_model_dir, built, case):
    task = TASKS[case[0]]
    if not task.needle_grid:
        pytest.skip(f"{task.name}: every prompt has the same answer")
    records = built(family_model_dir, case)
    for record in records:
        (neighbour,) = [
            r for r in records
            if r["sample"] != record["sample"] and (r["max_seq_length"], r["depth"]) == (record["max_seq_length"], record["depth"])
        ]
        assert neighbour["answer"] != record["answer"]
        assert task.score(neighbour["answer"], record)[task.headline] == 0.0


"""longctx_passkey records: the key's sentence and place, determinism (exact lengths: test_contract.py)."""

import re

import pytest
from conftest import generate

from lm_eval_longctx.cache import dumps_records
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.passkey import DESCRIPTION, FILLER
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter, TokenizerSource, load_tokenizer


def generate_passkey(spec, counter):
    return generate("longctx_passkey", spec, counter)


def test_key_is_stated_once_in_filler_and_asked_for(tiny_model_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir)))
    record = generate_passkey(GridSpec(max_seq_lengths=(600,), depths=(0.5,), num_samples=1), counter)[0]
    key = record["answer"]
    assert re.fullmatch(r"[1-9]\d{4}", key)
    prompt = record["prompt"]
    assert prompt.startswith(DESCRIPTION)
    assert prompt.count(f"The pass key is {key}. Remember it. {key} is the pass key.") == 1
    assert prompt.endswith("\nWhat is the pass key?")
    assert record["answer_prefix"] == "The pass key is"
    assert re.findall(r"\d+", prompt) == [key, key]
    between = prompt[len(DESCRIPTION) : prompt.index(" The pass key")]
    assert set(s.strip() + "." for s in between.split(".") if s.strip()) <= set(FILLER)


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_key_sits_at_its_depth(tiny_model_dir, depth):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir)))
    record = generate_passkey(GridSpec(max_seq_lengths=(1000,), depths=(depth,), num_samples=1), counter)[0]
    _, ids, _ = counter.encode(record["prompt"])
    assert counter.tokenizer.decode(ids[record["needle_token_offset"] :]).startswith(" The pass key is")
    # Tokens before the key are depth x length, within one filler sentence, clamped to where
    # the key can go (after the description, before the question).
    first = counter.count(DESCRIPTION)
    last = 1000 - counter.count(record["prompt"][record["prompt"].index(" The pass key is") :], record["answer_prefix"]) + 1
    assert abs(record["needle_token_offset"] - min(max(depth * 1000, first), last)) <= 8


def test_same_inputs_same_bytes_other_seed_other_keys(tiny_model_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir)))
    spec = GridSpec(max_seq_lengths=(300,), num_samples=3)
    assert dumps_records(generate_passkey(spec, counter)) == dumps_records(generate_passkey(spec, counter))
    keys = {r["answer"] for r in generate_passkey(spec, counter)}
    other = {r["answer"] for r in generate_passkey(GridSpec(max_seq_lengths=(300,), num_samples=3, seed=99), counter)}
    assert keys != other


def test_too_small_a_length_is_refused_with_a_working_minimum(sp_tokenizer_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(sp_tokenizer_dir)))
    with pytest.raises(LongCtxError, match=r"length 30 .* too small.*at least (\d+)") as info:
        generate_passkey(GridSpec(max_seq_lengths=(30, 400)), counter)
    minimum = int(re.search(r"at least (\d+)", str(info.value)).group(1))
    assert {r["actual_tokens"] for r in generate_passkey(GridSpec(max_seq_lengths=(minimum,)), counter)} == {minimum}

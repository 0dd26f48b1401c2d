"""longctx_pi_title records: the document as is, exact-length versions, title placement."""

import hashlib
import re

import pytest
from conftest import generate, lm_eval_context, lm_eval_token_count

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.pi_title import ANSWER_PREFIX, QUESTION, TITLE, document
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter, TokenizerSource, load_tokenizer


def generate_pi_title(lengths, counter, prompt_style, answer_prefix=True):
    spec = GridSpec(
        max_seq_lengths=lengths, depths=(0.0,), num_samples=1, prompt_style=prompt_style,
        chat_template=counter.chat_template, answer_prefix=answer_prefix,
    )
    return generate("longctx_pi_title", spec, counter)


def natural_length(counter, prompt_style, answer_prefix=True):
    (record,) = generate_pi_title(None, counter, prompt_style, answer_prefix)
    return record["actual_tokens"]

SHARED_SHA256 = "fad45c904d4640ad681f9d76fb976a27bac26caf315425b7244d1b2276bbe222"


def test_shipped_document_is_byte_identical_to_the_source():
    assert hashlib.sha256(document().encode("utf-8")).hexdigest() == SHARED_SHA256


def test_as_is_prompt_is_document_then_question_then_the_prefix(tiny_model_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir)))
    (record,) = generate_pi_title(None, counter, "plain")
    assert record["prompt"] == document() + "\n" + QUESTION
    assert record["answer_prefix"] == ANSWER_PREFIX == 'The title of this paper is "'
    full = document() + "\n" + QUESTION + " " + ANSWER_PREFIX
    assert record["actual_tokens"] == counter.count(full) == record["max_seq_length"]
    assert record["document"] == "as_is"


def test_first_version_prompt_is_the_reference_document_and_question(tiny_model_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir)))
    (record,) = generate_pi_title(None, counter, "plain", answer_prefix=False)
    assert record["prompt"] == document() + QUESTION and record["answer_prefix"] == ""


def test_first_version_prompt_is_5820_smollm2_tokens():
    pytest.importorskip("gguf")
    from lm_eval_longctx.embedded import gguf_path

    path = gguf_path()
    tokenizer = load_tokenizer(TokenizerSource(str(path.parent), gguf_file=path.name))
    assert natural_length(PromptCounter(tokenizer), "plain", answer_prefix=False) == 5820


# Every format and mode at short lengths is test_contract.py's; this is the document's two
# versions (cut, and padded beyond its end), each exact.
@pytest.mark.parametrize("chat_template", [False, True])
def test_exact_lengths_shorter_and_longer_than_the_document(family_model_dir, hflm_cache, chat_template):
    prompt_style, answer_prefix = "llama2_inst", True
    hflm = hflm_cache(family_model_dir)
    counter = PromptCounter(load_tokenizer(TokenizerSource(family_model_dir)), chat_template=chat_template)
    natural = natural_length(counter, prompt_style, answer_prefix)
    lengths = (600, natural - 1001, natural + 999)
    records = generate_pi_title(lengths, counter, prompt_style, answer_prefix)
    assert [r["document"] for r in records] == ["shortened", "shortened", "padded"]
    for record in records:
        context = lm_eval_context(hflm, record, chat_template)
        assert lm_eval_token_count(hflm, context) == record["max_seq_length"]
        # Instruction and title kept at the top, the question at the end.
        assert TITLE.upper() in record["prompt"][:400]
        assert QUESTION in record["prompt"][-len(QUESTION) - 10 :]
        assert record["answer_prefix"] == (ANSWER_PREFIX if answer_prefix else "")
        assert record["tokens_after_title"] == record["actual_tokens"] - record["title_token_offset"]


def test_longer_versions_put_filler_between_document_and_question(tiny_model_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir)))
    natural = natural_length(counter, "plain")
    (record,) = generate_pi_title((natural + 500,), counter, "plain")
    assert record["prompt"].startswith(document())
    filler = record["prompt"][len(document()) : -len("\n" + QUESTION)]
    assert filler and re.fullmatch(r"([A-Z][a-z ]+\.\n)+", filler)


def test_too_short_is_refused_with_the_minimum(tiny_model_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir)))
    with pytest.raises(LongCtxError, match=r"length 40 is too small.*at least (\d+)") as info:
        generate_pi_title((40,), counter, "plain")
    minimum = int(re.search(r"at least (\d+)", str(info.value)).group(1))
    (record,) = generate_pi_title((minimum,), counter, "plain")
    assert record["actual_tokens"] == minimum and TITLE.upper() in record["prompt"]

"""longctx_pi_title records: the document as is, exact-length versions, title placement."""

import hashlib
import re

import pytest
from conftest import lm_eval_token_count

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.pi_title import QUESTION, TITLE, document, generate_pi_title, natural_prompt
from lm_eval_longctx.tokens import PromptCounter, TokenizerSource, load_tokenizer

SHARED_SHA256 = "fad45c904d4640ad681f9d76fb976a27bac26caf315425b7244d1b2276bbe222"


def test_shipped_document_is_byte_identical_to_the_source():
    assert hashlib.sha256(document().encode("utf-8")).hexdigest() == SHARED_SHA256


def test_as_is_prompt_is_document_then_question(tiny_model_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir)))
    (record,) = generate_pi_title(None, counter, "plain")
    assert record["prompt"] == document() + QUESTION
    assert record["actual_tokens"] == counter.count(document() + QUESTION) == record["max_seq_length"]
    assert record["document"] == "as_is"


def test_as_is_prompt_is_5820_smollm2_tokens():
    pytest.importorskip("gguf")
    from lm_eval_longctx.embedded import gguf_path

    path = gguf_path()
    tokenizer = load_tokenizer(TokenizerSource(str(path.parent), gguf_file=path.name))
    assert PromptCounter(tokenizer).count(natural_prompt("plain")) == 5820


@pytest.mark.parametrize("prompt_style", ["plain", "llama2_inst"])
@pytest.mark.parametrize("chat_template", [False, True])
def test_exact_lengths_shorter_and_longer_than_the_document(family_model_dir, hflm_cache, prompt_style, chat_template):
    hflm = hflm_cache(family_model_dir)
    counter = PromptCounter(load_tokenizer(TokenizerSource(family_model_dir)), chat_template=chat_template)
    natural = counter.count(natural_prompt(prompt_style))
    lengths = (600, natural - 1001, natural + 999)
    records = generate_pi_title(lengths, counter, prompt_style)
    assert [r["document"] for r in records] == ["shortened", "shortened", "padded"]
    for record in records:
        context = record["prompt"]
        if chat_template:
            context = hflm.apply_chat_template([{"role": "user", "content": context}])
        assert lm_eval_token_count(hflm, context) == record["max_seq_length"]
        # Instruction and title kept at the top, the question at the end.
        assert TITLE.upper() in record["prompt"][:400]
        assert QUESTION in record["prompt"][-len(QUESTION) - 10 :]
        assert record["tokens_after_title"] == record["actual_tokens"] - record["title_token_offset"]


def test_longer_versions_put_filler_between_document_and_question(tiny_model_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir)))
    natural = counter.count(natural_prompt("plain"))
    (record,) = generate_pi_title((natural + 500,), counter, "plain")
    assert record["prompt"].startswith(document())
    filler = record["prompt"][len(document()) : -len(QUESTION)]
    assert filler and re.fullmatch(r"([A-Z][a-z ]+\.\n)+", filler)


def test_too_short_is_refused_with_the_minimum(tiny_model_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir)))
    with pytest.raises(LongCtxError, match=r"length 40 is too small.*at least (\d+)") as info:
        generate_pi_title((40,), counter, "plain")
    minimum = int(re.search(r"at least (\d+)", str(info.value)).group(1))
    (record,) = generate_pi_title((minimum,), counter, "plain")
    assert record["actual_tokens"] == minimum and TITLE.upper() in record["prompt"]

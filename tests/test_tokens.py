"""Token counting that matches lm-eval's HF model, and tokenizer errors."""

import pytest
from conftest import lm_eval_token_count

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.tokens import PromptCounter, TokenizerSource, load_tokenizer

TEXTS = ["hello", "'3fa85f64' = '1b2c'\nWhat is the value?", "", "[INST] x [/INST]"]


@pytest.mark.parametrize("text", TEXTS)
def test_count_matches_lm_eval(family_model_dir, hflm_cache, text):
    counter = PromptCounter(load_tokenizer(TokenizerSource(family_model_dir)))
    assert counter.count(text) == lm_eval_token_count(hflm_cache(family_model_dir), text)


@pytest.mark.parametrize("text", TEXTS)
def test_count_with_chat_template_matches_lm_eval(family_model_dir, hflm_cache, text):
    hflm = hflm_cache(family_model_dir)
    counter = PromptCounter(load_tokenizer(TokenizerSource(family_model_dir)), chat_template=True)
    rendered = hflm.apply_chat_template([{"role": "user", "content": text}])
    assert counter.render(text) == rendered
    assert counter.count(text) == lm_eval_token_count(hflm, rendered)


def test_piece_lengths_count_in_context(sp_tokenizer_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(sp_tokenizer_dir)))
    lines = ["'aaaa1111' = 'bbbb'\n", "'cccc2222' = 'dddd'\n"]
    together = counter.count("x\n" + "".join(lines)) - counter.count("x\n")
    assert sum(counter.piece_lengths(lines, "\n")) == together


def test_fingerprint_follows_template_and_vocabulary(bpe_tokenizer_dir, sp_tokenizer_dir):
    bpe = load_tokenizer(TokenizerSource(bpe_tokenizer_dir))
    fp = PromptCounter(bpe).fingerprint()
    assert fp == PromptCounter(bpe).fingerprint()
    assert fp != PromptCounter(bpe, chat_template=True).fingerprint()
    assert fp != PromptCounter(load_tokenizer(TokenizerSource(sp_tokenizer_dir))).fingerprint()


def test_unloadable_tokenizer_names_it_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LongCtxError, match=r"(?s)could not load the tokenizer '.*no-such-model'.*--metadata"):
        load_tokenizer(TokenizerSource(str(tmp_path / "no-such-model")))


def test_chat_template_requested_but_missing(bpe_tokenizer_dir):
    tokenizer = load_tokenizer(TokenizerSource(bpe_tokenizer_dir))
    saved, tokenizer.chat_template = tokenizer.chat_template, None
    try:
        with pytest.raises(LongCtxError, match="has no chat template"):
            PromptCounter(tokenizer, chat_template=True)
    finally:
        tokenizer.chat_template = saved

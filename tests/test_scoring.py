"""Scoring of crafted answers."""

import pytest

from lm_eval_longctx import scoring


@pytest.mark.parametrize(
    "answer, exact, contains",
    [
        ("1b2c", 1, 1),
        ("'1b2c'", 1, 1),
        ("The value of the key '3fa85f64' is '1b2c'.", 1, 1),  # an answer that repeats the prefix
        ("1b2c'.", 1, 1),  # the continuation of the prefix "... is '"
        (" 1B2C", 1, 0),  # case-insensitive word match, case-sensitive reference check
        ("dead 1b2c", 0, 1),  # a chatty answer that happens to contain the value first names another
        ("The value is 1b2c5", 0, 1),  # 5 hex characters is not the 4-character value
        ("I don't know.", 0, 0),
        ("", 0, 0),
    ],
)
def test_kv_metrics(answer, exact, contains):
    assert scoring.kv_exact(answer, "1b2c") == exact
    assert scoring.kv_contains(answer, "1b2c") == contains


@pytest.mark.parametrize(
    "answer, score",
    [
        (" 12345.", 1),
        ("The pass key is 12345", 1),  # an answer that repeats the prefix
        (" 12345. Remember it. 12345 is the pass key.", 1),
        ("123456", 0),
        ("1234 12345", 0),
        ("no digits", 0),
        ("12,345", 0),
    ],
)
def test_passkey_first_integer(answer, score):
    assert scoring.passkey_exact(answer, "12345") == score


@pytest.mark.parametrize(
    "answer, found",
    [
        ("Extending Context Window of Large Language Models via Position Interpolation", 1),
        ("The title is EXTENDING CONTEXT WINDOW OF LARGE LANGUAGE MODELS", 1),
        ("extending context window of large language models", 1),  # sentence case is the title too
        ("EXTENDING CONTEXT WINDOW\nOF LARGE LANGUAGE MODELS", 1),  # copied across a line break
        ('The title of this paper is "Extending Context Window of Large Language Models"', 1),  # prefix repeated
        ("Extending Context Window Size: A New Method", 0),  # a near miss is a miss
        ("Enhancing Context Window of Large Language Models", 0),
        ("Position Interpolation", 0),
    ],
)
def test_title_found(answer, found):
    assert scoring.title_found(answer) == found


def test_values_recall_gives_partial_credit_and_names_its_metrics():
    from lm_eval_longctx.scoring import KV_VALUES

    doc = {"values": ["55d8", "bde4", "9a1d", "dbb7"]}
    assert KV_VALUES.metrics == ("recall", "all") and KV_VALUES.headline == "recall"
    assert KV_VALUES.score("55d8' and '801a2622'", doc) == {"recall": 0.25, "all": 0.0}
    assert KV_VALUES.score("DBB7', '9a1d', 'bde4', '55d8'.", doc) == {"recall": 1.0, "all": 1.0}  # any order, any case


def test_a_value_inside_a_key_is_not_credited():
    from lm_eval_longctx.scoring import values_found

    # An answer that repeats the prefix names the keys; '5d94' inside 'a5d94b00' is not an answer.
    assert values_found("The values of the keys 'a5d94b00' and 'c0ffee11' are '", ["5d94", "ffee"]) == [False, False]

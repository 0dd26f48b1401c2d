"""Scoring of one generated answer: pure functions, and the scorers tasks name, each with
its metric names (headline first). No lm-eval."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_WORD = re.compile(r"[0-9A-Za-z]+")
_INTEGER = re.compile(r"\d+")
TITLE_PREFIX = "Extending Context Window of Large"


def first_hex4_word(answer: str) -> str | None:
    """Return the first word of ``answer`` made of exactly four hex characters, lowercased."""
    for word in _WORD.findall(answer):
        if len(word) == 4 and all(c in "0123456789abcdefABCDEF" for c in word):
            return word.lower()
    return None


def kv_exact(answer: str, value: str) -> float:
    """1.0 when the first 4-hex-character word of the answer is the value."""
    return float(first_hex4_word(answer) == value)


def kv_contains(answer: str, value: str) -> float:
    """1.0 when the value appears anywhere in the answer (the reference test's check)."""
    return float(value in answer)


def first_integer(answer: str) -> str | None:
    """Return the first run of digits in ``answer``."""
    match = _INTEGER.search(answer)
    return match.group(0) if match else None


def passkey_exact(answer: str, pass_key: str) -> float:
    """1.0 when the first integer in the answer is the pass key."""
    return float(first_integer(answer) == pass_key)


def title_found(answer: str) -> float:
    """1.0 when the answer holds the paper title's start, in any letter case, with any run of
    whitespace between its words (the document prints the title in upper case; answers
    copy it as printed, in title case or in sentence case, sometimes across a line break)."""
    return float(" ".join(TITLE_PREFIX.lower().split()) in " ".join(answer.lower().split()))


def values_found(answer: str, values: list[str]) -> list[bool]:
    """Return, per value, whether it is a word of the answer (letter case ignored).

    A whole word, not a substring: an answer that repeats the prefix names 8-character keys,
    which may contain a 4-character value."""
    words = {word.lower() for word in _WORD.findall(answer)}
    return [value.lower() in words for value in values]


@dataclass(frozen=True)
class Scoring:
    """A scorer and the metric names it returns: ``score(answer, doc) -> {metric: value}``
    for every name in ``metrics``; the first is the headline (the group's ``score``)."""

    metrics: tuple[str, ...]
    score: Callable[[str, dict], dict]

    @property
    def headline(self) -> str:
        """Return the metric the task's ``score`` (and the group's mean) is."""
        return self.metrics[0]


def _kv_value(answer: str, doc: dict) -> dict:
    return {"exact": kv_exact(answer, doc["answer"]), "contains": kv_contains(answer, doc["answer"])}


def _kv_values(answer: str, doc: dict) -> dict:
    found = values_found(answer, doc["values"])
    return {"recall": sum(found) / len(found), "all": float(all(found))}


# One value asked: the first 4-hex word is it (exact); it appears anywhere (contains).
KV_VALUE = Scoring(("exact", "contains"), _kv_value)
# Several values asked (``doc["values"]``): RULER's string_match_all, the share of the values
# the answer names (recall, partial credit), and whether it names all of them.
KV_VALUES = Scoring(("recall", "all"), _kv_values)
PASSKEY = Scoring(("exact",), lambda answer, doc: {"exact": passkey_exact(answer, doc["answer"])})
TITLE = Scoring(("found",), lambda answer, doc: {"found": title_found(answer)})

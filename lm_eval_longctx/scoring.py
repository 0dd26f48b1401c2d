"""Scoring of one generated answer: pure functions, no lm-eval."""

from __future__ import annotations

import re

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

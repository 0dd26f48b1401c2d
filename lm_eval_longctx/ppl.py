"""Perplexity against context length: window planning and aggregation (pure: no lm-eval, no torch).

A document is its tokens ``D`` as lm-eval encodes a continuation (``tok_encode(text,
add_special_tokens=False)``). At a length L, the windows are exactly L tokens as lm-eval feeds
them (context + continuation, BOS counted):

* the first window is lm-eval's prefix token (the BOS, or EOS where there is none) and
  ``D[0 : L-1]``, as a request with an empty context: it scores all of its L-1 document tokens;
* each next window ends ``stride`` tokens later and is ``special + D[e-(L-k) : e]``, where
  ``special`` is the k tokens the tokenizer adds to any text (k=1 for a BOS-adding tokenizer,
  k=0 otherwise); it scores only ``D[previous end : e]``, the tokens no window scored before;
* the last window ends at the document's end (it scores the remaining, fewer than ``stride``).

So every document token is scored once, always with at least ``L - stride`` tokens before it
(but in the first window), at every L alike. A document with fewer than L-1 tokens is skipped
at L (counted, never padded). YaRN's variant (``yarn_truncate``): only the first window.

Windows are requests of text, so each is checked to re-encode to exactly its tokens (byte-level
BPE can merge across a cut inside a word; SentencePiece adds its dummy prefix at the start of a
text). A window that does not is moved forward by one token at a time (it then scores a few
more tokens), up to ``MAX_SHIFT``; the first window's start moves the same way (the tokens before
it are not scored). A document where no such cut exists ends there. Both are counted.

Aggregation is token-weighted, ``exp(total NLL / scored tokens)``; its standard error comes from
resampling documents (``bootstrap_stderr``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TASK = "longctx_ppl"  # its own task, in no group (registration.TASK_NAMES lists it)
MODES = {
    # name: (what it is, for messages and docs)
    "sliding": "windows of L tokens advancing by stride, each scoring the tokens not scored before (Press et al.)",
    "yarn_truncate": "each document cut to its first L tokens, one window (YaRN's eval/perplexity.py)",
}
DEFAULT_MODE = "sliding"
MAX_SHIFT = 64  # tokens a window may move forward to find a cut that re-encodes exactly
BOOTSTRAP_ITERS = 1000
BOOTSTRAP_SEED = 1234


@dataclass(frozen=True)
class Window:
    """One window: document tokens ``[start, end)``, of which the last ``scored`` are scored.

    ``context`` and ``continuation`` are the request's texts (``context`` empty for a window
    that starts with lm-eval's prefix token)."""

    start: int
    end: int
    scored: int
    context: str
    continuation: str


@dataclass(frozen=True)
class Plan:
    """A document's windows at one length, and what could not be scored exactly."""

    windows: tuple[Window, ...]
    unscored: int  # document tokens no window scores (a first window moved forward, or the document cut)


class Encoder:
    """The document's tokens and their characters, and lm-eval's encoding of request texts.

    ``encode(text, special)`` returns a text's token ids, with the tokenizer's special tokens
    (lm-eval's ``tok_encode`` of a context) or without (of a continuation after an empty
    context). ``special_count`` is how many special tokens a text gets (0 or 1 BOS).
    """

    def __init__(self, text: str, ids: Sequence[int], offsets: Sequence[tuple[int, int]], encode: Callable,
                 special_count: int):
        self.text, self.ids, self.offsets = text, list(ids), list(offsets)
        self.encode, self.special_count = encode, special_count
        self._special = list(encode("", True))[:special_count]

    def starts(self, i: int) -> list[int]:
        """Candidate first characters of a text starting at token ``i`` (after a leading space
        too: SentencePiece puts its word-start mark back itself)."""
        char = self.offsets[i][0]
        return [char + 1, char] if self.text[char : char + 1].isspace() else [char]

    def end_char(self, end: int) -> int:
        return self.offsets[end - 1][1]

    def first(self, start: int, end: int) -> Window | None:
        """The window ``[start, end)`` with an empty context, if its text re-encodes exactly."""
        for a in self.starts(start):
            text = self.text[a : self.end_char(end)]
            if list(self.encode(text, False)) == self.ids[start:end] and self.splits(a, start, end):
                return Window(start, end, end - start, "", text)
        return None

    def splits(self, a: int, start: int, end: int) -> bool:
        """True when the next window may score from ``end``: the text from character ``a`` (token
        ``start``) to token ``end``, its trailing spaces moved off as lm-eval does, is
        ``special + D[start:end]`` in count. The document's end always splits."""
        if end >= len(self.ids):
            return True
        context = self.text[a : self.offsets[end][0]].rstrip()
        return bool(context) and len(self.encode(context, True)) == self.special_count + end - start

    def later(self, start: int, split: int, end: int) -> Window | None:
        """The window ``[start, end)`` scoring ``[split, end)``, if context and whole re-encode exactly."""
        for a in self.starts(start):
            whole = self.text[a : self.end_char(end)]
            context = self.text[a : self.offsets[split][0]]
            # lm-eval moves a context's trailing spaces to the continuation (_encode_pair)
            stripped = context.rstrip()
            if not stripped or list(self.encode(whole, True)) != self._special + self.ids[start:end]:
                continue
            if len(self.encode(stripped, True)) == self.special_count + split - start and self.splits(a, start, end):
                return Window(start, end, end - split, stripped, whole[len(stripped) :])
        return None


def plan(encoder: Encoder, length: int, stride: int, mode: str = DEFAULT_MODE) -> Plan | None:
    """Return the windows of one document at ``length`` (None: the document is shorter than it).

    ``length`` counts the tokens lm-eval feeds (the prefix token or BOS included)."""
    n = len(encoder.ids)
    first_len = length - 1  # document tokens after the prefix token
    if n < first_len or first_len < 1:
        return None
    first = None
    for shift in range(min(MAX_SHIFT, n - first_len) + 1):
        first = encoder.first(shift, shift + first_len)
        if first is not None:
            break
    if first is None:
        return Plan((), n)
    windows = [first]
    if mode == "yarn_truncate":
        return Plan(tuple(windows), first.start)  # the rest is not part of YaRN's measure
    body = length - encoder.special_count  # document tokens in a later window
    while windows[-1].end < n:
        previous = windows[-1].end
        window = None
        end = min(previous + stride, n)
        while window is None and end <= min(previous + stride + MAX_SHIFT, n):
            window = encoder.later(end - body, previous, end)
            end += 1
        if window is None:
            break  # no exact cut: the document ends here
        windows.append(window)
    return Plan(tuple(windows), first.start + n - windows[-1].end)


# --------------------------------------------------------------------------- aggregation
# A window's item, as process_results gives it: [document index, negative log-likelihood, scored tokens].


def perplexity(items: Sequence) -> float | str:
    """Return exp(total NLL / scored tokens) over ``items`` (None entries: not in this cell);
    ``"N/A"`` when no window of the cell ran (all beyond the window)."""
    kept = [item for item in items if item is not None]
    tokens = sum(item[2] for item in kept)
    if not tokens:
        return "N/A"
    return math.exp(sum(item[1] for item in kept) / tokens)


def bootstrap_stderr(items: Sequence, iters: int = BOOTSTRAP_ITERS, seed: int = BOOTSTRAP_SEED) -> float | str:
    """Return the standard deviation of ``perplexity`` over documents drawn with replacement.

    One document is all of its windows (they share its text, so they are not independent draws).
    With one document there is nothing to resample: ``"N/A"``, lm-eval's word for no standard error."""
    by_doc: dict = {}
    for item in items:
        if item is not None:
            nll, tokens = by_doc.get(item[0], (0.0, 0))
            by_doc[item[0]] = (nll + item[1], tokens + item[2])
    docs = list(by_doc.values())
    if len(docs) < 2:
        return "N/A"
    rng = random.Random(seed)
    draws = []
    for _ in range(iters):
        sample = [docs[rng.randrange(len(docs))] for _ in docs]
        draws.append(math.exp(sum(s[0] for s in sample) / sum(s[1] for s in sample)))
    mean = sum(draws) / iters
    return math.sqrt(sum((d - mean) ** 2 for d in draws) / (iters - 1))

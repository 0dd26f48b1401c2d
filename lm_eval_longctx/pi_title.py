"""``longctx_pi_title``: the Position Interpolation paper as one prompt; the model names its title.

The reference test's second case. Without ``max_seq_lengths`` the document is used as is.
With it, each length gets an exact-length version in which the title sits that far back:
longer than the document, neutral filler lines go between its end and the question; shorter,
body text is dropped from the end of the document, keeping the instruction and the title.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import replace
from importlib import resources

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.fill import Layout, assemble
from lm_eval_longctx.formats import compose
from lm_eval_longctx.passkey import FILLER
from lm_eval_longctx.records import Record
from lm_eval_longctx.tokens import PromptCounter, token_at

QUESTION = "Question: What's the title of this paper?"
ANSWER_PREFIX = 'The title of this paper is "'
TITLE = "Extending Context Window of Large Language Models via Position Interpolation"
END_MARK = "=== END OF FILE ===\n"
MAX_SHIFT = 8


def document() -> str:
    """Return the paper prompt shipped with the package (byte-identical to the source)."""
    return resources.files("lm_eval_longctx").joinpath("data/pi_paper_prompt.txt").read_text(encoding="utf-8")


def question(secret: dict) -> str:
    """Return the question after the document."""
    return QUESTION


def answer_prefix(secret: dict) -> str:
    """Return the start of the answer; the model continues with the title."""
    return ANSWER_PREFIX


def title_layout(task, spec) -> Layout:
    """Return the parts around the document (in ``head``, after the format's opening)."""
    layout = compose(spec, task, "", ("",), "\n", {})  # one empty needle: filler goes after it
    return replace(layout, head=layout.head + document())


def generate_pi_title(task, spec, counter: PromptCounter, progress=None) -> list[Record]:
    """Return one record per length; ``spec.max_seq_lengths=None`` gives the document as is."""
    layout = title_layout(task, spec)
    lengths = spec.max_seq_lengths
    if lengths is None:
        prompt = layout.head + layout.tail
        return [_record(spec, counter, layout, prompt, None, "as_is")]
    records = []
    natural = counter.count(layout.head + layout.tail, layout.answer_prefix)
    for length in lengths:
        if length >= natural:
            prompt, version = _padded(counter, layout, length, task.name), "padded"
        else:
            prompt, version = _shortened(counter, layout, length), "shortened"
        records.append(_record(spec, counter, layout, prompt, length, version))
        if progress is not None:
            progress(length)
    return records


def _padded(counter: PromptCounter, layout: Layout, length: int, what: str) -> str:
    # The "needle" is empty and sits at depth 0: all filler goes after the document.
    lines = itertools.cycle(s + "\n" for s in FILLER)
    built = assemble(counter, layout, length, 0.0, lambda n: list(itertools.islice(lines, n)), what)
    return built.prompt


def _shortened(counter: PromptCounter, layout: Layout, length: int) -> str:
    doc = document()
    before = layout.head[: -len(doc)]
    body = doc[: doc.index(END_MARK)]
    title_end = doc.index("\n", doc.index(TITLE.upper())) + 1
    ending = END_MARK + layout.tail
    prefix = layout.answer_prefix
    shortest = counter.count(before + body[:title_end] + ending, prefix)
    if length < shortest:
        raise LongCtxError(
            f"longctx_pi_title: length {length} is too small: the instruction, the title and the "
            f"question alone take {shortest} tokens with this tokenizer. Use lengths of at least "
            f"{shortest} in max_seq_lengths."
        )
    # Tokenize the whole document once; cut the body at the token boundary that leaves
    # `length` tokens, and re-check (a cut can change how the last word tokenizes).
    full = before + body + ending
    rendered, ids, offsets = counter.encode(full, prefix)
    start = rendered.index(full) if counter.chat_template else 0
    starts = [s for s, _ in offsets]
    body_end_token = bisect.bisect_left(starts, start + len(before) + len(body))
    first_guess = min(max(1, body_end_token - (len(ids) - length)), len(starts) - 1)
    guess_char = starts[first_guess] - start - len(before)
    # A cut can change how the last word tokenizes: try the token boundaries around the first
    # guess, nearest first, then single characters (a cut inside a merged token).
    token_cuts = [starts[t] - start - len(before) for t in _around(first_guess, MAX_SHIFT) if 0 < t < len(starts)]
    char_cuts = [guess_char + shift for shift in sorted(range(-3 * MAX_SHIFT, 3 * MAX_SHIFT + 1), key=abs)]
    # The end mark goes on a line of its own; without that newline is the fallback when a
    # count is skipped (cutting one more character can remove two tokens).
    for separator in ("\n", ""):
        for cut in token_cuts + char_cuts:
            if not title_end <= cut <= len(body):
                continue
            prompt = before + body[:cut].rstrip("\n") + separator + ending
            if counter.count(prompt, prefix) == length:
                return prompt
    raise LongCtxError(
        f"longctx_pi_title: could not cut the document to exactly {length} tokens with this "
        f"tokenizer (no cut near the first guess fits); try a length a "
        "few tokens away."
    )


def _around(center: int, radius: int) -> list[int]:
    return [center + shift for shift in sorted(range(-radius, radius + 1), key=abs)]


def _record(spec, counter: PromptCounter, layout: Layout, prompt: str, length: int | None, version: str) -> Record:
    rendered, encoding = counter.encoding(prompt, layout.answer_prefix)
    tokens = len(encoding)
    title_token = token_at(encoding, rendered.index(TITLE.upper()))
    return Record(
        prompt=prompt,
        answer_prefix=layout.answer_prefix,
        answer=TITLE,
        max_seq_length=tokens if length is None else length,
        actual_tokens=tokens,
        prompt_style=spec.prompt_style,
        chat_template=counter.chat_template,
        details={"title_token_offset": title_token, "tokens_after_title": tokens - title_token, "document": version},
    )

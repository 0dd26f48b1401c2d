"""Prompt formats: where the instruction, haystack, question and answer prefix go. One row each.

A prompt is ``open + instruction/haystack + ask + question + close`` (the user's turn), then
the task's answer prefix, which lm-eval places itself as the task's ``gen_prefix``: after the
user's text in plain mode (joined by ``tokens.TARGET_DELIMITER`` when neither side has a space), and
as the start of the assistant's turn under ``--apply_chat_template``, so the model answers by
continuing it. Adding a format is adding a row to ``FORMATS``. Pure: no lm-eval, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from lm_eval_longctx.fill import Layout
from lm_eval_longctx.tokens import join_answer_prefix

@dataclass(frozen=True)
class PromptFormat:
    """One prompt format: the text around the task's parts and where the answer ends."""

    name: str
    open: str  # before the instruction
    ask: str  # between the haystack and the question
    close: str  # after the question: the end of the user's text
    until: tuple[str, ...]  # stop strings: the answer is the rest of the prefix's line
    summary: str  # shown in error messages


FORMATS = {
    fmt.name: fmt
    for fmt in (
        PromptFormat("plain", "", "\n", "", ("\n",), "instruction, haystack, question; the answer prefix follows"),
        PromptFormat(
            "llama2_inst",
            "[INST] ",
            "\n\n ",
            " [/INST]",
            ("\n", "[INST]"),
            "[INST] instruction, haystack, question [/INST], then the answer prefix",
        ),
    )
}


@dataclass(frozen=True)
class Reference:
    """The prompts the first version of a task built (no answer prefix), kept reachable with
    ``answer_prefix: false`` so older numbers can be compared: per format, the text after the
    haystack (``{question}`` is filled in), and the generation settings of that version.
    Only tasks that had such a version have one (``catalog.TaskDef.reference``)."""

    tails: dict  # format name -> tail after the haystack
    until: tuple[str, ...]
    max_gen_toks: int


def compose(spec, task, head: str, needles: tuple[str, ...], anchor: str, secret: dict) -> Layout:
    """Return the layout of one prompt of ``task`` in ``spec``'s format and prefix mode.

    ``head`` is the instruction (or document) before the haystack; ``secret`` fills the
    task's question and answer prefix. With ``answer_prefix`` off the first version's prompt
    is built (its tail, no prefix; the format's own tail for a task without a first version).
    Where the answer prefix cannot be the start of the model's turn (a served chat endpoint
    renders the turn itself), it ends the user's text.
    """
    fmt = FORMATS[spec.prompt_style]
    question = task.family.question(secret)
    needles = tuple(needles)
    if not spec.answer_prefix:
        tails = task.reference.tails if task.reference else {}
        tail = tails.get(fmt.name, fmt.ask + "{question}" + fmt.close).format(question=question)
        return Layout(fmt.open + head, needles, tail, anchor)
    tail = fmt.ask + question + fmt.close
    prefix = task.family.answer_prefix(secret)
    if spec.prefix_in_user_turn:
        return Layout(fmt.open + head, needles, join_answer_prefix(tail, prefix), anchor)
    return Layout(fmt.open + head, needles, tail, anchor, answer_prefix=prefix)


def generation_settings(spec, task) -> dict:
    """Return ``until`` and ``max_gen_toks`` for ``task`` in ``spec``'s format, prefix mode and
    parameters (an answer of several values gets room for each)."""
    if not spec.answer_prefix and task.reference:
        return {"until": list(task.reference.until), "max_gen_toks": task.reference.max_gen_toks}
    return {"until": list(FORMATS[spec.prompt_style].until), "max_gen_toks": task.max_gen_toks(dict(spec.params))}

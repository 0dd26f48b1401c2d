"""The longctx tasks, one declaration each: generator, scorer, metrics, question and answer prefix.

Adding a task is adding a row to ``TASKS`` (and its YAML in ``tasks/``, which names it in
``dataset_kwargs``); the lm-eval glue, the group and the report read everything else from here.
Pure: no lm-eval, no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lm_eval_longctx import haystack, passkey, pi_title, scoring
from lm_eval_longctx.formats import Reference


@dataclass(frozen=True)
class TaskDef:
    """One task: how its prompts are built and how an answer is scored.

    ``generate(task, spec, counter, progress)`` returns its records; ``score(answer, doc)``
    returns ``{metric: value}`` for ``metrics`` (the headline, averaged by the ``longctx``
    group as ``score``, first). ``question`` and ``answer_prefix`` take the sample's secret
    (``{"key": ...}`` for kv) and give the texts placed by the prompt format.
    ``max_gen_toks`` is sized for an answer that continues the prefix, or repeats it.
    ``needle_grid`` is False for a task with one prompt per length (no depths or samples).
    """

    name: str
    generate: Callable
    score: Callable[[str, dict], dict]
    metrics: tuple[str, ...]
    question: Callable[[dict], str]
    answer_prefix: Callable[[dict], str]
    max_gen_toks: int
    reference: Reference
    needle_grid: bool = True

    @property
    def headline(self) -> str:
        """Return the metric the group's ``score`` averages."""
        return self.metrics[0]


TASKS = {
    task.name: task
    for task in (
        TaskDef(
            name="longctx_kv",
            generate=haystack.generate_kv,
            score=lambda answer, doc: {
                "exact": scoring.kv_exact(answer, doc["answer"]),
                "contains": scoring.kv_contains(answer, doc["answer"]),
            },
            metrics=("exact", "contains"),
            question=haystack.question,
            answer_prefix=haystack.answer_prefix,
            max_gen_toks=24,
            reference=Reference(
                tails={"plain": "\n{question}", "llama2_inst": "\n {question} [/INST]"},
                until=("\n\n\n", "[INST]"),
                max_gen_toks=32,
            ),
        ),
        TaskDef(
            name="longctx_passkey",
            generate=passkey.generate_passkey,
            score=lambda answer, doc: {"exact": scoring.passkey_exact(answer, doc["answer"])},
            metrics=("exact",),
            question=passkey.question,
            answer_prefix=passkey.answer_prefix,
            max_gen_toks=16,
            reference=Reference(
                tails={"plain": "\n{question} The pass key is", "llama2_inst": "\n\n {question} [/INST]"},
                until=("\n",),
                max_gen_toks=16,
            ),
        ),
        TaskDef(
            name="longctx_pi_title",
            generate=pi_title.generate_pi_title,
            score=lambda answer, doc: {"found": scoring.title_found(answer)},
            metrics=("found",),
            question=pi_title.question,
            answer_prefix=pi_title.answer_prefix,
            max_gen_toks=32,
            reference=Reference(
                tails={"plain": "{question}", "llama2_inst": "{question} [/INST]"},
                until=("\n\n\n", "[INST]"),
                max_gen_toks=48,
            ),
            needle_grid=False,
        ),
    )
}

"""``longctx_passkey``: a 5-digit pass key hidden in repeated filler sentences.

The effective-context-window test of the Position Interpolation paper (section 3.3, after
Mohtashami and Jaggi's landmark attention): the task description, filler, the pass key stated
once, more filler, then the question and the answer prefix ``The pass key is``. Pure: the
task's declaration, a tokenizer counter and a spec in, records out.
"""

from __future__ import annotations

import itertools
import random

from lm_eval_longctx.fill import Layout, assemble, build_grid
from lm_eval_longctx.formats import compose
from lm_eval_longctx.records import Record
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter

DESCRIPTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there."
)
FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")


def needle(pass_key: str) -> str:
    """Return the sentence group that states the pass key (with its leading space)."""
    return f" The pass key is {pass_key}. Remember it. {pass_key} is the pass key."


def question(secret: dict) -> str:
    """Return the question; the same for every sample."""
    return "What is the pass key?"


def answer_prefix(secret: dict) -> str:
    """Return the start of the answer, the paper's own: the model continues with the key."""
    return "The pass key is"


def passkey_layout(task, spec: GridSpec, pass_key: str) -> Layout:
    """Return the fixed parts of a pass-key prompt; filler sentences follow a '.'."""
    return compose(spec, task, DESCRIPTION, (needle(pass_key),), ".", {"pass_key": pass_key})


def generate_passkey(task, spec: GridSpec, counter: PromptCounter, progress=None) -> list[Record]:
    """Return one record per (length, depth, sample) cell, each exactly its length in tokens.

    Sample ``i`` has the same pass key at every length and depth.
    """
    return build_grid(
        spec,
        counter,
        task.name,
        lambda sample: passkey_layout(task, spec, _pass_key(spec, sample)[1]),
        lambda length, depth, sample: passkey_record(task, spec, counter, length, depth, sample),
        progress,
    )


def _pass_key(spec: GridSpec, sample: int) -> tuple[random.Random, str]:
    # Sample i has the same pass key at every length and depth.
    rng = random.Random(f"longctx_passkey:{spec.seed}:{sample}")
    return rng, str(rng.randint(10000, 99999))


def passkey_record(task, spec: GridSpec, counter: PromptCounter, length: int, depth: float, sample: int) -> Record:
    """Return the record of one cell: its prompt, pass key and where the key sits."""
    _, pass_key = _pass_key(spec, sample)
    sentences = itertools.cycle(" " + s for s in FILLER)

    def draw_units(n: int) -> list[str]:
        return list(itertools.islice(sentences, n))

    layout = passkey_layout(task, spec, pass_key)
    built = assemble(counter, layout, length, depth, draw_units, task.name)
    return built.record(spec, layout, answer=pass_key, depth=depth, sample=sample)

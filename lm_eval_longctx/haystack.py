"""``longctx_kv``: random ``'key' = 'value'`` lines with one secret pair hidden at a depth.

The format follows h2oGPT's UUID key/value retrieval test: a header, one pair a line (key
8 lowercase hex characters, value 4), and a question about the secret key. Pure: the task's declaration
(question, answer prefix), a tokenizer counter and a spec in, records out; no lm-eval, no torch.
"""

from __future__ import annotations

import random

from lm_eval_longctx.fill import Layout, assemble, build_grid
from lm_eval_longctx.formats import compose
from lm_eval_longctx.records import Record
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter

HEADER = "## UUID key/value pairs to remember:\n\n"


def kv_line(key: str, value: str) -> str:
    """Return one haystack line."""
    return f"'{key}' = '{value}'\n"


def question(secret: dict) -> str:
    """Return the question asked about the secret key."""
    return f"What is the value of the key '{secret['key']}'?"


def answer_prefix(secret: dict) -> str:
    """Return the start of the answer; the model continues with the value."""
    return f"The value of the key '{secret['key']}' is '"


def kv_layout(task, spec: GridSpec, key: str, value: str) -> Layout:
    """Return the fixed parts of a key/value prompt in ``spec``'s format."""
    return compose(spec, task, HEADER, kv_line(key, value), "\n", {"key": key})


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def generate_kv(task, spec: GridSpec, counter: PromptCounter, progress=None) -> list[Record]:
    """Return one record per (length, depth, sample) cell, each exactly its length in tokens.

    Sample ``i`` has the same secret pair and the same filler stream at every length and
    depth, so cells differ only in length and needle position.
    """

    return build_grid(
        spec,
        counter,
        task.name,
        lambda sample: kv_layout(task, spec, *_secret(spec, sample)[1:]),
        lambda length, depth, sample: kv_record(task, spec, counter, length, depth, sample),
        progress,
    )


def _secret(spec: GridSpec, sample: int) -> tuple[random.Random, str, str]:
    rng = random.Random(f"longctx_kv:{spec.seed}:{sample}")
    return rng, _hex(rng, 8), _hex(rng, 4)


def kv_record(task, spec: GridSpec, counter: PromptCounter, length: int, depth: float, sample: int) -> Record:
    """Return the record of one cell: its prompt, answer and where the secret sits."""
    rng, key, value = _secret(spec, sample)
    used_keys = {key}

    def draw_units(n: int) -> list[str]:
        lines = []
        while len(lines) < n:
            k, v = _hex(rng, 8), _hex(rng, 4)
            # The secret key appears once, and no other line carries the secret value.
            if k in used_keys or v == value:
                continue
            used_keys.add(k)
            lines.append(kv_line(k, v))
        return lines

    layout = kv_layout(task, spec, key, value)
    built = assemble(counter, layout, length, depth, draw_units, task.name)
    return built.record(spec, layout, answer=value, depth=depth, sample=sample, key=key)

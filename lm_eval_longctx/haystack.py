"""The kv haystack family: random ``'key' = 'value'`` lines with needle pairs hidden at depths.

The format follows h2oGPT's UUID key/value retrieval test: a header, one pair a line (key
8 lowercase hex characters, value 4), and a question about the asked key(s). RULER's needle
parameters say what the needles are (``parameters.PARAMS``): ``num_keys`` needle keys, each
holding ``num_values`` values (one line per value), of which ``num_queries`` keys are asked.
``longctx_kv`` is 1/1/1. Keys that are in the haystack as needles but not asked (multikey)
share the first asked key's first four characters: every filler line is already some other
key, so an extra random key would be filler like any other; a key that starts the same is a
distractor the model must tell apart. Pure: the task's declaration, a tokenizer counter and a
spec in, records out; no lm-eval, no torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lm_eval_longctx.fill import Layout, assemble, build_grid
from lm_eval_longctx.formats import compose
from lm_eval_longctx.records import Record
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter

HEADER = "## UUID key/value pairs to remember:\n\n"
PARAMETERS = ("num_keys", "num_values", "num_queries")
DISTRACTOR_PREFIX = 4  # characters an unasked needle key shares with the first asked key


def kv_line(key: str, value: str) -> str:
    """Return one haystack line."""
    return f"'{key}' = '{value}'\n"


def _quoted(keys) -> str:
    names = [f"'{key}'" for key in keys]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def question(secret: dict) -> str:
    """Return the question asked about the asked key(s): one value, or all of them."""
    keys, several = secret["keys"], secret["num_values"] > 1
    if len(keys) == 1 and not several:
        return f"What is the value of the key '{keys[0]}'?"
    noun = "key" if len(keys) == 1 else "keys"
    return f"What are {'all ' if several else ''}the values of the {noun} {_quoted(keys)}?"


def answer_prefix(secret: dict) -> str:
    """Return the start of the answer; the model continues with the (first) value."""
    keys = secret["keys"]
    if len(keys) == 1 and secret["num_values"] == 1:
        return f"The value of the key '{keys[0]}' is '"
    return f"The values of the {'key' if len(keys) == 1 else 'keys'} {_quoted(keys)} are '"


def max_gen_toks(params: dict) -> int:
    """Return the answer budget: 24 tokens for one value, 8 more per value beyond the first
    (a 4-hex value and its ``', '`` take 4 to 7 tokens in the tokenizers tried)."""
    return max(24, 8 + 8 * params["num_queries"] * params["num_values"])


def needles(doc: dict) -> list[str]:
    """Return the needle lines of a record (each is in its prompt exactly once)."""
    pairs = doc.get("needles") or [[doc["key"], doc["answer"]]]
    return [kv_line(key, value) for key, value in pairs]


@dataclass(frozen=True)
class Secret:
    """One sample's needles: ``pairs`` in placement order (the first at the depth), the asked
    keys, and the values the answer must name (the asked keys' values, in order)."""

    pairs: tuple[tuple[str, str], ...]
    asked: tuple[str, ...]
    values: tuple[str, ...]
    num_values: int

    def question_fields(self) -> dict:
        """Return what the question and the answer prefix are about."""
        return {"keys": self.asked, "num_values": self.num_values}


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _secret(task, spec: GridSpec, sample: int) -> tuple[random.Random, Secret]:
    """Return sample ``sample``'s RNG (it goes on to draw the filler) and its needles."""
    params = task.param_values(spec)
    rng = random.Random(f"{task.name}:{spec.seed}:{sample}")
    keys, values = [_hex(rng, 8)], [[_hex(rng, 4)]]
    taken = {keys[0]}, {values[0][0]}

    def draw(fresh, seen: set) -> str:
        while (item := fresh()) in seen:
            pass
        seen.add(item)
        return item

    for i in range(1, params["num_keys"]):
        asked = i < params["num_queries"]
        start = "" if asked else keys[0][:DISTRACTOR_PREFIX]
        keys.append(draw(lambda: start + _hex(rng, 8 - len(start)), taken[0]))
        values.append([])
    for i in range(len(keys)):
        while len(values[i]) < params["num_values"]:
            values[i].append(draw(lambda: _hex(rng, 4), taken[1]))
    # Placement order: the asked keys' values first (the first of them at the depth), then
    # the distractors; needle_depths spreads the rest from there.
    pairs = tuple((key, value) for key, vs in zip(keys, values) for value in vs)
    asked = tuple(keys[: params["num_queries"]])
    answer = tuple(value for vs in values[: params["num_queries"]] for value in vs)
    return rng, Secret(pairs, asked, answer, params["num_values"])


def kv_layout(task, spec: GridSpec, secret: Secret) -> Layout:
    """Return the fixed parts of a key/value prompt in ``spec``'s format."""
    lines = tuple(kv_line(key, value) for key, value in secret.pairs)
    return compose(spec, task, HEADER, lines, "\n", secret.question_fields())


def generate_kv(task, spec: GridSpec, counter: PromptCounter, progress=None) -> list[Record]:
    """Return one record per (length, depth, sample) cell, each exactly its length in tokens.

    Sample ``i`` has the same needles and the same filler stream at every length and depth,
    so cells differ only in length and needle positions.
    """

    return build_grid(
        spec,
        counter,
        task.name,
        lambda sample: kv_layout(task, spec, _secret(task, spec, sample)[1]),
        lambda length, depth, sample: kv_record(task, spec, counter, length, depth, sample),
        progress,
    )


def kv_record(task, spec: GridSpec, counter: PromptCounter, length: int, depth: float, sample: int) -> Record:
    """Return the record of one cell: its prompt, answer and where the needles sit."""
    rng, secret = _secret(task, spec, sample)
    used_keys = {key for key, _ in secret.pairs}
    needle_values = {value for _, value in secret.pairs}
    # With distractors, no filler key starts like them: their number is exactly as asked.
    near = secret.pairs[0][0][:DISTRACTOR_PREFIX] if len(used_keys) > len(secret.asked) else None

    def draw_units(n: int) -> list[str]:
        lines = []
        while len(lines) < n:
            k, v = _hex(rng, 8), _hex(rng, 4)
            # Needle keys appear only in their needles; no other line carries a needle value.
            if k in used_keys or v in needle_values or (near and k.startswith(near)):
                continue
            used_keys.add(k)
            lines.append(kv_line(k, v))
        return lines

    layout = kv_layout(task, spec, secret)
    built = assemble(counter, layout, length, depth, draw_units, task.name)
    if len(secret.pairs) == 1:  # longctx_kv's rows, as they always were
        return built.record(spec, layout, answer=secret.values[0], depth=depth, sample=sample, key=secret.asked[0])
    return built.record(
        spec,
        layout,
        answer="', '".join(secret.values),  # the values as the model continues the prefix
        depth=depth,
        sample=sample,
        key=secret.asked[0],
        keys=list(secret.asked),
        values=list(secret.values),
        needles=[list(pair) for pair in secret.pairs],
        needle_token_offsets=list(built.needle_token_offsets),
    )

"""``longctx_kv``: random ``'key' = 'value'`` lines with one secret pair hidden at a depth.

The format follows h2oGPT's UUID key/value retrieval test: a header, one pair a line (key
8 lowercase hex characters, value 4), and a question about the secret key. Pure: a tokenizer
counter and a spec in, records out; no lm-eval, no torch.
"""

from __future__ import annotations

import random

from lm_eval_longctx.fill import Layout, assemble, build_grid
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter

HEADER = "## UUID key/value pairs to remember:\n\n"


def kv_line(key: str, value: str) -> str:
    """Return one haystack line."""
    return f"'{key}' = '{value}'\n"


def question(key: str) -> str:
    """Return the question asked about ``key``."""
    return f"What is the value of the key '{key}'?"


def kv_layout(key: str, value: str, prompt_style: str) -> Layout:
    """Return the fixed parts of a key/value prompt in ``prompt_style``."""
    if prompt_style == "llama2_inst":
        # The reference's own wrapper: [INST] <haystack>\n\n What is ...? [/INST]
        return Layout(f"[INST] {HEADER}", kv_line(key, value), f"\n {question(key)} [/INST]", "\n")
    return Layout(HEADER, kv_line(key, value), f"\n{question(key)}", "\n")


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def generate_kv(spec: GridSpec, counter: PromptCounter, progress=None) -> list[dict]:
    """Return one record per (length, depth, sample) cell, each exactly its length in tokens.

    Sample ``i`` has the same secret pair and the same filler stream at every length and
    depth, so cells differ only in length and needle position.
    """
    return build_grid(
        spec,
        counter,
        "longctx_kv",
        lambda sample: kv_layout(*_secret(spec, sample)[1:], spec.prompt_style),
        lambda length, depth, sample: kv_record(spec, counter, length, depth, sample),
        progress,
    )


def _secret(spec: GridSpec, sample: int) -> tuple[random.Random, str, str]:
    rng = random.Random(f"longctx_kv:{spec.seed}:{sample}")
    return rng, _hex(rng, 8), _hex(rng, 4)


def kv_record(spec: GridSpec, counter: PromptCounter, length: int, depth: float, sample: int) -> dict:
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

    built = assemble(counter, kv_layout(key, value, spec.prompt_style), length, depth, draw_units, "longctx_kv")
    return built.record(spec, answer=value, depth=depth, sample=sample, key=key)

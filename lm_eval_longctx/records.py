"""The record a generator returns: one prompt of a task's grid and what scores its answer."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class Record:
    """One prompt, exactly ``max_seq_length`` tokens as lm-eval feeds it to the model.

    ``prompt`` is the user's text and ``answer_prefix`` the start of the answer (lm-eval's
    ``gen_prefix``); both are counted. ``depth``, ``sample`` and ``needle_token_offset`` are
    None for a task without a needle grid; ``details`` holds task-specific fields (the kv
    secret key, the title's offsets), flattened into the dataset row.
    """

    prompt: str
    answer_prefix: str
    answer: str
    max_seq_length: int
    actual_tokens: int
    prompt_style: str
    chat_template: bool
    depth: float | None = None
    sample: int | None = None
    needle_token_offset: int | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Return the dataset row: every field that applies, ``target_tokens`` and the details."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "details"}
        row = {name: value for name, value in row.items() if value is not None}
        row["target_tokens"] = self.max_seq_length
        return {**row, **self.details}

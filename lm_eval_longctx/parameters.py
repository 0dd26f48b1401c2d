"""Task-family parameters a user may set through ``--metadata``: one row each, with bounds.

A family declares the parameters it takes (``catalog.Family.parameters``) and a task row
gives their values and which of them a user may change (``catalog.TaskDef``). The names are
metadata keys like any other (``spec.GRID_KEYS`` includes them, so a typo is named). Pure:
no lm-eval, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from lm_eval_longctx.errors import LongCtxError


@dataclass(frozen=True)
class Param:
    """One integer parameter of a task family, its bounds and what it means."""

    name: str
    minimum: int
    maximum: int
    meaning: str

    def parse(self, value, task: str) -> int:
        """Return ``value`` as an integer within the bounds, or raise a one-line LongCtxError."""
        example = f'--metadata \'{{"{self.name}": {self.minimum + 1}}}\''
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise LongCtxError(f"{task}: {self.name}={value!r} must be a whole number ({self.meaning}), e.g. {example}")
        try:
            number = int(str(int(value) if isinstance(value, float) else value).strip())
        except ValueError:
            raise LongCtxError(f"{task}: {self.name}={value!r} is not an integer ({self.meaning}), e.g. {example}") from None
        if not self.minimum <= number <= self.maximum:
            raise LongCtxError(
                f"{task}: {self.name}={number} is outside {self.minimum}..{self.maximum} ({self.meaning}); "
                f"use a value in that range, e.g. {example}"
            )
        return number


PARAMS = {
    param.name: param
    for param in (
        # RULER's num_needle_k / num_needle_v / num_needle_q. The upper bounds keep the fixed
        # parts of a prompt (needles and question) far below the lengths users run.
        Param("num_keys", 1, 64, "needle keys in the haystack, the asked ones included"),
        Param("num_values", 1, 64, "values each needle key holds, all of them asked"),
        Param("num_queries", 1, 64, "needle keys asked in the question, at most num_keys"),
    )
}

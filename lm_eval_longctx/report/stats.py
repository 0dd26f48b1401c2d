"""Statistics of the report: Wilson intervals and the effective-context-length rule (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.report.runs import TaskResult

DEFAULT_THRESHOLD = 0.85
Z95 = 1.96

EFFECTIVE_RULE = (
    "The effective context length of a run on a task is the longest tested length L at which the "
    "accuracy is at or above the threshold ({threshold:g}) at L and at every shorter tested length. "
    "A length where any sample was beyond the model's window (not run, because the prompt did not "
    "fit) counts as failing. When the shortest tested length fails, the effective length is "
    "reported as \"< shortest tested\". When every tested length passes, it is the longest tested "
    "length: the model may hold more."
)


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float] | None:
    """Return the Wilson score interval (low, high) for ``correct`` successes of ``total``."""
    if not total:
        return None
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def effective_length(accuracy_by_length: Mapping[int, float | None], threshold: float = DEFAULT_THRESHOLD):
    """Return the longest tested length whose accuracy, and every shorter one's, is >= threshold.

    ``None`` as an accuracy means the length was beyond the model's window: it fails. Returns
    None when the shortest tested length fails (or nothing was tested).
    """
    longest = None
    for length in sorted(accuracy_by_length):
        accuracy = accuracy_by_length[length]
        if accuracy is None or accuracy < threshold:
            break
        longest = length
    return longest


def rule_accuracies(result: TaskResult) -> dict[int, float | None]:
    """Return what the effective-length rule sees per length: the accuracy, or None if beyond."""
    return {length: None if cell.beyond else cell.accuracy for length, cell in result.by_length.items()}


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` if it is a usable accuracy threshold, else raise LongCtxError."""
    if not 0 < threshold <= 1:
        raise LongCtxError(f"--threshold {threshold:g} is not an accuracy in (0, 1]; use e.g. --threshold 0.85.")
    return threshold

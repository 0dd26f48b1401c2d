"""Statistics of the report: Wilson intervals and the effective-context-length rule (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.report.tasks import TaskResult

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


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Return McNemar's exact two-sided p-value for paired 0/1 outcomes.

    ``only_first``: documents right under the first setting and wrong under the second;
    ``only_second`` the reverse. Under no difference each discordant document is a fair coin:
    p = min(1, 2 * P(X <= min(b, c))) for X ~ Binomial(b + c, 1/2). No discordant document: 1.
    """
    n, k = only_first + only_second, min(only_first, only_second)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(differences, seed: int = 1234, iterations: int = 10000) -> tuple[float, float, float]:
    """Return (low, high, p) of the mean of paired ``differences``: a 95% percentile interval from
    resampling documents with replacement, and the two-sided p-value of no difference (twice the
    smaller share of resampled means on either side of 0). Same seed, same numbers."""
    import numpy as np

    values = np.asarray(list(differences), dtype=float)
    if not values.size:
        raise ValueError("no paired documents")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(iterations, 2_000_000 // values.size))  # bounded memory for large benchmarks
    means = np.concatenate([
        values[rng.integers(0, values.size, (min(chunk, iterations - start), values.size))].mean(axis=1)
        for start in range(0, iterations, chunk)
    ])  # fmt: skip
    low, high = np.quantile(means, [0.025, 0.975])
    p = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return float(low), float(high), p

"""Short-benchmark changes against the baseline setting, tested on the same documents (pure but
for reading samples files).

A sweep runs identical documents under every setting, so a setting's change on a task is a paired
difference: documents are matched by ``doc_id`` and ``doc_hash`` (lm-eval's hash of the document)
in the two runs' samples files. A 0/1 metric gets McNemar's exact test (only the documents whose
outcome changed carry information); any other metric a paired bootstrap of the mean difference
(95% percentile interval, fixed seed). Without samples files (no ``--log_samples``) or without
shared documents there is no test, and the table says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lm_eval_longctx.report.runs import Run
from lm_eval_longctx.report.stats import mcnemar_exact, paired_bootstrap
from lm_eval_longctx.report.tasks import samples_file

SEED = 1234


@dataclass(frozen=True)
class PairedChange:
    """One setting's change on one short task against the baseline."""

    name: str  # the headline, "task metric" as the comparison table names it
    delta: float | None  # the results files' value minus the baseline's
    test: str  # "McNemar exact", "paired bootstrap", or why there is none
    p: float | None = None
    low: float | None = None  # bootstrap interval of the mean difference
    high: float | None = None
    paired: int = 0  # documents found in both samples files
    discordant: tuple[int, int] | None = None  # McNemar: (right only under baseline, right only under setting)


def _metric_and_filter(task: str, headline: str) -> tuple[str, str]:
    name = headline[len(task) + 1:]
    if name.endswith(")") and " (" in name:
        metric, _, filter_name = name[:-1].partition(" (")
        return metric, filter_name
    return name, "none"


def _values(run: Run, task: str, metric: str, filter_name: str) -> dict | None:
    """Return ``{(doc_id, doc_hash): value}`` of a task's samples file, or None without one."""
    path = samples_file(run.source, task)
    if path is None:
        return None
    values = {}
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    if row.get("filter", "none") == filter_name and isinstance(row.get(metric), (int, float)):
                        values[(row.get("doc_id"), row.get("doc_hash"))] = float(row[metric])
    except (OSError, ValueError):
        return None
    return values


def paired_change(baseline: Run, run: Run, task: str) -> PairedChange:
    """Return ``run``'s change on ``task`` against ``baseline``, with a paired test where samples allow."""
    headline = run.other_headlines[task]
    base_value, value = baseline.other_scores.get(headline), run.other_scores.get(headline)
    delta = None if base_value is None or value is None else value - base_value
    metric, filter_name = _metric_and_filter(task, headline)
    first, second = _values(baseline, task, metric, filter_name), _values(run, task, metric, filter_name)
    if first is None or second is None:
        return PairedChange(headline, delta, "no test: needs both samples files (--log_samples)")
    shared = sorted(set(first) & set(second), key=str)
    if not shared:
        return PairedChange(headline, delta, "no test: no document in both runs (doc_id and doc_hash differ)")
    pairs = [(first[key], second[key]) for key in shared]
    if all(a in (0.0, 1.0) and b in (0.0, 1.0) for a, b in pairs):
        only_first = sum(a == 1.0 and b == 0.0 for a, b in pairs)
        only_second = sum(a == 0.0 and b == 1.0 for a, b in pairs)
        p = mcnemar_exact(only_first, only_second)
        return PairedChange(headline, delta, "McNemar exact", p, paired=len(shared), discordant=(only_first, only_second))
    low, high, p = paired_bootstrap([b - a for a, b in pairs], seed=SEED)
    return PairedChange(headline, delta, "paired bootstrap", p, low, high, len(shared))


def describe(change: PairedChange) -> str:
    """Return a change as the card shows it: ``-0.031 (McNemar p = 0.42; 3 vs 5 of 200 changed)``."""
    if change.delta is None:
        return "—"
    text = f"{change.delta:+.3f}"
    if change.p is None:
        return f"{text} ({change.test})"
    if change.discordant is not None:
        lost, won = change.discordant
        return f"{text} (McNemar p = {change.p:.3g}; {lost} lost, {won} gained of {change.paired})"
    return f"{text} (bootstrap 95% [{change.low:+.3f}, {change.high:+.3f}], p = {change.p:.3g}; n = {change.paired})"

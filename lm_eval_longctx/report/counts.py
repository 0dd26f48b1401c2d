"""How many samples the results file says ran, checked against the samples file (pure).

A samples file (``--log_samples``) can lose lines (a copy cut short, a disk that filled up, a hand
edit) while the results file beside it still holds lm-eval's own counts. Counting the samples file
alone would then give 3/3 where the run had 4/4, and Wilson intervals from the wrong n. lm-eval
0.4.13 writes, per task, ``n-samples`` (``original``: the task's documents, ``effective``: those
evaluated; ``evaluator_utils._collect_results``) and, per length cell, the mean, its standard error
and our ``beyond_window_len_<L>`` count. The number of samples that ran at a length follows from the
mean and its standard error where the metric is 0/1 (lm-eval's ``mean_stderr`` is
``sqrt(p(1-p)/(n-1))``, so ``n = 1 + p(1-p)/se^2``), from "N/A" (one sample: lm-eval gives no
standard error below two), and, for at most one length left, from the task's total.

Also here: whether a run was limited (``--limit``, ``--samples``), and which lengths of its grid did
not run or ran only in part.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BEYOND = "beyond_window"
# How far n = 1 + p(1-p)/se^2 may land from a whole number: lm-eval writes the floats at full precision.
WHOLE = 1e-3


@dataclass(frozen=True)
class LengthCount:
    """What the results file says about one length of one task."""

    accuracy: float | None  # the cell's mean; None when no sample of the length ran
    ran: int | None  # samples that ran, when the results file tells; None when it cannot
    beyond: int  # samples beyond the window (our beyond_window_len_<L> count)


@dataclass(frozen=True)
class TaskCounts:
    """What the results file says about one task's samples."""

    evaluated: int | None  # n-samples effective (or sample_len): documents evaluated
    documents: int | None  # n-samples original: documents the task has
    by_length: dict[int, LengthCount]


def _stderr(entry: Mapping, base: str):
    return entry.get(f"{base}_stderr,none")


def ran_from_stderr(accuracy: float, stderr, bootstrap: bool = True) -> int | None:
    """Return the samples behind a 0/1 mean and lm-eval's standard error of it, or None when they
    do not tell (a mean of 0 or 1 has standard error 0 at any n; no bootstrap: every error is N/A)."""
    if stderr == "N/A":
        return 1 if bootstrap else None
    if not isinstance(stderr, (int, float)) or isinstance(stderr, bool) or stderr <= 0:
        return None
    if not 0 < accuracy < 1:
        return None
    n = 1 + accuracy * (1 - accuracy) / (stderr * stderr)
    return round(n) if abs(n - round(n)) < WHOLE * n else None  # not a whole number: not a 0/1 metric


def task_counts(results: Mapping, task: str, metric: str) -> TaskCounts:
    """Return the counts the results file gives for ``task``'s headline ``metric``."""
    entry = results["results"][task]
    n_samples = (results.get("n-samples") or {}).get(task) or {}
    evaluated = n_samples.get("effective", entry.get("sample_len"))
    bootstrap = (results.get("config") or {}).get("bootstrap_iters", 1) not in (0, None)
    pattern = re.compile(rf"(?:{re.escape(metric)}|{BEYOND})_len_(\d+),none")
    lengths = sorted({int(m.group(1)) for key in entry if (m := pattern.fullmatch(key))})
    counts = {}
    for length in lengths:
        accuracy = entry.get(f"{metric}_len_{length},none")
        beyond = int(entry.get(f"{BEYOND}_len_{length},none") or 0)
        if accuracy is None:
            ran = 0
        else:
            ran = ran_from_stderr(float(accuracy), _stderr(entry, f"{metric}_len_{length}"), bootstrap)
        counts[length] = LengthCount(None if accuracy is None else float(accuracy), ran, beyond)
    unknown = [length for length, count in counts.items() if count.ran is None]
    if isinstance(evaluated, int) and len(unknown) == 1:  # the total gives the one length left
        (length,) = unknown
        rest = sum(c.ran + c.beyond for n, c in counts.items() if n != length) + counts[length].beyond
        if evaluated - rest > 0:
            counts[length] = LengthCount(counts[length].accuracy, evaluated - rest, counts[length].beyond)
    documents = n_samples.get("original")
    return TaskCounts(evaluated if isinstance(evaluated, int) else None, documents, counts)


def _doc_keys(samples: Sequence[Mapping]) -> list:
    # One row per document and filter (lm-eval logs each filter's answer); our tasks have one filter.
    return [(s.get("doc_id"), s.get("filter", "none")) for s in samples]


def count_problems(task: str, samples_name: str, results_name: str, samples: Sequence[Mapping],
                   by_length: Mapping[int, tuple[int, int]], counts: TaskCounts) -> list[str]:
    """Return what the samples file lost (or holds twice) against the results file's counts.

    ``by_length`` is ``{L: (ran, beyond)}`` as counted in the samples file. Empty when they agree.
    """
    problems = []
    keys = _doc_keys(samples)
    twice = len(keys) - len(set(keys))
    if twice:
        problems.append(f"{samples_name} holds {twice} sample(s) twice (same doc_id)")
    rows = len(set(keys))
    if counts.evaluated is not None and rows != counts.evaluated:
        what = "lost" if rows < counts.evaluated else "has"
        more = f"{abs(counts.evaluated - rows)} {'' if rows < counts.evaluated else 'more '}sample(s)"
        problems.append(
            f"{samples_name} holds {rows} samples of {task}, {results_name} counts {counts.evaluated} "
            f"(n-samples): the samples file {what} {more}"
        )
    for length in sorted(set(counts.by_length) | set(by_length)):
        ran, beyond = by_length.get(length, (0, 0))
        told = counts.by_length.get(length)
        if told is None:
            problems.append(f"length {length} is in {samples_name} but not in {results_name}")
            continue
        if told.ran is not None and told.ran != ran:
            problems.append(f"at length {length}: {ran} sample(s) ran in {samples_name}, {told.ran} in {results_name}")
        if told.beyond != beyond:
            problems.append(
                f"at length {length}: {beyond} sample(s) beyond the window in {samples_name}, {told.beyond} in {results_name}"
            )
    if problems and not any(p.startswith("at length") or " not in " in p for p in problems):
        problems.append(
            "at which length cannot be told from the results file (its means there are 0 or 1, whose standard "
            "error gives no count)"
        )
    return problems


def limited_note(results: Mapping, task: str) -> str | None:
    """Return how a run was limited for ``task`` (``--limit``, ``--samples``), or None if it was not."""
    n_samples = (results.get("n-samples") or {}).get(task) or {}
    original, effective = n_samples.get("original"), n_samples.get("effective")
    limit = (results.get("config") or {}).get("limit")
    if limit is None and (original is None or effective is None or effective >= original):
        return None
    how = f"--limit {limit:g}" if isinstance(limit, (int, float)) else "--samples (or another selection)"
    of = f"{effective} of its {original} documents ran" if original is not None else "only some documents ran"
    return f"{task}: a limited run ({how}): {of}"


def missing_lengths(metadata: Mapping, documents: int | None, ran_by_length: Mapping[int, int]) -> list[str]:
    """Return the lengths of the task's grid that did not run in full, as ``700 (0 of 6)``.

    The grid is ``max_seq_lengths`` of the task's metadata, with the same number of documents at
    every length (the task's documents over its lengths); without them, nothing can be named.
    """
    lengths = metadata.get("max_seq_lengths")
    if not isinstance(lengths, (list, tuple)) or not lengths:
        return []
    each = documents // len(lengths) if documents and documents % len(lengths) == 0 else None
    missing = []
    for length in sorted(int(n) for n in lengths):
        done = ran_by_length.get(length, 0)
        if each is None:
            if not done:
                missing.append(f"{length} (none ran)")
        elif done < each:
            missing.append(f"{length} ({done} of {each})")
    return missing

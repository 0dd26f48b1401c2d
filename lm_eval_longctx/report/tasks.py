"""One task of one run: its cells per length (and per depth x length), read from the samples file
and checked against the results file's own counts (``counts``).

A samples file that disagrees with the results file's counts (a lost line, a sample twice) is never
counted: the task is read from the results file, with sample counts where it gives them, and a
warning names which file lost what. A limited run (``--limit``, ``--samples``) is marked, with the
lengths of its grid that did not run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from lm_eval_longctx.catalog import TASKS
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.report import counts as counting
from lm_eval_longctx.window import BEYOND_WINDOW

GROUP = "longctx"
# The per-sample metric each task's accuracy is read from (the one its ``score`` copies).
HEADLINE = {name: task.headline for name, task in TASKS.items()}
NO_DEPTH = None  # the depth key of tasks whose documents have no needle depth (pi_title)


@dataclass(frozen=True)
class Cell:
    """Outcome of the samples at one length (or one depth x length cell) of one task."""

    accuracy: float | None  # mean headline metric over the samples that ran; None if none ran
    correct: int | None = None  # k; None when only the mean is known (no samples file)
    scored: int | None = None  # n samples that ran; None when unknown
    beyond: int = 0  # samples not run: the prompt did not fit the model's window

    @property
    def all_beyond(self) -> bool:
        """True when no sample of the cell ran: every one was beyond the window."""
        return self.beyond > 0 and not self.scored and self.accuracy is None



@dataclass(frozen=True)
class TaskResult:
    """One longctx task of one run: accuracy per length, and per depth x length from samples."""

    task: str
    metric: str
    by_length: dict[int, Cell]
    by_depth_length: dict[tuple[float | None, int], Cell] | None  # None without a samples file
    score: float | None
    notes: tuple[str, ...] = ()
    version: str | None = None  # the task's version in the results file
    prompts: str = "answer prefix"  # or "first-version prompts" (version 1, or answer_prefix: false)
    warnings: tuple[str, ...] = ()  # what makes its numbers doubtful: lost samples, a limited run
    missing: tuple[str, ...] = ()  # lengths of its grid that did not run in full: "700 (0 of 6)"



def samples_file(results_path: Path, task: str) -> Path | None:
    """Return the ``--log_samples`` file of ``task`` written beside ``results_path``, if any."""
    stem = results_path.stem
    if not stem.startswith("results_"):
        return None
    path = results_path.with_name(f"samples_{task}_{stem.removeprefix('results_')}.jsonl")
    return path if path.is_file() else None


def read_samples(path: Path) -> list[dict]:
    """Return the sample records of a ``--log_samples`` JSONL file."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def headline_metric(task: str, entry: Mapping) -> str:
    """Return the metric a task's accuracy is read from: the table's, else its first per-length metric."""
    if task in HEADLINE:
        return HEADLINE[task]
    for key in entry:
        match = re.fullmatch(r"(.+)_len_\d+,none", key)
        if match and match.group(1) != "beyond_window":
            return match.group(1)
    raise LongCtxError(f"{task}: no per-length metric (<metric>_len_<L>,none) in the results; not a longctx task.")


def _is_beyond(sample: Mapping) -> bool:
    return bool(sample.get("beyond_window")) or sample.get("filtered_resps") == [BEYOND_WINDOW]


def _depth_of(doc: Mapping) -> float | None:
    # lm-eval writes doc fields as strings ("0.5"); pi_title documents have no depth.
    return float(doc["depth"]) if doc.get("depth") not in (None, "", "None") else NO_DEPTH


def _cell(samples: list[Mapping], metric: str) -> Cell:
    ran = [s for s in samples if not _is_beyond(s)]
    correct = sum(int(round(float(s[metric]))) for s in ran)
    accuracy = sum(float(s[metric]) for s in ran) / len(ran) if ran else None
    return Cell(accuracy=accuracy, correct=correct, scored=len(ran), beyond=len(samples) - len(ran))


def cells_from_samples(samples: list[Mapping], metric: str) -> tuple[dict[int, Cell], dict]:
    """Return (per-length cells, per-(depth, length) cells) counted from sample records."""
    by_length: dict[int, list] = {}
    by_depth_length: dict[tuple, list] = {}
    for sample in samples:
        length = int(float(sample["doc"]["max_seq_length"]))
        by_length.setdefault(length, []).append(sample)
        by_depth_length.setdefault((_depth_of(sample["doc"]), length), []).append(sample)
    return (
        {length: _cell(group, metric) for length, group in sorted(by_length.items())},
        {key: _cell(group, metric) for key, group in by_depth_length.items()},
    )


def _per_length(entry: Mapping, base: str) -> dict[int, float]:
    """Return ``{L: value}`` of a results entry's ``<base>_len_<L>,none`` metrics."""
    pattern = re.compile(rf"{re.escape(base)}_len_(\d+),none")
    return {int(m.group(1)): float(value) for key, value in entry.items() if (m := pattern.fullmatch(key))}


def cells_from_aggregate(entry: Mapping, metric: str) -> dict[int, Cell]:
    """Return per-length cells from a task's results entry: means only, sample counts unknown."""
    accuracy, beyond = _per_length(entry, metric), _per_length(entry, "beyond_window")
    lengths = sorted(set(accuracy) | set(beyond))
    return {n: Cell(accuracy=accuracy.get(n), beyond=int(beyond.get(n, 0))) for n in lengths}


def _disagreements(task: str, from_samples: dict[int, Cell], entry: Mapping, metric: str) -> list[str]:
    """Return a note per length where the samples file and the results JSON differ."""
    notes = []
    for length, in_json in cells_from_aggregate(entry, metric).items():
        mine = from_samples.get(length, Cell(accuracy=None))
        same = (mine.accuracy is None) == (in_json.accuracy is None) and (
            mine.accuracy is None or math.isclose(mine.accuracy, in_json.accuracy, abs_tol=1e-9)
        )
        if not same:
            notes.append(
                f"{task}: the samples file disagrees with the results JSON at length {length} "
                f"({metric} {in_json.accuracy} in the JSON); the report uses the samples."
            )
    return notes


def cells_from_counts(counts: counting.TaskCounts) -> dict[int, Cell]:
    """Return per-length cells from the results file alone: means, with sample counts where it gives them."""
    cells = {}
    for length, told in counts.by_length.items():
        ran = told.ran if told.accuracy is not None else 0
        correct = round(told.accuracy * ran) if ran and told.accuracy is not None else (0 if ran == 0 else None)
        cells[length] = Cell(accuracy=told.accuracy, correct=correct, scored=ran, beyond=told.beyond)
    return cells


def _from_results(task, metric, counts, score, notes) -> TaskResult:
    return TaskResult(task, metric, cells_from_counts(counts), None, score, tuple(notes))


def load_task(results_path: Path, results: Mapping, task: str) -> TaskResult:
    """Return a task's outcome: from its samples file when present and whole, else from the results JSON."""
    entry = results["results"][task]
    metric = headline_metric(task, entry)
    score = entry.get("score,none")
    counts = counting.task_counts(results, task, metric)
    path = samples_file(results_path, task)
    if path is None:
        note = (
            f"{task}: no samples file beside {results_path.name} (lm_eval --log_samples writes one): accuracy "
            "per length is read from the results JSON; sample counts are unknown, so no Wilson intervals "
            "(except where the results' standard errors give them)."
        )
        return _from_results(task, metric, counts, score, [note])
    try:
        samples = read_samples(path)
        if not samples:
            raise ValueError("it holds no samples")
        by_length, by_depth_length = cells_from_samples(samples, metric)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        note = f"{task}: samples file {path.name} unreadable ({exc!r}); used the results JSON only."
        return _from_results(task, metric, counts, score, [note])
    tally = {n: (cell.scored or 0, cell.beyond) for n, cell in by_length.items()}
    problems = counting.count_problems(task, path.name, results_path.name, samples, tally, counts)
    if problems:  # never a count from a file that lost samples: the results file's numbers, said loudly
        warning = (
            f"{task}: the samples file does not match the results file: {'; '.join(problems)}. Accuracy per "
            "length is read from the results file (Wilson intervals only where its standard errors give n), "
            "no heatmap; copy the samples file again from the run, or rerun."
        )
        return replace(_from_results(task, metric, counts, score, []), warnings=(warning,))
    notes = tuple(_disagreements(task, by_length, entry, metric))
    return TaskResult(task, metric, by_length, by_depth_length, score, notes)


def limits(results: Mapping, task: str, result: TaskResult) -> TaskResult:
    """Return ``result`` marked as limited (a warning, the grid's lengths that did not run) when it was."""
    note = counting.limited_note(results, task)
    if note is None:
        return result
    metadata = ((results.get("configs") or {}).get(task) or {}).get("metadata") or {}
    documents = ((results.get("n-samples") or {}).get(task) or {}).get("original")
    done = {n: (cell.scored or 0) + cell.beyond for n, cell in result.by_length.items()}
    missing = tuple(counting.missing_lengths(metadata, documents, done))
    if missing:
        note += f"; lengths not run in full: {', '.join(missing)}"
    warning = f"{note}. Its numbers are of the part that ran, not of the task's grid."
    return replace(result, warnings=result.warnings + (warning,), missing=missing)


def task_version(results: Mapping, task: str) -> dict:
    """Return the task's version and which prompts it ran: version 1 and runs with
    ``answer_prefix: false`` ran the first version's prompts (no answer prefix)."""
    version = (results.get("versions") or {}).get(task)
    metadata = ((results.get("configs") or {}).get(task) or {}).get("metadata") or {}
    first = version is not None and str(version).split(".")[0] == "1"
    if str(metadata.get("answer_prefix", True)).strip().lower() in ("false", "0", "no"):
        first = True
    return {"version": None if version is None else str(version),
            "prompts": "first-version prompts" if first else "answer prefix"}

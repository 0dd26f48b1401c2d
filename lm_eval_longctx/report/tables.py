"""Tables of runs: comparability notes, the leaderboard, accuracy by length; Markdown and CSV (pure)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from lm_eval_longctx.report.runs import GROUP, Cell, Run, TaskResult
from lm_eval_longctx.report.stats import effective_length, rule_accuracies, wilson_interval


def task_names(runs: Sequence[Run]) -> list[str]:
    """Return every longctx task in the runs, in first-seen order."""
    return list(dict.fromkeys(task for run in runs for task in run.tasks))


def tested_lengths(runs: Sequence[Run], task: str) -> list[int]:
    """Return every length any run tested on ``task``, ascending."""
    return sorted({length for run in runs if task in run.tasks for length in run.tasks[task].by_length})


def comparability_notes(runs: Sequence[Run]) -> list[str]:
    """Return a note per task whose runs tested different lengths (or that some runs lack)."""
    notes = []
    for task in task_names(runs):
        sets = {run.label: tuple(sorted(run.tasks[task].by_length)) for run in runs if task in run.tasks}
        missing = [run.label for run in runs if task not in run.tasks]
        if len(set(sets.values())) > 1:
            listed = "; ".join(f"{label}: {', '.join(map(str, lengths))}" for label, lengths in sets.items())
            notes.append(
                f"{task}: runs tested different lengths ({listed}). They are compared only at shared lengths; "
                "effective lengths of runs with different length sets are not comparable. Run them with the "
                "same --metadata max_seq_lengths to compare."
            )
        if missing:
            notes.append(f"{task}: not in the results of {', '.join(missing)}.")
        kinds = {}
        for run in runs:
            if task in run.tasks:
                result = run.tasks[task]
                kinds.setdefault(f"version {result.version or '?'}, {result.prompts}", []).append(run.label)
        if len(kinds) > 1:
            listed = "; ".join(f"{kind}: {', '.join(labels)}" for kind, labels in kinds.items())
            notes.append(
                f"{task}: runs of different task versions or prompts meet ({listed}). Version 2 ends each "
                "prompt with an answer prefix and stops at the end of the answer's line; scores made with "
                "other prompts are not comparable. Rerun the older runs, or run the new ones with "
                "--metadata '{\"answer_prefix\": false}' (the first version's prompts) to compare."
            )
    return notes


def effective_by_task(run: Run, threshold: float) -> dict[str, int | None]:
    """Return each task's effective length for a run (None: the shortest tested length fails)."""
    return {task: effective_length(rule_accuracies(result), threshold) for task, result in run.tasks.items()}


def format_effective(length: int | None, result: TaskResult) -> str:
    """Return an effective length as the table shows it: ``400``, ``< 240``, or ``240 (limited run)``
    when lengths of the task's grid did not run (``--limit``, ``--samples``)."""
    if length is None:
        text = f"< {min(result.by_length)}" if result.by_length else "none tested"
    else:
        text = str(length)
    return f"{text} (limited run)" if result.missing else text


def _length_value(cell: Cell | None):
    """Return a per-length leaderboard value: the accuracy, "beyond window", or None (not tested)."""
    if cell is None:
        return None
    return "beyond window" if cell.all_beyond else cell.accuracy


def leaderboard(runs: Sequence[Run], threshold: float) -> tuple[list[str], list[dict]]:
    """Return the leaderboard columns and one row per run: numbers, "beyond window", or None."""
    columns = ["model", "rope", "native window", "max_length"]
    tasks = task_names(runs)
    for task in tasks:
        columns += [f"{task} @{n}" for n in tested_lengths(runs, task)] + [f"{task} effective", f"{task} score"]
    columns.append(f"{GROUP} score")
    others = list(dict.fromkeys(name for run in runs for name in run.other_scores))
    columns += others + ["results file"]
    rows = []
    for run in runs:
        row = {"model": run.model, "rope": run.rope, "native window": run.native_window, "max_length": run.max_length}
        effective = effective_by_task(run, threshold)
        for task in tasks:
            result = run.tasks.get(task)
            for length in tested_lengths(runs, task):
                row[f"{task} @{length}"] = _length_value(result.by_length.get(length) if result else None)
            row[f"{task} effective"] = format_effective(effective[task], result) if result else None
            row[f"{task} score"] = result.score if result else None
        row[f"{GROUP} score"] = run.group_score
        row.update({name: run.other_scores.get(name) for name in others})
        row["results file"] = str(run.source)
        rows.append(row)
    return columns, rows


def _markdown_value(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|")


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping], titles: Sequence[str] | None = None) -> str:
    """Return rows as a GitHub Markdown table ("—" for a missing value); ``titles`` name the columns."""
    lines = ["| " + " | ".join(titles or columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_markdown_value(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping]) -> None:
    """Write the leaderboard as CSV: full-precision numbers, empty for a missing value."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})


def describe_cell(cell: Cell | None) -> str:
    """Return a cell in words: ``0.833 [0.436, 0.970] (5/6)``, ``beyond window (6)``, ``—``."""
    if cell is None:
        return "—"
    if cell.all_beyond:
        return f"beyond window ({cell.beyond})"
    text = f"{cell.accuracy:.3f}"
    interval = wilson_interval(cell.correct, cell.scored) if cell.scored else None
    text += f" [{interval[0]:.3f}, {interval[1]:.3f}] ({cell.correct}/{cell.scored})" if interval else " (n unknown)"
    return text + (f" + {cell.beyond} beyond window" if cell.beyond else "")


def accuracy_table(runs: Sequence[Run], task: str) -> str:
    """Return a Markdown table of a task's accuracy per length per run, with Wilson 95% intervals."""
    lengths = tested_lengths(runs, task)
    rows = [
        {"run": run.label, **{str(n): describe_cell(run.tasks[task].by_length.get(n)) for n in lengths}}
        for run in runs
        if task in run.tasks
    ]
    return markdown_table(["run"] + [str(n) for n in lengths], rows)

"""RoPE settings compared: the runs of one model under several RoPE settings, one row per setting.

Runs are one model when they name the same model (``Run.model``: chat template and prompt version
included) through the same lm-eval model and arguments apart from RoPE and max_length (``Run.setup``). A model
gets a comparison when its runs hold two or more RoPE settings. Each row gives the setting, the
window the model took, the effective context length per longctx task, the ``longctx`` score, and
every other task's headline score with its change against the run without RoPE scaling (``none``):
what scaling costs at short context. Pure functions of runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lm_eval_longctx.report.runs import GROUP, Run, slug
from lm_eval_longctx.report.stats import effective_length, rule_accuracies
from lm_eval_longctx.report.tables import format_effective, task_names

NO_BASELINE = (
    "No run of this model without RoPE scaling (`none`), so no changes are shown: a change against "
    "another scaled setting would not be the short-context cost. Run `rope_scaling=none` beside the others to see it."
)


@dataclass(frozen=True)
class Comparison:
    """One model's runs under several RoPE settings, in table order."""

    model: str
    setup: str  # the lm-eval model and its arguments apart from RoPE and max_length
    runs: tuple[Run, ...]  # none first, then by kind, factor and theta; repeats of a setting in given order
    settings: tuple[str, ...]  # each run's row name: its RoPE setting, with the run's name where repeated
    slug: str  # file-name part, distinct among the report's comparisons

    @property
    def baseline(self) -> Run | None:
        """The run changes are measured against: the first without RoPE scaling, if any."""
        return next((run for run in self.runs if run.unscaled), None)

    @property
    def other_tasks(self) -> list[str]:
        """The headline-score names (``"task metric"``) of the non-longctx tasks, first seen first."""
        return list(dict.fromkeys(run.other_headlines[task] for run in self.runs for task in run.other_headlines))


def comparisons(runs: Sequence[Run]) -> list[Comparison]:
    """Return a comparison per model whose runs hold two or more RoPE settings, first seen first."""
    models: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        models.setdefault((run.model, run.setup), []).append(run)
    found, slugs = [], set()
    for (model, setup), group in models.items():
        if len({run.rope for run in group}) < 2:
            continue
        ordered = sorted(group, key=lambda run: run.rope_order)  # stable: repeats keep the given order
        repeated = {run.rope for run in ordered if sum(other.rope == run.rope for other in ordered) > 1}
        settings = tuple(f"{run.rope} (run {run.slug})" if run.rope in repeated else run.rope for run in ordered)
        name, count = slug(model), 2
        while name in slugs:  # one model name through two setups (another dtype, another folder)
            name, count = f"{slug(model)}-{count}", count + 1
        slugs.add(name)
        found.append(Comparison(model, setup, tuple(ordered), settings, name))
    return found


def comparison_notes(comparison: Comparison) -> list[str]:
    """Return what a reader of the comparison must know: repeated settings, a missing baseline.

    (Different lengths or task versions among its runs: ``tables.comparability_notes``.)
    """
    notes = []
    by_setting: dict[str, list[Run]] = {}
    for run in comparison.runs:
        by_setting.setdefault(run.rope, []).append(run)
    for setting, runs in by_setting.items():
        if len(runs) > 1:
            files = ", ".join(f"{run.slug} ({run.source})" for run in runs)
            which = " The first is the baseline." if runs[0].unscaled else ""
            notes.append(
                f"{comparison.model}: {len(runs)} runs under RoPE {setting} ({files}); each has its own row, "
                f"named by run.{which} Pass one run per setting for a one-row-per-setting table."
            )
    if comparison.baseline is None:
        notes.append(f"{comparison.model}: {NO_BASELINE}")
    return notes


def _change(run: Run, baseline: Run | None, name: str) -> float | None:
    value = run.other_scores.get(name)
    base = baseline.other_scores.get(name) if baseline is not None else None
    return None if value is None or base is None else value - base


def comparison_rows(comparison: Comparison, threshold: float) -> list[dict]:
    """Return one row per run of the comparison, with raw values (None where missing):

    ``rope``, ``baseline`` (True on the run changes are measured against), ``effective window``,
    ``max_length``, ``<task> effective`` per longctx task, ``longctx score``, and per other task's
    headline ``<name>`` and ``<name> change`` (against the baseline; None without one).
    """
    tasks, baseline = task_names(comparison.runs), comparison.baseline
    rows = []
    for run, setting in zip(comparison.runs, comparison.settings):
        row = {
            "model": comparison.model, "model setup": comparison.setup, "rope": setting,
            "baseline": run is baseline, "effective window": run.effective_window, "max_length": run.max_length,
        }  # fmt: skip
        for task in tasks:
            result = run.tasks.get(task)
            length = effective_length(rule_accuracies(result), threshold) if result else None
            row[f"{task} effective"] = format_effective(length, result) if result else None
        row[f"{GROUP} score"] = run.group_score
        for name in comparison.other_tasks:
            row[name] = run.other_scores.get(name)
            row[f"{name} change"] = _change(run, baseline, name)
        row["results file"] = str(run.source)
        rows.append(row)
    return rows


def csv_columns(compared: Sequence[Comparison]) -> list[str]:
    """Return the columns of comparison.csv: every comparison's, first seen first."""
    columns = ["model", "model setup", "rope", "baseline", "effective window", "max_length"]
    for comparison in compared:
        columns += [f"{task} effective" for task in task_names(comparison.runs)]
    columns.append(f"{GROUP} score")
    for comparison in compared:
        columns += [c for name in comparison.other_tasks for c in (name, f"{name} change")]
    return list(dict.fromkeys(columns + ["results file"]))


def _window(row: dict) -> str | None:
    window, max_length = row["effective window"], row["max_length"]
    if window is None:
        return None
    return f"{window} (max_length {max_length})" if max_length and max_length != window else str(window)


def _with_change(value, change: float | None) -> str | None:
    """Return a value as report.md shows it: ``0.412 (-0.031)``, ``0.412``, ``< 240``; None if missing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None if value is None else str(value)
    return f"{value:.3f}" if change is None else f"{value:.3f} ({change:+.3f})"


def _effective_rank(text: str | None) -> int | None:
    """Return an effective length as a number to rank by: ``< 240`` (the shortest failed) ranks 0."""
    if text is None or text.startswith("none tested"):
        return None
    return 0 if text.startswith("<") else int(text.split()[0])


def best_rows(values: Sequence[float | None], lower_is_better: bool = False) -> set[int]:
    """Return the indexes of the best values, or none when fewer than two differ (no one wins)."""
    known = {index: value for index, value in enumerate(values) if value is not None}
    if len(set(known.values())) < 2:
        return set()
    best = (min if lower_is_better else max)(known.values())
    return {index for index, value in known.items() if value == best}


def markdown_rows(comparison: Comparison, rows: Sequence[dict]) -> tuple[list[str], list[str], list[dict]]:
    """Return (columns, titles, rows) of the comparison as report.md shows it: the baseline named
    in its setting, the window with max_length where that differs, scores with their change, and
    the best of each column in bold where the settings differ."""
    tasks = task_names(comparison.runs)
    copied = [*[f"{task} effective" for task in tasks], f"{GROUP} score"]  # shown as they are
    columns = ["rope", "window", *copied, *comparison.other_tasks]
    titles = ["RoPE setting", "window (tokens)", *[f"{task.removeprefix(f'{GROUP}_')} effective" for task in tasks],
              f"{GROUP} score", *comparison.other_tasks]  # fmt: skip
    shown = []
    for row in rows:
        cells = {"rope": f"{row['rope']} (baseline)" if row["baseline"] else row["rope"], "window": _window(row)}
        cells.update({column: _with_change(row[column], None) for column in copied})
        for name in comparison.other_tasks:
            change = None if row["baseline"] else row[f"{name} change"]
            cells[name] = _with_change(row[name], change)
        shown.append(cells)
    lower = {name for run in comparison.runs for name in run.lower_is_better}
    ranked = {f"{task} effective": [_effective_rank(row[f"{task} effective"]) for row in rows] for task in tasks}
    ranked |= {column: [row[column] for row in rows] for column in (f"{GROUP} score", *comparison.other_tasks)}
    for column, values in ranked.items():
        for index in best_rows(values, lower_is_better=column in lower):
            shown[index][column] = f"**{shown[index][column]}**"
    return columns, titles, shown

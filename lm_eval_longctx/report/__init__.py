"""``lm-eval-longctx report``: heatmaps, length curves, effective context length and a leaderboard.

Reads only lm-eval's own output files (``results_<time>.json`` and, from ``--log_samples``,
``samples_<task>_<time>.jsonl`` beside it); needs no model and no GPU. ``runs`` reads them into
one ``Run`` per results file; ``stats`` holds the effective-length rule and Wilson intervals;
``tables`` the leaderboard and other tables (pure functions of runs); ``figures`` draws one
figure per function with matplotlib (imported only when drawing). This module writes the report.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.outputs import writable_folder
from lm_eval_longctx.report.figures import plot_heatmap, plot_length_curves
from lm_eval_longctx.report.runs import (
    GROUP,
    HEADLINE,
    Cell,
    Run,
    TaskResult,
    load_run,
    load_runs,
    rope_label,
    with_unique_slugs,
)
from lm_eval_longctx.report.stats import (
    DEFAULT_THRESHOLD,
    EFFECTIVE_RULE,
    check_threshold,
    effective_length,
    rule_accuracies,
    wilson_interval,
)
from lm_eval_longctx.report.tables import (
    accuracy_table,
    comparability_notes,
    effective_by_task,
    format_effective,
    leaderboard,
    markdown_table,
    task_names,
    tested_lengths,
    write_csv,
)

# What callers use: ``main`` (the command; a caller that wrote output folders passes them to it),
# ``write_report``, and the reading and the rule, re-exported from the modules that hold them.
__all__ = [
    "Cell", "Run", "TaskResult", "HEADLINE", "DEFAULT_THRESHOLD", "comparability_notes", "default_output_dir",
    "effective_length", "load_run", "load_runs", "main", "rope_label", "rule_accuracies", "wilson_interval",
    "with_unique_slugs", "write_report",
]


def figure_notes(runs: Sequence[Run]) -> list[str]:
    """Return what the figures cannot show: missing samples, unknown windows, intervals."""
    notes = []
    for run in runs:
        if run.native_window is None:
            notes.append(f"{run.label}: native window unknown ({run.native_window_source}); not marked on the plots.")
        for result in run.tasks.values():
            notes += [f"{run.label}: {note}" for note in result.notes]
    return notes


def write_report(runs: Sequence[Run], output_dir: Path, threshold: float, problems: Sequence[str] = ()) -> list[Path]:
    """Write report.md, leaderboard.csv, heatmaps and length curves; return the files written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    figures, not_drawn = [], list(problems)
    for run in runs:
        for task, result in run.tasks.items():
            if not result.by_depth_length:
                not_drawn.append(f"heatmap of {task} for {run.label}: needs the samples file (--log_samples).")
                continue
            path = output_dir / f"heatmap_{run.slug}_{task}.png"
            plot_heatmap(run, result, path)
            figures.append((path, f"{task}, {run.label}: accuracy by needle depth and length"))
    for task in task_names(runs):
        if not tested_lengths(runs, task):
            not_drawn.append(f"length curve of {task}: no per-length results in any run.")
            continue
        path = output_dir / f"length_curve_{task}.png"
        plot_length_curves(runs, task, threshold, path)
        figures.append((path, f"{task}: accuracy against length, one line per run"))
    columns, rows = leaderboard(runs, threshold)
    csv_path = output_dir / "leaderboard.csv"
    write_csv(csv_path, columns, rows)
    notes = comparability_notes(runs) + figure_notes(runs)
    md_path = output_dir / "report.md"
    md_path.write_text(render_markdown(runs, threshold, columns, rows, figures, not_drawn, notes), encoding="utf-8")
    return [md_path, csv_path] + [path for path, _ in figures]


def render_markdown(runs, threshold, columns, rows, figures, not_drawn, notes) -> str:
    """Return the text of report.md."""
    runs_table = markdown_table(
        ["run", "model", "RoPE", "native window", "from", "max_length", "results file"],
        [
            {"run": run.slug, "model": run.model, "RoPE": run.rope, "native window": run.native_window,
             "from": run.native_window_source, "max_length": run.max_length, "results file": str(run.source)}
            for run in runs
        ],
    )
    effective_rows = []
    for run in runs:
        effective = effective_by_task(run, threshold)
        effective_rows.append(
            {"run": run.label, **{t: format_effective(effective[t], r) for t, r in run.tasks.items()}}
        )
    parts = [
        "# Long-context report",
        f"Made by `lm-eval-longctx report` from {len(runs)} lm-eval results file(s). Accuracy is each task's "
        "headline metric (exact for longctx_kv and longctx_passkey, found for longctx_pi_title) over the samples "
        "that ran; samples beyond the model's window are counted apart, never as zero. A task's `score` and the "
        "`longctx score` (the group's unweighted mean of task scores) count beyond-window samples as failures.",
        "## Runs", runs_table,
        "## Leaderboard",
        "Per-length cells: accuracy, `beyond window` when no sample of that length fit the window, `—` when not "
        "tested; where only some samples of a length fit, the accuracy of those that ran (counts under Accuracy "
        "by length). `effective`: effective context length (rule below). Other columns are the other tasks found in "
        "the same results files. Also in `leaderboard.csv` (full precision).",
        markdown_table(columns[:-1], rows, [c.removeprefix(f"{GROUP}_") for c in columns[:-1]]),
        "## Effective context length",
        EFFECTIVE_RULE.format(threshold=threshold),
        markdown_table(["run"] + task_names(runs), effective_rows),
        "## Accuracy by length",
        "Accuracy [Wilson 95% interval, z = 1.96] (correct/run).",
    ]
    for task in task_names(runs):
        parts += [f"### {task}", accuracy_table(runs, task)]
    parts.append("## Figures")
    parts += [f"- `{path.name}`: {text}\n\n  ![{text}]({path.name})" for path, text in figures]
    parts.append("## Not drawn, and notes")
    bullets = [f"- Not drawn: {item}" for item in not_drawn] + [f"- {item}" for item in notes]
    parts.append("\n".join(bullets) if bullets else "Everything was drawn.")
    return "\n\n".join(parts) + "\n"


def default_output_dir(first_path: Path) -> Path:
    """Return the folder beside the first PATH where the report goes: ``<PATH>_longctx_report``."""
    first_path = Path(first_path).resolve()  # so that "." gets a folder beside it, not inside
    name = first_path.stem if first_path.is_file() else first_path.name
    return first_path.parent / f"{name or 'lm_eval'}_longctx_report"


def main(paths: Sequence[str], output_dir: str | None = None, threshold: float = DEFAULT_THRESHOLD) -> int:
    """Make the report; return the exit status (0 all read, 1 some inputs skipped)."""
    threshold = check_threshold(threshold)
    out = Path(output_dir) if output_dir else default_output_dir(Path(paths[0]))
    writable_folder(out, "--output-dir")  # before reading anything
    runs, problems = load_runs([Path(p) for p in paths])
    try:
        written = write_report(runs, out, threshold, problems)
    except OSError as exc:
        raise LongCtxError(f"--output-dir {out}: writing the report failed ({exc}); give a folder you can write to.") from None
    for problem in problems:
        print(f"lm-eval-longctx warning: skipped: {problem}", file=sys.stderr)
    for note in comparability_notes(runs):
        print(f"lm-eval-longctx warning: {note}", file=sys.stderr)
    print(f"{len(runs)} run(s) -> {out}")
    for path in written:
        print(f"  {path.name}")
    return 1 if problems else 0

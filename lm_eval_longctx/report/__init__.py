"""``lm-eval-longctx report``: heatmaps, length curves, effective context length and a leaderboard.

Reads only lm-eval's own output files (``results_<time>.json`` and, from ``--log_samples``,
``samples_<task>_<time>.jsonl`` beside it); needs no model and no GPU. ``runs`` reads them into
one ``Run`` per results file; ``stats`` holds the effective-length rule and Wilson intervals;
``tables`` the leaderboard and other tables and ``compare`` the RoPE settings of one model side by
side (pure functions of runs); ``figures`` draws one figure per function with matplotlib (imported
only when drawing). This module writes the report.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from lm_eval_longctx.catalog import headlines_text
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.outputs import writable_folder
from lm_eval_longctx.report import card, compare, html
from lm_eval_longctx.report.figures import plot_heatmap, plot_length_curves, plot_perplexity, plot_rope_comparison
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


def run_warnings(runs: Sequence[Run]) -> list[str]:
    """Return what makes a run's numbers doubtful, one line each: samples that do not match the
    results file's counts, a limited run (``--limit``, ``--samples``) and the lengths it left out."""
    return [f"{run.label} ({run.source}): {warning}" for run in runs for r in run.tasks.values() for warning in r.warnings]


def write_report(runs: Sequence[Run], output_dir: Path, threshold: float, problems: Sequence[str] = ()) -> list[Path]:
    """Write report.md, leaderboard.csv, heatmaps and length curves, and where a model ran under
    several RoPE settings comparison.csv and a length curve per task with a line per setting;
    return the files written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    figures, not_drawn = [], list(problems)
    for run in runs:
        for task, result in run.tasks.items():
            if not result.by_depth_length:
                why = "its samples file does not match the results file (Warnings)" if result.by_length and any(
                    "does not match" in w for w in result.warnings) else "needs the samples file (--log_samples)"
                not_drawn.append(f"heatmap of {task} for {run.label}: {why}.")
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
    for task in card.perplexity_tasks(runs):
        path = output_dir / f"perplexity_{task}.png"
        shown = [run for run in runs if task in run.perplexity]
        plot_perplexity(shown, [run.label for run in shown], task, f"{task}: perplexity against context length", path)
        figures.append((path, f"{task}: perplexity against length, one line per run"))
    columns, rows = leaderboard(runs, threshold)
    csv_path = output_dir / "leaderboard.csv"
    write_csv(csv_path, columns, rows)
    compared, written = write_comparisons(runs, output_dir, threshold)
    cards = []
    for comparison, _, _ in compared:
        drawn = card.draw(comparison, output_dir)
        cards += card.card_parts(comparison, threshold, drawn)
        written += [path for path, _ in drawn]
    notes = comparability_notes(runs) + figure_notes(runs)
    md_path, html_path = output_dir / "report.md", output_dir / "report.html"
    text = render_markdown(runs, threshold, columns, rows, figures, not_drawn, notes, compared, cards)
    md_path.write_text(text, encoding="utf-8")
    html_path.write_text(html.to_html(text, output_dir, "Long-context report"), encoding="utf-8")
    return [md_path, html_path, csv_path] + written + [path for path, _ in figures]


def write_comparisons(runs: Sequence[Run], output_dir: Path, threshold: float) -> tuple[list, list[Path]]:
    """Write comparison.csv and a length curve per task and compared model, if any model ran under
    several RoPE settings; return ([(comparison, its rows, its figures)], the files written)."""
    compared, written = [], []
    for comparison in compare.comparisons(runs):
        drawn = []
        for task in task_names(comparison.runs):
            if tested_lengths(comparison.runs, task):
                path = output_dir / f"rope_compare_{comparison.slug}_{task}.png"
                plot_rope_comparison(comparison, task, threshold, path)
                drawn.append((path, f"{task}, {comparison.model}: accuracy against length, one line per RoPE setting"))
        compared.append((comparison, compare.comparison_rows(comparison, threshold), drawn))
        written += [path for path, _ in drawn]
    if compared:
        path = output_dir / "comparison.csv"
        columns = compare.csv_columns([comparison for comparison, _, _ in compared])
        write_csv(path, columns, [row for _, rows, _ in compared for row in rows])
        written.insert(0, path)
    return compared, written


def render_markdown(runs, threshold, columns, rows, figures, not_drawn, notes, compared=(), cards=()) -> str:
    """Return the text of report.md; ``compared`` holds (comparison, its rows, its figures),
    ``cards`` the report cards' parts (one card per model run under several RoPE settings)."""
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
    warnings = run_warnings(runs)
    parts = [
        "# Long-context report",
        *(["## Warnings", "Read these before any number below.", "\n".join(f"- **{w}**" for w in warnings)]
          if warnings else []),
        f"Made by `lm-eval-longctx report` from {len(runs)} lm-eval results file(s). Accuracy is each task's "
        f"headline metric ({headlines_text()}) over the samples "
        "that ran; samples beyond the model's window are counted apart, never as zero. A task's `score` and the "
        "`longctx score` (the group's unweighted mean of task scores) count beyond-window samples as failures.",
        *cards,
        "## Runs", runs_table,
        "## Leaderboard",
        "Per-length cells: accuracy, `beyond window` when no sample of that length fit the window, `—` when not "
        "tested; where only some samples of a length fit, the accuracy of those that ran (counts under Accuracy "
        "by length). `effective`: effective context length (rule below). Other columns are the other tasks found in "
        "the same results files. Also in `leaderboard.csv` (full precision).",
        markdown_table(columns[:-1], rows, [c.removeprefix(f"{GROUP}_") for c in columns[:-1]]),
    ]
    for comparison, comparison_rows, drawn in compared:
        parts += comparison_section(comparison, comparison_rows, drawn, threshold)
    parts += [
        "## Effective context length",
        EFFECTIVE_RULE.format(threshold=threshold),
        markdown_table(["run"] + task_names(runs), effective_rows),
        "## Accuracy by length",
        "Accuracy [Wilson 95% interval, z = 1.96] (correct/run).",
    ]
    for task in task_names(runs):
        parts += [f"### {task}", accuracy_table(runs, task)]
    perplexity = card.perplexity_tasks(runs)
    if perplexity:
        parts += ["## Perplexity by length", "Perplexity [95% interval] per length; lower is better."]
        for task in perplexity:
            shown = [run for run in runs if task in run.perplexity]
            parts += [f"### {task}", card.perplexity_table(shown, [run.label for run in shown], task)]
    parts.append("## Figures")
    parts += [f"- `{path.name}`: {text}\n\n  ![{text}]({path.name})" for path, text in figures]
    parts.append("## Not drawn, and notes")
    bullets = [f"- Not drawn: {item}" for item in not_drawn] + [f"- {item}" for item in notes]
    parts.append("\n".join(bullets) if bullets else "Everything was drawn.")
    return "\n\n".join(parts) + "\n"


def comparison_section(comparison, rows, drawn, threshold) -> list[str]:
    """Return the parts of report.md that compare one model's RoPE settings."""
    columns, titles, shown = compare.markdown_rows(comparison, rows)
    baseline = comparison.baseline
    change = (
        f"with its change against the baseline `{baseline.rope}` in brackets: what the scaling costs at short context"
        if baseline is not None else "with no change: no run without RoPE scaling"
    )
    intro = (
        f"`{comparison.setup}`, one row per RoPE setting (no scaling first, then by kind and factor). `window`: the "
        "tokens the model took (the scaled window; lm-eval's max_length for stock hf), with max_length where that "
        f"was set apart. `effective`: effective context length at the threshold {threshold:g} (rule below). Other "
        f"tasks: each task's first metric as lm-eval lists it, {change}. **Bold**: the best of a column where the "
        "settings differ (the longest effective length; the highest score, or the lowest where lm-eval marks the "
        "metric lower-is-better). Also in `comparison.csv` (full precision)."
    )
    notes = compare.comparison_notes(comparison) + comparability_notes(comparison.runs)
    parts = [f"## RoPE settings compared: {comparison.model}", intro, markdown_table(columns, shown, titles)]
    if notes:
        parts.append("\n".join(f"- {note}" for note in notes))
    parts += [f"![{text}]({path.name})" for path, text in drawn]
    return parts


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
    for warning in run_warnings(runs):
        print(f"lm-eval-longctx warning: {warning}", file=sys.stderr)
    for note in comparability_notes(runs) + [n for c in compare.comparisons(runs) for n in compare.comparison_notes(c)]:
        print(f"lm-eval-longctx warning: {note}", file=sys.stderr)
    print(f"{len(runs)} run(s) -> {out}")
    for path in written:
        print(f"  {path.name}")
    return 1 if problems else 0

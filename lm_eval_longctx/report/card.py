"""The RoPE report card: one page per model run under several RoPE settings (a sweep).

Perplexity against length (one curve per setting), effective length per retrieval task and
setting with the Wilson intervals it rests on, short-benchmark changes against the baseline with a
paired test on the same documents (``paired``), provenance per setting (``config.longctx``), and
what was skipped or beyond the window. Returns Markdown parts; ``html`` turns the page into a
self-contained report.html.
"""

from __future__ import annotations

import json
from pathlib import Path

from lm_eval_longctx.report import paired
from lm_eval_longctx.report.compare import Comparison
from lm_eval_longctx.report.figures import plot_perplexity
from lm_eval_longctx.report.ppl import describe
from lm_eval_longctx.report.runs import Run
from lm_eval_longctx.report.stats import effective_length, rule_accuracies
from lm_eval_longctx.report.tables import describe_cell, format_effective, markdown_table, task_names


def perplexity_tasks(runs) -> list[str]:
    """Return every perplexity task of the runs, first seen first."""
    return list(dict.fromkeys(task for run in runs for task in run.perplexity))


def _legend(run, name: str) -> str:
    """A setting's legend entry: its window, and max_length where it ran past it."""
    if not run.effective_window:
        return name
    past = f", max_length {run.max_length}" if run.max_length and run.max_length != run.effective_window else ""
    return f"{name} (window {run.effective_window}{past})"


def draw(comparison: Comparison, output_dir: Path) -> list[tuple[Path, str]]:
    """Draw the card's perplexity figures; return [(path, caption)]."""
    drawn = []
    for task in perplexity_tasks(comparison.runs):
        path = output_dir / f"perplexity_{comparison.slug}_{task}.png"
        title = (f"{task}: {comparison.model}, one line per RoPE setting\n"
                 "perplexity against context length (bars: 95%)")
        labels = [_legend(run, name) for run, name in zip(comparison.runs, comparison.settings)]
        plot_perplexity(comparison.runs, labels, task, title, path)
        drawn.append((path, f"{task}, {comparison.model}: perplexity against length, one line per RoPE setting"))
    return drawn


def perplexity_table(runs, names, task: str) -> str:
    """Return a Markdown table of a perplexity task: a row per run, a column per length and overall."""
    lengths = sorted({n for run in runs if task in run.perplexity for n in run.perplexity[task].by_length})
    rows = []
    for run, name in zip(runs, names):
        if task in run.perplexity:
            result = run.perplexity[task]
            rows.append({"setting": name, **{str(n): describe(result.by_length.get(n)) for n in lengths},
                         "overall": describe(result.overall)})  # fmt: skip
    return markdown_table(["setting", *map(str, lengths), "overall"], rows)


def effective_with_interval(result, threshold: float) -> str:
    """Return the effective length with the cells it rests on: the longest passing length's
    accuracy and the first failing one's, each with its Wilson interval."""
    accuracies = rule_accuracies(result)
    length = effective_length(accuracies, threshold)
    text = format_effective(length, result)
    lengths = sorted(result.by_length)
    if length is not None:
        text += f"; at {length}: {describe_cell(result.by_length[length])}"
    failing = next((n for n in lengths if length is None or n > length), None)
    if failing is not None:
        text += f"; fails at {failing}: {describe_cell(result.by_length[failing])}"
    return text


def provenance_row(run: Run, name: str) -> dict:
    """Return a setting's provenance: what hf-longctx recorded in config.longctx."""
    record = run.record
    versions = record.get("versions") or {}
    return {
        "setting": name,
        "rope_parameters": json.dumps(record.get("rope_parameters"), sort_keys=True) if record else run.rope,
        "native window": run.native_window, "window": run.effective_window, "max_length": run.max_length,
        "dtype": record.get("dtype"), "attention": record.get("attn_implementation"),
        "beyond-window requests": record.get("beyond_window_requests"),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()) or None, "results file": str(run.source),
    }  # fmt: skip


def skipped_lines(run: Run, name: str) -> list[str]:
    """Return what a setting did not score: retrieval samples beyond the window, perplexity windows
    beyond it and documents too short, and the run's warnings."""
    lines = []
    for task, result in run.tasks.items():
        beyond = {n: cell.beyond for n, cell in result.by_length.items() if cell.beyond}
        if beyond:
            lines.append(f"{name}: {task}: beyond the window, not run: " + ", ".join(f"{c} at {n}" for n, c in beyond.items()))
    for task, result in run.perplexity.items():
        beyond = {n: p.beyond for n, p in result.by_length.items() if p.beyond}
        if result.beyond_window or beyond:
            at = ", ".join(f"{c} at {n}" for n, c in beyond.items())
            lines.append(f"{name}: {task}: {result.beyond_window} beyond the window, not scored" + (f" ({at})" if at else ""))
        if result.skipped:
            lines.append(f"{name}: {task}: " + ", ".join(f"{key} {value:g}" for key, value in result.skipped.items()))
    lines += [f"{name}: {warning}" for r in run.tasks.values() for warning in r.warnings]
    return lines


def short_benchmarks(comparison: Comparison) -> list[str]:
    """Return the card's short-benchmark part: a row per task, the baseline's value, and per other
    setting its value and change with the paired test beside it."""
    baseline = comparison.baseline
    tasks = list(dict.fromkeys(task for run in comparison.runs for task in run.other_headlines))
    if not tasks:
        return ["No short benchmark in these runs: add them to --tasks (e.g. --tasks longctx,longctx_ppl,hellaswag)."]
    if baseline is None:
        return ["No run without RoPE scaling (`none`): no baseline to measure the short-context cost against."]
    others = [(run, name) for run, name in zip(comparison.runs, comparison.settings) if run is not baseline]
    rows = []
    for task in tasks:
        headline = baseline.other_headlines.get(task) or next(r.other_headlines[task] for r in comparison.runs if task in r.other_headlines)
        row = {"task": headline, "baseline": baseline.other_scores.get(headline)}
        for run, name in others:
            if task not in run.other_headlines or task not in baseline.other_headlines:
                row[name] = "—"
                continue
            change = paired.paired_change(baseline, run, task)
            value = run.other_scores.get(headline)
            row[name] = "—" if value is None else f"{value:.3f}, {paired.describe(change)}"
        rows.append(row)
    intro = (
        f"Each task's headline metric under `{baseline.rope}` (the baseline) and under each setting, with its change "
        "and a paired test on the same documents (matched by doc_id and doc_hash in the samples files): McNemar's "
        "exact test for 0/1 metrics (lost: right under the baseline only; gained: right under the setting only), a "
        f"paired bootstrap of the mean difference for others (10,000 resamples, seed {paired.SEED}). A p-value "
        "well above 0.05 (or an interval across 0) means the change is within noise at this number of documents."
    )
    return [intro, markdown_table(["task", "baseline", *[name for _, name in others]], rows,
                                  ["task", f"{baseline.rope} (baseline)", *[name for _, name in others]])]  # fmt: skip


def card_parts(comparison: Comparison, threshold: float, drawn: list[tuple[Path, str]]) -> list[str]:
    """Return the Markdown parts of one model's report card."""
    runs, names = comparison.runs, comparison.settings
    parts = [
        f"## Report card: {comparison.model}",
        f"`{comparison.setup}` under {len(runs)} RoPE settings: {', '.join(f'`{n}`' for n in names)}.",
        "### Perplexity against length",
    ]
    tasks = perplexity_tasks(runs)
    if not tasks:
        parts.append("No perplexity task in these runs: add `longctx_ppl` to --tasks.")
    for task in tasks:
        parts += [f"![{text}]({path.name})" for path, text in drawn if task in path.name]
        parts += [f"{task}: perplexity [95% interval] per length; lower is better.", perplexity_table(runs, names, task)]
    retrieval = task_names(runs)
    parts.append("### Effective context length")
    if retrieval:
        rows = [{"setting": name, **{t: effective_with_interval(run.tasks[t], threshold) if t in run.tasks else "—"
                                     for t in retrieval}} for run, name in zip(runs, names)]  # fmt: skip
        parts += [
            f"Threshold {threshold:g} (rule below, under Effective context length); beside each, the accuracy "
            "[Wilson 95%] (correct/run) at the effective length and at the first length that fails.",
            markdown_table(["setting", *retrieval], rows),
        ]
    else:
        parts.append("No retrieval task in these runs: add `longctx` to --tasks.")
    parts += ["### Short benchmarks against the baseline", *short_benchmarks(comparison)]
    columns = ["setting", "rope_parameters", "native window", "window", "max_length", "dtype", "attention",
               "beyond-window requests", "versions", "results file"]  # fmt: skip
    parts += ["### Provenance per setting", markdown_table(columns, [provenance_row(r, n) for r, n in zip(runs, names)])]
    lines = [line for run, name in zip(runs, names) for line in skipped_lines(run, name)]
    parts += ["### Skipped or beyond the window", "\n".join(f"- {line}" for line in lines) or "Nothing: every sample ran."]
    return parts

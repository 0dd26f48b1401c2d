"""Reading lm-eval output into runs: one ``Run`` per results file, its tasks and provenance.

Reads ``results_<time>.json`` and, from ``--log_samples``, ``samples_<task>_<time>.jsonl`` beside
it (``tasks``); labels the model and its RoPE setting (``provenance``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from lm_eval_longctx.catalog import TASKS, our_tasks
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.report.provenance import (  # noqa: F401  (rope_label, rope_order: read from here too)
    UNKNOWN_ROPE,
    model_label,
    model_setup,
    provenance,
    rope_label,
    rope_order,
    served_record,
)
from lm_eval_longctx.report.ppl import Perplexity, is_perplexity, read_perplexity
from lm_eval_longctx.report.tasks import GROUP, HEADLINE, NO_DEPTH, Cell, TaskResult, limits, load_task, task_version  # noqa: F401
from lm_eval_longctx.results_check import check_results


@dataclass(frozen=True)
class Run:
    """One lm-eval results file: who ran, under which RoPE setting, and what it scored."""

    source: Path
    model: str
    rope: str
    native_window: int | None
    native_window_source: str
    max_length: int | None
    tasks: dict[str, TaskResult]
    group_score: float | None
    other_scores: dict[str, float] = field(default_factory=dict)
    slug: str = ""
    # For comparing RoPE settings of one model:
    setup: str = ""  # the lm-eval model and its arguments apart from RoPE and max_length: "hf-longctx pretrained=/m"
    rope_order: tuple = UNKNOWN_ROPE  # sort key of the setting; (0, ...) only for no scaling at all
    effective_window: int | None = None  # tokens the model took: scaled window, or lm-eval's max_length
    other_headlines: dict[str, str] = field(default_factory=dict)  # other task -> its other_scores key
    lower_is_better: frozenset[str] = frozenset()  # other_scores keys lm-eval marks higher_is_better: false
    perplexity: dict[str, Perplexity] = field(default_factory=dict)  # longctx_ppl, per length
    record: dict = field(default_factory=dict)  # config.longctx as hf-longctx wrote it ({} for other models)

    @property
    def label(self) -> str:
        return f"{self.model}, RoPE {self.rope}"

    @property
    def unscaled(self) -> bool:
        """True when the run used the model's RoPE with no scaling and no theta override (``none``)."""
        return self.rope_order[0] == 0



def results_files(path: Path) -> list[Path]:
    """Return the lm-eval results files at ``path``: the file itself, or results_*.json below a folder."""
    if not path.exists():
        raise LongCtxError(
            f"{path}: no such file or folder. Pass a folder given to lm_eval --output_path, or a results_*.json file."
        )
    if path.is_file():
        return [path]
    found = sorted(path.rglob("results_*.json"))
    if not found:
        raise LongCtxError(
            f"{path}: no lm-eval results (no results_*.json in this folder or below). Pass the folder given "
            "to lm_eval --output_path after the run finished, or a results JSON file."
        )
    return found


def read_results(path: Path) -> dict:
    """Return the parsed results JSON at ``path``, or raise LongCtxError if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LongCtxError(f"{path}: not a readable JSON file ({exc}); pass an lm-eval results_*.json file.") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise LongCtxError(f"{path}: not an lm-eval results file (no \"results\" table); pass a results_*.json file.")
    check_results(path, data)  # a hand-edited or damaged file: one line naming the place
    return data


def longctx_tasks(results: Mapping) -> list[str]:
    """Return the longctx retrieval task names (catalog tasks, not the group, not perplexity) in a results file, in file order."""
    return [name for name in our_tasks(results["results"]) if not is_perplexity(name, results["results"][name])]


def perplexity_tasks(results: Mapping) -> dict[str, Perplexity]:
    """Return each perplexity task of a results file (``longctx_ppl``), read per length."""
    return {name: read_perplexity(name, entry) for name, entry in results["results"].items()
            if is_perplexity(name, entry)}  # fmt: skip


def _subtasks_of_groups(results: Mapping) -> set[str]:
    return {name for members in (results.get("group_subtasks") or {}).values() for name in members}


def other_scores(results: Mapping) -> tuple[dict[str, float], dict[str, str], frozenset[str]]:
    """Return the scores of non-longctx tasks and groups, ``{"task metric": value}``; each task's
    headline, ``{task: its first "task metric" key}`` (the first metric lm-eval lists for it); and
    the keys whose metric lm-eval marks ``higher_is_better: false``.

    Members of a group are left out when the group's own score is there, and so are lm-eval's
    RULER placeholders: its tasks report every default length, with -1 for those not run
    (``lm_eval/tasks/ruler/common_utils.py``, 0.4.13), a mark and not a score.
    """
    skipped = _subtasks_of_groups(results)
    directions = results.get("higher_is_better") or {}
    scores, headlines, lower = {}, {}, set()
    for task, entry in results["results"].items():
        if task == GROUP or task in TASKS or task in skipped or is_perplexity(task, entry):
            continue
        for key, value in entry.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or "_stderr" in metric or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if metric.isdigit() and value == -1:  # a RULER length that was not run
                continue
            suffix = "" if filter_name == "none" else f" ({filter_name})"
            scores[f"{task} {metric}{suffix}"] = float(value)
            headlines.setdefault(task, f"{task} {metric}{suffix}")
            if (directions.get(task) or {}).get(metric) is False:
                lower.add(f"{task} {metric}{suffix}")
    return scores, headlines, frozenset(lower)


def load_run(path: Path) -> Run:
    """Return the run recorded in one results file; LongCtxError if it has no longctx task."""
    results = read_results(path)
    tasks = longctx_tasks(results)
    perplexity = perplexity_tasks(results)
    if not tasks and not perplexity:
        found = ", ".join(results["results"]) or "none"
        raise LongCtxError(
            f"{path}: no longctx task in this results file (tasks found: {found}). Run lm_eval with "
            f"--tasks longctx (or any of {', '.join(TASKS)}) and pass that output."
        )
    setting = provenance(results)
    served = served_record(results)
    group = results["results"].get(GROUP, {}).get("score,none")
    results_by_task = {
        task: limits(results, task, replace(load_task(path, results, task), **task_version(results, task))) for task in tasks
    }
    # Prompts under a chat template, or the first version's prompts, are another experiment:
    # say so where runs are named.
    chat = results.get("chat_template") or (served or {}).get("endpoint") == "chat/completions"
    first = any(result.prompts == "first-version prompts" for result in results_by_task.values())
    scores, headlines, lower = other_scores(results)
    native, max_length, window = setting.native_window, setting.max_length, setting.effective_window
    return Run(
        source=path,
        model=model_label(results.get("config") or {}, served)
        + (" (chat template)" if chat else "")
        + (" (first-version prompts)" if first else ""),
        rope=setting.rope,
        native_window=int(native) if native else None,
        native_window_source=setting.native_window_source,
        max_length=int(max_length) if max_length else None,
        tasks=results_by_task,
        group_score=group,
        other_scores=scores,
        setup=model_setup(results.get("config") or {}),
        rope_order=setting.rope_order,
        effective_window=int(window) if window else None,
        other_headlines=headlines,
        lower_is_better=lower,
        perplexity=perplexity,
        record=dict((results.get("config") or {}).get("longctx") or {}),
    )


def slug(text: str) -> str:
    """Return ``text`` as a file-name part: letters, digits, dots and dashes."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "run"


def with_unique_slugs(runs: Sequence[Run]) -> list[Run]:
    """Return the runs with distinct file-name slugs (model_rope, then -2, -3 on repeats)."""
    seen: dict[str, int] = {}
    named = []
    for run in runs:
        base = f"{slug(run.model)}_{slug(run.rope)}"
        seen[base] = seen.get(base, 0) + 1
        named.append(replace(run, slug=base if seen[base] == 1 else f"{base}-{seen[base]}"))
    return named


def load_runs(paths: Sequence[Path]) -> tuple[list[Run], list[str]]:
    """Return the runs found at ``paths`` and a message for each path or file that gave none.

    Raises LongCtxError, listing every problem, when no path gave a run.
    """
    runs, problems = [], []
    for path in paths:
        try:
            files = results_files(Path(path))
        except LongCtxError as exc:
            problems.append(str(exc))
            continue
        for file in files:
            try:
                runs.append(load_run(file))
            except LongCtxError as exc:
                problems.append(str(exc))
    if not runs:
        raise LongCtxError("nothing to report: " + " | ".join(problems))
    return with_unique_slugs(runs), problems

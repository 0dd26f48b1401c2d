"""``lm-eval-longctx report``: heatmaps, length curves, effective context length and a leaderboard.

Reads only lm-eval's own output files (``results_<time>.json`` and, from ``--log_samples``,
``samples_<task>_<time>.jsonl`` beside it); needs no model and no GPU. Loading gives one ``Run``
per results file; the tables and the effective-length rule are pure functions of runs; the
plotting functions draw one figure each with matplotlib (imported only when drawing).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from lm_eval_longctx import rope
from lm_eval_longctx.catalog import TASKS
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.outputs import writable_folder
from lm_eval_longctx.results_check import check_results
from lm_eval_longctx.window import BEYOND_WINDOW

GROUP = "longctx"
# The per-sample metric each task's accuracy is read from (the one its ``score`` copies).
HEADLINE = {name: task.headline for name, task in TASKS.items()}
DEFAULT_THRESHOLD = 0.85
Z95 = 1.96
NO_DEPTH = None  # the depth key of tasks whose documents have no needle depth (pi_title)
INSTALL_HINT = "pip install 'lm-eval-longctx[report]'"

EFFECTIVE_RULE = (
    "The effective context length of a run on a task is the longest tested length L at which the "
    "accuracy is at or above the threshold ({threshold:g}) at L and at every shorter tested length. "
    "A length where any sample was beyond the model's window (not run, because the prompt did not "
    "fit) counts as failing. When the shortest tested length fails, the effective length is "
    "reported as \"< shortest tested\". When every tested length passes, it is the longest tested "
    "length: the model may hold more."
)


# --------------------------------------------------------------------------- data


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

    @property
    def label(self) -> str:
        return f"{self.model}, RoPE {self.rope}"


# --------------------------------------------------------------------------- statistics


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


# --------------------------------------------------------------------------- loading


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
    """Return the longctx task names (not the group) in a results file, in file order."""
    return [name for name in results["results"] if name.startswith(f"{GROUP}_")]


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


def load_task(results_path: Path, task: str, entry: Mapping) -> TaskResult:
    """Return a task's outcome: from its samples file when present, else from the results JSON."""
    metric = headline_metric(task, entry)
    score = entry.get("score,none")
    path = samples_file(results_path, task)
    if path is None:
        note = (
            f"{task}: no samples file beside {results_path.name} (lm_eval --log_samples writes one): accuracy "
            "per length is read from the results JSON; sample counts are unknown, so no Wilson intervals."
        )
    else:
        try:
            samples = read_samples(path)
            if not samples:
                raise ValueError("it holds no samples")
            by_length, by_depth_length = cells_from_samples(samples, metric)
            notes = tuple(_disagreements(task, by_length, entry, metric))
            return TaskResult(task, metric, by_length, by_depth_length, score, notes)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            note = f"{task}: samples file {path.name} unreadable ({exc!r}); used the results JSON only."
    return TaskResult(task, metric, cells_from_aggregate(entry, metric), None, score, (note,))


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


def model_args(config: Mapping) -> dict:
    """Return ``--model_args`` as a dict (lm-eval stores a dict, or the string as typed)."""
    args = config.get("model_args") or {}
    if isinstance(args, str):
        return dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    return dict(args)


def model_label(config: Mapping, served: Mapping | None = None) -> str:
    """Return the model's short name: the last part of ``pretrained`` (a served model: its name
    as sent to the server, and the server's address)."""
    if served is not None:
        name = served.get("model") or Path(str(served.get("tokenizer") or "model").rstrip("/")).name
        host = str(served.get("base_url", "")).split("//", 1)[-1].split("/", 1)[0]
        return f"{Path(str(name).rstrip('/')).name} @ {host}"
    pretrained = model_args(config).get("pretrained")
    if not isinstance(pretrained, str) or not pretrained:
        return str(config.get("model") or "unknown model")
    return Path(pretrained.rstrip("/")).name


def rope_label(rope_parameters: Mapping | None, rope_theta_override=None) -> str:
    """Return a RoPE setting in words: ``none``, ``linear x2``, ``yarn x4 theta=500000``."""
    params = rope_parameters or {}
    kind = params.get("rope_type") or params.get("type") or "default"
    label = "none" if kind == "default" else f"{kind} x{float(params.get('factor', 1)):g}"
    if rope_theta_override is not None:
        label += f" theta={float(rope_theta_override):g}"
    return label


def _checkpoint_config(config: Mapping) -> dict | None:
    pretrained = model_args(config).get("pretrained")
    path = Path(pretrained) / "config.json" if isinstance(pretrained, str) else None
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else None
    except (OSError, ValueError):
        return None


def served_record(results: Mapping) -> dict | None:
    """Return what served the model (``longctx_served`` in a longctx task's metadata), if served."""
    for task, task_config in (results.get("configs") or {}).items():
        if task.startswith(f"{GROUP}_") and isinstance(task_config, Mapping):
            record = (task_config.get("metadata") or {}).get("longctx_served")
            if isinstance(record, Mapping):
                return {**record, "tokenizer": (task_config.get("metadata") or {}).get("tokenizer")}
    return None


def _served_provenance(record: Mapping) -> tuple[str, int | None, str, int | None]:
    """Provenance of a served run: the server's RoPE as the user recorded it (server_rope)."""
    if record.get("server_rope_parameters") is not None:
        label = f"{rope_label(record['server_rope_parameters'])} (served)"
    else:
        label = "as set on the server, not recorded (served)"
    tokenizer = record.get("tokenizer")
    checkpoint = _checkpoint_config({"model_args": {"pretrained": tokenizer}}) if isinstance(tokenizer, str) else None
    if checkpoint:
        try:
            native = rope.merge_rope(checkpoint).native_window
        except LongCtxError:
            native = None
        if native:
            return label, native, "the served model's config.json (tokenizer folder)", None
    return label, None, "unknown (served; no config.json beside the tokenizer)", None


def provenance(results: Mapping) -> tuple[str, int | None, str, int | None]:
    """Return (RoPE label, native window, where the window came from, model max_length)."""
    config = results.get("config") or {}
    record = served_record(results)
    if record is not None:
        return _served_provenance(record)
    longctx = config.get("longctx")
    if isinstance(longctx, Mapping):  # written by --model hf-longctx
        theta = (longctx.get("rope_args") or {}).get("rope_theta")
        label = rope_label(longctx.get("rope_parameters"), theta)
        return label, longctx.get("native_window"), "hf-longctx provenance", longctx.get("max_length")
    # Stock hf: no scaling of ours; the checkpoint's own RoPE and window, when its config is readable.
    max_length = results.get("max_length")
    checkpoint = _checkpoint_config(config) or {}
    try:
        setup = rope.merge_rope(checkpoint)
    except LongCtxError:
        setup = rope.RopeSetup()
    label = rope_label(setup.rope_parameters)
    label = f"{label} (stock hf)" if label == "none" else f"{label} (checkpoint, stock hf)"
    native = setup.native_window or checkpoint.get("n_positions") or checkpoint.get("n_ctx")
    if native:
        return label, native, "the checkpoint's config.json", max_length
    if max_length:
        return label, int(max_length), "lm-eval's max_length (checkpoint config not readable)", max_length
    return label, None, "unknown (no hf-longctx provenance, checkpoint config not readable)", None


def _subtasks_of_groups(results: Mapping) -> set[str]:
    return {name for members in (results.get("group_subtasks") or {}).values() for name in members}


def other_scores(results: Mapping) -> dict[str, float]:
    """Return the scores of non-longctx tasks and groups: ``{"task metric": value}``.

    Members of a group are left out when the group's own score is there.
    """
    skipped = _subtasks_of_groups(results)
    scores = {}
    for task, entry in results["results"].items():
        if task == GROUP or task.startswith(f"{GROUP}_") or task in skipped:
            continue
        for key, value in entry.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or "_stderr" in metric or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            suffix = "" if filter_name == "none" else f" ({filter_name})"
            scores[f"{task} {metric}{suffix}"] = float(value)
    return scores


def load_run(path: Path) -> Run:
    """Return the run recorded in one results file; LongCtxError if it has no longctx task."""
    results = read_results(path)
    tasks = longctx_tasks(results)
    if not tasks:
        found = ", ".join(results["results"]) or "none"
        raise LongCtxError(
            f"{path}: no longctx task in this results file (tasks found: {found}). Run lm_eval with "
            "--tasks longctx (or longctx_kv, longctx_passkey, longctx_pi_title) and pass that output."
        )
    label, native, source, max_length = provenance(results)
    served = served_record(results)
    group = results["results"].get(GROUP, {}).get("score,none")
    results_by_task = {
        task: replace(load_task(path, task, results["results"][task]), **task_version(results, task)) for task in tasks
    }
    # Prompts under a chat template, or the first version's prompts, are another experiment:
    # say so where runs are named.
    chat = results.get("chat_template") or (served or {}).get("endpoint") == "chat/completions"
    first = any(result.prompts == "first-version prompts" for result in results_by_task.values())
    return Run(
        source=path,
        model=model_label(results.get("config") or {}, served)
        + (" (chat template)" if chat else "")
        + (" (first-version prompts)" if first else ""),
        rope=label,
        native_window=int(native) if native else None,
        native_window_source=source,
        max_length=int(max_length) if max_length else None,
        tasks=results_by_task,
        group_score=group,
        other_scores=other_scores(results),
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


# --------------------------------------------------------------------------- comparing and tables


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
    """Return an effective length as the table shows it: ``400`` or ``< 240``."""
    if length is None:
        return f"< {min(result.by_length)}" if result.by_length else "none tested"
    return str(length)


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


# --------------------------------------------------------------------------- plotting


def _figure(width: float, height: float):
    """Return a matplotlib Figure on the Agg canvas (no pyplot, no display needed)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise LongCtxError(f"drawing the report needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _depth_label(depth: float | None) -> str:
    return "all samples" if depth is NO_DEPTH else f"{depth:g}"


def plot_heatmap(run: Run, result: TaskResult, path: Path) -> None:
    """Draw a task's depth x length accuracy heatmap for one run; beyond-window cells hatched grey."""
    cells = result.by_depth_length or {}
    depths = sorted({d for d, _ in cells}, key=lambda d: -1.0 if d is NO_DEPTH else d)
    lengths = sorted({n for _, n in cells})
    figure = _figure(max(7.0, 1.3 * len(lengths) + 3.5), max(4.0, 0.9 * len(depths) + 2.4))
    from matplotlib.colors import Normalize  # after _figure: it says how to install matplotlib
    from matplotlib.patches import Rectangle

    axes = figure.add_subplot()
    norm = Normalize(0.0, 1.0)
    grid = [[float("nan")] * len(lengths) for _ in depths]
    for (depth, length), cell in cells.items():
        if cell.accuracy is not None:
            grid[depths.index(depth)][lengths.index(length)] = cell.accuracy
    image = axes.imshow(grid, cmap="viridis", norm=norm, aspect="auto")
    colorbar = figure.colorbar(image, ax=axes)
    colorbar.set_label(f"accuracy ({result.metric})")
    for (depth, length), cell in cells.items():
        row, col = depths.index(depth), lengths.index(length)
        if cell.all_beyond:
            axes.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, facecolor="0.85", edgecolor="0.5", hatch="//"))
            axes.text(col, row, "beyond\nwindow", ha="center", va="center", fontsize=9, color="0.2",
                      bbox={"facecolor": "0.85", "edgecolor": "none", "pad": 1})
            continue
        text = f"{cell.accuracy:.2f}\nn={cell.scored}" + (f"\n+{cell.beyond} beyond" if cell.beyond else "")
        ink = "black" if cell.accuracy > 0.55 else "white"  # readable on viridis' yellow and purple ends
        axes.text(col, row, text, ha="center", va="center", fontsize=9, color=ink)
    for row, depth in enumerate(depths):  # untested cells stay blank: say so
        for col, length in enumerate(lengths):
            if (depth, length) not in cells:
                axes.text(col, row, "not tested", ha="center", va="center", fontsize=8, color="0.4")
    if run.native_window and lengths[0] <= run.native_window < lengths[-1]:
        boundary = max(i for i, n in enumerate(lengths) if n <= run.native_window) + 0.5
        axes.axvline(boundary, color="red", linestyle="--", linewidth=1.5)
        axes.text(boundary, -0.5, f" native window {run.native_window}", color="red", fontsize=8, va="bottom")
    axes.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    axes.set_yticks(range(len(depths)), [_depth_label(d) for d in depths])
    axes.set_xlabel("context length (tokens)")
    axes.set_ylabel("needle depth (0 = start of context)" if depths != [NO_DEPTH] else "(no needle depth in this task)")
    title = f"{result.task}: {run.model}, RoPE {run.rope}\n{result.metric} accuracy; n = samples run per cell"
    axes.set_title(title, pad=14)
    figure.tight_layout()
    figure.savefig(path)


def plot_length_curves(runs: Sequence[Run], task: str, threshold: float, path: Path) -> None:
    """Draw a task's accuracy against length, one line per run, with Wilson 95% error bars."""
    figure = _figure(11.0, 5.5)
    axes = figure.add_subplot()
    lengths = tested_lengths(runs, task)
    shown = [run for run in runs if task in run.tasks]
    beyond_drawn = False
    for index, run in enumerate(shown):
        # Nudge runs apart on the log axis so identical values stay visible.
        nudge = 2 ** (0.025 * (index - (len(shown) - 1) / 2))
        cells = run.tasks[task].by_length
        ran = [(n, c) for n, c in cells.items() if not c.all_beyond]
        xs = [n * nudge for n, _ in ran]
        ys = [c.accuracy for _, c in ran]
        low, high = [], []
        for _, cell in ran:
            interval = wilson_interval(cell.correct, cell.scored) if cell.scored else None
            low.append(max(0.0, cell.accuracy - interval[0]) if interval else 0.0)  # max: rounding
            high.append(max(0.0, interval[1] - cell.accuracy) if interval else 0.0)
        colour = f"C{index % 10}"
        label = run.label if all(c.scored for _, c in ran) else f"{run.label} (n unknown: no bars)"
        axes.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=4, linewidth=1.8, color=colour, label=label)
        beyond = [n * nudge for n, c in cells.items() if c.all_beyond]
        if beyond:
            beyond_drawn = True
            axes.plot(beyond, [-0.05] * len(beyond), linestyle="none", marker="x", markersize=9, color=colour)
    for window in sorted({run.native_window for run in shown if run.native_window}):
        axes.axvline(window, color="0.3", linestyle="--", linewidth=1.2)
        # Written beside the line, low in the plot, so it never runs into the legend.
        axes.text(window, 0.02, f"native window {window} ", fontsize=9, color="0.3", ha="right", va="bottom", rotation=90)
    axes.axhline(threshold, color="0.6", linestyle=":", linewidth=1.2)
    axes.text(0.995, threshold, f"threshold {threshold:g}", transform=axes.get_yaxis_transform(), fontsize=8,
              color="0.4", ha="right", va="bottom")
    if beyond_drawn:
        axes.plot([], [], linestyle="none", marker="x", color="0.3", label="beyond window (not run)")
    axes.set_xscale("log", base=2)
    axes.set_xticks(lengths, [str(n) for n in lengths])
    axes.minorticks_off()
    axes.set_xlim(min(lengths) / 1.25, max(lengths + [w for r in shown if (w := r.native_window)]) * 1.25)
    axes.set_ylim(-0.1, 1.1)
    axes.set_xlabel("context length (tokens, log scale)")
    metric = shown[0].tasks[task].metric
    axes.set_ylabel(f"accuracy ({metric})")
    axes.set_title(f"{task}: {metric} accuracy against context length (bars: Wilson 95%)", pad=16)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, borderaxespad=0)
    figure.tight_layout()
    figure.savefig(path)


# --------------------------------------------------------------------------- the report


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

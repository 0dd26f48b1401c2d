"""Reading lm-eval output into runs: one ``Run`` per results file, its tasks, cells and provenance.

Reads ``results_<time>.json`` and, from ``--log_samples``, ``samples_<task>_<time>.jsonl`` beside
it; labels the model and its RoPE setting from ``config.longctx`` (hf-longctx), the checkpoint's
``config.json`` (stock hf) or ``longctx_served`` (served models).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from lm_eval_longctx import rope
from lm_eval_longctx.catalog import TASKS, our_tasks
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.results_check import check_results
from lm_eval_longctx.window import BEYOND_WINDOW

GROUP = "longctx"
# The per-sample metric each task's accuracy is read from (the one its ``score`` copies).
HEADLINE = {name: task.headline for name, task in TASKS.items()}
NO_DEPTH = None  # the depth key of tasks whose documents have no needle depth (pi_title)
# The model arguments that set RoPE (hf-longctx's, as rope.parse_rope_args takes them): runs whose
# other arguments agree are one model under different RoPE settings.
ROPE_ARGS = ("rope_scaling", "rope_theta")
UNKNOWN_ROPE = (2,)  # rope_order of a setting nobody recorded: after every known one


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
    # For comparing RoPE settings of one model:
    setup: str = ""  # the lm-eval model and its arguments apart from RoPE: "hf-longctx pretrained=/m"
    rope_order: tuple = UNKNOWN_ROPE  # sort key of the setting; (0, ...) only for no scaling at all
    effective_window: int | None = None  # tokens the model took: scaled window, or lm-eval's max_length
    other_headlines: dict[str, str] = field(default_factory=dict)  # other task -> its other_scores key
    lower_is_better: frozenset[str] = frozenset()  # other_scores keys lm-eval marks higher_is_better: false

    @property
    def label(self) -> str:
        return f"{self.model}, RoPE {self.rope}"

    @property
    def unscaled(self) -> bool:
        """True when the run used the model's RoPE with no scaling and no theta override (``none``)."""
        return self.rope_order[0] == 0


@dataclass(frozen=True)
class Provenance:
    """Where a run's RoPE setting and windows came from."""

    rope: str  # in words: "linear x2", "none (stock hf)"
    rope_order: tuple
    native_window: int | None
    native_window_source: str
    max_length: int | None
    effective_window: int | None


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
    return our_tasks(results["results"])


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


def rope_order(rope_parameters: Mapping | None, rope_theta_override=None) -> tuple:
    """Return a sort key for a RoPE setting: no scaling first, then by kind, factor and theta."""
    params = rope_parameters or {}
    kind = params.get("rope_type") or params.get("type") or "default"
    theta = float(rope_theta_override) if rope_theta_override is not None else 0.0
    if kind == "default":
        return (0 if rope_theta_override is None else 1, "none", 1.0, theta)
    return (1, str(kind), float(params.get("factor", 1)), theta)


def model_setup(config: Mapping) -> str:
    """Return the lm-eval model and its arguments apart from RoPE: ``hf-longctx pretrained=/m,dtype=float32``."""
    args = {key: value for key, value in model_args(config).items() if key not in ROPE_ARGS}
    listed = ",".join(f"{key}={value}" for key, value in sorted(args.items()))
    return f"{config.get('model') or 'unknown model'} {listed}".strip()


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
        if task in TASKS and isinstance(task_config, Mapping):
            record = (task_config.get("metadata") or {}).get("longctx_served")
            if isinstance(record, Mapping):
                return {**record, "tokenizer": (task_config.get("metadata") or {}).get("tokenizer")}
    return None


def _served_provenance(record: Mapping) -> Provenance:
    """Provenance of a served run: the server's RoPE as the user recorded it (server_rope).

    Its effective window is unknown: it is the server's context size, which lm-eval does not record.
    """
    if record.get("server_rope_parameters") is not None:
        label = f"{rope_label(record['server_rope_parameters'])} (served)"
        order = rope_order(record["server_rope_parameters"])
    else:
        label, order = "as set on the server, not recorded (served)", UNKNOWN_ROPE
    tokenizer = record.get("tokenizer")
    checkpoint = _checkpoint_config({"model_args": {"pretrained": tokenizer}}) if isinstance(tokenizer, str) else None
    if checkpoint:
        try:
            native = rope.merge_rope(checkpoint).native_window
        except LongCtxError:
            native = None
        if native:
            return Provenance(label, order, native, "the served model's config.json (tokenizer folder)", None, None)
    return Provenance(label, order, None, "unknown (served; no config.json beside the tokenizer)", None, None)


def provenance(results: Mapping) -> Provenance:
    """Return the run's RoPE setting, its windows, and where the native window came from."""
    config = results.get("config") or {}
    record = served_record(results)
    if record is not None:
        return _served_provenance(record)
    longctx = config.get("longctx")
    if isinstance(longctx, Mapping):  # written by --model hf-longctx
        theta = (longctx.get("rope_args") or {}).get("rope_theta")
        params = longctx.get("rope_parameters")
        return Provenance(
            rope_label(params, theta), rope_order(params, theta), longctx.get("native_window"), "hf-longctx provenance",
            longctx.get("max_length"), longctx.get("effective_window") or longctx.get("max_length"),
        )
    # Stock hf: no scaling of ours; the checkpoint's own RoPE and window, when its config is readable.
    max_length = results.get("max_length")
    checkpoint = _checkpoint_config(config) or {}
    try:
        setup = rope.merge_rope(checkpoint)
    except LongCtxError:
        setup = rope.RopeSetup()
    label = rope_label(setup.rope_parameters)
    label = f"{label} (stock hf)" if label == "none" else f"{label} (checkpoint, stock hf)"
    order = rope_order(setup.rope_parameters)
    native = setup.native_window or checkpoint.get("n_positions") or checkpoint.get("n_ctx")
    if native:  # stock hf takes max_length tokens (from max_position_embeddings unless given)
        return Provenance(label, order, native, "the checkpoint's config.json", max_length, max_length)
    if max_length:
        source = "lm-eval's max_length (checkpoint config not readable)"
        return Provenance(label, order, int(max_length), source, max_length, max_length)
    source = "unknown (no hf-longctx provenance, checkpoint config not readable)"
    return Provenance(label, order, None, source, None, None)


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
        if task == GROUP or task in TASKS or task in skipped:
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
    if not tasks:
        found = ", ".join(results["results"]) or "none"
        raise LongCtxError(
            f"{path}: no longctx task in this results file (tasks found: {found}). Run lm_eval with "
            f"--tasks longctx (or any of {', '.join(TASKS)}) and pass that output."
        )
    setting = provenance(results)
    served = served_record(results)
    group = results["results"].get(GROUP, {}).get("score,none")
    results_by_task = {
        task: replace(load_task(path, task, results["results"][task]), **task_version(results, task)) for task in tasks
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

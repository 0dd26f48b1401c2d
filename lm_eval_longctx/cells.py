"""Per-cell metrics of a grid (per length, per depth, beyond the window per length).

Under data parallel, lm-eval 0.4.13 gathers per-sample metrics by rank 0's metric keys
(``evaluator.py``, after ``gather_object``): a key that another rank lacks is a KeyError, a key
only another rank has is dropped. A rank holds only some cells, so every document reports
every cell metric of its task's grid, with ``OUTSIDE`` (``null`` in ``--log_samples`` files)
for the cells it is not in. ``compat.lmeval_evaluator.aggregate_cells_over_their_docs`` has lm-eval drop those
values (``members_only``) before it aggregates, so a cell's value and standard error are lm-eval's own ``mean`` and
``mean_stderr`` over the cell's documents, as in one process, and a cell in which no
document ran has no entry at all (never a placeholder number).

Why not a custom aggregation that skips ``OUTSIDE``: lm-eval 0.4.13 picks a standard error by the
aggregation function itself (``stderr_for_metric``: closed form for ``mean`` and ``acc_all`` only,
bootstrap for a fixed list), so ours would report "N/A"; ``nanmean`` with NaN is on the bootstrap
list, but costs 100,000 draws and a process pool per cell and gives NaN when a draw holds no
member. Stripping before lm-eval aggregates keeps its own numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lm_eval_longctx.errors import LongCtxError

BEYOND = "beyond_window"

# A document's value for a cell it is not in. None: JSON null in the samples file.
OUTSIDE = None


def metric_name(base: str, length: int | None = None, depth: float | None = None) -> str:
    """Return the per-cell metric name: ``exact_len_4096``, ``exact_depth_0.5``."""
    if length is not None:
        return f"{base}_len_{length}"
    if depth is not None:
        return f"{base}_depth_{depth:g}"
    return base


# The suffix metric_name gives a per-cell metric: "_len_4096", "_depth_0.5".
CELL_SUFFIX = re.compile(r"_(len|depth)_[^_]+$")


def refuse_colliding_depths(task: str, depths) -> None:
    """Refuse depths that would share one metric cell (``metric_name`` writes 6 significant digits)."""
    by_name: dict[str, list[float]] = {}
    for depth in sorted(set(depths)):
        by_name.setdefault(metric_name("exact", depth=depth), []).append(depth)
    same = [group for group in by_name.values() if len(group) > 1]
    if same:
        shown = ", ".join(repr(d) for d in same[0])
        raise LongCtxError(
            f"{task}: depths {shown} would share one metric cell (exact_depth_{same[0][0]:g}); metric names "
            "keep 6 significant digits. Give depths that differ within 6 significant digits, or only one of them."
        )


def count(items: list[float]) -> float:
    """Aggregation of the beyond-window flags: how many samples the model could not take."""
    return float(sum(items))


@dataclass(frozen=True)
class Grid:
    """The cells of one task's generated data: its score names, lengths and depths."""

    scores: tuple[str, ...]  # per-doc scores that get a cell each ("exact", "contains")
    lengths: tuple[int, ...]
    depths: tuple[float, ...]  # empty when the task has no depths (longctx_pi_title)

    @classmethod
    def of(cls, docs, scores) -> Grid:
        """Return the grid of a dataset of our records (``max_seq_length``, maybe ``depth``)."""
        depths = sorted(set(docs["depth"])) if "depth" in docs.column_names else []
        return cls(tuple(scores), tuple(sorted(set(docs["max_seq_length"]))), tuple(depths))

    def aggregations(self) -> dict[str, tuple]:
        """Return ``{metric: (aggregation, higher_is_better)}`` for every cell of the grid."""
        from lm_eval.api.metrics import mean

        out = {}
        for base in self.scores:
            for name in [metric_name(base, length=n) for n in self.lengths]:
                out[name] = (mean, True)
            for name in [metric_name(base, depth=d) for d in self.depths]:
                out[name] = (mean, True)
        for n in self.lengths:
            out[metric_name(BEYOND, length=n)] = (count, False)
        return out

    def doc_metrics(self, doc: dict, overall: dict[str, float]) -> dict[str, float | None]:
        """Return ``overall`` plus every cell metric of the grid for one document.

        ``overall`` holds the document's scores and its ``beyond_window`` flag (1.0 when the
        model could not take the prompt). Its length and depth cells get its scores, unless it
        was beyond the window (then they stay ``OUTSIDE``: no score); its length's beyond-window
        cell gets the flag; every other cell gets ``OUTSIDE``.
        """
        ran = not overall[BEYOND]
        mine = {metric_name(BEYOND, length=doc["max_seq_length"]): overall[BEYOND]}
        if ran:
            for base in self.scores:
                mine[metric_name(base, length=doc["max_seq_length"])] = overall[base]
                if doc.get("depth") is not None:
                    mine[metric_name(base, depth=doc["depth"])] = overall[base]
        cells = {name: mine.pop(name, OUTSIDE) for name in self.aggregations()}
        if mine:
            raise ValueError(f"document outside its task's grid: {sorted(mine)} not in {self}")
        return {**overall, **cells}


def members_only(raw_metrics: dict) -> dict:
    """Return lm-eval's ``{(metric, filter): values}`` without ``OUTSIDE`` values or empty cells.

    Only per-cell metrics are touched: a metric every document has (``score``, or lm-eval's own
    ``bypass`` under ``--predict_only``, which is None for each) goes to lm-eval as it came."""
    kept = {}
    for key, values in raw_metrics.items():
        if not CELL_SUFFIX.search(key[0]):
            kept[key] = values
            continue
        members = [v for v in values if v is not OUTSIDE]
        if members:
            kept[key] = members
    return kept


def check_world_size(task: str, docs: int, world_size: int | None, limit=None, samples=None) -> None:
    """Refuse a data-parallel run that leaves a process without any prompt of ``task``.

    lm-eval 0.4.13 cannot run a task on a process that holds none of its documents (that
    process stops with "task.build_requests() did not find any docs!"). ``limit`` and
    ``samples`` are lm-eval's ``--limit`` (already a count) and ``--samples`` of the task.
    """
    prompts = len(samples) if samples else min(docs, int(limit)) if limit else docs
    if (world_size or 1) > prompts:
        raise LongCtxError(
            f"{task}: {prompts} prompt(s) for {world_size} processes; lm-eval needs at least one "
            f"prompt of each task on every process. Run {task} with at most {prompts} processes "
            "(a separate lm_eval command), or give it more prompts (more max_seq_lengths, depths "
            "or num_samples)."
        )


def sample_row(row: dict) -> dict:
    """Return one ``--log_samples`` row of our tasks as it is written: without its per-cell
    fields, with the document's ``max_seq_length`` (and ``depth``, where the task has depths)
    as plain fields, and ``metrics`` naming the fields the row still has (see the module docstring)."""
    kept = {key: value for key, value in row.items() if not CELL_SUFFIX.search(key)}
    if "metrics" in kept:
        kept["metrics"] = [name for name in kept["metrics"] if not CELL_SUFFIX.search(name)]
    doc = row.get("doc") or {}
    if "max_seq_length" in doc:
        kept["max_seq_length"] = int(doc["max_seq_length"])
    if doc.get("depth") is not None:
        kept["depth"] = float(doc["depth"])
    return kept

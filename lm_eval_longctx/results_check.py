"""The shape of an lm-eval results file, checked before the report reads it.

The report reads what lm-eval 0.4.13 writes. A hand-edited or damaged file (a task entry that
is a string, a metric "N/A", a window that is not a number) would otherwise crash it deep
inside, or turn into a wrong number. Each problem is one LongCtxError naming the file, the
place in it and the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from lm_eval_longctx.errors import LongCtxError

GROUP = "longctx"
READ_METRIC = re.compile(r"score,none|(?P<base>.+)_len_\d+,none")  # the metrics the report reads
COUNTS = ("beyond_window",)  # per-length metrics that count samples; the others are accuracies
FIX = "restore the file lm_eval wrote (or run lm_eval again), or delete that entry"

# Where an object (a JSON {...}) may be, and where a number; each may also be absent or null.
OBJECTS = (
    ("config",),
    ("config", "longctx"),
    ("config", "longctx", "rope_parameters"),
    ("config", "longctx", "rope_args"),
    ("configs",),
    ("group_subtasks",),
    ("versions",),
)
NUMBERS = (("max_length",), ("config", "longctx", "native_window"), ("config", "longctx", "max_length"))


def _place(keys) -> str:
    return "".join(f"[{key!r}]" for key in keys)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def _get(data, keys):
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _nothing_scored(entry: Mapping, key: str) -> bool:
    """True where ``ppl_len_<L>,none`` has nothing to be a perplexity of: windows at L beyond the window."""
    count = entry.get(key.replace("ppl_len_", "beyond_window_len_", 1))
    return _number(count) and count > 0


def _problem(results: Mapping) -> tuple[tuple, object, str] | None:
    """Return (place, value, what it should be) of the first problem, else None."""
    for keys in OBJECTS:
        value = _get(results, keys)
        if value is not None and not isinstance(value, Mapping):
            return keys, value, "an object"
    for keys in NUMBERS:
        value = _get(results, keys)
        if value is not None and not (_number(value) and value > 0):
            return keys, value, "a number of tokens"
    model_args = _get(results, ("config", "model_args"))
    if model_args is not None and not isinstance(model_args, (str, Mapping)):
        return ("config", "model_args"), model_args, "an object or a key=value string"
    for task, entry in results["results"].items():
        if not isinstance(entry, Mapping):
            return ("results", task), entry, "an object of metrics"
        if task != GROUP and not task.startswith(f"{GROUP}_"):
            continue
        # A perplexity task (longctx_ppl): its per-length values are perplexities, its other cells counts.
        perplexity = "ppl,none" in entry or any(str(key).startswith("ppl_len_") for key in entry)
        for key, value in entry.items():
            match = READ_METRIC.fullmatch(key)
            if not match:
                continue
            if perplexity and match.group("base") == "ppl":
                if value == "N/A" and _nothing_scored(entry, key):
                    continue  # lm-eval's "N/A": every window at this length was beyond the window
                if not (_number(value) and value >= 1):
                    return ("results", task, key), value, "a perplexity (a number >= 1)"
            elif match.group("base") in COUNTS or perplexity:
                if not (_number(value) and value >= 0):
                    return ("results", task, key), value, "a count (a number >= 0)"
            elif not (_number(value) and 0 <= value <= 1):
                return ("results", task, key), value, "an accuracy (a number from 0 to 1)"
    for task, config in (_get(results, ("configs",)) or {}).items():
        if task.startswith(f"{GROUP}_") and not isinstance(config, Mapping):
            return ("configs", task), config, "an object"
        metadata = _get(config, ("metadata",))
        if task.startswith(f"{GROUP}_") and metadata is not None and not isinstance(metadata, Mapping):
            return ("configs", task, "metadata"), metadata, "an object"
    for group, members in (_get(results, ("group_subtasks",)) or {}).items():
        if not isinstance(members, list):
            return ("group_subtasks", group), members, "a list of task names"
    return None


def check_results(path, results: Mapping) -> None:
    """Raise LongCtxError naming the first place where ``results`` is not what lm-eval writes."""
    problem = _problem(results)
    if problem:
        keys, value, expected = problem
        raise LongCtxError(f"{path}: {_place(keys)} is {_shown(value)}, not {expected}; {FIX}.")

"""Perplexity against length from a ``longctx_ppl`` results entry (pure).

The task writes ``ppl,none`` overall and ``ppl_len_<L>,none`` per length, an uncertainty next to
each (a standard error ``..._stderr,none``, or an interval's two ends: any key of the same base
whose suffix names a lower and an upper end, e.g. ``ppl_len_1024_low,none`` /
``ppl_len_1024_high,none``), ``beyond_window`` (and ``beyond_window_len_<L>``) counts of windows
not run because they did not fit, and counts of documents skipped as shorter than L where it
reports them (any ``..._len_<L>`` key naming "skip" or "short"). The reader takes whichever of those
names it finds, so the exact key names may change without a wrong number: a value it cannot place
is listed, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from lm_eval_longctx.report.stats import Z95

LOW, HIGH = ("low", "lower", "lo", "ci_low", "lower_bound"), ("high", "upper", "hi", "up", "ci_high", "upper_bound")
SKIP_WORDS = ("skip", "short")


@dataclass(frozen=True)
class Point:
    """Perplexity at one length (or overall), with its 95% interval where the results give one."""

    ppl: float | None
    low: float | None = None
    high: float | None = None
    beyond: int = 0  # windows (or documents) not run: beyond the model's window
    skipped: int = 0  # documents shorter than the length: not scored


@dataclass(frozen=True)
class Perplexity:
    """One perplexity task of one run."""

    task: str
    overall: Point
    by_length: dict[int, Point]
    beyond_window: int = 0
    skipped: dict[str, float] = field(default_factory=dict)  # every skip/short count as written: name -> value


def is_perplexity(task: str, entry: Mapping) -> bool:
    """True for a perplexity task's results entry (``ppl,none`` or ``ppl_len_<L>,none`` in it)."""
    return "ppl,none" in entry or any(key.startswith("ppl_len_") for key in entry)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _point(entry: Mapping, base: str, beyond: int = 0, skipped: int = 0) -> Point:
    """Return the value of ``base`` and its interval: from explicit ends, else value +- 1.96 stderr."""
    value = _number(entry.get(f"{base},none"))
    ends = {}
    pattern = re.compile(rf"{re.escape(base)}_([a-z_]+),none")
    for key, raw in entry.items():
        match = pattern.fullmatch(key)
        if match and _number(raw) is not None:
            ends[match.group(1)] = float(raw)
    low = next((ends[name] for name in LOW if name in ends), None)
    high = next((ends[name] for name in HIGH if name in ends), None)
    if (low is None or high is None) and value is not None and "stderr" in ends:
        low, high = value - Z95 * ends["stderr"], value + Z95 * ends["stderr"]
    return Point(value, low, high, beyond, skipped)


def read_perplexity(task: str, entry: Mapping) -> Perplexity:
    """Return a perplexity task's points per length and overall from its results entry."""
    lengths = sorted({int(m.group(1)) for key in entry if (m := re.match(r"(?:ppl|beyond_window)_len_(\d+)[,_]", key))})
    skipped = {
        key.removesuffix(",none"): float(value)
        for key, value in entry.items()
        if any(word in key for word in SKIP_WORDS) and "_stderr" not in key and _number(value)  # 0: nothing skipped
    }
    by_length = {}
    for length in lengths:
        beyond = int(_number(entry.get(f"beyond_window_len_{length},none")) or 0)
        skip = sum(int(v) for k, v in skipped.items() if re.search(rf"_len_{length}$", k))
        by_length[length] = _point(entry, f"ppl_len_{length}", beyond, skip)
    beyond_window = int(_number(entry.get("beyond_window,none")) or 0)
    return Perplexity(task, _point(entry, "ppl", beyond_window), by_length, beyond_window, skipped)


def describe(point: Point | None) -> str:
    """Return a point as the tables show it: ``12.41 [11.90, 12.95]``, ``beyond window (2)``, ``—``."""
    if point is None:
        return "—"
    if point.ppl is None:
        return f"beyond window ({point.beyond})" if point.beyond else "—"
    text = f"{point.ppl:.2f}"
    if point.low is not None and point.high is not None:
        text += f" [{point.low:.2f}, {point.high:.2f}]"
    if point.beyond:
        text += f" + {point.beyond} beyond window"
    return text

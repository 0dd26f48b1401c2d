"""Figures of the report, one matplotlib figure per function (matplotlib imported only when drawing)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.report.compare import Comparison
from lm_eval_longctx.report.runs import NO_DEPTH, Run, TaskResult
from lm_eval_longctx.report.stats import wilson_interval
from lm_eval_longctx.report.tables import tested_lengths

INSTALL_HINT = "pip install 'lm-eval-longctx[report]'"


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
    shown = [run for run in runs if task in run.tasks]
    natives = sorted({run.native_window for run in shown if run.native_window})
    windows = [(window, f"native window {window}", "0.3") for window in natives]
    metric = shown[0].tasks[task].metric
    title = f"{task}: {metric} accuracy against context length (bars: Wilson 95%)"
    _length_figure(shown, [run.label for run in shown], task, threshold, windows, title, path)


def plot_rope_comparison(comparison: Comparison, task: str, threshold: float, path: Path) -> None:
    """Draw a task's accuracy against length for one model, one line per RoPE setting, with each
    setting's effective window marked in its line's colour (grey where settings share it) and named
    in the legend."""
    shown = [(run, setting) for run, setting in zip(comparison.runs, comparison.settings) if task in run.tasks]
    by_window: dict[int, list[int]] = {}
    for index, (run, _) in enumerate(shown):
        if run.effective_window:
            by_window.setdefault(run.effective_window, []).append(index)
    windows = [
        (window, f"window {window}", f"C{indexes[0] % 10}" if len(indexes) == 1 else "0.3")
        for window, indexes in sorted(by_window.items())
    ]
    # The legend names each setting's window; the lines are labelled by window alone, so they stay short.
    labels = [f"{name} (window {run.effective_window})" if run.effective_window else name for run, name in shown]
    metric = shown[0][0].tasks[task].metric
    title = (f"{task}: {comparison.model}, one line per RoPE setting\n"
             f"{metric} accuracy against context length (bars: Wilson 95%)")
    _length_figure([run for run, _ in shown], labels, task, threshold, windows, title, path)


def _length_figure(runs, labels, task, threshold, windows, title, path) -> None:
    """Draw accuracy against length (log x), one line per run named by ``labels``, error bars where
    sample counts are known, beyond-window lengths as crosses, and ``windows`` (x, text, colour)
    as dashed vertical lines."""
    figure = _figure(11.0, 5.5)
    axes = figure.add_subplot()
    lengths = tested_lengths(runs, task)
    beyond_drawn = False
    for index, (run, name) in enumerate(zip(runs, labels)):
        # Nudge runs apart on the log axis so identical values stay visible.
        nudge = 2 ** (0.025 * (index - (len(runs) - 1) / 2))
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
        label = name if all(c.scored for _, c in ran) else f"{name} (n unknown: no bars)"
        axes.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=4, linewidth=1.8, color=colour, label=label)
        beyond = [n * nudge for n, c in cells.items() if c.all_beyond]
        if beyond:
            beyond_drawn = True
            axes.plot(beyond, [-0.05] * len(beyond), linestyle="none", marker="x", markersize=9, color=colour)
    for window, text, colour in windows:
        axes.axvline(window, color=colour, linestyle="--", linewidth=1.2)
        # Written beside the line, low in the plot, so it never runs into the legend.
        axes.text(window, 0.02, f"{text} ", fontsize=9, color=colour, ha="right", va="bottom", rotation=90)
    axes.axhline(threshold, color="0.6", linestyle=":", linewidth=1.2)
    axes.text(0.995, threshold, f"threshold {threshold:g}", transform=axes.get_yaxis_transform(), fontsize=8,
              color="0.4", ha="right", va="bottom")
    if beyond_drawn:
        axes.plot([], [], linestyle="none", marker="x", color="0.3", label="beyond window (not run)")
    axes.set_xscale("log", base=2)
    axes.set_xticks(lengths, [str(n) for n in lengths])
    axes.minorticks_off()
    axes.set_xlim(min(lengths) / 1.25, max(lengths + [window for window, _, _ in windows]) * 1.25)
    axes.set_ylim(-0.1, 1.1)
    axes.set_xlabel("context length (tokens, log scale)")
    axes.set_ylabel(f"accuracy ({runs[0].tasks[task].metric})")
    axes.set_title(title, pad=16)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, borderaxespad=0)
    figure.tight_layout()
    figure.savefig(path)


def plot_perplexity(runs: Sequence[Run], labels: Sequence[str], task: str, title: str, path: Path) -> None:
    """Draw perplexity against length (log x), one line per run named by ``labels``, bars of
    the 95% interval where the results give one, lengths beyond a run's window as crosses at the
    bottom, and each run's window as a dashed line in its colour (grey where runs share it)."""
    figure = _figure(11.0, 5.5)
    axes = figure.add_subplot()
    lengths = sorted({n for run in runs if task in run.perplexity for n in run.perplexity[task].by_length})
    windows: dict[int, list[int]] = {}
    for index, (run, name) in enumerate(zip(runs, labels)):
        if task not in run.perplexity:
            continue
        colour = f"C{index % 10}"
        nudge = 2 ** (0.02 * (index - (len(runs) - 1) / 2))  # identical curves (dynamic inside the window) stay visible
        points = sorted(run.perplexity[task].by_length.items())
        ran = [(n, p) for n, p in points if p.ppl is not None]
        low = [max(0.0, p.ppl - p.low) if p.low is not None else 0.0 for _, p in ran]
        high = [max(0.0, p.high - p.ppl) if p.high is not None else 0.0 for _, p in ran]
        axes.errorbar([n * nudge for n, _ in ran], [p.ppl for _, p in ran], yerr=[low, high], marker="o", capsize=4,
                      linewidth=1.8, color=colour, label=name)  # fmt: skip
        beyond = [n * nudge for n, p in points if p.ppl is None and p.beyond]
        if beyond:
            # At the foot of the plot (axes coordinates): a perplexity that was not computed has no height.
            axes.plot(beyond, [0.04] * len(beyond), linestyle="none", marker="x", markersize=9, color=colour,
                      transform=axes.get_xaxis_transform())  # fmt: skip
        if run.effective_window:
            windows.setdefault(run.effective_window, []).append(index)
    for window, indexes in sorted(windows.items()):
        colour = f"C{indexes[0] % 10}" if len(indexes) == 1 else "0.3"
        axes.axvline(window, color=colour, linestyle="--", linewidth=1.2)
        axes.text(window, 0.98, f"window {window} ", transform=axes.get_xaxis_transform(), fontsize=9, color=colour,
                  ha="right", va="top", rotation=90)  # fmt: skip
    if any(p.ppl is None and p.beyond for run in runs if task in run.perplexity for p in run.perplexity[task].by_length.values()):
        axes.plot([], [], linestyle="none", marker="x", color="0.3", label="beyond window (not run)")
    axes.set_xscale("log", base=2)
    axes.margins(y=0.15)  # room at the foot for the beyond-window crosses
    if lengths:
        axes.set_xticks(lengths, [str(n) for n in lengths])
        axes.set_xlim(min(lengths) / 1.25, max(lengths + list(windows)) * 1.25)
    axes.minorticks_off()
    axes.set_xlabel("context length (tokens, log scale)")
    axes.set_ylabel("perplexity (lower is better)")
    axes.set_title(title, pad=16)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, borderaxespad=0)
    figure.tight_layout()
    figure.savefig(path)

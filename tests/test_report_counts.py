"""The report checks samples files against the results file's own counts, and marks limited runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from lm_eval_longctx import report
from lm_eval_longctx.cli import main
from lm_eval_longctx.report import counts

FIXTURES = Path(__file__).parent / "fixtures" / "report"


def craft(tmp_path: Path, name: str, task: str, value_of) -> Path:
    """Copy a fixture run and set ``task``'s exact score per sample to ``value_of(length, index)``,
    with the results file's per-length means and standard errors as lm-eval computes them
    (``mean``, ``mean_stderr`` = sample stddev / sqrt(n)), so the two files agree."""
    run = Path(shutil.copytree(FIXTURES / name, tmp_path / name))
    (samples_path,) = run.rglob(f"samples_{task}_*.jsonl")
    (results_path,) = run.rglob("results_*.json")
    samples, by_length = [], {}
    for line in samples_path.read_text().splitlines():
        sample = json.loads(line)
        length = int(sample["doc"]["max_seq_length"])
        if not sample["beyond_window"]:
            sample["exact"] = float(value_of(length, len(by_length.get(length, []))))
            by_length.setdefault(length, []).append(sample["exact"])
        samples.append(sample)
    samples_path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    results = json.loads(results_path.read_text())
    entry = results["results"][task]
    for length, values in by_length.items():
        n, mean = len(values), sum(values) / len(values)
        entry[f"exact_len_{length},none"] = mean
        entry[f"exact_len_{length}_stderr,none"] = (
            math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n) if n > 1 else "N/A"
        )
    results_path.write_text(json.dumps(results))
    return run


def drop_samples(run: Path, task: str, keep) -> None:
    """Remove the lines of a samples file for which ``keep(sample)`` is false."""
    (path,) = run.rglob(f"samples_{task}_*.jsonl")
    kept = [line for line in path.read_text().splitlines() if keep(json.loads(line))]
    path.write_text("".join(line + "\n" for line in kept))


def results_path(run: Path) -> Path:
    (path,) = run.rglob("results_*.json")
    return path


@pytest.mark.parametrize(("correct", "n"), [(1, 2), (3, 6), (5, 6), (2, 7), (17, 40)])
def test_the_number_of_samples_follows_from_a_mean_and_its_stderr(correct, n):
    p = correct / n
    stderr = math.sqrt(p * (1 - p) * n / (n - 1)) / math.sqrt(n)
    assert counts.ran_from_stderr(p, stderr) == n


def test_means_of_zero_or_one_give_no_count_and_n_a_means_one_sample():
    assert counts.ran_from_stderr(0.0, 0.0) is None and counts.ran_from_stderr(1.0, 0.0) is None
    assert counts.ran_from_stderr(0.5, "N/A") == 1
    assert counts.ran_from_stderr(0.5, "N/A", bootstrap=False) is None  # --bootstrap_iters 0: every stderr N/A
    assert counts.ran_from_stderr(0.37, 0.1234) is None  # not a 0/1 metric: no whole n


def test_a_samples_file_that_lost_a_line_is_not_counted(tmp_path, capsys):
    # 240: 6/6, 400: 3/6, 700: 2/6 in both files; then one sample at 400 (a correct one) is lost.
    run = craft(tmp_path, "rope_linear2", "longctx_kv", lambda n, i: n == 240 or (n == 400 and i < 3) or (n == 700 and i < 2))
    lost = {"done": False}

    def keep(sample):
        if not lost["done"] and sample["doc"]["max_seq_length"] in (400, "400") and sample["exact"] == 1.0:
            lost["done"] = True
            return False
        return True

    drop_samples(run, "longctx_kv", keep)
    out = tmp_path / "out"
    assert main(["report", str(run), "--output-dir", str(out)]) == 0
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if "does not match the results file" in line)
    assert "holds 17 samples of longctx_kv, results_" in warning and "counts 18 (n-samples): the samples file lost 1" in warning
    assert "at length 400: 5 sample(s) ran in samples_longctx_kv_" in warning and ", 6 in results_" in warning
    text = (out / "report.md").read_text()
    assert "## Warnings" in text and "the samples file lost 1 sample(s)" in text
    assert "0.500 [0.188, 0.812] (3/6)" in text  # the results file's n, never 2/5 from the damaged file
    assert "(2/5)" not in text
    assert "1.000 [0.610, 1.000] (6/6)" in text and "0.333 [0.097, 0.700] (2/6)" in text
    assert not list(out.glob("heatmap_*longctx_kv.png"))
    assert "heatmap of longctx_kv for tiny-llama, RoPE linear x2: its samples file does not match" in text
    # the other tasks' files are whole: counted from their samples as before
    assert report.load_run(results_path(run)).tasks["longctx_passkey"].warnings == ()


def test_a_lost_line_is_named_even_where_the_length_cannot_be_told(tmp_path):
    run = Path(shutil.copytree(FIXTURES / "rope_linear2", tmp_path / "run"))  # every mean 0: stderr 0
    first = {"seen": False}

    def keep(sample):
        drop = not first["seen"]
        first["seen"] = True
        return not drop

    drop_samples(run, "longctx_passkey", keep)
    result = report.load_run(results_path(run)).tasks["longctx_passkey"]
    (warning,) = result.warnings
    assert "the samples file lost 1 sample(s)" in warning
    assert "at which length cannot be told from the results file" in warning
    assert result.by_depth_length is None
    assert all(cell.scored is None for cell in result.by_length.values() if not cell.all_beyond)  # n unknown


def test_a_sample_written_twice_is_named(tmp_path):
    run = Path(shutil.copytree(FIXTURES / "rope_none", tmp_path / "run"))
    (path,) = run.rglob("samples_longctx_kv_*.jsonl")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + lines[:1]) + "\n")
    (warning,) = report.load_run(results_path(run)).tasks["longctx_kv"].warnings
    assert "holds 1 sample(s) twice (same doc_id)" in warning


def test_whole_fixture_runs_have_no_warning():
    for name in ("rope_none", "rope_linear2", "rope_dynamic2", "stock_hf", "served_llama_cpp"):
        run = report.load_run(results_path(FIXTURES / name))
        assert all(result.warnings == () and result.missing == () for result in run.tasks.values()), name


def limited(tmp_path: Path, limit) -> Path:
    """rope_linear2 as a --limit run that stopped before length 700 (12 of 18 kv documents)."""
    run = Path(shutil.copytree(FIXTURES / "rope_linear2", tmp_path / "run"))
    drop_samples(run, "longctx_kv", lambda s: int(s["doc"]["max_seq_length"]) != 700)
    results = json.loads(results_path(run).read_text())
    entry = results["results"]["longctx_kv"]
    for key in [k for k in entry if "_len_700" in k]:
        del entry[key]
    results["n-samples"]["longctx_kv"]["effective"] = 12
    results["config"]["limit"] = limit
    results_path(run).write_text(json.dumps(results))
    return run


def test_a_limited_run_says_so_and_names_the_lengths_that_did_not_run(tmp_path, capsys):
    run = limited(tmp_path, 0.67)
    out = tmp_path / "out"
    assert main(["report", str(run), "--output-dir", str(out)]) == 0
    err = capsys.readouterr().err
    assert (
        "longctx_kv: a limited run (--limit 0.67): 12 of its 18 documents ran; lengths not run in full: 700 (0 of 6). "
        "Its numbers are of the part that ran" in err
    )
    text = (out / "report.md").read_text()
    assert "## Warnings" in text and "lengths not run in full: 700 (0 of 6)" in text
    result = report.load_run(results_path(run)).tasks["longctx_kv"]
    assert result.missing == ("700 (0 of 6)",)
    assert "< 240 (limited run)" in text  # the effective length, marked


def test_a_samples_selection_is_a_limited_run_too(tmp_path):
    run = limited(tmp_path, None)  # --samples: lm-eval records no limit, only the counts
    (warning,) = report.load_run(results_path(run)).tasks["longctx_kv"].warnings
    assert warning.startswith("longctx_kv: a limited run (--samples (or another selection)): 12 of its 18 documents ran")

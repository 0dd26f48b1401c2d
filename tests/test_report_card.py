"""The RoPE report card, built from the fixture runs plus real longctx_ppl entries of the same tiny model
(tests/fixtures/report/longctx_ppl_tiny.json: lm-eval output, one per RoPE setting)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from lm_eval_longctx import report
from lm_eval_longctx.cli import main
from lm_eval_longctx.report import paired, ppl, stats

FIXTURES = Path(__file__).parent / "fixtures" / "report"
PPL = json.loads((FIXTURES / "longctx_ppl_tiny.json").read_text())
SETTINGS = {"none": "rope_none", "linear:2": "rope_linear2", "dynamic:2": "rope_dynamic2", "yarn:2": "rope_linear2"}


def interval(entry: dict, base: str) -> str:
    """The card's cell for ``base`` of a fixture entry, computed here: value [value -+ 1.96 stderr]."""
    value, stderr = entry[f"{base},none"], entry[f"{base}_stderr,none"]
    return f"{value:.2f} [{value - 1.96 * stderr:.2f}, {value + 1.96 * stderr:.2f}]"


def _edit(run: Path, pattern: str, edit) -> None:
    (path,) = run.rglob(pattern)
    path.write_text(edit(path.read_text()))


def sweep_like(tmp_path: Path) -> list[Path]:
    """Four settings of the tiny model, as a sweep leaves them, each with its real longctx_ppl entry;
    yarn:2's retrieval run is linear:2's relabelled (no yarn fixture run of the longctx group exists;
    its longctx_ppl entry is a real yarn:2 run); under linear:2 tiny_arith gets 2 of 6 right where
    none gets 0 (samples and results file alike)."""
    runs = []
    for setting, fixture in SETTINGS.items():
        run = Path(shutil.copytree(FIXTURES / fixture, tmp_path / f"rope_{setting.replace(':', '')}"))
        (results_path,) = run.rglob("results_*.json")
        results = json.loads(results_path.read_text())
        entry = PPL[setting]
        results["results"]["longctx_ppl"] = {"name": "longctx_ppl", "alias": "longctx_ppl", **entry}
        results["n-samples"]["longctx_ppl"] = {"original": entry["sample_len"], "effective": entry["sample_len"]}
        if setting == "yarn:2":
            results["config"]["model_args"]["rope_scaling"] = "yarn:2"
            longctx = results["config"]["longctx"]
            longctx["rope_parameters"] = {**longctx["rope_parameters"], "rope_type": "yarn", "factor": 2.0}
            longctx["rope_args"]["rope_scaling"] = "yarn:2"
        if setting == "linear:2":
            results["results"]["tiny_arith"]["exact_match,none"] = 2 / 6

            def right_twice(text):
                rows = [json.loads(line) for line in text.splitlines()]
                for row in rows:
                    row["exact_match"] = 1.0 if row["doc_id"] in (1, 4) else 0.0
                return "".join(json.dumps(row) + "\n" for row in rows)

            _edit(run, "samples_tiny_arith_*.jsonl", right_twice)
        results_path.write_text(json.dumps(results))
        runs.append(run)
    return runs


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("card")
    runs = sweep_like(tmp)
    out = tmp / "report"
    assert main(["report", *map(str, runs), "--output-dir", str(out)]) == 0
    return out


def test_mcnemar_exact_matches_a_hand_computation():
    # b = 1, c = 6: P(X <= 1) for X ~ Bin(7, 1/2) = (1 + 7) / 128; two-sided: 16/128.
    assert stats.mcnemar_exact(1, 6) == pytest.approx(16 / 128)
    assert stats.mcnemar_exact(6, 1) == pytest.approx(16 / 128)
    assert stats.mcnemar_exact(0, 2) == pytest.approx(0.5)
    assert stats.mcnemar_exact(3, 3) == 1.0 and stats.mcnemar_exact(0, 0) == 1.0
    # b = 0, c = 10: 2 / 1024
    assert stats.mcnemar_exact(0, 10) == pytest.approx(2 / 1024)


def test_the_paired_bootstrap_is_deterministic_under_a_seed_and_covers_the_mean():
    differences = [0.1, -0.2, 0.4, 0.0, 0.3, 0.25, -0.05, 0.15, 0.2, 0.1]
    one, two = stats.paired_bootstrap(differences, seed=7), stats.paired_bootstrap(differences, seed=7)
    assert one == two
    assert stats.paired_bootstrap(differences, seed=8) != one
    low, high, p = one
    assert low < sum(differences) / len(differences) < high and 0 < low  # a clear gain: interval above 0
    assert p < 0.05
    assert stats.paired_bootstrap([0.0] * 5) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("keys", "low", "high"),
    [
        ({"ppl_len_512,none": 10.0, "ppl_len_512_stderr,none": 0.5}, 10 - 1.96 * 0.5, 10 + 1.96 * 0.5),
        ({"ppl_len_512,none": 10.0, "ppl_len_512_low,none": 9.0, "ppl_len_512_high,none": 11.5}, 9.0, 11.5),
        ({"ppl_len_512,none": 10.0, "ppl_len_512_ci_low,none": 9.1, "ppl_len_512_ci_high,none": 11.0}, 9.1, 11.0),
        ({"ppl_len_512,none": 10.0, "ppl_len_512_stderr,none": "N/A"}, None, None),
    ],
)
def test_perplexity_intervals_are_read_under_any_of_their_key_names(keys, low, high):
    point = ppl.read_perplexity("longctx_ppl", {"ppl,none": 10.0, **keys}).by_length[512]
    assert point.ppl == 10.0
    assert (point.low, point.high) == ((pytest.approx(low), pytest.approx(high)) if low is not None else (None, None))


def test_explicit_interval_ends_are_shown_as_written_not_recomputed():
    # longctx_ppl writes a stderr; a results entry with explicit ends (another task) shows those ends.
    entry = {"ppl,none": 29.9, "ppl_len_700,none": 28.9, "ppl_len_700_low,none": 26.8, "ppl_len_700_high,none": 31.2,
             "ppl_len_700_stderr,none": 5.0}  # fmt: skip
    assert ppl.describe(ppl.read_perplexity("longctx_ppl", entry).by_length[700]) == "28.90 [26.80, 31.20]"


def test_the_card_has_every_part_per_model(card):
    text = (card / "report.md").read_text()
    assert text.count("## Report card: tiny-llama") == 1
    for part in ("### Perplexity against length", "### Effective context length", "### Short benchmarks against the baseline",
                 "### Provenance per setting", "### Skipped or beyond the window"):  # fmt: skip
        assert part in text
    # none's 700 is beyond its 512 window: every window there marked, none scored
    none = PPL["none"]
    beyond = int(none["beyond_window_len_700,none"])
    assert none["ppl_len_700,none"] == "N/A" and beyond == int(none["beyond_window,none"]) > 0
    # a row per setting: perplexity per length and overall, intervals from the documents' resampling stderr
    section = text.split("### Perplexity against length")[1].split("###")[0]
    rows = {cells[0]: cells[1:] for line in section.splitlines() if line.startswith("| ")
            for cells in [[cell.strip() for cell in line.strip("|").split("|")]]}  # fmt: skip
    assert rows["setting"] == ["240", "400", "700", "overall"]
    labels = {"none": "none", "linear:2": "linear x2", "dynamic:2": "dynamic x2", "yarn:2": "yarn x2"}
    for setting, label in labels.items():
        entry = PPL[setting]
        expected = [interval(entry, f"ppl_len_{n}") for n in (240, 400)]
        if setting == "none":
            expected += [f"beyond window ({beyond})", f"{interval(entry, 'ppl')} + {beyond} beyond window"]
        else:
            expected += [interval(entry, "ppl_len_700"), interval(entry, "ppl")]
        assert rows[label] == expected, setting
    assert f"none: longctx_ppl: {beyond} beyond the window, not scored ({beyond} at 700)" in text
    assert (card / "perplexity_tiny-llama_longctx_ppl.png").is_file()


def test_short_benchmark_changes_carry_a_paired_test(card):
    text = (card / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| tiny_arith exact_match |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "0.000"  # the baseline
    # linear:2 gained 2 documents of 6, lost none: McNemar p = 2 x (1/2)^2 = 0.5 (noise at n = 6)
    assert "0.333, +0.333 (McNemar p = 0.5; 0 lost, 2 gained of 6)" in cells
    assert "0.000, +0.000 (McNemar p = 1; 0 lost, 0 gained of 6)" in cells


def test_effective_lengths_carry_the_cells_they_rest_on(card):
    text = (card / "report.md").read_text()
    assert "< 240; fails at 240: 0.000 [0.000, 0.390] (0/6)" in text


def test_provenance_per_setting_comes_from_config_longctx(card):
    text = (card / "report.md").read_text()
    section = text.split("### Provenance per setting")[1].split("###")[0]
    assert '{"factor": 2.0, "rope_theta": 10000.0, "rope_type": "yarn"}' in section
    assert "lm_eval_longctx 0.1.0" in section and "sdpa" in section


def test_report_html_is_self_contained_and_shows_every_figure(card):
    page = (card / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?!data:)[a-z]+:""", page)  # nothing fetched
    assert not re.search(r"""src\s*=\s*["'](?!data:image/png;base64,)""", page)  # every image inline
    assert "<script" not in page and "@import" not in page and "url(" not in page
    pngs = sorted(p.name for p in card.glob("*.png"))
    assert page.count("data:image/png;base64,") == len(pngs)  # each figure once
    assert "figure not found" not in page
    assert "<h2>Report card: tiny-llama</h2>" in page and "<table>" in page


def test_a_single_lm_eval_run_still_reports_as_before_and_shows_its_perplexity(tmp_path):
    (run,) = sweep_like(tmp_path)[:1]
    out = tmp_path / "single"
    assert main(["report", str(run), "--output-dir", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "Report card" not in text and "## Leaderboard" in text and "## Accuracy by length" in text
    assert "## Perplexity by length" in text and interval(PPL["none"], "ppl_len_240") in text
    leaderboard = (out / "leaderboard.csv").read_text()
    assert "longctx_ppl" not in leaderboard.splitlines()[0]  # not an accuracy task: no effective length
    overall = report.load_run(next(run.rglob("results_*.json"))).perplexity["longctx_ppl"].overall
    assert math.isclose(overall.ppl, PPL["none"]["ppl,none"])


def test_a_change_without_samples_files_says_why_there_is_no_test(tmp_path):
    runs = sweep_like(tmp_path)
    for run in runs[:2]:
        for path in run.rglob("samples_tiny_arith_*.jsonl"):
            path.unlink()
    loaded = [report.load_run(next(run.rglob("results_*.json"))) for run in runs[:2]]
    change = paired.paired_change(loaded[0], loaded[1], "tiny_arith")
    assert change.p is None and change.test == "no test: needs both samples files (--log_samples)"
    assert paired.describe(change) == "+0.333 (no test: needs both samples files (--log_samples))"

"""The report's "RoPE settings compared" table, comparison.csv and per-setting length curves.

The fixtures rope_none, rope_linear2 and rope_dynamic2 are real lm_eval runs of one tiny model under
three RoPE settings, each with tiny_arith beside the longctx group. The tiny model scores 0
everywhere, so most tests craft numbers into copies of the results JSON and check the report
against values worked out here from those files, not from the report's own functions.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from lm_eval_longctx import report
from lm_eval_longctx.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "report"
SETTINGS = {"rope_none": "none", "rope_linear2": "linear x2", "rope_dynamic2": "dynamic x2"}
TASKS = ("longctx_kv", "longctx_passkey", "longctx_pi_title")
ARITH = "tiny_arith exact_match"

needs_matplotlib = pytest.mark.skipif(
    __import__("importlib").util.find_spec("matplotlib") is None, reason="matplotlib (the report extra) not installed"
)


def results_json(folder: Path) -> Path:
    (path,) = folder.rglob("results_*.json")
    return path


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def copy_run(name: str, tmp_path: Path, as_name: str | None = None) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / (as_name or name)))


def edit_results(folder: Path, edit) -> None:
    path = results_json(folder)
    results = json.loads(path.read_text())
    edit(results)
    path.write_text(json.dumps(results))


def effective_from_json(entry: dict, threshold: float = 0.85) -> str:
    """The effective-length rule worked out from a longctx_kv results entry alone (exact metric)."""
    pattern = re.compile(r"(exact|beyond_window)_len_(\d+),none")
    lengths = sorted({int(m.group(2)) for key in entry if (m := pattern.fullmatch(key))})
    longest = None
    for length in lengths:
        accuracy = entry.get(f"exact_len_{length},none")
        if entry.get(f"beyond_window_len_{length},none", 0) or accuracy is None or accuracy < threshold:
            break
        longest = length
    return f"< {lengths[0]}" if longest is None else str(longest)


# Crafted numbers: (tiny_arith exact_match, longctx score, kv accuracy at 240, 400, 700 where run).
CRAFTED = {
    "rope_none": (0.5, 0.3, {240: 1.0, 400: 0.9}),  # 700 is beyond its 512 window
    "rope_linear2": (0.25, 0.6, {240: 1.0, 400: 1.0, 700: 0.9}),
    "rope_dynamic2": (0.5, 0.5, {240: 0.5, 400: 1.0, 700: 1.0}),
}


@pytest.fixture
def crafted_sweep(tmp_path):
    """Copies of the three runs with crafted scores; kv's samples removed, so its JSON numbers count."""
    folders = {}
    for name, (arith, group, kv) in CRAFTED.items():
        folder = copy_run(name, tmp_path)
        (next(folder.rglob("samples_longctx_kv_*.jsonl"))).unlink()

        def edit(results, arith=arith, group=group, kv=kv):
            results["results"]["tiny_arith"]["exact_match,none"] = arith
            results["results"]["longctx"]["score,none"] = group
            for length, accuracy in kv.items():
                results["results"]["longctx_kv"][f"exact_len_{length},none"] = accuracy

        edit_results(folder, edit)
        folders[name] = folder
    return folders


def expected_rows(folders: dict[str, Path]) -> list[dict]:
    """The comparison rows worked out from the results files: none first, then dynamic, linear."""
    data = {name: json.loads(results_json(folder).read_text()) for name, folder in folders.items()}
    none = data["rope_none"]["results"]["tiny_arith"]["exact_match,none"]
    rows = []
    for name in ("rope_none", "rope_dynamic2", "rope_linear2"):
        results, longctx = data[name]["results"], data[name]["config"]["longctx"]
        arith = results["tiny_arith"]["exact_match,none"]
        rows.append({
            "rope": SETTINGS[name], "baseline": str(name == "rope_none"),
            "effective window": str(longctx["effective_window"]), "max_length": str(longctx["max_length"]),
            "longctx_kv effective": effective_from_json(results["longctx_kv"]),
            "longctx score": results["longctx"]["score,none"], ARITH: arith, f"{ARITH} change": arith - none,
        })  # fmt: skip
    return rows


def run_report(paths, out: Path, capsys=None) -> tuple[int, str]:
    status = main(["report", *map(str, paths), "--output-dir", str(out)])
    return status, capsys.readouterr().err if capsys else ""


# --------------------------------------------------------------------------- the table


@needs_matplotlib
def test_comparison_rows_are_the_results_files_numbers(crafted_sweep, tmp_path):
    out = tmp_path / "out"
    # Given out of order: the table puts none first, then kinds in order.
    folders = [crafted_sweep[name] for name in ("rope_linear2", "rope_dynamic2", "rope_none")]
    assert run_report(folders, out)[0] == 0
    rows = read_csv(out / "comparison.csv")
    expected = expected_rows(crafted_sweep)
    assert [row["rope"] for row in rows] == ["none", "dynamic x2", "linear x2"]
    as_text = ("rope", "baseline", "effective window", "max_length", "longctx_kv effective")
    for row, want in zip(rows, expected):
        assert {key: row[key] for key in as_text} == {key: want[key] for key in as_text}
        for key in ("longctx score", ARITH, f"{ARITH} change"):
            assert float(row[key]) == pytest.approx(want[key]), key
    # What the crafted numbers give: worked out by hand too.
    assert [row["longctx_kv effective"] for row in rows] == ["400", "< 240", "700"]
    assert [float(row[f"{ARITH} change"]) for row in rows] == pytest.approx([0.0, 0.0, -0.25])


@needs_matplotlib
def test_markdown_shows_each_setting_with_the_change_against_none(crafted_sweep, tmp_path):
    out = tmp_path / "out"
    assert run_report(crafted_sweep.values(), out)[0] == 0
    text = (out / "report.md").read_text()
    assert "## RoPE settings compared: tiny-llama" in text
    assert "`hf-longctx pretrained=/tmp/r/tiny-llama`, one row per RoPE setting" in text
    assert "change against the baseline `none` in brackets" in text
    header = ("| RoPE setting | window (tokens) | kv effective | passkey effective | pi_title effective "
              "| longctx score | tiny_arith exact_match |")  # fmt: skip
    assert header in text
    # From CRAFTED by hand; bold: the best of a column where settings differ (ties all bold).
    assert "| none (baseline) | 512 | 400 | < 240 | < 240 | 0.300 | **0.500** |" in text
    assert "| dynamic x2 | 1024 | < 240 | < 240 | < 240 | 0.500 | **0.500 (+0.000)** |" in text
    assert "| linear x2 | 1024 | **700** | < 240 | < 240 | **0.600** | 0.250 (-0.250) |" in text


@needs_matplotlib
def test_a_lower_is_better_metric_bolds_the_lowest(crafted_sweep, tmp_path):
    for folder in crafted_sweep.values():
        edit_results(folder, lambda r: r["higher_is_better"]["tiny_arith"].update(exact_match=False))
    out = tmp_path / "out"
    assert run_report(crafted_sweep.values(), out)[0] == 0
    text = (out / "report.md").read_text()
    assert "| none (baseline) | 512 | 400 | < 240 | < 240 | 0.300 | 0.500 |" in text
    assert "| linear x2 | 1024 | **700** | < 240 | < 240 | **0.600** | **0.250 (-0.250)** |" in text


@pytest.mark.parametrize(
    ("values", "lower", "best"),
    [
        ([0.5, 0.5, 0.25], False, {0, 1}),  # ties are all best
        ([0.5, 0.5, 0.25], True, {2}),
        ([0.0, 0.0, 0.0], False, set()),  # nobody wins where nothing differs
        ([None, 0.3, 0.3], False, set()),
        ([None, 0.1, 0.3], False, {2}),
    ],
)
def test_best_rows(values, lower, best):
    assert report.compare.best_rows(values, lower_is_better=lower) == best


@needs_matplotlib
def test_comparison_csv_columns(full_sweep):
    out = full_sweep
    with (out / "comparison.csv").open(newline="") as handle:
        columns = next(csv.reader(handle))
    assert columns == [
        "model", "model setup", "rope", "baseline", "effective window", "max_length",
        *[f"{task} effective" for task in TASKS], "longctx score", ARITH, f"{ARITH} change", "results file",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def full_sweep(tmp_path_factory):
    """The report over the three real rope_* runs and the stock-hf run, made the way the sweep
    command makes it (``report.main(paths, output_dir, threshold)``): its output folder."""
    out = tmp_path_factory.mktemp("sweep")
    paths = [str(FIXTURES / name) for name in (*SETTINGS, "stock_hf")]
    status = report.main(paths, output_dir=str(out), threshold=0.85)
    assert status == 0
    return out


@needs_matplotlib
def test_real_runs_compare_unchanged_and_stock_hf_is_another_model(full_sweep):
    out = full_sweep
    rows = read_csv(out / "comparison.csv")
    # stock hf is lm-eval's own model class: not one of these settings, so not in the table.
    assert [(row["model setup"], row["rope"]) for row in rows] == [
        ("hf-longctx pretrained=/tmp/r/tiny-llama", "none"),
        ("hf-longctx pretrained=/tmp/r/tiny-llama", "dynamic x2"),
        ("hf-longctx pretrained=/tmp/r/tiny-llama", "linear x2"),
    ]
    for row, name in zip(rows, ("rope_none", "rope_dynamic2", "rope_linear2")):
        assert row["results file"] == str(results_json(FIXTURES / name))
        results = json.loads(Path(row["results file"]).read_text())["results"]
        assert float(row[ARITH]) == results["tiny_arith"]["exact_match,none"] == 0.0
        assert float(row["longctx score"]) == results["longctx"]["score,none"]
        assert [row[f"{task} effective"] for task in TASKS] == ["< 240"] * 3
    assert (out / "report.md").read_text().count("## RoPE settings compared:") == 1


# --------------------------------------------------------------------------- figures


@needs_matplotlib
def test_one_length_curve_per_task_with_a_line_per_setting(full_sweep):
    from PIL import Image

    out = full_sweep
    text = (out / "report.md").read_text()
    for task in TASKS:
        path = out / f"rope_compare_tiny-llama_{task}.png"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= 400 and image.size[1] >= 300
            assert len(set(image.convert("RGB").getdata())) > 50  # something was drawn
        assert f"]({path.name})" in text
    assert {p.name for p in out.glob("length_curve_*.png")} == {f"length_curve_{task}.png" for task in TASKS}  # kept


# --------------------------------------------------------------------------- what is not compared, and why


@needs_matplotlib
@pytest.mark.parametrize("others", [["rope_none"], ["rope_none", "stock_hf"], ["rope_none_v1", "rope_linear2"]])
def test_a_model_with_one_setting_gets_no_comparison(tmp_path, others):
    # stock hf: another lm-eval model class; rope_none_v1: other prompts (task version 1).
    out = tmp_path / "out"
    assert run_report([FIXTURES / name for name in others], out)[0] == 0
    assert "RoPE settings compared" not in (out / "report.md").read_text()
    assert not (out / "comparison.csv").exists() and not list(out.glob("rope_compare_*.png"))


@needs_matplotlib
def test_other_model_arguments_make_another_model(tmp_path):
    linear = copy_run("rope_linear2", tmp_path)
    edit_results(linear, lambda r: r["config"]["model_args"].update(dtype="bfloat16"))
    out = tmp_path / "out"
    assert run_report([FIXTURES / "rope_none", FIXTURES / "rope_dynamic2", linear], out)[0] == 0
    rows = read_csv(out / "comparison.csv")
    assert [row["rope"] for row in rows] == ["none", "dynamic x2"]  # linear ran in bfloat16: apart


@needs_matplotlib
def test_without_a_none_run_no_changes_and_the_report_says_why(crafted_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    status, err = run_report([crafted_sweep["rope_linear2"], crafted_sweep["rope_dynamic2"]], out, capsys)
    assert status == 0
    rows = read_csv(out / "comparison.csv")
    assert [(row["rope"], row["baseline"], row[f"{ARITH} change"]) for row in rows] == [
        ("dynamic x2", "False", ""), ("linear x2", "False", ""),
    ]  # fmt: skip
    text = (out / "report.md").read_text()
    assert "(baseline)" not in text and "with no change: no run without RoPE scaling" in text
    assert "| linear x2 | 1024 | **700** | < 240 | < 240 | **0.600** | 0.250 |" in text
    assert "tiny-llama: No run of this model without RoPE scaling (`none`), so no changes are shown" in text
    assert "warning: tiny-llama: No run of this model without RoPE scaling" in err


@needs_matplotlib
def test_two_runs_of_one_setting_keep_both_rows_named_by_run(crafted_sweep, tmp_path, capsys):
    again = copy_run("rope_none", tmp_path, "rope_none_again")
    edit_results(again, lambda r: r["results"]["tiny_arith"].update({"exact_match,none": 1.0}))
    out = tmp_path / "out"
    status, err = run_report([crafted_sweep["rope_none"], again, crafted_sweep["rope_linear2"]], out, capsys)
    assert status == 0
    rows = read_csv(out / "comparison.csv")
    assert [(row["rope"], row["baseline"]) for row in rows] == [
        ("none (run tiny-llama_none)", "True"), ("none (run tiny-llama_none-2)", "False"), ("linear x2", "False"),
    ]  # fmt: skip
    # Changes are against the first none run (tiny_arith 0.5): the repeat scored 1.0.
    assert [float(row[f"{ARITH} change"]) for row in rows] == pytest.approx([0.0, 0.5, -0.25])
    note = "tiny-llama: 2 runs under RoPE none ("
    assert note in (out / "report.md").read_text() and "The first is the baseline." in err
    assert f"warning: {note}" in err


@needs_matplotlib
def test_runs_of_different_task_versions_are_flagged_in_the_comparison(tmp_path):
    linear = copy_run("rope_linear2", tmp_path)
    edit_results(linear, lambda r: r["versions"].update(longctx_kv=2.1))
    out = tmp_path / "out"
    assert run_report([FIXTURES / "rope_none", linear], out)[0] == 0
    text = (out / "report.md").read_text()
    section = text.split("## RoPE settings compared: tiny-llama", 1)[1].split("\n## ", 1)[0]
    assert "- longctx_kv: runs of different task versions or prompts meet" in section


@needs_matplotlib
def test_max_length_set_apart_from_the_window_is_shown(tmp_path):
    linear = copy_run("rope_linear2", tmp_path)
    edit_results(linear, lambda r: r["config"]["longctx"].update(max_length=800))
    out = tmp_path / "out"
    assert run_report([FIXTURES / "rope_none", linear], out)[0] == 0
    assert "| linear x2 | 1024 (max_length 800) |" in (out / "report.md").read_text()
    assert [row["max_length"] for row in read_csv(out / "comparison.csv")] == ["512", "800"]



@needs_matplotlib
def test_none_with_max_length_past_its_window_joins_the_scaled_settings(tmp_path):
    """The perplexity papers' table: `none` run with max_length past its window (to show the blow-up)
    beside linear:2 at its scaled window. max_length is a window setting, shown in the window column,
    not another model setup, so both runs are one model's comparison."""
    none = copy_run("rope_none", tmp_path)

    def past_the_window(results):
        results["config"]["model_args"] = {**report.provenance.model_args(results["config"]), "max_length": 1024}
        results["config"]["longctx"].update(max_length=1024)

    edit_results(none, past_the_window)
    out = tmp_path / "out"
    assert run_report([none, FIXTURES / "rope_linear2"], out)[0] == 0
    text = (out / "report.md").read_text()
    assert "under 2 RoPE settings: `none`, `linear x2`" in text
    assert [row["max_length"] for row in read_csv(out / "comparison.csv")] == ["1024", "1024"]

# --------------------------------------------------------------------------- reading the settings


def test_settings_sort_with_no_scaling_first():
    keys = {
        "yarn x2": report.runs.rope_order({"rope_type": "yarn", "factor": 2.0}),
        "none": report.runs.rope_order({"rope_type": "default"}),
        "dynamic x4": report.runs.rope_order({"rope_type": "dynamic", "factor": 4.0}),
        "dynamic x2": report.runs.rope_order({"rope_type": "dynamic", "factor": 2.0}),
        "none theta=500000": report.runs.rope_order(None, rope_theta_override=500000),
    }
    assert sorted(keys, key=keys.get) == ["none", "dynamic x2", "dynamic x4", "none theta=500000", "yarn x2"]
    assert keys["none"][0] == 0 and keys["none theta=500000"][0] == 1  # a new base is a RoPE change


def test_runs_carry_their_setup_window_and_headlines():
    run = report.load_run(results_json(FIXTURES / "rope_linear2"))
    assert (run.setup, run.effective_window, run.unscaled) == ("hf-longctx pretrained=/tmp/r/tiny-llama", 1024, False)
    assert run.other_headlines == {"tiny_arith": ARITH}
    stock = report.load_run(results_json(FIXTURES / "stock_hf"))
    assert (stock.setup, stock.effective_window, stock.unscaled) == ("hf pretrained=/tmp/r/tiny-llama", 512, True)


def test_ruler_lengths_marked_minus_one_are_not_scores():
    """lm-eval's RULER tasks list every default length and give -1 to those not run: the report
    must not show that mark as a score (it once headlined niah_single_1 with -1.000)."""
    niah = {"name": "niah_single_1", "alias": "niah_single_1", "sample_len": 20, "4096,none": -1,
            "4096_stderr,none": "N/A", "1024,none": 1.0, "1024_stderr,none": 0.0}  # fmt: skip
    results = {"results": {"niah_single_1": niah, "tiny_arith": {"exact_match,none": 0.25}}}
    scores, headlines, _ = report.runs.other_scores(results)
    assert scores == {"niah_single_1 1024": 1.0, "tiny_arith exact_match": 0.25}
    assert headlines == {"niah_single_1": "niah_single_1 1024", "tiny_arith": "tiny_arith exact_match"}

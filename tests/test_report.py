"""`lm-eval-longctx report` on results files written by real lm_eval runs of the tiny model."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_longctx import report
from lm_eval_longctx.cli import main
from lm_eval_longctx.errors import LongCtxError

FIXTURES = Path(__file__).parent / "fixtures" / "report"
LONGCTX_RUNS = ("rope_none", "rope_linear2", "rope_dynamic2")  # longctx at 240, 400, 700; native window 512
STOCK_RUN = "stock_hf"  # --model hf, longctx_kv at 240, 400 beside the tiny_arith task
TASKS = ("longctx_kv", "longctx_passkey", "longctx_pi_title")

needs_matplotlib = pytest.mark.skipif(
    __import__("importlib").util.find_spec("matplotlib") is None, reason="matplotlib (the report extra) not installed"
)


def results_json(run: str | Path) -> Path:
    folder = run if isinstance(run, Path) else FIXTURES / run
    (path,) = folder.rglob("results_*.json")
    return path


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def copy_run(name: str, tmp_path: Path) -> Path:
    """Copy a fixture run to tmp_path, to craft changes in it."""
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def rewrite_samples(run_dir: Path, task: str, metric: str, value_of) -> None:
    """Set ``metric`` of every sample that ran to ``value_of(length, depth, sample_index)``."""
    (path,) = run_dir.rglob(f"samples_{task}_*.jsonl")
    lines = []
    for line in path.read_text().splitlines():
        sample = json.loads(line)
        if not sample["beyond_window"]:
            doc = sample["doc"]
            sample[metric] = float(value_of(int(doc["max_seq_length"]), float(doc.get("depth", 0)), int(doc["sample"])))
        lines.append(json.dumps(sample))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """The report over all four fixture runs: (exit status, output folder)."""
    out = tmp_path_factory.mktemp("report")
    status = main(["report", *[str(FIXTURES / run) for run in (*LONGCTX_RUNS, STOCK_RUN)], "--output-dir", str(out)])
    return status, out


# --------------------------------------------------------------------------- the command on real runs


@needs_matplotlib
def test_report_writes_markdown_csv_heatmaps_and_curves(full_report):
    status, out = full_report
    assert status == 0
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "leaderboard.csv"} <= names
    assert {f"length_curve_{task}.png" for task in TASKS} <= names
    for rope in ("none", "linear-x2", "dynamic-x2"):
        assert {f"heatmap_tiny-llama_{rope}_{task}.png" for task in TASKS} <= names
    assert "heatmap_tiny-llama_none-stock-hf_longctx_kv.png" in names


@needs_matplotlib
def test_leaderboard_numbers_are_the_results_json_numbers(full_report):
    _, out = full_report
    rows = read_csv(out / "leaderboard.csv")
    assert [row["results file"] for row in rows] == [str(results_json(run)) for run in (*LONGCTX_RUNS, STOCK_RUN)]
    for row in rows:
        results = json.loads(Path(row["results file"]).read_text())["results"]
        for task in TASKS:
            if task not in results:
                assert row[f"{task} score"] == ""
                continue
            entry = results[task]
            metric = report.HEADLINE[task]
            for length in (240, 400, 700):
                cell = row[f"{task} @{length}"]
                if f"{metric}_len_{length},none" in entry:
                    assert float(cell) == pytest.approx(entry[f"{metric}_len_{length},none"])
                elif f"beyond_window_len_{length},none" in entry:
                    assert cell == "beyond window"
                else:
                    assert cell == ""  # not tested in this run
            assert float(row[f"{task} score"]) == pytest.approx(entry["score,none"])
        if "longctx" in results:
            assert float(row["longctx score"]) == pytest.approx(results["longctx"]["score,none"])
        else:
            assert row["longctx score"] == ""
        if "tiny_arith" in results:
            assert float(row["tiny_arith exact_match"]) == pytest.approx(results["tiny_arith"]["exact_match,none"])


@needs_matplotlib
def test_leaderboard_names_model_rope_setting_and_windows_from_provenance(full_report):
    _, out = full_report
    rows = read_csv(out / "leaderboard.csv")
    assert [(r["model"], r["rope"], r["native window"], r["max_length"]) for r in rows] == [
        ("tiny-llama", "none", "512", "512"),
        ("tiny-llama", "linear x2", "512", "1024"),
        ("tiny-llama", "dynamic x2", "512", "1024"),
        ("tiny-llama", "none (stock hf)", "512", "512"),
    ]


@needs_matplotlib
def test_the_tiny_model_fails_every_length_so_no_effective_length(full_report):
    _, out = full_report
    row = read_csv(out / "leaderboard.csv")[0]
    assert [row[f"{task} effective"] for task in TASKS] == ["< 240"] * 3


@needs_matplotlib
def test_markdown_states_the_rule_and_the_different_length_sets(full_report):
    _, out = full_report
    text = (out / "report.md").read_text()
    assert "at or above the threshold (0.85) at L and at every shorter tested length" in text
    assert "beyond the model's window" in text
    assert "runs tested different lengths" in text and "none (stock hf): 240, 400)" in text
    assert "longctx_passkey: not in the results of tiny-llama, RoPE none (stock hf)" in text
    assert "| tiny-llama | none | 512 | 512 | 0.000 | 0.000 | beyond window | < 240 |" in text


@needs_matplotlib
def test_every_png_is_a_valid_image_of_readable_size(full_report):
    from PIL import Image

    _, out = full_report
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 16  # 10 heatmaps, 3 length curves, 3 RoPE-comparison curves
    for path in pngs:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            width, height = image.size
            assert width >= 400 and height >= 300, (path.name, image.size)
            assert len(set(image.convert("RGB").getdata())) > 50  # something was drawn


@needs_matplotlib
def test_python_dash_m_runs_the_same_command(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "lm_eval_longctx", "report", str(FIXTURES / "rope_dynamic2"), "--output-dir", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "report.md").is_file() and (out / "length_curve_longctx_kv.png").is_file()


@needs_matplotlib
def test_output_folder_defaults_to_one_beside_the_first_path(tmp_path):
    run = copy_run("rope_none", tmp_path)
    assert main(["report", str(run)]) == 0
    assert (tmp_path / "rope_none_longctx_report" / "report.md").is_file()


# --------------------------------------------------------------------------- loading


def test_samples_give_counts_per_depth_and_length_and_beyond_window_cells():
    run = report.load_run(results_json("rope_none"))
    kv = run.tasks["longctx_kv"]
    assert kv.metric == "exact" and kv.notes == ()
    assert kv.by_length[240] == report.Cell(accuracy=0.0, correct=0, scored=6, beyond=0)
    assert kv.by_length[700] == report.Cell(accuracy=None, correct=0, scored=0, beyond=6)
    assert set(kv.by_depth_length) == {(d, n) for d in (0.0, 0.5, 1.0) for n in (240, 400, 700)}
    assert kv.by_depth_length[(0.5, 400)].scored == 2
    assert kv.by_depth_length[(1.0, 700)].all_beyond
    assert set(run.tasks["longctx_pi_title"].by_depth_length) == {(None, 240), (None, 400), (None, 700)}


def test_stock_hf_run_reads_window_without_longctx_provenance():
    run = report.load_run(results_json(STOCK_RUN))
    assert run.rope == "none (stock hf)"
    assert run.native_window == 512  # from the checkpoint's config.json, else lm-eval's max_length
    assert run.other_scores == {"tiny_arith exact_match": 0.0}
    assert run.group_score is None


def test_stock_hf_run_reads_rope_and_window_from_the_checkpoint_config(tmp_path):
    checkpoint = tmp_path / "yarn-model"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({
        "max_position_embeddings": 4096, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024},
    }))  # fmt: skip
    results = json.loads(results_json(STOCK_RUN).read_text())
    results["config"]["model_args"] = f"pretrained={checkpoint},dtype=float32"  # the string form
    path = tmp_path / "results_x.json"
    path.write_text(json.dumps(results))
    run = report.load_run(path)
    assert (run.model, run.rope, run.native_window) == ("yarn-model", "yarn x4 (checkpoint, stock hf)", 1024)


SERVED_RUN = "served_llama_cpp"  # local-completions against llama.cpp, longctx_passkey and _kv at 512, 2048


def test_served_run_is_labelled_by_host_and_the_servers_rope_setting():
    run = report.load_run(results_json(SERVED_RUN))
    assert run.model == "SmolLM2-135M-Instruct-Q4_1 @ 127.0.0.1:8770"
    assert run.rope == "none (served)"  # server_rope "none" as recorded in the task metadata
    passkey = run.tasks["longctx_passkey"]
    assert {n: (c.correct, c.scored) for n, c in passkey.by_length.items()} == {512: (9, 9), 2048: (6, 9)}
    assert passkey.by_depth_length[(1.0, 2048)].scored == 3  # per-sample cells from the samples file


def test_served_run_reads_the_native_window_beside_its_tokenizer(tmp_path):
    model = tmp_path / "smollm2"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 8192, "rope_theta": 100000.0}))
    results = json.loads(results_json(SERVED_RUN).read_text())
    for config in results["configs"].values():
        config["metadata"]["tokenizer"] = str(model)
        config["metadata"]["longctx_served"]["server_rope_parameters"] = {"rope_type": "yarn", "factor": 2.0}
    path = tmp_path / "results_x.json"
    path.write_text(json.dumps(results))
    run = report.load_run(path)
    assert (run.rope, run.native_window) == ("yarn x2 (served)", 8192)
    assert run.native_window_source == "the served model's config.json (tokenizer folder)"
    for config in results["configs"].values():
        config["metadata"]["tokenizer"] = str(tmp_path / "gone")
        del config["metadata"]["longctx_served"]["server_rope_parameters"]
    path.write_text(json.dumps(results))
    run = report.load_run(path)
    assert (run.rope, run.native_window) == ("as set on the server, not recorded (served)", None)


@needs_matplotlib
def test_crafted_samples_set_accuracy_counts_and_effective_length(tmp_path):
    run_dir = copy_run("rope_linear2", tmp_path)
    # 240: 6/6, 400: 5/6 (one miss at depth 1), 700: 2/6 (only depth 0).
    rewrite_samples(run_dir, "longctx_kv", "exact", lambda n, d, s: n == 240 or (n == 400 and (d, s) != (1.0, 1)) or d == 0)
    out = tmp_path / "out"
    assert main(["report", str(run_dir), "--output-dir", str(out), "--threshold", "0.8"]) == 0
    (row,) = read_csv(out / "leaderboard.csv")
    assert [float(row[f"longctx_kv @{n}"]) for n in (240, 400, 700)] == pytest.approx([1.0, 5 / 6, 2 / 6])
    assert row["longctx_kv effective"] == "400"
    text = (out / "report.md").read_text()
    assert "0.833 [0.436, 0.970] (5/6)" in text
    assert "the samples file disagrees with the results JSON at length 240" in text


@needs_matplotlib
def test_results_json_alone_gives_table_and_curves_and_says_what_is_missing(tmp_path):
    results = json.loads(results_json("rope_none").read_text())
    results["results"]["longctx_kv"]["exact_len_240,none"] = 0.9  # crafted: proves the JSON is read
    path = tmp_path / "results_2026-01-01T00-00-00.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "out"
    assert main(["report", str(path), "--output-dir", str(out)]) == 0
    (row,) = read_csv(out / "leaderboard.csv")
    assert float(row["longctx_kv @240"]) == 0.9 and row["longctx_kv @700"] == "beyond window"
    assert row["longctx_kv effective"] == "240"
    assert not list(out.glob("heatmap_*.png"))
    assert len(list(out.glob("length_curve_*.png"))) == 3
    text = (out / "report.md").read_text()
    assert "Not drawn: heatmap of longctx_kv for tiny-llama, RoPE none: needs the samples file (--log_samples)" in text
    assert "sample counts are unknown, so no Wilson intervals" in text
    assert "0.900 (n unknown)" in text


# --------------------------------------------------------------------------- the rule and the interval


@pytest.mark.parametrize(
    ("accuracies", "expected"),
    [
        ({1024: 0.9, 2048: 0.95, 4096: 0.86}, 4096),  # all pass: the longest tested
        ({1024: 0.9, 2048: 0.5, 4096: 0.95}, 1024),  # a drop in the middle ends it; recovery after does not count
        ({1024: 0.8, 2048: 0.9}, None),  # the shortest fails: "< shortest tested"
        ({1024: 0.9, 2048: 1.0, 4096: None}, 2048),  # beyond the window fails
        ({4096: 0.9, 1024: 0.85, 2048: 0.85}, 4096),  # exactly at the threshold passes; order given does not matter
        ({}, None),
    ],
)
def test_effective_length_rule(accuracies, expected):
    assert report.effective_length(accuracies, threshold=0.85) == expected


def test_effective_length_follows_the_threshold():
    assert report.effective_length({1024: 0.9, 2048: 0.7}, threshold=0.6) == 2048
    assert report.effective_length({1024: 0.9, 2048: 0.7}, threshold=0.95) is None


def test_partly_beyond_window_length_fails_the_rule():
    result = report.TaskResult("longctx_kv", "exact", {1024: report.Cell(1.0, 6, 6), 2048: report.Cell(1.0, 4, 4, beyond=2)}, None, 1.0)
    assert report.effective_length(report.rule_accuracies(result)) == 1024


# Expected: the roots p of (k/n - p)^2 = 1.96^2 p (1 - p) / n, solved apart with numpy.roots.
@pytest.mark.parametrize(
    ("correct", "total", "low", "high"),
    [
        (5, 6, 0.436491, 0.969947),
        (0, 6, 0.0, 0.390343),
        (6, 6, 0.609657, 1.0),
        (8, 10, 0.490157, 0.943319),
        (50, 100, 0.403830, 0.596170),
        (0, 1, 0.0, 0.793457),
    ],
)
def test_wilson_interval_known_values(correct, total, low, high):
    assert report.wilson_interval(correct, total) == pytest.approx((low, high), abs=1e-6)


def test_wilson_interval_of_no_samples_is_none():
    assert report.wilson_interval(0, 0) is None


def test_rope_labels():
    assert report.rope_label({"rope_type": "default", "rope_theta": 1e4}) == "none"
    assert report.rope_label({"rope_type": "dynamic", "factor": 2.0}) == "dynamic x2"
    assert report.rope_label({"rope_type": "yarn", "factor": 4}, rope_theta_override=500000) == "yarn x4 theta=500000"


# --------------------------------------------------------------------------- mistakes


def test_folder_without_results_is_named(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}: no lm-eval results (no results_*.json in this folder or below)" in err
    assert "Traceback" not in err


def test_missing_path_is_named(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: no such file or folder" in capsys.readouterr().err


def test_results_without_longctx_tasks_is_named(tmp_path, capsys):
    results = json.loads(results_json(STOCK_RUN).read_text())
    del results["results"]["longctx_kv"]
    path = tmp_path / "results_x.json"
    path.write_text(json.dumps(results))
    assert main(["report", str(path)]) == 2
    assert f"{path}: no longctx task in this results file (tasks found: tiny_arith)" in capsys.readouterr().err


def test_json_that_is_not_lm_eval_results_is_named(tmp_path):
    path = tmp_path / "results_x.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(LongCtxError, match="not an lm-eval results file"):
        report.load_run(path)


@needs_matplotlib
def test_a_bad_path_among_good_ones_is_skipped_and_reported(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    assert main(["report", str(FIXTURES / "rope_none"), str(empty), "--output-dir", str(out)]) == 1
    assert f"skipped: {empty}: no lm-eval results" in capsys.readouterr().err
    assert f"Not drawn: {empty}: no lm-eval results" in (out / "report.md").read_text()
    assert len(read_csv(out / "leaderboard.csv")) == 1


@needs_matplotlib
def test_runs_with_different_lengths_are_explained_and_still_drawn(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", str(FIXTURES / "rope_none"), str(FIXTURES / STOCK_RUN), "--output-dir", str(out)]) == 0
    assert "longctx_kv: runs tested different lengths" in capsys.readouterr().err
    assert (out / "length_curve_longctx_kv.png").is_file()
    assert (out / "heatmap_tiny-llama_none-stock-hf_longctx_kv.png").is_file()


def test_threshold_outside_zero_one_is_refused(capsys):
    assert main(["report", str(FIXTURES / "rope_none"), "--threshold", "85"]) == 2
    assert "--threshold 85 is not an accuracy in (0, 1]" in capsys.readouterr().err


def test_missing_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    run = report.with_unique_slugs([report.load_run(results_json("rope_none"))])[0]
    with pytest.raises(LongCtxError, match=r"pip install 'lm-eval-longctx\[report\]'"):
        report.write_report([run], tmp_path, 0.85)


def test_a_chat_template_run_is_named_as_such(tmp_path):
    source = next((FIXTURES / "rope_none").rglob("results_*.json"))
    results = json.loads(source.read_text())
    results["chat_template"] = "{{ messages }}"
    copy = tmp_path / "results_chat.json"
    copy.write_text(json.dumps(results))
    assert report.load_run(copy).model.endswith("(chat template)")
    assert not report.load_run(source).model.endswith("(chat template)")


def test_runs_of_different_task_versions_are_told_apart_and_flagged(tmp_path, capsys):
    # rope_none_v1 is a real run of task version 1 (before the answer prefix); rope_none of version 2.
    runs, problems = report.load_runs([FIXTURES / "rope_none_v1", FIXTURES / "rope_none"])
    assert not problems
    old, new = runs
    assert old.model == "tiny-llama (first-version prompts)" and new.model == "tiny-llama"
    assert {r.version for r in old.tasks.values()} == {"1.0"} and {r.version for r in new.tasks.values()} == {"2.0"}
    notes = report.comparability_notes(runs)
    for task in ("longctx_kv", "longctx_passkey", "longctx_pi_title"):
        (note,) = [n for n in notes if n.startswith(f"{task}: runs of different task versions")]
        assert "version 1.0, first-version prompts: tiny-llama (first-version prompts), RoPE none" in note
        assert "version 2.0, answer prefix: tiny-llama, RoPE none" in note
    assert main(["report", str(FIXTURES / "rope_none_v1"), str(FIXTURES / "rope_none"), "--output-dir", str(tmp_path / "r")]) == 0
    assert "runs of different task versions or prompts meet" in capsys.readouterr().err
    assert "runs of different task versions or prompts meet" in (tmp_path / "r" / "report.md").read_text()


def test_answer_prefix_false_runs_are_first_version_prompts(tmp_path):
    run = copy_run("rope_none", tmp_path)
    (path,) = run.rglob("results_*.json")
    results = json.loads(path.read_text())
    for task in ("longctx_kv", "longctx_passkey", "longctx_pi_title"):
        results["configs"][task]["metadata"]["answer_prefix"] = False
    path.write_text(json.dumps(results))
    (loaded,) = report.load_runs([run])[0]
    assert loaded.model == "tiny-llama (first-version prompts)"
    assert {r.prompts for r in loaded.tasks.values()} == {"first-version prompts"}


# --------------------------------------------------------------------------- outputs and damaged inputs


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_output_dir_that_cannot_be_a_folder_is_one_line(tmp_path, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    out = blocker if where == "a file" else blocker / "report"
    assert main(["report", str(FIXTURES / "rope_none"), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    expected = "is a file" if where == "a file" else f"is under {blocker}, which is a file"
    assert err == f"lm-eval-longctx error: --output-dir {out} {expected}, not a folder; give a folder path (new or existing)."


def test_output_dir_under_a_read_only_folder_is_one_line(read_only_dir, capsys, monkeypatch):
    monkeypatch.setattr(report, "load_runs", lambda paths: pytest.fail("read the inputs before checking the output"))
    out = read_only_dir / "report"
    assert main(["report", str(FIXTURES / "rope_none"), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lm-eval-longctx error: --output-dir {out}: cannot write in {read_only_dir} (")
    assert err.endswith("give a folder you can write to.")


def test_default_output_dir_is_checked_too(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setattr(report, "default_output_dir", lambda first: blocker)
    assert main(["report", str(FIXTURES / "rope_none")]) == 2
    assert f"--output-dir {blocker} is a file" in capsys.readouterr().err


def test_nothing_to_report_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"lm-eval-longctx error: nothing to report: {tmp_path / 'a'}: no such file or folder.")
    assert f" | {tmp_path / 'b'}: no such file or folder." in line


@pytest.mark.parametrize("content", ["", "null\n", "{oops\n", '{"doc": "x", "exact": 1}\n'])
def test_damaged_samples_file_falls_back_to_the_results_json(tmp_path, content):
    run = copy_run("rope_none", tmp_path)
    (samples,) = run.rglob("samples_longctx_kv_*.jsonl")
    samples.write_text(content)
    result = report.load_run(results_json(run)).tasks["longctx_kv"]
    assert result.by_depth_length is None and result.by_length  # the JSON's per-length cells
    assert "unreadable" in result.notes[0] and "used the results JSON only" in result.notes[0]

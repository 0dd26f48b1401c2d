"""``lm-eval-longctx sweep``: one load, one lm-eval run per RoPE setting, files as separate runs write them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

from lm_eval_longctx import cli, sweep
from lm_eval_longctx.errors import LongCtxError

FIXTURE_TASK = Path(__file__).parent / "fixtures" / "report" / "tiny_arith_task"
METADATA = '{"max_seq_lengths": [240, 700], "depths": [0.5], "num_samples": 1}'  # 700: beyond the 512 window
LONG_LOGLIKELIHOOD_YAML = """\
task: long_loglikelihood
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{text}}}}"
doc_to_target: " green"
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """tiny_arith (a standard-style generate_until task over a local file) and long_loglikelihood
    (loglikelihood inputs of about 600 tokens: beyond a 512-token window, within 1024)."""
    folder = tmp_path_factory.mktemp("tasks")
    (folder / "arith.jsonl").write_text((FIXTURE_TASK / "arith.jsonl").read_text())
    yaml = (FIXTURE_TASK / "tiny_arith.yaml").read_text().replace("/tmp/r/stdtask/arith.jsonl", str(folder / "arith.jsonl"))
    (folder / "tiny_arith.yaml").write_text(yaml)
    words = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    docs = [{"text": words * 9 + "The grass is"}, {"text": words * 9 + "Blue is the"}]
    (folder / "long.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    (folder / "long_loglikelihood.yaml").write_text(LONG_LOGLIKELIHOOD_YAML.format(data=folder / "long.jsonl"))
    return str(folder)


def read_run(folder: Path) -> tuple[dict, dict]:
    """Return a run's results (without its times) and samples per task, as written."""
    [results_file] = folder.rglob("results_*.json")
    results = json.loads(results_file.read_text())
    for key in ("date", "start_time", "end_time", "total_evaluation_time_seconds"):
        results.pop(key, None)
    samples = {
        path.name.split("_20")[0]: [json.loads(line) for line in path.read_text().splitlines()]
        for path in folder.rglob("samples_*.jsonl")
    }
    return results, samples


def console(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def test_a_sweep_writes_what_separate_lm_eval_runs_write(sharp_model_dir, task_dir, tmp_path):
    common = [
        "--include_path", task_dir, "--tasks", "longctx_kv,tiny_arith", "--metadata", METADATA,
        "--device", "cpu", "--batch_size", "2", "--log_samples",
    ]  # fmt: skip
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        console("lm-eval-longctx"), "sweep", "--rope", "linear:2", "none",
        "--model_args", f"pretrained={sharp_model_dir}", *common, "--output_path", str(tmp_path / "sweep"),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("[")] == [
        "[1/2] rope_scaling=linear:2",
        "[2/2] rope_scaling=none",
    ]
    runs = {}
    for setting, slug in (("linear:2", "linear2"), ("none", "none")):
        separate = tmp_path / "separate" / f"rope_{slug}"
        model_args = f"pretrained={sharp_model_dir},rope_scaling={setting}"
        lm_eval = [
            console("lm_eval"), "--model", "hf-longctx", "--model_args", model_args, *common, "--output_path", str(separate)
        ]  # fmt: skip
        alone = subprocess.run(lm_eval, env=env, capture_output=True, text=True, timeout=600)
        assert alone.returncode == 0, alone.stderr[-4000:]
        ours, theirs = read_run(tmp_path / "sweep" / f"rope_{slug}"), read_run(separate)
        assert ours[0] == theirs[0]  # metrics, configs, model_args, config.longctx (max_length, windows), ...
        assert ours[1] == theirs[1]  # every sample: prompt, answer, filtered answer, scores
        runs[slug] = ours
    linear, none = runs["linear2"], runs["none"]
    assert (linear[0]["config"]["longctx"]["max_length"], none[0]["config"]["longctx"]["max_length"]) == (1024, 512)
    assert none[0]["config"]["model_args"] == {"pretrained": sharp_model_dir, "rope_scaling": "none"}
    answers = {slug: [s["filtered_resps"] for s in run[1]["samples_tiny_arith"]] for slug, run in runs.items()}
    assert answers["linear2"] != answers["none"]  # the settings really ran differently
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["settings"]
    assert [(s["rope_scaling"], s["status"]) for s in summary] == [("linear:2", "ok"), ("none", "ok")]
    assert (tmp_path / "sweep" / "report" / "report.md").is_file()


@pytest.fixture
def in_process(monkeypatch):
    """Run the sweep in this process without lm-eval's logging set-up (it stops lm_eval loggers
    propagating, which other tests' caplog relies on)."""
    import lm_eval.utils

    monkeypatch.setattr(lm_eval.utils, "setup_logging", lambda *args, **kwargs: None)
    return lambda argv: cli.main(["sweep", *argv])


def test_a_failing_setting_is_named_and_the_others_are_kept(sharp_model_dir, task_dir, tmp_path, in_process, capsys):
    out = tmp_path / "sweep"
    status = in_process([
        "--rope", "linear:2", "longrope:2:short=1/1:long=1/1", "none", "dynamic:2",
        "--model_args", f"pretrained={sharp_model_dir}", "--include_path", task_dir,
        "--tasks", "longctx_kv,long_loglikelihood", "--metadata", '{"max_seq_lengths": [240], "depths": [0.5], "num_samples": 1}',
        "--device", "cpu", "--output_path", str(out),
    ])  # fmt: skip
    assert status == 2
    captured = capsys.readouterr()
    summary = {s["rope_scaling"]: s for s in json.loads((out / "sweep.json").read_text())["settings"]}
    assert [s["status"] for s in summary.values()] == ["ok", "failed", "failed", "ok"]
    # a spec that does not fit this model, and a loglikelihood input beyond that setting's window
    assert "short_factor has 2 numbers; this model's rotary dimension needs 4" in summary["longrope:2:short=1/1:long=1/1"]["error"]
    assert "exceed max_length=512" in summary["none"]["error"]
    for kept in ("rope_linear2", "rope_dynamic2"):
        assert read_run(out / kept)[0]["results"]["long_loglikelihood"]["acc,none"] is not None
    assert (out / "rope_none" / "failed.txt").read_text().startswith("rope_scaling=none: loglikelihood inputs of")
    errors = captured.err.strip().splitlines()[-2:]
    assert errors[0].startswith("lm-eval-longctx error: rope_scaling=longrope:2:short=1/1:long=1/1 failed: ")
    assert errors[1].startswith("lm-eval-longctx error: rope_scaling=none failed: loglikelihood inputs of")
    report = (out / "report" / "report.md").read_text()
    assert "rope_none" in report and "rope_longrope2_short1-1_long1-1" in report  # its skipped inputs


@pytest.fixture
def no_weights(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("weights or tokenizer were loaded before the arguments were checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rope", "none", "dynmic:2"], r"rope_scaling='dynmic:2': unknown kind 'dynmic'; known kinds: .* Write it like rope_scaling=dynamic:2"),
        (["--rope", "yarn:0"], r"rope_scaling='yarn:0': factor must be a finite number > 0"),
        (["--rope", "dynamic:2", '{"rope_type": "dynamic", "factor": 2}'], r"--rope dynamic:2 and .* are the same setting; give it once"),
        (["--rope", "none", "--model_args", "rope_scaling=linear:2"], r"--model_args rope_scaling=linear:2: in a sweep, --rope gives the settings"),
        (["--rope", "none", "--model", "hf"], r"--model hf: a sweep runs hf-longctx"),
        (["--rope", "none", "--output_path", "out.json"], r"--output_path out.json: a sweep writes one folder per setting"),
        (["--rope", "none", "--config", "run.yaml"], r"--config run.yaml: a sweep takes its arguments on the command line"),
        (["--rope", "none", "--metadata", '{"a": 1,}'], r"--metadata \{\"a\": 1,\} is not valid JSON"),
        (["--rope", "none", "--model_args", "batch_size=4"], r"--model_args batch_size=4: lm-eval passes --batch_size"),
        (["--rope", "none", "--tasks", "no_such_task"], r"^lm-eval: Tasks not found: no_such_task$"),
        (["--rope", "none", "--bogus"], r"unrecognized arguments: --bogus\. Run lm-eval-longctx sweep --help"),
        (["--tasks", "longctx_kv"], r"the following arguments are required: --rope"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_before_any_weights_load(tiny_model_dir, tmp_path, no_weights, argv, message):
    base = {"--model_args": f"pretrained={tiny_model_dir}", "--tasks": "longctx_kv", "--output_path": str(tmp_path / "out")}
    given = set(argv)
    argv = argv + [item for flag, value in base.items() if flag not in given for item in (flag, value)]
    if "--model_args" in given:
        argv[argv.index("--model_args") + 1] = f"pretrained={tiny_model_dir}," + argv[argv.index("--model_args") + 1]
    with pytest.raises(LongCtxError, match=message) as caught:
        sweep.main(argv)
    assert "\n" not in str(caught.value)


def test_earlier_results_in_a_setting_s_folder_are_refused(tiny_model_dir, tmp_path, no_weights, capsys):
    earlier = tmp_path / "out" / "rope_dynamic2" / "model"
    earlier.mkdir(parents=True)
    (earlier / "results_2026-01-01.json").write_text("{}")
    argv = ["--rope", "none", "dynamic:2", "--model_args", f"pretrained={tiny_model_dir}", "--tasks", "longctx_kv"]
    assert cli.main(["sweep", *argv, "--output_path", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rope_dynamic2 already holds results of an earlier run" in err[0]


def test_help_lists_rope_and_lm_eval_s_own_options(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["sweep", "--help"])
    assert caught.value.code == 0
    shown = capsys.readouterr().out
    for option in ("--rope SETTING [SETTING ...]", "--model_args", "--tasks", "--metadata", "--include_path",
                   "--gen_kwargs", "--apply_chat_template", "--limit", "--log_samples", "OUT/rope_<setting>"):  # fmt: skip
        assert option in shown, option
    assert "--config" not in shown  # refused in a sweep
    assert "sweep" in cli.build_parser().format_help()


@pytest.mark.parametrize(
    ("value", "slug"),
    [
        ("none", "none"),
        ("dynamic:2", "dynamic2"),
        ("linear:2.5", "linear2.5"),
        ("yarn:4:orig=4096", "yarn4_orig4096"),
        ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}, "yarn4_orig4096"),
        ("llama3:8:low=1:high=4:orig=8192", "llama38_low1_high4_orig8192"),
        ("dynamic:2:rope_theta=500000", "dynamic2_theta500000"),
        (None, "checkpoint"),
    ],
)
def test_each_setting_has_a_folder_named_after_it(value, slug):
    from lm_eval_longctx import rope

    assert sweep.slug_of(rope.parse_rope_scaling(value)) == slug


def test_a_long_setting_s_folder_name_is_cut_and_kept_apart():
    from lm_eval_longctx import rope

    factors = "/".join(str(1 + i / 100) for i in range(64))
    one, two = (sweep.slug_of(rope.parse_rope_scaling(f"longrope:4:short={factors}:long={f}")) for f in (factors, "2/" * 63 + "2"))
    assert len(one) == sweep.MAX_SLUG and one != two


def test_each_setting_runs_with_the_model_args_of_its_separate_run(tiny_model_dir, tmp_path):
    args = sweep.parse(["--rope", "dynamic:2", "--model_args", f"pretrained={tiny_model_dir},max_length=700",
                        "--tasks", "longctx_kv", "--output_path", str(tmp_path), "--use_cache", str(tmp_path / "cache")])  # fmt: skip
    [setting] = sweep.settings_of(args)
    one = sweep.run_args(args, setting)
    assert one.model == "hf-longctx" and not hasattr(one, "rope")
    assert one.model_args == {"pretrained": tiny_model_dir, "max_length": 700, "rope_scaling": "dynamic:2"}
    assert (one.output_path, one.use_cache) == (str(tmp_path / "rope_dynamic2"), str(tmp_path / "cache") + "_rope_dynamic2")
    assert args.model_args == {"pretrained": tiny_model_dir, "max_length": 700}  # the sweep's own arguments untouched


def test_tasks_whose_documents_differ_between_settings_are_named(tmp_path):
    """A task that builds its documents from Python's global random state (lm-eval's RULER) got
    other needles in a sweep's later settings than in its first (seen on the embedded model with
    niah_single_1): the sweep names it, by lm-eval's task_hashes, instead of comparing it silently."""
    from lm_eval_longctx import sweep

    def run(name, hashes, error=None):
        folder = tmp_path / name / "model"
        folder.mkdir(parents=True)
        (folder / "results_2026-11-26T10-00-00.json").write_text(json.dumps({"task_hashes": hashes}))
        return sweep.Outcome(sweep.Setting(name, None, name), tmp_path / name, error)

    outcomes = [
        run("none", {"longctx_kv": "a", "niah_single_1": "x"}),
        run("linear2", {"longctx_kv": "a", "niah_single_1": "y"}),
        run("yarn2", {"longctx_kv": "b"}, error="failed: not counted"),
    ]
    assert sweep.documents_that_differ(outcomes) == ["niah_single_1"]
    assert sweep.documents_that_differ(outcomes[:1]) == []


def test_ctrl_c_keeps_what_finished_and_resume_finishes_into_the_same_folder(
    sharp_model_dir, task_dir, tmp_path, in_process, capsys, monkeypatch
):
    out = tmp_path / "sweep"
    argv = [
        "--rope", "none", "linear:2", "dynamic:2", "--model_args", f"pretrained={sharp_model_dir}",
        "--include_path", task_dir, "--tasks", "longctx_kv", "--device", "cpu", "--log_samples",
        "--metadata", '{"max_seq_lengths": [240], "depths": [0.5], "num_samples": 1}', "--output_path", str(out),
    ]  # fmt: skip
    real = sweep.lmeval_cli.run_lm_eval
    ran = []

    def stop_in_the_second(args):
        ran.append(args.model_args["rope_scaling"])
        if len(ran) == 2:  # half-written, as lm-eval leaves a folder it was writing: then Ctrl-C
            (Path(args.output_path) / "model").mkdir(parents=True)
            (Path(args.output_path) / "model" / "results_2026-01-01T00-00-00.json").write_text("{}")
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(sweep.lmeval_cli, "run_lm_eval", stop_in_the_second)
    assert in_process(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"lm-eval-longctx: sweep stopped (Ctrl-C) during rope_scaling=linear:2: kept 1 finished setting(s) (none) in "
        f"{out} (sweep.json, report/); finish the others with the same command plus --resume."
    )
    summary = json.loads((out / "sweep.json").read_text())["settings"]
    assert [(s["rope_scaling"], s["status"]) for s in summary] == [("none", "ok"), ("linear:2", "interrupted"), ("dynamic:2", "not run")]
    assert "rope_none" in (out / "report" / "report.md").read_text()
    first = sorted((out / "rope_none").rglob("results_*.json"))
    assert cli.main(["sweep", *argv]) == 2  # without --resume: refused, and told about --resume
    assert "add --resume to finish a stopped sweep there" in capsys.readouterr().err

    ran.clear()
    monkeypatch.setattr(sweep.lmeval_cli, "run_lm_eval", lambda args: (ran.append(args.model_args["rope_scaling"]), real(args))[1])
    assert in_process([*argv, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert ran == ["linear:2", "dynamic:2"]  # the finished setting is not rerun
    assert "[1/3] rope_scaling=none: finished earlier, kept" in printed
    assert "rope_linear2 is half-written (not finished); removed, to run again" in printed
    assert sorted((out / "rope_none").rglob("results_*.json")) == first
    assert not (out / "rope_linear2" / "model" / "results_2026-01-01T00-00-00.json").exists()
    summary = json.loads((out / "sweep.json").read_text())["settings"]
    assert [(s["rope_scaling"], s["status"]) for s in summary] == [("none", "ok"), ("linear:2", "ok"), ("dynamic:2", "ok")]
    text = (out / "report" / "report.md").read_text()
    assert all(f"rope_{slug}" in text for slug in ("none", "linear2", "dynamic2"))
    assert "RoPE settings compared" in text  # one report over all three settings


def test_resume_refuses_a_folder_finished_under_other_arguments(sharp_model_dir, tmp_path, no_weights):
    args = sweep.parse(["--rope", "none", "--model_args", f"pretrained={sharp_model_dir}", "--tasks", "longctx_kv",
                        "--output_path", str(tmp_path)])  # fmt: skip
    [setting] = sweep.settings_of(args)
    folder = sweep.folder_of(args, setting)
    (folder / "m").mkdir(parents=True)
    (folder / "m" / "results_x.json").write_text("{}")
    sweep.sweep_state.mark_done(folder, "none", args)
    other = sweep.parse(["--rope", "none", "--model_args", f"pretrained={sharp_model_dir}", "--tasks", "longctx_passkey",
                         "--output_path", str(tmp_path), "--resume"])  # fmt: skip
    with pytest.raises(LongCtxError, match=r"--resume: .*rope_none was run with other arguments \(tasks differ\)"):
        sweep.sweep_state.plan(other, [setting], sweep.folder_of)
    same = sweep.parse(["--rope", "none", "--model_args", f"pretrained={sharp_model_dir}", "--tasks", "longctx_kv",
                        "--output_path", str(tmp_path), "--resume"])  # fmt: skip
    assert sweep.sweep_state.plan(same, [setting], sweep.folder_of) == {"none"}

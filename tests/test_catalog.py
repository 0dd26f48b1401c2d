"""The catalog is the one list of tasks: YAMLs, the groups, task names and versions
follow it, and a user's YAML that reuses ours joins no group."""

from pathlib import Path

import pytest
import yaml

from lm_eval_longctx import registration
from lm_eval_longctx.catalog import GROUPS, KV, TASK_VERSION, TASKS, our_tasks
from lm_eval_longctx.registration import task_manager, tasks_dir


def task_yamls() -> dict:
    """Return {task name: YAML text} for the catalog's task YAMLs in our folder (not the shared
    ones, nor longctx_ppl, a task class of its own: tests/test_ppl.py)."""
    paths = Path(tasks_dir()).glob("longctx_*.yaml")
    return {path.stem: path.read_text() for path in paths if path.stem not in (*GROUPS, "longctx_ppl")}


def test_every_task_is_one_row_and_a_three_line_yaml_naming_it():
    yamls = task_yamls()
    assert set(yamls) == set(TASKS)
    for name, text in yamls.items():
        config = yaml.safe_load(text)
        assert len(text.strip().splitlines()) == 3
        assert set(config) == {"include", "task", "dataset_kwargs"}
        assert config["task"] == name and config["dataset_kwargs"] == {"longctx_task": name}
        assert config["include"] == "_longctx_common.yaml"


@pytest.mark.parametrize("group", GROUPS)
def test_each_group_yaml_lists_exactly_the_catalogs_members(group):
    config = yaml.safe_load((Path(tasks_dir()) / f"{group}.yaml").read_text())
    assert config["group"] == group and config["task"] == list(GROUPS[group])
    assert GROUPS["longctx_kv_variants"] == tuple(n for n, t in TASKS.items() if t.family is KV and n not in GROUPS["longctx"])


def test_task_names_come_from_the_catalog():
    assert registration.TASK_NAMES == (*TASKS, "longctx", "longctx_kv_variants", "longctx_ppl")
    assert our_tasks(["longctx", "longctx_kv_multiquery", "my_kv", "longctx_passkey"]) == [
        "longctx_kv_multiquery", "longctx_passkey",
    ]


@pytest.fixture
def metadata(tiny_model_dir):
    return {"pretrained": tiny_model_dir, "max_seq_lengths": [300], "depths": [0.5], "num_samples": 1}


def test_the_groups_hold_the_catalogs_tasks_and_the_version_is_the_catalogs(metadata):
    manager = task_manager(metadata=metadata)
    loaded = {group: manager.load([group])["tasks"] for group in GROUPS}
    assert set(manager.load(list(GROUPS))["tasks"]) == set(TASKS)  # both groups in one run
    assert {group: set(tasks) for group, tasks in loaded.items()} == {g: set(m) for g, m in GROUPS.items()}
    assert {task.VERSION for tasks in loaded.values() for task in tasks.values()} == {TASK_VERSION}


def test_a_users_yaml_including_our_common_yaml_runs_alone_and_joins_no_group(metadata, tmp_path):
    common = Path(tasks_dir()) / "_longctx_common.yaml"
    (tmp_path / "my_kv.yaml").write_text(
        f"include: {common}\ntask: my_kv\ndataset_kwargs:\n  longctx_task: longctx_kv_multikey\n"
    )
    (tmp_path / "my_passkey.yaml").write_text(f"include: {Path(tasks_dir()) / 'longctx_passkey.yaml'}\ntask: my_passkey\n")
    manager = task_manager(include_path=str(tmp_path), metadata=metadata)
    for group, members in GROUPS.items():
        assert set(manager.load([group])["tasks"]) == set(members)
    mine = manager.load(["my_kv"])["tasks"]["my_kv"]
    assert len(mine.dataset["test"][0]["needles"]) == 4  # the user's variant runs, as its own task
    assert mine.VERSION == TASK_VERSION


def test_the_variants_run_through_lm_eval_with_per_length_and_per_depth_metrics(tiny_model_dir):
    import lm_eval

    md = {"pretrained": tiny_model_dir, "max_seq_lengths": [200, 300], "depths": [0, 1], "num_samples": 1}
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": tiny_model_dir, "device": "cpu"},
        tasks=["longctx_kv", "longctx_kv_variants"],
        task_manager=task_manager(metadata=md),
        bootstrap_iters=0,
    )["results"]
    for name in ("longctx_kv", *GROUPS["longctx_kv_variants"]):
        metrics = {key.split(",")[0] for key in results[name]}
        headline = TASKS[name].headline
        assert {"score", *TASKS[name].metrics, f"{headline}_len_200", f"{headline}_len_300"} <= metrics
        assert {f"{headline}_depth_0", f"{headline}_depth_1"} <= metrics

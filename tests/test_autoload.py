"""The start-up hook: harmless without lm-eval, out of the way when lm-eval loads plugins itself."""

import subprocess
import sys
import textwrap

import pytest


def run_python(code: str, pythonpath, **env) -> subprocess.CompletedProcess:
    import os

    environment = {**os.environ, "PYTHONPATH": str(pythonpath), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)


def write_fake_lm_eval(root, registry_source: str, manager_source: str) -> None:
    """A stand-in 'lm_eval' package that shadows the real one on PYTHONPATH."""
    files = {
        "lm_eval/__init__.py": "",
        "lm_eval/api/__init__.py": "",
        "lm_eval/api/registry.py": registry_source,
        "lm_eval/models/__init__.py": "from lm_eval.api.registry import model_registry\n",
        "lm_eval/tasks/__init__.py": "",
        "lm_eval/tasks/manager.py": manager_source,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_a_different_lm_eval_does_not_break_start_up(tmp_path):
    # No TaskManager, no model_registry: the hook must simply do nothing.
    write_fake_lm_eval(tmp_path, "x = 1\n", "y = 2\n")
    (tmp_path / "lm_eval/models/__init__.py").write_text("")
    out = run_python("import lm_eval.tasks.manager, lm_eval.models; print('ok')", tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("loads_plugins", [True, False])
def test_steps_aside_only_when_lm_eval_loads_entry_points_itself(tmp_path, loads_plugins):
    marker = "# this lm-eval discovers plugins: entry_points(" if loads_plugins else ""
    registry = f"""
        {marker}
        class Registry(dict):
            def register(self, name, target):
                self[name] = target
        model_registry = Registry()
    """
    manager = f"""
        {marker}
        class TaskManager:
            def __init__(self, verbosity=None, include_path=None, include_defaults=True, metadata=None):
                self.include_path = include_path
    """
    write_fake_lm_eval(tmp_path, registry, manager)
    code = (
        "import lm_eval.models\n"
        "from lm_eval.api.registry import model_registry\n"
        "from lm_eval.tasks.manager import TaskManager\n"
        "paths = TaskManager().include_path\n"
        "print('hf-longctx' in model_registry, paths if paths is None else [p.name for p in paths])\n"
    )
    out = run_python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("False None" if loads_plugins else "True ['tasks']")


def test_on_lm_eval_0_4_13_our_tasks_and_model_are_known():
    code = (
        "from lm_eval.tasks import TaskManager\n"
        "from lm_eval.api.registry import get_model\n"
        "tm = TaskManager()\n"
        "print('longctx_kv' in tm.all_tasks, 'longctx' in tm.all_groups, get_model('hf-longctx').__name__)\n"
    )
    out = run_python(code, "")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "True True HFLongCtxLM"


def test_switched_off_by_environment():
    code = "from lm_eval.tasks import TaskManager\nprint('longctx_kv' in TaskManager().all_tasks)\n"
    out = run_python(code, "", LM_EVAL_LONGCTX_NO_AUTOLOAD="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"

"""The start-up hook: harmless without lm-eval, out of the way when lm-eval loads plugins itself."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def run_python(code: str, pythonpath, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(pythonpath), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=600)


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


# --------------------------------------------------------------------------- the switch and the cost

ROOT = Path(__file__).resolve().parent.parent
ON = ["", "0", "false", "FALSE", " no ", "off"]
OFF = ["1", "true", "yes", "on", "anything"]


def start_with_our_pth(tmp_path, code: str, switch: str | None) -> subprocess.CompletedProcess:
    """Run ``code`` after processing only our .pth file (python -S: not the venv's own .pth files)."""
    site_dir = tmp_path / "site"
    site_dir.mkdir(exist_ok=True)
    shutil.copy(ROOT / "lm_eval_longctx.pth", site_dir / "lm_eval_longctx.pth")
    env = {k: v for k, v in os.environ.items() if k != "LM_EVAL_LONGCTX_NO_AUTOLOAD"}
    env["PYTHONPATH"] = str(ROOT)
    if switch is not None:
        env["LM_EVAL_LONGCTX_NO_AUTOLOAD"] = switch
    prelude = f"import sys; before = set(sys.modules); import site; site.addsitedir({str(site_dir)!r})\n"
    return subprocess.run([sys.executable, "-S", "-c", prelude + code], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("switch", [None, *ON, *OFF])
def test_switch_values(tmp_path, switch):
    from lm_eval_longctx._autoload import switched_off

    expected_off = switch in OFF
    code = "print(any(type(f).__name__ == '_PostImportFinder' for f in sys.meta_path))"
    out = start_with_our_pth(tmp_path, code, switch)
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert out.stdout.split() == (["False"] if expected_off else ["True"]), f"switch={switch!r}"
    # _autoload applies the same rule (for a .pth copied by an older install).
    assert switched_off({} if switch is None else {"LM_EVAL_LONGCTX_NO_AUTOLOAD": switch}) is expected_off


def test_start_up_imports_no_module(tmp_path):
    # The .pth defines its finder inline: at start-up nothing is found, read or compiled (with
    # PYTHONDONTWRITEBYTECODE, as on this project's machines, every imported module would be
    # compiled again at every start), whether the hook is on or off.
    code = "print(' '.join(sorted(set(sys.modules) - before - {'site'})))"
    on = start_with_our_pth(tmp_path, code, None)
    off = start_with_our_pth(tmp_path, code, "1")
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert on.stdout.split() == off.stdout.split(), set(on.stdout.split()) ^ set(off.stdout.split())
    assert not [m for m in on.stdout.split() if m.startswith(("lm_eval", "importlib.abc"))], on.stdout


def test_the_pth_line_and_the_module_agree():
    # The .pth repeats the switch's values and the hooked module names: a change in one
    # without the other would hook the wrong modules or read the switch differently.
    from lm_eval_longctx._autoload import HOOKS, KEEPS_ON

    line = (ROOT / "lm_eval_longctx.pth").read_text()
    assert len(line.splitlines()) == 1 and line.startswith("import ")
    assert repr(KEEPS_ON).replace("'", '"') in line
    assert repr(tuple(HOOKS)).replace("'", '"') in line


def test_the_finder_passes_every_other_import_through(tmp_path):
    # Installed first on sys.meta_path, it sees every import of the process: it must answer
    # None for each name it does not hook, import nothing for them, and leave them working.
    code = "import json, email.parser; print([m for m in sys.modules if m.startswith('lm_eval')], sys.meta_path[0].find_spec('json', None))"
    out = start_with_our_pth(tmp_path, code, None)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] None"


def test_switched_off_hook_imports_nothing_of_ours(tmp_path):
    out = start_with_our_pth(tmp_path, "print([m for m in sys.modules if m.startswith('lm_eval_longctx')])", "1")
    assert out.stdout.strip() == "[]", out.stderr


def test_hook_patches_lm_eval_only_once_it_is_imported(tmp_path):
    write_fake_lm_eval(tmp_path / "fake", "x = 1\n", "class TaskManager:\n    def __init__(self, *a): pass\n")
    code = (
        f"sys.path.insert(0, {str(tmp_path / 'fake')!r})\n"
        "print('lm_eval_longctx.compat' in sys.modules)\n"
        "import lm_eval.tasks.manager\n"
        "print('lm_eval_longctx.compat' in sys.modules, lm_eval.tasks.manager.TaskManager._longctx_patched)\n"
    )
    out = start_with_our_pth(tmp_path, code, None)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True"]

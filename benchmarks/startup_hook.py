"""What the start-up hook (lm_eval_longctx.pth) costs every Python process of the environment.

Builds two virtual environments of the running Python, made the same way: a bare one, and one
holding this checkout's package and .pth file as a regular (non-editable) install lays them out
(package copied into site-packages, compiled to .pyc as pip does). Then it starts each
interpreter many times, interleaved, and reports medians:

* wall time of ``python -c pass`` and ``python -c "import json"``, bare vs. hook on vs. hook
  switched off (LM_EVAL_LONGCTX_NO_AUTOLOAD=1);
* modules loaded at start-up, and what ``python -X importtime`` charges to lm_eval_longctx.

lm-eval itself is not installed in either: the hook must cost nothing until lm_eval is imported,
so whether it is installed does not change these numbers. ``--before REV`` adds a third
environment holding the package and .pth of git revision REV, installed the same way (the
hook before a change); ``--venv PATH`` adds an existing environment as it is.

    python benchmarks/startup_hook.py --runs 60 --before 7104ebe
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWITCH = "LM_EVAL_LONGCTX_NO_AUTOLOAD"


def make_venv(path: Path, source: Path | None) -> Path:
    """A venv of this Python; with ``source`` (a checkout), its package and .pth installed."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    if source is not None:
        shutil.copytree(source / "lm_eval_longctx", site / "lm_eval_longctx", symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy(source / "lm_eval_longctx.pth", site / "lm_eval_longctx.pth")
        subprocess.run([str(python), "-m", "compileall", "-q", str(site / "lm_eval_longctx")], check=True)
    return python


def checkout(rev: str, into: Path) -> Path:
    """The package and .pth of git revision ``rev``, extracted into ``into``."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "lm_eval_longctx", "lm_eval_longctx.pth"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def child_env(switch: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", SWITCH)}
    if switch is not None:
        env[SWITCH] = switch
    return env


def wall_ms(python: Path, code: str, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([str(python), "-c", code], env=env, check=True)
    return (time.perf_counter() - started) * 1000


def importtime_ms(python: Path, env: dict) -> float:
    """Microseconds -X importtime charges (cumulatively) to lm_eval_longctx modules, in ms."""
    out = subprocess.run([str(python), "-X", "importtime", "-c", "pass"], env=env, capture_output=True, text=True, check=True)
    total = 0
    for line in out.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == "lm_eval_longctx._autoload":
            total += int(parts[1])  # cumulative: includes the package __init__ it pulls in
    return total / 1000


def module_count(python: Path, env: dict) -> int:
    return int(subprocess.check_output([str(python), "-c", "import sys; print(len(sys.modules))"], env=env, text=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="starts per configuration and command (default 40)")
    parser.add_argument("--before", metavar="REV", help="also measure the hook of this git revision")
    parser.add_argument("--venv", type=Path, action="append", default=[], help="also measure this existing venv")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="startup_hook_") as tmp:
        bare = make_venv(Path(tmp) / "bare", None)
        hooked = make_venv(Path(tmp) / "hook", ROOT)
        configs = {
            "bare venv": (bare, child_env(None)),
            "hook on": (hooked, child_env(None)),
            f"hook off ({SWITCH}=1)": (hooked, child_env("1")),
        }
        if args.before:
            before = make_venv(Path(tmp) / "before", checkout(args.before, Path(tmp) / "src_before"))
            configs[f"hook of {args.before}, on"] = (before, child_env(None))
            configs[f"hook of {args.before}, {SWITCH}=1"] = (before, child_env("1"))
        for venv in args.venv:
            configs[f"{venv} as is"] = (venv / "bin" / "python", child_env(None))
        commands = {"-c pass": "pass", "-c 'import json'": "import json"}
        for python, env in configs.values():  # warm the file cache
            for code in commands.values():
                wall_ms(python, code, env)
        times = {(c, k): [] for c in configs for k in commands}
        hook_import = {c: [] for c in configs}
        for _ in range(args.runs):  # interleaved, so load changes hit every configuration alike
            for name, (python, env) in configs.items():
                for label, code in commands.items():
                    times[(name, label)].append(wall_ms(python, code, env))
                hook_import[name].append(importtime_ms(python, env))

        print(f"Python {platform.python_version()} ({sys.executable}), {platform.machine()}, "
              f"{os.cpu_count()} CPUs; {args.runs} runs each, interleaved; medians")
        base = {label: statistics.median(times[("bare venv", label)]) for label in commands}
        print("| environment | modules at start-up | " + " | ".join(f"`python {k}` ms (vs bare)" for k in commands)
              + " | -X importtime of lm_eval_longctx ms |")
        print("|---|---|" + "---|" * len(commands) + "---|")
        for name, (python, env) in configs.items():
            cells = []
            for label in commands:
                median = statistics.median(times[(name, label)])
                cells.append(f"{median:.1f} ({median - base[label]:+.1f})")
            print(f"| {name} | {module_count(python, env)} | " + " | ".join(cells)
                  + f" | {statistics.median(hook_import[name]):.2f} |")


if __name__ == "__main__":
    print(f"load average at start: {os.getloadavg()}")
    main()
    print(f"load average at end: {os.getloadavg()}")

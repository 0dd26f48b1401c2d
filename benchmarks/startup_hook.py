"""What the start-up hook (lm_eval_longctx.pth) costs every Python process of the environment.

Builds fresh virtual environments of the running Python: a bare one, one with this checkout
installed from a wheel (``pip wheel`` then ``pip install --no-deps``, as a user installs it),
and one with it installed editable (``pip install --no-deps -e``, as scripts/setup.sh does).
lm-eval is in none of them: the hook must cost nothing until lm_eval is imported. ``--before
REV`` adds the same two installs of git revision REV (the hook before a change).

Two measures, each over many fresh processes, interleaved so that load changes on a shared
machine hit every configuration alike; medians and quartiles are reported:

* the hook's own cost: CPU time of executing our ``.pth`` line inside a started process (the
  process starts with the hook switched off, then runs the line as ``site`` would, with the
  caches ``site`` leaves behind; ``-P`` keeps the current folder off ``sys.path``);
* whole starts of ``python -c pass``: wall time and CPU time (user + system) of the process.

    python benchmarks/startup_hook.py --runs 200 --before a3083b1
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWITCH = "LM_EVAL_LONGCTX_NO_AUTOLOAD"
SOURCE_FILES = ["lm_eval_longctx", "lm_eval_longctx.pth", "pyproject.toml", "README.md", "tasks"]

# Run inside a started process (hook off): the CPU time of our .pth line, run as site runs it.
OWN_COST = """
import os, sys, time
os.environ.pop({switch!r}, None)
lines = [l for l in open({pth!r}).read().splitlines() if l.startswith(("import ", "import\\t"))]
start = time.process_time_ns()
for line in lines:
    exec(line)
print((time.process_time_ns() - start) / 1e6)
"""


def pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True)


def make_venv(path: Path, source: Path | None, kind: str, wheels: Path) -> Path:
    """A venv of this Python; with ``source`` (a checkout), it installed as ``kind`` ("wheel", "editable")."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    if source is not None and kind == "wheel":
        out = wheels / path.name
        subprocess.run([str(python), "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                        "-w", str(out), str(source)], check=True)
        pip(python, "--no-deps", str(next(out.glob("*.whl"))))
    elif source is not None:
        pip(python, "--no-deps", "-e", str(source))
    return python


def checkout(rev: str, into: Path) -> Path:
    """The files of git revision ``rev`` that an install needs, extracted into ``into``."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *SOURCE_FILES], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.check_output([str(python), "-c", code], text=True).strip())


def child_env(switch: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", SWITCH)}
    if switch is not None:
        env[SWITCH] = switch
    return env


def start(python: Path, env: dict) -> tuple[float, float]:
    """Wall and CPU (user + system) milliseconds of one ``python -c pass``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([str(python), "-c", "pass"], env=env, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall * 1000, (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000


def own_cost(python: Path, pth: Path) -> float:
    code = OWN_COST.format(switch=SWITCH, pth=str(pth))
    out = subprocess.run([str(python), "-P", "-c", code], env=child_env("1"), capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def modules_at_start(python: Path, env: dict) -> int:
    return int(subprocess.check_output([str(python), "-c", "import sys; print(len(sys.modules))"], env=env, text=True))


def spread(values: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return f"{median:.2f} ({q1:.2f}-{q3:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="starts per configuration and measure (default 100)")
    parser.add_argument("--before", metavar="REV", help="also measure both installs of this git revision")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="startup_hook_") as tmp:
        tmp = Path(tmp)
        sources = {"this checkout": ROOT}
        if args.before:
            sources[args.before] = checkout(args.before, tmp / "src_before")
        bare = make_venv(tmp / "bare", None, "", tmp)
        configs = {"bare venv": (bare, child_env(None), None)}
        for label, source in sources.items():
            for kind in ("wheel", "editable"):
                python = make_venv(tmp / f"{kind}-{len(configs)}", source, kind, tmp / "wheels")
                pth = site_packages(python) / "lm_eval_longctx.pth"
                configs[f"{label}, {kind}, hook on"] = (python, child_env(None), pth)
                if label == "this checkout":
                    configs[f"{label}, {kind}, {SWITCH}=1"] = (python, child_env("1"), None)
        for python, env, _ in configs.values():  # warm the file cache
            start(python, env)
        walls = {name: [] for name in configs}
        cpus = {name: [] for name in configs}
        own = {name: [] for name, (_, _, pth) in configs.items() if pth is not None}
        for _ in range(args.runs):
            for name, (python, env, pth) in configs.items():
                wall, cpu = start(python, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
                if pth is not None:
                    own[name].append(own_cost(python, pth))

        print(f"Python {platform.python_version()} ({sys.executable}), {platform.machine()}, {os.cpu_count()} CPUs, "
              f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}; {args.runs} runs each, "
              "interleaved; median (quartiles), ms")
        print("| environment | modules at start-up | our .pth line, CPU | `python -c pass`, wall | `python -c pass`, CPU |")
        print("|---|---|---|---|---|")
        for name, (python, env, _) in configs.items():
            line = spread(own[name]) if name in own else "-"
            print(f"| {name} | {modules_at_start(python, env)} | {line} | {spread(walls[name])} | {spread(cpus[name])} |")


if __name__ == "__main__":
    print(f"load average at start: {os.getloadavg()}")
    main()
    print(f"load average at end: {os.getloadavg()}")

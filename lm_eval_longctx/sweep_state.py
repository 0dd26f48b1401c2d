"""What a sweep has finished, setting by setting, and what ``--resume`` keeps, redoes and runs.

A setting is finished when its folder holds ``done.json``, written (atomically) after lm-eval's
run of that setting returned: the setting, the sweep's arguments and the results file it wrote.
A folder without it (a run stopped with Ctrl-C, a killed process, a failed setting) is half-written:
``--resume`` removes it and runs the setting again. A marker written under other arguments is
refused: its results would be another run's.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lm_eval_longctx.errors import LongCtxError

DONE = "done.json"
# Arguments that may differ between a sweep and its --resume: the settings themselves, and --resume.
NOT_COMPARED = ("rope", "resume")


def arguments_of(args) -> dict:
    """Return the sweep's arguments that every finished setting must share, JSON-ready."""
    # Callables (argparse's ``func``) print with their address, which differs in every process.
    kept = {key: value for key, value in sorted(vars(args).items()) if key not in NOT_COMPARED and not callable(value)}
    return json.loads(json.dumps(kept, default=str))


def mark_done(folder: Path, setting_text: str, args) -> None:
    """Write ``folder/done.json``: the setting finished under these arguments (atomic rename)."""
    results = sorted(str(path.relative_to(folder)) for path in folder.rglob("results_*.json"))
    record = {"rope_scaling": setting_text, "arguments": arguments_of(args), "results": results}
    partial = folder / f".{DONE}.partial"
    with partial.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(record, indent=2) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(folder / DONE)


def is_done(folder: Path, setting_text: str, args) -> bool:
    """Return True when ``folder`` holds a finished run of the setting under these arguments.

    Raises LongCtxError when it was finished under other arguments (another model, other tasks).
    """
    try:
        record = json.loads((folder / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    results = record.get("results") if isinstance(record, dict) else None
    if not results or not all((folder / name).is_file() for name in results):
        return False
    if record.get("arguments") != arguments_of(args):
        differ = sorted(k for k in set(record.get("arguments") or {}) | set(arguments_of(args))
                        if (record.get("arguments") or {}).get(k) != arguments_of(args).get(k))  # fmt: skip
        raise LongCtxError(
            f"--resume: {folder} was run with other arguments ({', '.join(differ)} differ), so its results are "
            "another run's; give the same command as the stopped sweep plus --resume, or a new --output_path."
        )
    return True


def plan(args, settings, folder_of) -> set[str]:
    """Return the slugs of the settings --resume keeps; remove the half-written folders of the others."""
    kept = set()
    for setting in settings:
        folder = folder_of(args, setting)
        if is_done(folder, setting.text, args):
            kept.add(setting.slug)
        elif folder.exists():
            print(f"rope_scaling={setting.text}: {folder} is half-written (not finished); removed, to run again")
            shutil.rmtree(folder)
    return kept


def refuse_earlier_results(args, settings, folder_of) -> None:
    """Refuse folders already holding results: the report would mix an earlier run into this sweep."""
    for setting in settings:
        earlier = sorted(folder_of(args, setting).rglob("results_*.json"))
        if earlier:
            raise LongCtxError(
                f"--output_path {args.output_path}: {folder_of(args, setting)} already holds results of an earlier "
                f"run ({earlier[0].name}); the report would mix them into this sweep. Give a new --output_path, "
                "remove that folder, or add --resume to finish a stopped sweep there."
            )


def write_record(out: Path, record: dict, args) -> None:
    """Write OUT/sweep.json: ``record`` (the settings and their status) and the sweep's arguments."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps({**record, "arguments": arguments_of(args)}, indent=2) + "\n"
    (out / "sweep.json").write_text(text, encoding="utf-8")

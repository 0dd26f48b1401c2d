"""On-disk cache of generated records, keyed by everything that decides their content.

Safe when several processes (ranks of one ``accelerate launch``, or two runs) ask for the
same set at once: one builds it under a file lock, the others wait and read it. A build that
fails leaves nothing behind; a finished file appears atomically (write, fsync, rename).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock


def cache_root() -> Path:
    """Return the cache folder: $LM_EVAL_LONGCTX_CACHE, else ~/.cache/lm_eval_longctx."""
    explicit = os.environ.get("LM_EVAL_LONGCTX_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lm_eval_longctx"


def cache_key(material: dict) -> str:
    """Return the hex digest naming the records that ``material`` describes."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def dumps_records(records: list[dict]) -> bytes:
    """Return the canonical JSON Lines bytes of ``records`` (identical in every process)."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records).encode()


def _read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def cached_records(task: str, material: dict, build: Callable[[], list[dict]]) -> tuple[list[dict], Path]:
    """Return the records for ``material`` and the file holding them, building them at most once."""
    folder = cache_root() / task
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cache_key(material)[:32]}.jsonl"
    if path.is_file():
        return _read(path), path
    with FileLock(str(path) + ".lock"):
        if path.is_file():  # another process built it while we waited
            return _read(path), path
        records = build()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(dumps_records(records))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return records, path

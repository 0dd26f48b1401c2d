"""Folders our commands write to, checked before any work is done."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lm_eval_longctx.errors import LongCtxError


def writable_folder(path, option: str) -> Path:
    """Return ``path`` if it is, or can become, a folder we can write in; else raise LongCtxError.

    Nothing is created: the nearest existing folder on the way must take a new file (a real
    write, so read-only file systems and permissions are both caught).
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under {existing}, which is a file"
        raise LongCtxError(f"{option} {path} {where}, not a folder; give a folder path (new or existing).")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise LongCtxError(
            f"{option} {path}: cannot write in {existing} ({exc.strerror or exc}); give a folder you can write to."
        ) from None
    return path

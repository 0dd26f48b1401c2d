"""On-disk cache of generated records, keyed by everything that decides their content.

Each file starts with a header line saying what it must hold: the full key, the number of
records and the SHA-256 of the record lines. Every read checks all three, so a file cut short,
cut mid-line, overwritten or copied under another name is never used: one warning names it,
it is set aside as ``<name>.corrupt-<time>`` and the set is built again.

Safe when several processes (ranks of one ``accelerate launch``, or two runs) ask for the
same set at once: one builds it under a file lock, the others wait and read it. A build that
fails leaves nothing behind; a finished file appears atomically (write, fsync, rename), and a
file that fails the check is only ever set aside under the lock. A cache folder that cannot
be used (read-only, a file, not creatable) is named in one warning and the run goes on
without caching.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

log = logging.getLogger("lm_eval.longctx")

# The file layout. Part of every key, so files of an older layout are simply not found.
FORMAT = 2


class DamagedFile(Exception):
    """A cache file that does not hold what its header (or its name) promises."""


def cache_root() -> Path:
    """Return the cache folder: $LM_EVAL_LONGCTX_CACHE, else ~/.cache/lm_eval_longctx."""
    explicit = os.environ.get("LM_EVAL_LONGCTX_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lm_eval_longctx"


def cache_key(material: dict) -> str:
    """Return the hex digest naming the records that ``material`` describes."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def set_key(material: dict) -> str:
    """Return the key of the set ``material`` describes in this file layout (its file's name)."""
    return cache_key({**material, "cache_format": FORMAT})


def dumps_records(records: list[dict]) -> bytes:
    """Return the canonical JSON Lines bytes of ``records`` (identical in every process)."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records).encode()


def as_stored(records: list[dict]) -> list[dict]:
    """Return the records as a read of their cache file gives them back (keys sorted, JSON types)."""
    return [json.loads(json.dumps(r, sort_keys=True, ensure_ascii=False)) for r in records]


def file_bytes(key: str, records: list[dict]) -> bytes:
    """Return the cache file for ``records``: a header line, then one record a line."""
    body = dumps_records(records)
    header = {"longctx_cache": FORMAT, "key": key, "records": len(records), "sha256": hashlib.sha256(body).hexdigest()}
    return json.dumps(header, sort_keys=True).encode() + b"\n" + body


def read_verified(path: Path, key: str) -> list[dict]:
    """Return the records of the cache file ``path``; raise DamagedFile unless it holds exactly
    the records its header promises, for ``key``."""
    data = path.read_bytes()
    if not data:
        raise DamagedFile("it is empty")
    head, _, body = data.partition(b"\n")
    try:
        header = json.loads(head)
    except ValueError:  # binary garbage, or not JSON
        header = None
    if not isinstance(header, dict) or header.get("longctx_cache") != FORMAT:
        raise DamagedFile("its first line is not a cache header")
    if header.get("key") != key:
        raise DamagedFile("its header names another key")
    expected = header.get("records")
    complete = body.count(b"\n")
    if body and not body.endswith(b"\n"):
        raise DamagedFile(f"it is cut mid-line after {complete} of {expected} records")
    if complete != expected:
        raise DamagedFile(f"it holds {complete} of {expected} records")
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise DamagedFile("its records do not match their checksum")
    return [json.loads(line) for line in body.decode("utf-8").splitlines()]


def cached_records(task: str, material: dict, build_records: Callable[[], list[dict]]) -> tuple[list[dict], Path | None]:
    """Return the records for ``material`` and the file holding them, building them at most once.

    Built or read, the records are the same: as the file holds them (keys sorted, JSON types), so
    lm-eval's document hashes in the results do not depend on whether the cache was warm. The
    path is None when the cache folder cannot be used and the records were built for this run
    only (one warning says so and names the fix).
    """

    def build():
        return as_stored(build_records())

    key = set_key(material)
    folder = cache_root() / task
    path = folder / f"{key[:32]}.jsonl"
    try:
        return read_verified(path, key), path
    except DamagedFile as damage:
        damaged = f"; {path} is damaged ({damage}) and stays where it is"  # acted on under the lock
    except OSError:
        damaged = ""  # not there yet (or the folder is unusable: said below)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as exc:
        _warn_unusable(task, exc, damaged)
        return build(), None
    try:
        return _read_or_build(task, path, key, build)
    finally:
        lock.release()


def _read_or_build(task: str, path: Path, key: str, build: Callable[[], list[dict]]) -> tuple[list[dict], Path | None]:
    """Under the lock: read the file another process may have built while we waited, else
    set a damaged one aside, build, and write."""
    try:
        return read_verified(path, key), path
    except FileNotFoundError:
        pass
    except DamagedFile as damage:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(path, aside)
        except OSError as exc:
            _warn_unusable(task, exc, f"; {path} is damaged ({damage}) and could not be set aside")
            return build(), None
        log.warning("%s: cache file %s is damaged (%s); set aside as %s, building it again.", task, path, damage, aside.name)
    records = build()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(file_bytes(key, records))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _warn_unusable(task, exc, "")
        return records, None
    finally:
        tmp.unlink(missing_ok=True)
    return records, path


def _warn_unusable(task: str, exc: OSError, damaged: str) -> None:
    log.warning(
        "%s: the cache folder %s cannot be used (%s)%s; building the prompts without caching. "
        "To cache them, set LM_EVAL_LONGCTX_CACHE to a writable folder.",
        task,
        cache_root(),
        exc,
        damaged,
    )

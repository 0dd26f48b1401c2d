"""The dataset cache: one build per key, safe under concurrency, nothing half-written."""

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import subprocess

import pytest

from lm_eval_longctx.cache import FORMAT, cache_root, cached_records, read_verified, set_key


def _build_slowly(marker_dir):
    import time

    def build():
        with open(os.path.join(marker_dir, f"built-{os.getpid()}"), "w"):
            pass
        time.sleep(0.5)
        return [{"prompt": "p", "n": 1}]

    return build


def _worker(cache, marker_dir, out):
    os.environ["LM_EVAL_LONGCTX_CACHE"] = cache
    records, path = cached_records("t", {"k": 1}, _build_slowly(marker_dir))
    with open(out, "w") as fh:
        json.dump(records, fh)


def test_two_processes_asking_at_once_build_once(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(str(tmp_path / "c"), str(markers), str(tmp_path / f"out{i}")))
        for i in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)  # a hang guard; the verdict is the build count
        assert p.exitcode == 0
    assert len(list(markers.iterdir())) == 1
    outs = [json.loads((tmp_path / f"out{i}").read_text()) for i in range(3)]
    assert outs[0] == outs[1] == outs[2] == [{"prompt": "p", "n": 1}]


def test_second_call_reads_the_file_and_other_keys_build_again():
    calls = []

    def build():
        calls.append(1)
        return [{"a": len(calls)}]

    first, path = cached_records("t", {"k": 1}, build)
    second, same_path = cached_records("t", {"k": 1}, build)
    other, other_path = cached_records("t", {"k": 2}, build)
    assert first == second == [{"a": 1}] and path == same_path
    assert other == [{"a": 2}] and other_path != path


def test_built_and_read_records_are_the_same_to_the_key_order(tmp_path, monkeypatch):
    # lm-eval hashes each document as it is (key order included) into the results' task_hashes:
    # a cold and a warm run must give the same hashes.
    def build():
        return [{"prompt": "p", "answer": "a", "depth": (0.5,)}]

    built, path = cached_records("t", {"k": "order"}, build)
    read, _ = cached_records("t", {"k": "order"}, build)
    assert json.dumps(built) == json.dumps(read) == '[{"answer": "a", "depth": [0.5], "prompt": "p"}]'
    monkeypatch.setenv("LM_EVAL_LONGCTX_CACHE", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a folder")
    uncached, none = cached_records("t", {"k": "order"}, build)  # built for this run only
    assert none is None and json.dumps(uncached) == json.dumps(read)


def test_failed_build_leaves_nothing_behind():
    def build():
        raise ValueError("boom")

    with pytest.raises(ValueError):
        cached_records("t", {"k": 3}, build)
    leftovers = [p.name for p in (cache_root() / "t").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


# --- a cache that cannot lie: every read is verified ------------------------------------------

RECORDS = [{"prompt": f"p{i}", "n": i} for i in range(6)]


def _counting_build(calls):
    def build():
        calls.append(1)
        return [dict(r) for r in RECORDS]

    return build


def _cut_to_three_lines(data: bytes) -> bytes:
    return b"".join(data.splitlines(keepends=True)[:3])  # header + 2 valid records


def _cut_mid_line(data: bytes) -> bytes:
    return data[: len(data) - 7]


def _wrong_checksum(data: bytes) -> bytes:
    return data.replace(b'"p3"', b'"p9"')  # same lines, one value changed


def _another_key(data: bytes) -> bytes:
    _, other = cached_records("t", {"k": "other"}, lambda: [dict(r) for r in RECORDS])
    return other.read_bytes()  # the right records, under another key's header


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_cut_to_three_lines, "it holds 2 of 6 records"),
        (_cut_mid_line, "it is cut mid-line after 5 of 6 records"),
        (lambda data: bytes(range(256)) * 4, "its first line is not a cache header"),
        (lambda data: b"", "it is empty"),
        (_wrong_checksum, "its records do not match their checksum"),
        (_another_key, "its header names another key"),
        (lambda data: data.split(b"\n", 1)[1], "its first line is not a cache header"),  # a file of the old layout
    ],
)
def test_a_damaged_file_is_named_set_aside_and_rebuilt(damage, reason, caplog):
    calls = []
    first, path = cached_records("t", {"k": 1}, _counting_build(calls))
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="lm_eval.longctx"):
        again, same = cached_records("t", {"k": 1}, _counting_build(calls))
    assert again == first == RECORDS and same == path and len(calls) == 2
    (line,) = [r.getMessage() for r in caplog.records if r.name == "lm_eval.longctx"]
    assert f"t: cache file {path} is damaged ({reason}); set aside as {path.name}.corrupt-" in line
    assert line.endswith("building it again.") and "\n" not in line
    (aside,) = path.parent.glob(f"{path.name}.corrupt-*")
    assert aside.read_bytes() == damaged  # kept as it was found, for a look
    assert read_verified(path, set_key({"k": 1})) == RECORDS  # the rebuilt file checks out
    caplog.clear()
    assert cached_records("t", {"k": 1}, _counting_build(calls))[0] == RECORDS and len(calls) == 2
    assert not caplog.records


def test_every_file_carries_its_key_count_and_checksum():
    _, path = cached_records("t", {"k": 1}, lambda: RECORDS)
    header = json.loads(path.read_bytes().split(b"\n", 1)[0])
    body = path.read_bytes().split(b"\n", 1)[1]
    assert header == {
        "longctx_cache": FORMAT,
        "key": set_key({"k": 1}),
        "records": 6,
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    assert path.name == set_key({"k": 1})[:32] + ".jsonl"


def test_a_half_written_file_is_never_read(monkeypatch):
    """A reader that finds a partial file waits for the lock and reads the finished one.

    The writer holds the lock and finishes the file only once the reader is at the lock: held
    by design (events), not by timing.
    """
    import threading

    import lm_eval_longctx.cache as cache

    key = set_key({"k": 1})
    path = cache_root() / "t" / f"{key[:32]}.jsonl"
    path.parent.mkdir(parents=True)
    full = cache.file_bytes(key, RECORDS)
    path.write_bytes(full[: len(full) // 2])
    reader_at_lock = threading.Event()
    writer_has_lock = threading.Event()
    real_filelock = cache.FileLock

    class SignallingLock(real_filelock):
        def acquire(self, *args, **kwargs):
            if threading.current_thread() is threading.main_thread():
                reader_at_lock.set()
            return super().acquire(*args, **kwargs)

    def writer():
        with real_filelock(str(path) + ".lock"):
            writer_has_lock.set()
            reader_at_lock.wait(60)
            path.write_bytes(full)

    monkeypatch.setattr(cache, "FileLock", SignallingLock)
    thread = threading.Thread(target=writer)
    thread.start()
    writer_has_lock.wait(60)
    calls = []
    records, _ = cached_records("t", {"k": 1}, _counting_build(calls))
    thread.join(60)
    assert records == RECORDS and calls == []  # read the finished file; never built, never the half


# --- a cache folder that cannot be used: the run goes on without it ---------------------------


def _unusable_warning(caplog) -> str:
    (line,) = [r.getMessage() for r in caplog.records if r.name == "lm_eval.longctx"]
    assert "\n" not in line and "set LM_EVAL_LONGCTX_CACHE to a writable folder" in line
    return line


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_cache_path_that_is_a_file_builds_without_caching(where, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    root = blocker if where == "a file" else blocker / "cache"
    monkeypatch.setenv("LM_EVAL_LONGCTX_CACHE", str(root))
    calls = []
    with caplog.at_level(logging.WARNING, logger="lm_eval.longctx"):
        records, path = cached_records("t", {"k": 1}, _counting_build(calls))
    assert records == RECORDS and path is None and len(calls) == 1
    line = _unusable_warning(caplog)
    assert line.startswith(f"t: the cache folder {root} cannot be used (") and "building the prompts without caching" in line
    assert blocker.read_text() == "not a folder"


def _prefill(root, material):
    """Write a valid cache file for ``material`` under ``root`` (before it is made read-only)."""
    from lm_eval_longctx.cache import file_bytes

    key = set_key(material)
    (root / "t").mkdir(parents=True)
    (root / "t" / f"{key[:32]}.jsonl").write_bytes(file_bytes(key, RECORDS))


def test_a_read_only_cache_folder_builds_without_caching(tmp_path, monkeypatch, caplog):
    root = tmp_path / "ro"
    root.mkdir()
    (root / "t").mkdir()
    with _read_only(root / "t"):
        monkeypatch.setenv("LM_EVAL_LONGCTX_CACHE", str(root))
        calls = []
        with caplog.at_level(logging.WARNING, logger="lm_eval.longctx"):
            records, path = cached_records("t", {"k": 1}, _counting_build(calls))
    assert records == RECORDS and path is None and len(calls) == 1
    assert f"t: the cache folder {root} cannot be used (" in _unusable_warning(caplog)


def test_a_read_only_cache_folder_still_serves_what_it_holds(tmp_path, monkeypatch, caplog):
    root = tmp_path / "ro"
    _prefill(root, {"k": 1})
    with _read_only(root / "t"):
        monkeypatch.setenv("LM_EVAL_LONGCTX_CACHE", str(root))
        calls = []
        with caplog.at_level(logging.WARNING, logger="lm_eval.longctx"):
            records, path = cached_records("t", {"k": 1}, _counting_build(calls))
    assert records == RECORDS and path is not None and calls == [] and not caplog.records


def test_a_damaged_file_in_a_read_only_folder_is_named_and_left_alone(tmp_path, monkeypatch, caplog):
    root = tmp_path / "ro"
    _prefill(root, {"k": 1})
    (damaged,) = (root / "t").glob("*.jsonl")
    damaged.write_bytes(_cut_to_three_lines(damaged.read_bytes()))
    with _read_only(root / "t"):
        monkeypatch.setenv("LM_EVAL_LONGCTX_CACHE", str(root))
        calls = []
        with caplog.at_level(logging.WARNING, logger="lm_eval.longctx"):
            records, path = cached_records("t", {"k": 1}, _counting_build(calls))
    assert records == RECORDS and path is None and len(calls) == 1
    line = _unusable_warning(caplog)
    assert f"{damaged} is damaged (it holds 2 of 6 records)" in line
    assert len(list((root / "t").iterdir())) == 1  # nothing written, nothing moved


@contextlib.contextmanager
def _read_only(folder):
    """Make ``folder`` really read-only: permissions, or (as root, who ignores them) the immutable flag."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: no way to make a folder read-only here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)

"""The dataset cache: one build per key, safe under concurrency, nothing half-written."""

import json
import multiprocessing
import os

import pytest

from lm_eval_longctx.cache import cache_root, cached_records


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


def test_failed_build_leaves_nothing_behind():
    def build():
        raise ValueError("boom")

    with pytest.raises(ValueError):
        cached_records("t", {"k": 3}, build)
    leftovers = [p.name for p in (cache_root() / "t").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []

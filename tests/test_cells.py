"""Per-cell metrics under data parallel: lm-eval's own per-rank collection, without GPUs.

Each fake rank runs lm-eval's real ``evaluate()`` in a thread; the collectives (``all_gather``,
``gather_object``, ``barrier``) meet at a thread barrier, so rank 0 gathers and aggregates
exactly as under ``accelerate launch``. The model is a stand-in whose answer depends only on
the prompt, so one process and N processes must report the same numbers and answers.
"""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
import torch
from lm_eval.api.model import LM

from lm_eval_longctx import window
from lm_eval_longctx.cells import BEYOND, Grid, members_only
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.registration import task_manager

TITLE = "Extending Context Window of Large Language Models via Position Interpolation"


class _Collectives:
    """What ``torch.distributed`` gives lm-eval's ranks, for threads: every call is a meeting."""

    def __init__(self, world_size: int):
        self.slots = [None] * world_size
        self.meeting = threading.Barrier(world_size, timeout=120)

    def exchange(self, rank: int, obj):
        self.slots[rank] = obj
        self.meeting.wait()
        everyone = list(self.slots)
        self.meeting.wait()  # nobody overwrites a slot before all have read it
        return everyone


def _answer(doc: dict, beyond_lengths: tuple[int, ...]) -> str:
    """A fixed answer per prompt: right for about two thirds of prompts, beyond for some lengths."""
    if doc["max_seq_length"] in beyond_lengths:
        return window.BEYOND_WINDOW
    right = int(hashlib.sha256(doc["prompt"].encode()).hexdigest(), 16) % 3 != 0
    if "answer" not in doc or doc.get("answer") is None:
        return TITLE if right else "no idea"
    return f"The value is '{doc['answer']}'." if right else "I do not know."


class RankLM(LM):
    """One rank of a data-parallel run whose answers depend only on the prompt."""

    def __init__(self, rank: int, world_size: int, collectives: _Collectives, beyond_lengths=()):
        super().__init__()
        self._rank, self._world_size = rank, world_size
        self.collectives, self.beyond_lengths = collectives, tuple(beyond_lengths)

    device = "cpu"

    def all_gather(self, tensor):
        return torch.stack(self.collectives.exchange(self.rank, tensor))

    def gather_object(self, obj, dst=0):
        everyone = self.collectives.exchange(self.rank, obj)
        return everyone if self.rank == dst else None

    def barrier(self):
        self.collectives.exchange(self.rank, None)

    def generate_until(self, requests, disable_tqdm: bool = False):
        return [_answer(request.doc, self.beyond_lengths) for request in requests]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


def evaluate_on_ranks(tasks: list[str], metadata: dict, world_size: int, beyond_lengths=(), bootstrap_iters=1000):
    """Return rank 0's results of lm-eval's ``evaluate`` with the docs split over ``world_size`` ranks."""
    from lm_eval.evaluator import evaluate

    collectives = _Collectives(world_size)
    manager = task_manager(metadata=metadata)
    task_dicts = [manager.load(tasks) for _ in range(world_size)]  # each rank its own task objects
    outcome: dict[int, object] = {}

    def run(rank: int) -> None:
        try:
            lm = RankLM(rank, world_size, collectives, beyond_lengths)
            outcome[rank] = evaluate(lm, task_dicts[rank], bootstrap_iters=bootstrap_iters, log_samples=True)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread below
            outcome[rank] = exc
            collectives.meeting.abort()  # the other ranks stop waiting at the next collective

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failures = [o for o in outcome.values() if isinstance(o, BaseException)]
    first = next((o for o in failures if not isinstance(o, threading.BrokenBarrierError)), None)
    if first is not None or failures:
        raise first or failures[0]
    return outcome[0]


def _by_doc(samples: list[dict]) -> dict[int, dict]:
    return {s["doc_id"]: s for s in samples}


def assert_same_as_one_process(tasks, metadata, world_size, beyond_lengths=()):
    """Data parallel gives the same metrics, standard errors and answers as one process."""
    single = evaluate_on_ranks(tasks, metadata, 1, beyond_lengths)
    split = evaluate_on_ranks(tasks, metadata, world_size, beyond_lengths)
    # Equal up to the last bit of a float: ranks gather their values in another order, so sums of
    # the same numbers can round differently (mean_stderr of the overall metrics).
    assert split["results"].keys() == single["results"].keys()
    for task, metrics in single["results"].items():
        assert split["results"][task].keys() == metrics.keys()
        for name, value in metrics.items():
            if isinstance(value, float):
                assert split["results"][task][name] == pytest.approx(value, rel=1e-12, abs=1e-15), (task, name)
            else:
                assert split["results"][task][name] == value, (task, name)
    json.dumps(split["samples"], allow_nan=False)  # the --log_samples records stay strict JSON
    for task in single["samples"]:
        one, many = _by_doc(single["samples"][task]), _by_doc(split["samples"][task])
        assert many.keys() == one.keys()
        for doc_id, sample in one.items():
            assert many[doc_id]["filtered_resps"] == sample["filtered_resps"]
            assert {k: many[doc_id][k] for k in sample["metrics"]} == {k: sample[k] for k in sample["metrics"]}
    return single


def test_every_doc_of_a_grid_reports_every_cell():
    grid = Grid(scores=("exact",), lengths=(100, 200), depths=(0.0, 0.5))
    doc = {"max_seq_length": 200, "depth": 0.5}
    ran = grid.doc_metrics(doc, {"score": 1.0, "exact": 1.0, "beyond_window": 0.0})
    beyond = grid.doc_metrics({"max_seq_length": 100, "depth": 0.0}, {"score": 0.0, "exact": 0.0, "beyond_window": 1.0})
    assert list(ran) == list(beyond)
    assert ran == {
        "score": 1.0, "exact": 1.0, "beyond_window": 0.0,
        "exact_len_100": None, "exact_len_200": 1.0, "exact_depth_0": None, "exact_depth_0.5": 1.0,
        "beyond_window_len_100": None, "beyond_window_len_200": 0.0,
    }  # fmt: skip
    # beyond the window: no score in its cells, counted in its length's beyond_window cell
    cells_with_a_value = {k: v for k, v in beyond.items() if v is not None and k not in ("score", "exact", BEYOND)}
    assert cells_with_a_value == {"beyond_window_len_100": 1.0}


def test_a_grid_without_depths_has_length_cells_only():
    grid = Grid(scores=("found",), lengths=(240, 300), depths=())
    assert set(grid.aggregations()) == {"found_len_240", "found_len_300", "beyond_window_len_240", "beyond_window_len_300"}
    assert grid.doc_metrics({"max_seq_length": 300}, {"score": 1.0, "found": 1.0, "beyond_window": 0.0})["found_len_300"] == 1.0


def test_only_the_cells_docs_are_aggregated_and_cells_nobody_ran_vanish():
    raw = {("exact_len_100", "none"): [1.0, None, 0.0], ("exact_len_200", "none"): [None, None], ("exact", "none"): [1.0, 0.0]}
    assert members_only(raw) == {("exact_len_100", "none"): [1.0, 0.0], ("exact", "none"): [1.0, 0.0]}


@pytest.fixture
def grid(tiny_model_dir):
    """32 depths x 1 sample at one length: most depth cells have one prompt, fewer than the ranks."""
    depths = [round(i / 31, 4) for i in range(32)]
    return {"pretrained": tiny_model_dir, "max_seq_lengths": [200], "depths": depths, "num_samples": 1}


def test_many_depths_one_sample_runs_on_two_ranks(grid):
    results = assert_same_as_one_process(["longctx_kv"], grid, world_size=2)
    kv = results["results"]["longctx_kv"]
    assert {f"exact_depth_{d:g},none" for d in grid["depths"]} <= kv.keys()
    assert 0 < kv["exact_len_200,none"] < 1 and kv["exact_len_200_stderr,none"] > 0
    assert kv["exact_depth_0_stderr,none"] == "N/A"  # one sample: lm-eval gives no standard error


def test_the_group_on_three_ranks(tiny_model_dir):
    # 2 samples per cell for 3 ranks: every rank misses some cells; pi_title (no depths) has
    # one prompt per length, so each rank holds a different length of it.
    metadata = {"pretrained": tiny_model_dir, "max_seq_lengths": [240, 300, 400], "depths": [0, 0.5, 1], "num_samples": 2}
    results = assert_same_as_one_process(["longctx"], metadata, world_size=3)
    assert {"found_len_240,none", "found_len_300,none", "found_len_400,none"} <= results["results"]["longctx_pi_title"].keys()
    assert "score,none" in results["results"]["longctx"]


def test_beyond_window_lengths_on_two_ranks(tiny_model_dir):
    # One prompt per length: rank 0 holds the 160-token prompt, rank 1 the one beyond the window.
    metadata = {"pretrained": tiny_model_dir, "max_seq_lengths": [160, 200], "depths": [0.5], "num_samples": 1}
    results = assert_same_as_one_process(["longctx_kv"], metadata, world_size=2, beyond_lengths=(200,))
    kv = results["results"]["longctx_kv"]
    assert kv["beyond_window_len_200,none"] == 1 and kv["beyond_window_len_160,none"] == 0
    assert "exact_len_200,none" not in kv  # a cell that did not run has no value, not a placeholder
    assert kv["exact_depth_0.5,none"] == kv["exact_len_160,none"]  # the depth cell holds the prompt that ran


def test_fewer_prompts_than_processes_is_refused(tiny_model_dir):
    metadata = {"pretrained": tiny_model_dir, "max_seq_lengths": [240, 300]}
    with pytest.raises(LongCtxError, match=r"longctx_pi_title: 2 prompt\(s\) for 3 processes"):
        evaluate_on_ranks(["longctx_pi_title"], metadata, world_size=3)


def test_predict_only_s_bypass_goes_to_lm_eval_as_it_came():
    raw = {("bypass", "none"): [None, None], ("exact_len_100", "none"): [None, None]}
    assert members_only(raw) == {("bypass", "none"): [None, None]}


def test_a_samples_row_carries_its_length_and_depth_and_no_cells():
    from lm_eval_longctx.cells import sample_row

    grid = Grid(scores=("exact",), lengths=(100, 200), depths=(0.0, 0.5))
    doc = {"max_seq_length": 200, "depth": 0.5, "prompt": "..."}
    metrics = grid.doc_metrics(doc, {"score": 1.0, "exact": 1.0, "beyond_window": 0.0})
    row = sample_row({"doc_id": 3, "doc": doc, "metrics": list(metrics), **metrics})
    assert row == {"doc_id": 3, "doc": doc, "metrics": ["score", "exact", "beyond_window"], "score": 1.0, "exact": 1.0,
                   "beyond_window": 0.0, "max_seq_length": 200, "depth": 0.5}  # fmt: skip
    assert "depth" not in sample_row({"doc": {"max_seq_length": 300}, "metrics": []})  # a task without depths

"""Patches of lm-eval 0.4.13 for runs users can trust (issue 19): each says what it relies on.

Written for lm-eval 0.4.13 (``lm_eval/evaluator.py``, ``lm_eval/api/model.py``,
``lm_eval/models/huggingface.py``, ``lm_eval/evaluator_utils.py``) and sqlitedict 2.x. To be
moved into ``lm_eval_longctx/compat/`` beside the other patches.

* ``evaluate``: the body of the ``simple_evaluate`` wrapper that ``compat.scope_evaluations``
  installs: one ``window.evaluation`` per call (holding the model as named and its arguments),
  the patches below in place, and the samples rows of our tasks written as ``cells.sample_row``
  says.
* ``key_response_cache``: ``--use_cache`` answers kept per model setting (``response_cache``).
* ``plan_cpu_batches``: ``--batch_size auto`` on CPU picks a bounded batch without probing.
* ``skip_integrity_tests``: ``--check_integrity`` without a traceback.
"""

from __future__ import annotations

import inspect
import logging

log = logging.getLogger("lm_eval.longctx")

WRITTEN_FOR = {"lm_eval": "0.4.13", "sqlitedict": "2.1"}

# lm-eval 0.4.13 registers HFLM as these (``@register_model("hf-auto", "hf", "huggingface")``).
HF_MODEL_NAMES = ("hf", "hf-auto", "huggingface", "hf-longctx")


# --------------------------------------------------------------------------- lm-eval: simple_evaluate


def _uses_hflm(model) -> bool:
    if isinstance(model, str):
        return model in HF_MODEL_NAMES
    return any(cls.__name__ == "HFLM" for cls in type(model).__mro__)


def evaluate(original, model, args: tuple, kwargs: dict):
    """Run lm-eval 0.4.13 ``simple_evaluate(model, model_args=None, tasks=..., ...)`` (``original``)
    as one evaluation: ``window.evaluation`` records the model and its arguments for the tasks and
    the response cache, and the samples of our tasks come back as ``cells.sample_row`` rows."""
    from lm_eval import evaluator

    from lm_eval_longctx import window
    from lm_eval_longctx.provenance import model_settings

    key_response_cache()
    skip_integrity_tests(evaluator)
    if _uses_hflm(model):
        from lm_eval.models import huggingface

        plan_cpu_batches(huggingface.HFLM)
    try:  # the tasks also learn the call's model_args and apply_chat_template (window.Evaluation)
        given = inspect.signature(original).bind_partial(model, *args, **kwargs).arguments
    except TypeError:  # lm-eval itself reports wrong arguments
        given = {}
    model_args = model_settings(model, given.get("model_args"))
    name = model if isinstance(model, str) else None
    chat = given.get("apply_chat_template", False)
    with window.evaluation(window.marks_beyond_window(model), name, model_args, chat):
        results = original(model, *args, **kwargs)
    if isinstance(results, dict) and isinstance(results.get("samples"), dict):
        results["samples"] = {task: _rows_of(results, task, rows) for task, rows in results["samples"].items()}
    return results


def _rows_of(results: dict, task: str, rows: list) -> list:
    """Return ``rows`` as written: ``cells.sample_row`` for a task built from our declarations."""
    from lm_eval_longctx.cells import sample_row

    config = (results.get("configs") or {}).get(task) or {}
    if not (config.get("dataset_kwargs") or {}).get("longctx_task"):
        return rows
    return [sample_row(row) for row in rows]


# --------------------------------------------------------------------------- lm-eval: the response cache

# lm-eval 0.4.13 ``api/model.py``: ``CachingLM.__init__(self, lm, cache_db)`` opens
# ``self.dbdict = SqliteDict(cache_db, autocommit=True)`` (the table "unnamed") and calls
# ``lm.set_cache_hook(self.get_cache_hook())``; its request wrapper reads ``hsh in self.dbdict``
# and ``self.dbdict[hsh]``, writes ``self.dbdict[hsh] = r`` and calls ``self.dbdict.commit()``;
# ``CacheHook(cachinglm)`` writes ``cachinglm.dbdict[hsh] = res`` as each answer comes.


def key_response_cache(model_module=None) -> None:
    """Make lm-eval's ``CachingLM`` keep each model setting's answers in their own table of the
    cache file, never storing or serving beyond-window markers (``response_cache``). Idempotent."""
    if model_module is None:
        import lm_eval.api.model as model_module
    caching = model_module.CachingLM
    if getattr(caching.__init__, "longctx_keyed", False):
        return
    original_init = caching.__init__

    def __init__(self, lm, cache_db):
        from sqlitedict import SqliteDict

        from lm_eval_longctx import response_cache, window

        response_cache.refuse_unidentifiable(lm, cache_db)
        original_init(self, lm, cache_db)
        evaluation = window.current()
        table = response_cache.table_name(response_cache.setting_of(lm, evaluation.model, evaluation.model_args))
        self.dbdict.close()
        self.dbdict = response_cache.AnswerStore(SqliteDict(cache_db, tablename=table, autocommit=True))
        lm.set_cache_hook(self.get_cache_hook())
        log.info("--use_cache %s: answers of this model setting are in its table %s", cache_db, table)

    __init__.longctx_keyed = True
    __init__.__wrapped__ = original_init
    caching.__init__ = __init__


# --------------------------------------------------------------------------- lm-eval: batch_size=auto on CPU

# lm-eval 0.4.13 ``models/huggingface.py``: ``HFLM._detect_batch_size(self, requests=None, pos=0)``
# runs the model five times on ``max_batch_size`` (64) x the longest input (``self.max_length``
# when no requests are given, as for generation) and halves on an out-of-memory error. On a GPU
# that error comes; on CPU the allocation succeeds in swap or the kernel kills the process (64 x
# 8,192 tokens x a 49,152-token vocabulary is 100 GB of logits alone).


def plan_cpu_batches(hflm_class) -> None:
    """Make ``HFLM._detect_batch_size`` on CPU pick the batch ``cpu_batch.batch_size`` plans from
    the model's shapes and the memory available, without running the model; one log line says
    what it picked. Other devices keep lm-eval's probe. Idempotent."""
    original = hflm_class._detect_batch_size
    if getattr(original, "longctx_cpu", False):
        return

    def _detect_batch_size(self, requests=None, pos: int = 0):
        if getattr(self.device, "type", str(self.device)) != "cpu":
            return original(self, requests, pos)
        from lm_eval_longctx import cpu_batch

        if requests:  # loglikelihood: lm-eval's probe shape for the request at pos
            _, context, continuation = requests[pos]
            length, logits = len((context + continuation)[-(self.max_length + 1) :][:-1]), True
        else:  # generation (or rolling windows): lm-eval sizes for the whole window
            length, logits = self.max_length, False
        model = self.model
        plan = cpu_batch.plan(model.config, model.dtype, length, self.max_batch_size, logits=logits)
        log.info("%s", plan.line())
        return plan.batch_size

    _detect_batch_size.longctx_cpu = True
    _detect_batch_size.__wrapped__ = original
    hflm_class._detect_batch_size = _detect_batch_size


# --------------------------------------------------------------------------- lm-eval: --check_integrity

# lm-eval 0.4.13 ``evaluator.py`` imports ``run_task_tests(task_list)`` from ``evaluator_utils``
# and calls it for ``--check_integrity``; it runs pytest on ``tests/test_version_stable.py`` of an
# lm-eval source checkout and raises FileNotFoundError ("Unable to find package root") where
# lm-eval was installed from a wheel, which ships no tests.


def skip_integrity_tests(evaluator_module) -> None:
    """Make ``--check_integrity`` leave our tasks to their own checks (every prompt is verified to
    its exact token count as it is built, every cache file by its checksum; lm-eval has no
    integrity test of them) with one log line, and turn lm-eval's missing test suite into one
    error line. Idempotent."""
    original = getattr(evaluator_module, "run_task_tests", None)
    if original is None or getattr(original, "longctx_integrity", False):
        return

    def run_task_tests(task_list):
        from lm_eval_longctx.errors import LongCtxError
        from lm_eval_longctx.registration import TASK_NAMES

        ours = [name for name in task_list if name in TASK_NAMES]
        others = [name for name in task_list if name not in TASK_NAMES]
        if ours:
            log.info(
                "--check_integrity: %s verify themselves (each prompt to its exact token count as it is built, each "
                "cached prompt file by its checksum); lm-eval has no integrity test of them.",
                ", ".join(ours),
            )
        if not others:
            return None
        try:
            return original(task_list=others)
        except FileNotFoundError as exc:
            raise LongCtxError(
                f"--check_integrity for {', '.join(others)}: lm-eval runs its own tests/test_version_stable.py, which an "
                f"installed lm-eval does not ship ({exc}). Run from an lm-evaluation-harness source checkout, or drop "
                "--check_integrity."
            ) from None

    run_task_tests.longctx_integrity = True
    run_task_tests.__wrapped__ = original
    evaluator_module.run_task_tests = run_task_tests


"""lm-eval 0.4.13's evaluator: one evaluation's scope, how its model is built, how metrics aggregate.

``scope_evaluations`` runs each ``simple_evaluate`` call under ``window.evaluation``;
``model_built_by`` lets ``lm-eval-longctx sweep`` hand lm-eval a model it already loaded;
``quiet_same_count_warning`` and ``aggregate_cells_over_their_docs`` make lm-eval aggregate our
per-cell metrics over their own documents (see ``cells``). Each call also gets the patches
``evaluate`` installs (the response cache, the CPU batch plan) and ``--check_integrity``'s
``skip_integrity_tests``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging

from lm_eval_longctx.compat.lmeval_cli import STOCK_HF_MODELS
from lm_eval_longctx.registration import MODEL_NAME

WRITTEN_FOR = {"lm_eval": "0.4.13"}

log = logging.getLogger("lm_eval.longctx")
# lm-eval's HFLM under its registered names, and ours, which subclasses it.
HF_MODEL_NAMES = (*STOCK_HF_MODELS, MODEL_NAME)


def scope_evaluations(evaluator_module=None) -> None:
    """lm-eval 0.4.13 ``lm_eval/evaluator.py``: ``simple_evaluate(model, model_args, tasks, ...)``
    builds the model from ``model`` (a registered name, or an ``LM`` object used as is), then
    loads the tasks (``task_manager.load``), then evaluates. Wrapped so that each call runs
    under ``window.evaluation``: the tasks it loads learn whether its model marks over-long
    prompts (see ``window``) and its model and arguments (the response cache, the tasks' metadata),
    with the patches ``evaluate`` installs. ``lm_eval.simple_evaluate`` resolves to this module's function at
    call time, so both names get the wrapper. Idempotent."""
    if evaluator_module is None:
        from lm_eval import evaluator as evaluator_module
    original = getattr(evaluator_module, "simple_evaluate", None)
    if original is None or getattr(original, "longctx_scoped", False):
        return
    import functools

    @functools.wraps(original)
    def simple_evaluate(model, *args, **kwargs):
        return evaluate(original, model, args, kwargs)

    simple_evaluate.longctx_scoped = True
    evaluator_module.simple_evaluate = simple_evaluate


# lm-eval 0.4.13 ``lm_eval/evaluator_utils.py`` logs, on its module logger, "[<task>] ...
# not scored on the same number of documents ..." when a task's metrics cover different
# document counts.
SAME_COUNT_LOGGER = "lm_eval.evaluator_utils"
SAME_COUNT_TEXT = "not scored on the same number"


class SameCountWarningFilter(logging.Filter):
    """Drop lm-eval's "not scored on the same number of documents" warning for our tasks.

    Our per-length and per-depth metrics cover a subset of the documents by design, and the
    group score aggregates only metrics every document has, so the warning's concern
    (mis-weighted group scores) does not apply to them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("[longctx_") and SAME_COUNT_TEXT in message)


def quiet_same_count_warning(evaluator_utils=None) -> None:
    """Install ``SameCountWarningFilter`` on the logger of lm-eval's ``evaluator_utils`` (once; the
    module is not needed: the filter goes on the logger by its name)."""
    logger = logging.getLogger(SAME_COUNT_LOGGER)
    if not any(isinstance(f, SameCountWarningFilter) for f in logger.filters):
        logger.addFilter(SameCountWarningFilter())


def aggregate_cells_over_their_docs(evaluator_utils=None) -> None:
    """Make lm-eval aggregate our tasks' per-cell metrics over the documents of each cell.

    Patch of lm-eval 0.4.13 ``lm_eval.evaluator_utils._compute_task_aggregations(task,
    raw_metrics, bootstrap_iters)``, which rank 0 calls after gathering every rank's values: for
    a task that marks itself ``longctx_cells = True``, it gets ``cells.members_only(raw_metrics)``
    (see ``cells``: why stripping before lm-eval aggregates keeps its own numbers). Other tasks
    are untouched. Idempotent.
    """
    import inspect

    import lm_eval

    if evaluator_utils is None:
        from lm_eval import evaluator_utils

    from lm_eval_longctx.cells import members_only
    from lm_eval_longctx.errors import LongCtxError

    original = getattr(evaluator_utils, "_compute_task_aggregations", None)
    if getattr(original, "longctx_cells", False):
        return
    if original is None or list(inspect.signature(original).parameters)[:2] != ["task", "raw_metrics"]:
        raise LongCtxError(
            f"lm-eval {getattr(lm_eval, '__version__', '?')} aggregates metrics differently from "
            "lm-eval 0.4.13, which the longctx per-cell metrics were written for; install "
            "lm-eval==0.4.13 (pip install 'lm-eval==0.4.13')."
        )

    def _compute_task_aggregations(task, raw_metrics, *args, **kwargs):
        if getattr(task, "longctx_cells", False):
            raw_metrics = members_only(raw_metrics)
        return original(task, raw_metrics, *args, **kwargs)

    _compute_task_aggregations.longctx_cells = True
    _compute_task_aggregations.__wrapped__ = original
    evaluator_utils._compute_task_aggregations = _compute_task_aggregations


# lm-eval 0.4.13 ``lm_eval/api/registry.py``: how ``simple_evaluate`` builds a named model.


@contextlib.contextmanager
def model_built_by(name: str, build):
    """Inside, lm-eval builds model ``name`` with ``build(model_args, additional_config)`` instead of
    constructing the registered class: lm-eval 0.4.13 ``simple_evaluate`` calls
    ``lm_eval.api.registry.get_model(model).create_from_arg_obj(model_args, {"batch_size": ...,
    "max_batch_size": ..., "device": ...})`` (``create_from_arg_string`` for a string). Everything
    else the class says (``marks_beyond_window``, ...) is the registered class's. Restored on exit."""
    from lm_eval.api import registry

    original = registry.get_model

    class Built:
        def __init__(self, model_class):
            self._model_class = model_class

        def __getattr__(self, attribute):
            return getattr(self._model_class, attribute)

        def create_from_arg_obj(self, arg_dict, additional_config=None):
            extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
            return build(dict(arg_dict), extra)

        def create_from_arg_string(self, arg_string, additional_config=None):
            from lm_eval.utils import simple_parse_args_string

            return self.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def get_model(model_name):
        found = original(model_name)
        return Built(found) if model_name == name else found

    registry.get_model = get_model
    try:
        yield
    finally:
        registry.get_model = original


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

    from lm_eval_longctx.compat import lmeval_cache, lmeval_hf, vllm

    lmeval_cache.key_response_cache()
    skip_integrity_tests(evaluator)
    if _uses_hflm(model):
        from lm_eval.models import huggingface

        lmeval_hf.plan_cpu_batches(huggingface.HFLM)
    try:  # the tasks also learn the call's model_args and apply_chat_template (window.Evaluation)
        given = inspect.signature(original).bind_partial(model, *args, **kwargs).arguments
    except TypeError:  # lm-eval itself reports wrong arguments
        given = {}
    model_args = model_settings(model, given.get("model_args"))
    name = model if isinstance(model, str) else None
    if name in vllm.STOCK_VLLM_MODELS:  # RoPE args vLLM would refuse with a traceback, or misread
        problem = vllm.rope_problem(model_args, name)
        if problem:
            from lm_eval_longctx.errors import LongCtxError

            raise LongCtxError(problem)
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


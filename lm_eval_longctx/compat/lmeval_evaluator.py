"""lm-eval 0.4.13's evaluator: one evaluation's scope, how its model is built, how metrics aggregate.

``scope_evaluations`` runs each ``simple_evaluate`` call under ``window.evaluation``;
``model_built_by`` lets ``lm-eval-longctx sweep`` hand lm-eval a model it already loaded;
``quiet_same_count_warning`` and ``aggregate_cells_over_their_docs`` make lm-eval aggregate our
per-cell metrics over their own documents (see ``cells``).
"""

from __future__ import annotations

import contextlib
import logging

WRITTEN_FOR = {"lm_eval": "0.4.13"}


def scope_evaluations(evaluator_module=None) -> None:
    """lm-eval 0.4.13 ``lm_eval/evaluator.py``: ``simple_evaluate(model, model_args, tasks, ...)``
    builds the model from ``model`` (a registered name, or an ``LM`` object used as is), then
    loads the tasks (``task_manager.load``), then evaluates. Wrapped so that each call runs
    under ``window.evaluation``: the tasks it loads learn whether its model marks over-long
    prompts (see ``window``). ``lm_eval.simple_evaluate`` resolves to this module's function at
    call time, so both names get the wrapper. Idempotent."""
    if evaluator_module is None:
        from lm_eval import evaluator as evaluator_module
    original = getattr(evaluator_module, "simple_evaluate", None)
    if original is None or getattr(original, "longctx_scoped", False):
        return
    import functools

    from lm_eval_longctx import window

    @functools.wraps(original)
    def simple_evaluate(model, *args, **kwargs):
        with window.evaluation(window.marks_beyond_window(model)):
            return original(model, *args, **kwargs)

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

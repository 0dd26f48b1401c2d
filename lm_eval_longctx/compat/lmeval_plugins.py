"""lm-eval 0.4.13's task manager and model registry: our tasks and model without ``--include_path``.

lm-eval 0.4.13 loads no plugins (no ``entry_points()`` call anywhere). A newer lm-eval that loads
them itself gets our ``lm_eval.models`` / ``lm_eval.tasks`` entry points from pyproject.toml, so
each patch here steps aside when the module it patches mentions ``entry_points(``.
"""

from __future__ import annotations

WRITTEN_FOR = {"lm_eval": "0.4.13"}
ENTRY_POINTS_MARK = "entry_points("


def loads_entry_points(module) -> bool:
    """True when an lm-eval module discovers plugins itself (releases after 0.4.13)."""
    path = getattr(module, "__file__", None)
    try:
        with open(path, encoding="utf-8") as fh:
            return ENTRY_POINTS_MARK in fh.read()
    except (OSError, TypeError):
        return False


def patch_task_manager(module) -> None:
    """lm-eval 0.4.13 ``lm_eval/tasks/manager.py``: ``TaskManager.__init__(self, verbosity=None,
    include_path=None, include_defaults=True, metadata=None)`` indexes only its own tasks and
    ``include_path``. Wrapped to put our task folder first on ``include_path``."""
    from lm_eval_longctx.registration import with_our_tasks

    manager_cls = getattr(module, "TaskManager", None)
    if manager_cls is None or getattr(manager_cls, "_longctx_patched", False) or loads_entry_points(module):
        return
    original_init = manager_cls.__init__

    def __init__(self, verbosity=None, include_path=None, include_defaults=True, metadata=None):
        if include_defaults:
            include_path = with_our_tasks(include_path)
        original_init(self, verbosity, include_path, include_defaults, metadata)

    __init__.__doc__ = original_init.__doc__
    __init__.__wrapped__ = original_init
    manager_cls.__init__ = __init__
    manager_cls._longctx_patched = True


def register_model(models_module) -> None:
    """lm-eval 0.4.13 ``lm_eval/api/registry.py``: ``model_registry.register(name, target="mod:Class")``
    names a model lazily. Hooked on ``lm_eval.models``, not on the registry: lm-eval imports its
    built-in models only while the registry is empty, so registering earlier would hide them."""
    from lm_eval.api import registry as registry_module

    from lm_eval_longctx.registration import MODEL_NAME, MODEL_TARGET, VLLM_MODEL_NAME, VLLM_MODEL_TARGET

    registry = registry_module.model_registry
    if loads_entry_points(registry_module):
        return
    for name, target in ((MODEL_NAME, MODEL_TARGET), (VLLM_MODEL_NAME, VLLM_MODEL_TARGET)):
        if name not in registry:  # lazy: vllm-longctx imports vLLM only when a run asks for it
            registry.register(name, target=target)

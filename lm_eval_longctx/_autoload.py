"""Make lm-eval 0.4.13 find our tasks and model without ``--include_path``.

lm-eval 0.4.13 loads no plugins. ``lm_eval_longctx.pth`` imports this module at interpreter
start-up; it only installs a post-import hook, so nothing is imported until lm_eval itself
is. When ``lm_eval.tasks.manager`` is imported, ``TaskManager`` learns our task folder;
when ``lm_eval.models`` is imported, ``hf-longctx`` is registered as a lazy entry.
Each hook steps aside when that lm-eval module loads entry points itself, and any failure
here is swallowed: a broken hook must never break start-up of an unrelated program.
Set ``LM_EVAL_LONGCTX_NO_AUTOLOAD=1`` to switch it off.
"""

from __future__ import annotations

import importlib.abc
import os
import sys


def _loads_entry_points(module) -> bool:
    """True when lm-eval's own module discovers plugins (newer releases than 0.4.13)."""
    path = getattr(module, "__file__", None)
    try:
        with open(path, encoding="utf-8") as fh:
            return "entry_points(" in fh.read()
    except (OSError, TypeError):
        return False


def _patch_task_manager(module) -> None:
    from lm_eval_longctx.registration import with_our_tasks

    manager_cls = getattr(module, "TaskManager", None)
    if manager_cls is None or getattr(manager_cls, "_longctx_patched", False):
        return
    if _loads_entry_points(module):
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


def _register_model(models_module) -> None:
    # Hooked on lm_eval.models, not the registry: lm-eval imports its built-in models only
    # while the registry is empty, so registering earlier would hide them.
    from lm_eval.api import registry as registry_module

    from lm_eval_longctx.registration import MODEL_NAME, MODEL_TARGET

    registry = registry_module.model_registry
    if _loads_entry_points(registry_module) or MODEL_NAME in registry:
        return
    registry.register(MODEL_NAME, target=MODEL_TARGET)


def _fail(message: str) -> None:
    """Print one error line as the last thing on stderr, then exit 2."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        try:
            bar.close()  # else an open progress bar redraws itself after our line at exit
        except Exception:
            pass
    import logging  # here, not at start-up: this module loads in every interpreter of the env

    # With num_concurrent > 1, lm-eval's other pending requests die with the run; asyncio would
    # print "Task exception was never retrieved" for each of them after our line, at exit.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    sys.stderr.write(f"\nlm-eval-longctx error: {message}\n")
    raise SystemExit(2) from None


def _patch_cli(module) -> None:
    # Our errors are user mistakes with a message that says the fix: print that, not a
    # traceback through lm-eval's internals.
    harness = getattr(module, "HarnessCLI", None)
    if harness is None or getattr(harness, "_longctx_patched", False):
        return
    original_execute = harness.execute

    def execute(self, args):
        from lm_eval_longctx.errors import LongCtxError

        try:
            return original_execute(self, args)
        except LongCtxError as exc:
            _fail(str(exc))
        except Exception as exc:
            # A served run's request failed (timeout, server gone): say which length and the fix.
            from lm_eval_longctx.served import explain

            message = explain(exc, getattr(args, "use_cache", None))
            if message is None:
                raise
            _fail(message)

    execute.__wrapped__ = original_execute
    harness.execute = execute
    harness._longctx_patched = True


_HOOKS = {
    "lm_eval.tasks.manager": _patch_task_manager,
    "lm_eval.models": _register_model,
    "lm_eval._cli.harness": _patch_cli,
}


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, loader, hook):
        self._loader = loader
        self._hook = hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            self._hook(module)
        except Exception:  # never let our hook break lm-eval itself
            pass

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        hook = _HOOKS.get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _HookedLoader(spec.loader, hook)
        return spec


def install() -> None:
    """Install the post-import hooks once (a no-op if already installed or switched off)."""
    if os.environ.get("LM_EVAL_LONGCTX_NO_AUTOLOAD"):
        return
    if any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        return
    for name, hook in _HOOKS.items():
        module = sys.modules.get(name)
        if module is not None:  # imported before us (e.g. installed mid-session)
            try:
                hook(module)
            except Exception:
                pass
    sys.meta_path.insert(0, _PostImportFinder())


install()

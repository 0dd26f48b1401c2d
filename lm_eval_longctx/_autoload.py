"""The start-up hook: lm-eval 0.4.13 finds our tasks and model without ``--include_path``.

lm-eval 0.4.13 loads no plugins, so ``lm_eval_longctx.pth`` runs at the start of every Python
process of the environment. It reads ``LM_EVAL_LONGCTX_NO_AUTOLOAD`` first and, unless that
switches the hook off, imports this module, which imports nothing (``os`` and ``sys`` are
loaded by then) and only puts a finder at the front of ``sys.meta_path``. When one of the
lm-eval modules in ``HOOKED`` is imported, the finder wraps its loader: once the module has
run, ``lm_eval_longctx.compat`` (imported only then) installs the patches its ``PATCHES`` table
lists for that module. A failure in a patch is swallowed: the hook must never break an unrelated
program.

The switch: the hook is off when ``LM_EVAL_LONGCTX_NO_AUTOLOAD`` is set to anything other
than ``""``, ``0``, ``false``, ``no`` or ``off`` (case and surrounding spaces ignored).
"""

import os
import sys

# Values of LM_EVAL_LONGCTX_NO_AUTOLOAD that leave the hook on. lm_eval_longctx.pth holds the
# same tuple, so that a switched-off hook costs one dictionary look-up (a test checks both).
KEEPS_ON = ("", "0", "false", "no", "off")

# The lm-eval modules that compat.PATCHES has start-up patches for (compat.hooked_modules()): a
# copy, since importing compat here would cost every Python process (tests/test_compat.py checks it).
HOOKED = frozenset({"lm_eval.tasks.manager", "lm_eval.models", "lm_eval._cli.harness", "lm_eval.evaluator"})


def switched_off(environ=os.environ) -> bool:
    """True when ``LM_EVAL_LONGCTX_NO_AUTOLOAD`` turns the hook off (see the module docstring)."""
    return environ.get("LM_EVAL_LONGCTX_NO_AUTOLOAD", "").strip().lower() not in KEEPS_ON


def _patch(name, module) -> None:
    try:
        from lm_eval_longctx import compat

        compat.install_hooked(name, module)
    except Exception:  # never let our hook break lm-eval itself
        pass


class _HookedLoader:
    """The real loader of a hooked module, followed by our patch."""

    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _patch(self._name, module)

    def __getattr__(self, attribute):
        return getattr(self._loader, attribute)


class _PostImportFinder:
    """A meta-path finder (a plain class: ``importlib.abc`` would cost 60 modules at start-up)."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in HOOKED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookedLoader(spec.loader, fullname)
        return spec


def install() -> None:
    """Install the finder once (a no-op if already installed or switched off)."""
    if switched_off() or any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        return
    for name in HOOKED:
        module = sys.modules.get(name)
        if module is not None:  # imported before us (e.g. installed mid-session)
            _patch(name, module)
    sys.meta_path.insert(0, _PostImportFinder())


install()

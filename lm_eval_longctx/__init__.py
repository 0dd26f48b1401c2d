"""Long-context tasks and a RoPE-scaling model wrapper for lm-evaluation-harness.

Kept import-light on purpose: a start-up hook (``lm_eval_longctx.pth``) imports this
package in every Python process of the environment.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "task_manager", "tasks_dir"]


def __getattr__(name):
    if name in ("task_manager", "tasks_dir"):
        from lm_eval_longctx import registration

        return getattr(registration, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Where our lm-eval tasks live, and a TaskManager that knows them."""

from __future__ import annotations

from pathlib import Path

from lm_eval_longctx.catalog import GROUPS, TASKS
from lm_eval_longctx.ppl import TASK as PPL_TASK

MODEL_NAME = "hf-longctx"
MODEL_TARGET = "lm_eval_longctx.model:HFLongCtxLM"
# lm-eval's in-process vLLM model with the same RoPE and window handling (needs vLLM installed).
VLLM_MODEL_NAME = "vllm-longctx"
VLLM_MODEL_TARGET = "lm_eval_longctx.vllm_model:VLLMLongCtxLM"
# Our task and group names, from the task declarations, and longctx_ppl (its own task, no group).
TASK_NAMES = (*TASKS, *GROUPS, PPL_TASK)


def tasks_dir() -> Path:
    """Return the folder of our task YAMLs (inside the wheel, or the repo's ``tasks/``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "tasks", here.parent / "tasks"):
        if (candidate / "longctx.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"lm_eval_longctx: task folder not found next to {here}; reinstall the package "
        "(pip install lm-eval-longctx) so its tasks/ folder is present."
    )


def with_our_tasks(include_path) -> list:
    """Return ``include_path`` as a list with our task folder first (user folders can override)."""
    ours = tasks_dir().resolve()
    if include_path is None:
        paths = []
    elif isinstance(include_path, (list, tuple)):
        paths = list(include_path)
    else:
        paths = [include_path]
    if any(Path(p).resolve() == ours for p in paths):
        return paths
    return [ours, *paths]


def task_manager(include_path=None, **kwargs):
    """Return an ``lm_eval.tasks.TaskManager`` that indexes the longctx tasks too."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=with_our_tasks(include_path), **kwargs)

"""The contract between tasks and models for prompts longer than the model's window.

A model wrapper that refuses to cut a prompt returns ``BEYOND_WINDOW`` as that request's
generation; the tasks score it as "beyond the window" (counted, never as a wrong answer). Such a
model says so with the class attribute ``marks_beyond_window = True`` (``hf-longctx``). With any
other model the tasks refuse lengths that lm-eval's ``hf`` model would silently cut.

How the tasks learn which kind of model they run with: lm-eval's ``simple_evaluate`` builds the
model, then the tasks, and the tasks never see the model. So every ``simple_evaluate`` call runs
under an ``Evaluation`` opened by ``compat.lmeval_evaluator.scope_evaluations`` (the start-up hook and importing
``hf-longctx`` install it): it records whether the model given to that call (a registered name or
an object) marks over-long prompts, and the tasks built inside the call read
``model_marks_beyond_window()``. The record lives exactly as long as the call, in a context
variable: nothing to reset afterwards, nothing carried into the next evaluation (a sweep runs
one per RoPE setting). Outside an evaluation (a task built by hand) the stock rule applies.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

from lm_eval_longctx import served
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.model_args import max_length_arg

BEYOND_WINDOW = "<<longctx:beyond-window>>"


@dataclass(frozen=True)
class Evaluation:
    """What the tasks of one evaluation may know about its model."""

    model_marks_beyond_window: bool = False


_CURRENT = contextvars.ContextVar("lm_eval_longctx_evaluation", default=Evaluation())


@contextlib.contextmanager
def evaluation(model_marks_beyond_window: bool):
    """Run the body as one evaluation whose model marks (True) or may cut (False) over-long prompts."""
    token = _CURRENT.set(Evaluation(bool(model_marks_beyond_window)))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def model_marks_beyond_window() -> bool:
    """True inside an evaluation whose model marks over-long prompts instead of cutting them."""
    return _CURRENT.get().model_marks_beyond_window


def marks_beyond_window(model) -> bool:
    """True when ``model`` (an LM object, its class, or a registered name) marks over-long prompts."""
    if isinstance(model, str):
        try:
            from lm_eval.api.registry import get_model

            model = get_model(model)
        except Exception:  # an unknown name: simple_evaluate itself reports it
            return False
    return getattr(model, "marks_beyond_window", False) is True


def stock_hf_window(metadata: dict) -> tuple[int | None, str]:
    """Return the context limit lm-eval's ``hf`` model would apply, and where it comes from.

    Mirrors HFLM: an explicit ``max_length`` model argument wins, else the config's
    ``n_positions`` / ``max_position_embeddings`` / ``n_ctx``. Returns ``(None, reason)`` when
    the model's config cannot be read (an API model, say): then nothing is checked.
    """
    max_length = max_length_arg(metadata.get("max_length"), "the context length in the model's config")
    if max_length is not None:
        return max_length, "max_length in --model_args"
    pretrained = metadata.get("pretrained")
    if not isinstance(pretrained, str):
        return None, "no pretrained model named"
    try:
        from lm_eval.models.utils import resolve_max_length
        from transformers import AutoConfig

        kwargs = {"trust_remote_code": bool(metadata.get("trust_remote_code", False))}
        for key in ("gguf_file", "revision"):
            if metadata.get(key):
                kwargs[key] = metadata[key]
        config = AutoConfig.from_pretrained(pretrained, **kwargs)
    except Exception as exc:  # unreadable config: the model load itself will report it
        return None, f"config unreadable: {exc}"
    return resolve_max_length(config), f"the context length in {pretrained}'s config"


def refuse_lengths_beyond_window(task: str, metadata: dict, lengths, max_gen_toks: int) -> None:
    """Refuse prompt lengths the run's model would cut, before any prompt is built.

    A served model: the settings lm-eval would cut with (``ServedRun.check_settings``; the
    server itself is asked later, with a built prompt). Inside an evaluation of a model that
    marks over-long prompts (``hf-longctx``): nothing. Otherwise lm-eval's stock ``hf`` rule (``stock_hf_window``),
    with room for ``max_gen_toks`` answer tokens.
    """
    lengths = sorted(lengths)
    if served.is_served(metadata):
        served.ServedRun.from_metadata(metadata, task).check_settings(task, lengths, max_gen_toks)
        return
    if model_marks_beyond_window():
        return
    limit, source = stock_hf_window(metadata)
    if limit is None:
        return
    room = limit - max_gen_toks
    too_long = [n for n in lengths if n > room]
    if too_long:
        raise LongCtxError(
            f"{task}: prompts of {too_long} tokens do not fit the model's window of {limit} tokens "
            f"({source}) with room for the answer; lm-eval's hf model would cut them from the left "
            f"without telling. Use --model hf-longctx (it applies rope_scaling and scores such prompts "
            f"as beyond the window), pass a larger max_length, or keep max_seq_lengths at most {room}."
        )

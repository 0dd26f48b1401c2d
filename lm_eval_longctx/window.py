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
import logging
from dataclasses import dataclass, field

from lm_eval_longctx import served
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.model_args import max_length_arg

BEYOND_WINDOW = "<<longctx:beyond-window>>"

# A child of lm-eval's logger, so our lines show in its log format and level.
log = logging.getLogger("lm_eval.longctx")


@dataclass(frozen=True)
class Evaluation:
    """What the tasks of one evaluation may know about its model.

    ``model`` and ``model_args`` are what the ``simple_evaluate`` call was given (a registered
    name or an object's class name; the arguments as ``provenance.model_settings`` reads them, which
    lm-eval leaves out of the tasks' metadata when the caller passes its own ``task_manager``);
    ``apply_chat_template`` is the call's argument as given (a template name, or a switch);
    ``said`` holds the warnings this evaluation gave already, so that each is given once however
    many tasks ask.
    """

    model_marks_beyond_window: bool = False
    model: str | None = None
    model_args: dict = field(default_factory=dict)
    apply_chat_template: bool | str = False
    said: set = field(default_factory=set)


_CURRENT = contextvars.ContextVar("lm_eval_longctx_evaluation", default=None)


def current() -> Evaluation:
    """Return the evaluation running now; outside any, a fresh empty one (never shared)."""
    return _CURRENT.get() or Evaluation()


@contextlib.contextmanager
def evaluation(model_marks_beyond_window: bool, model: str | None = None, model_args: dict | None = None,
               apply_chat_template: bool | str = False):
    """Run the body as one evaluation whose model marks (True) or may cut (False) over-long prompts."""
    token = _CURRENT.set(
        Evaluation(bool(model_marks_beyond_window), model, dict(model_args or {}), apply_chat_template)
    )
    try:
        yield
    finally:
        _CURRENT.reset(token)


def model_marks_beyond_window() -> bool:
    """True inside an evaluation whose model marks over-long prompts instead of cutting them."""
    return current().model_marks_beyond_window


def warn_once(message: str) -> None:
    """Log ``message`` as a warning, once per evaluation (every time outside one)."""
    said = current().said
    if message not in said:
        said.add(message)
        log.warning("%s", message)


def marks_beyond_window(model) -> bool:
    """True when ``model`` (an LM object, its class, or a registered name) marks over-long prompts."""
    if isinstance(model, str):
        try:
            from lm_eval.api.registry import get_model

            model = get_model(model)
        except Exception:  # an unknown name: simple_evaluate itself reports it
            return False
    return getattr(model, "marks_beyond_window", False) is True


def config_window(metadata: dict) -> tuple[int | None, str]:
    """Return the context length in the config of the model ``metadata`` names, and where it comes
    from, as HFLM reads it (``n_positions`` / ``max_position_embeddings`` / ``n_ctx``); ``(None,
    reason)`` when no config can be read (an API model, say)."""
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


def stock_hf_window(metadata: dict) -> tuple[int | None, str]:
    """Return the context limit lm-eval's ``hf`` model would apply, and where it comes from.

    Mirrors HFLM: an explicit ``max_length`` model argument wins, else the config's window
    (``config_window``). Returns ``(None, reason)`` when the model's config cannot be read
    (an API model, say): then nothing is checked.
    """
    for key in ("max_length", "max_model_len"):  # lm-eval's vllm model takes either
        max_length = max_length_arg(metadata.get(key), "the context length in the model's config")
        if max_length is not None:
            return max_length, f"{key} in --model_args"
    return config_window(metadata)


def _stock_model() -> tuple[str, str]:
    """Return (the stock model's name, ours that marks instead of cutting) for the messages."""
    if current().model == "vllm":
        return "vllm", "vllm-longctx"
    return "hf", "hf-longctx"


def refuse_lengths_beyond_window(
    task: str, metadata: dict, lengths, max_gen_toks: int, budget: str = "the task's max_gen_toks"
) -> None:
    """Refuse prompt lengths the run's model would cut, before any prompt is built.

    A served model: the settings lm-eval would cut with (``ServedRun.check_settings``; the
    server itself is asked later, with a built prompt). Inside an evaluation of a model that
    marks over-long prompts (``hf-longctx``): nothing. Otherwise lm-eval's stock ``hf`` rule
    (``stock_hf_window``), with room for ``max_gen_toks`` answer tokens; ``budget`` says where
    that number comes from (``--gen_kwargs`` or the task), for the message.
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
    stock, ours = _stock_model()
    if room < 1:
        raise LongCtxError(
            f"{task}: max_gen_toks={max_gen_toks} ({budget}) leaves no room for a prompt in the model's "
            f"window of {limit} tokens ({source}); lm-eval's {stock} model would stop with an assertion. Give a "
            f"max_gen_toks below {limit} (e.g. --gen_kwargs max_gen_toks=32), or use --model {ours}."
        )
    too_long = [n for n in lengths if n > room]
    if too_long:
        raise LongCtxError(
            f"{task}: prompts of {too_long} tokens do not fit the model's window of {limit} tokens "
            f"({source}) with room for the answer (max_gen_toks={max_gen_toks}, {budget}); lm-eval's {stock} model "
            f"would cut them from the left without telling. Use --model {ours} (it applies rope_scaling and "
            f"scores such prompts as beyond the window), pass a larger max_length, or keep max_seq_lengths at "
            f"most {room}."
        )


def extrapolation(metadata: dict, lengths) -> dict | None:
    """Return what runs past the model's trained window without RoPE scaling, else None.

    The stock rule only (``hf``; not ``hf-longctx``, not a served model): an explicit
    ``max_length`` above the config's window, no ``rope_scaling``/``rope_theta`` in the model
    arguments, and lengths past the config's window. Returns ``{"native_window", "max_length",
    "lengths"}``: the lengths that run with positions the model was not trained on.
    """
    if served.is_served(metadata) or model_marks_beyond_window():
        return None
    if metadata.get("rope_scaling") is not None or metadata.get("rope_theta") is not None:
        return None
    max_length = None
    for key in ("max_length", "max_model_len"):  # lm-eval's vllm model takes either
        max_length = max_length or max_length_arg(metadata.get(key), "the context length in the model's config")
    if max_length is None:
        return None
    native, _ = config_window(metadata)
    past = sorted(n for n in set(lengths) if native is not None and n > native)
    if not past or max_length <= native:
        return None
    return {"native_window": native, "max_length": max_length, "lengths": past}

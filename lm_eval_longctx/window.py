"""The contract between tasks and models for prompts longer than the model's window.

A model wrapper that refuses to cut a prompt returns ``BEYOND_WINDOW`` as that request's
generation; the tasks score it as "beyond the window" (counted, never as a wrong answer).
``hf-longctx`` announces itself with ``declare_marking_model`` when it is built (lm-eval
builds the model before the tasks), so the tasks know over-long prompts will be marked; with
any other model they refuse lengths that lm-eval's ``hf`` model would silently cut.
"""

from __future__ import annotations

from lm_eval_longctx import served
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.model_args import max_length_arg

BEYOND_WINDOW = "<<longctx:beyond-window>>"

_marking_model_window: int | None = None


def declare_marking_model(max_length: int | None) -> None:
    """Record that a model which marks (never truncates) over-long prompts is loaded."""
    global _marking_model_window
    _marking_model_window = max_length


def marking_model_window() -> int | None:
    """Return the window of the loaded marking model, or None when none is loaded."""
    return _marking_model_window


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
    server itself is asked later, with a built prompt). ``hf-longctx`` loaded: nothing, it
    marks over-long prompts. Otherwise lm-eval's stock ``hf`` rule (``stock_hf_window``),
    with room for ``max_gen_toks`` answer tokens.
    """
    lengths = sorted(lengths)
    if served.is_served(metadata):
        served.ServedRun.from_metadata(metadata, task).check_settings(task, lengths, max_gen_toks)
        return
    if marking_model_window() is not None:
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

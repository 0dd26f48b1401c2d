"""The contract between tasks and models for prompts longer than the model's window.

A model wrapper that refuses to cut a prompt returns ``BEYOND_WINDOW`` as that request's
generation; the tasks score it as "beyond the window" (counted, never as a wrong answer).
``hf-longctx`` announces itself with ``declare_marking_model`` when it is built (lm-eval
builds the model before the tasks), so the tasks know over-long prompts will be marked; with
any other model they refuse lengths that lm-eval's ``hf`` model would silently cut.
"""

from __future__ import annotations

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
    if metadata.get("max_length"):
        return int(metadata["max_length"]), "max_length in --model_args"
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

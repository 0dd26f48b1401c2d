"""Model arguments checked before any weights load: one line naming the value and the fix.

``hf-longctx`` runs ``check`` first thing in ``__init__`` (the RoPE arguments have their own
checks in ``rope``). ``max_length_arg`` also reads the ``max_length`` that lm-eval's stock
``hf`` model gets, for the tasks' window check. torch and transformers are imported only
inside the checks that need them.
"""

from __future__ import annotations

import os
from pathlib import Path

from lm_eval_longctx.errors import LongCtxError

HUB_EXAMPLE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def max_length_arg(value, default: str) -> int | None:
    """Return ``max_length`` as a whole number of tokens >= 1, or None when left out.

    ``default`` says what a left-out ``max_length`` means, for the error message.
    """
    if value is None:
        return None
    whole = (
        (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer())
        or (isinstance(value, str) and value.strip().isdigit())
    )
    if not whole or int(value) < 1:
        shown = int(value) if isinstance(value, float) and value.is_integer() else value  # lm-eval reads -1 as -1.0
        raise LongCtxError(
            f"max_length={shown!r} is not a number of tokens: give a whole number of at least 1 "
            f"(e.g. max_length=16384), or leave it out for {default}."
        )
    return int(value)


def looks_local(pretrained: str) -> bool:
    """True when ``pretrained`` can only be a path: a hub name is ``name`` or ``owner/name``."""
    separators = pretrained.count("/") + (pretrained.count(os.sep) if os.sep != "/" else 0)
    return pretrained.startswith(("/", ".", "~")) or separators > 1


def pretrained_arg(pretrained, gguf_file=None, subfolder: str | None = None):
    """Return ``pretrained`` (``~`` expanded); refuse a local path that is not a model folder."""
    if not isinstance(pretrained, str):
        return pretrained  # a built model
    path = Path(pretrained).expanduser()
    if not path.exists():
        if looks_local(pretrained):
            raise LongCtxError(
                f"pretrained={pretrained}: no such folder. Give the folder of a saved model (config.json "
                f"inside), e.g. pretrained=$(lm-eval-longctx smollm2), or a hub name such as {HUB_EXAMPLE}."
            )
        return pretrained  # a hub name: transformers resolves it
    if not path.is_dir():
        raise LongCtxError(
            f"pretrained={pretrained} is a file, not a model folder. Give the folder holding config.json "
            "(a GGUF file: pretrained=<its folder>,gguf_file=<its name>)."
        )
    folder = path / subfolder if subfolder else path
    if gguf_file:
        if not (folder / gguf_file).is_file():
            raise LongCtxError(f"gguf_file={gguf_file}: no such file in {folder}; give a file name inside that folder.")
    elif not (folder / "config.json").is_file():
        raise LongCtxError(
            f"pretrained={pretrained}: {folder} has no config.json, so it is not a saved model folder; "
            "give the folder save_pretrained wrote (or add gguf_file=<name> for a GGUF file in it)."
        )
    return str(path) if pretrained.startswith("~") else pretrained


def dtype_arg(dtype) -> None:
    """Refuse a dtype that is not ``auto``, a torch dtype, or the name of one."""
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return
    if not (isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype)):
        raise LongCtxError(f"dtype={dtype!r} is not a torch dtype: use bfloat16, float16, float32 or auto.")


def device_arg(device) -> None:
    """Refuse a device torch cannot name."""
    import torch

    if device is None or device == "auto":  # HFLM then picks cuda if there is one, else cpu
        return
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise LongCtxError(f"device={device!r} is not a device: use cuda, cuda:0, cpu or mps.") from None


def attn_implementation_arg(attn_implementation) -> None:
    """Refuse an attention implementation transformers does not know (hub kernels pass through)."""
    if attn_implementation is None or (isinstance(attn_implementation, str) and "/" in attn_implementation):
        return
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if attn_implementation not in known:
        raise LongCtxError(f"attn_implementation={attn_implementation!r} is not one of {known}; sdpa is the default.")


def batch_size_arg(value, name: str) -> None:
    """Refuse a batch size that is not a whole number >= 1 (``auto`` and ``auto:N`` for batch_size)."""
    if value is None:
        return
    text = str(value).strip()
    if name == "batch_size" and text.startswith("auto"):
        rest = text.removeprefix("auto")
        if not rest or (rest.startswith(":") and _positive_number(rest[1:])):
            return
    elif not isinstance(value, bool) and text.isdigit() and int(text) >= 1:
        return
    forms = ", auto or auto:N" if name == "batch_size" else ""
    raise LongCtxError(f"{name}={value!r}: use a whole number of at least 1{forms}, e.g. {name}=8.")


def _positive_number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def check(pretrained, max_length, device, dtype, attn_implementation, kwargs: dict):
    """Return ``(pretrained, max_length)`` checked; raise LongCtxError on the first bad argument."""
    max_length = max_length_arg(max_length, "the scaled window (native window x RoPE factor)")
    device_arg(device)
    dtype_arg(dtype)
    attn_implementation_arg(attn_implementation)
    batch_size_arg(kwargs.get("batch_size"), "batch_size")
    batch_size_arg(kwargs.get("max_batch_size"), "max_batch_size")
    pretrained = pretrained_arg(pretrained, kwargs.get("gguf_file"), kwargs.get("subfolder"))
    return pretrained, max_length

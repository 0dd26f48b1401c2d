"""What a run of our tasks actually used, as the results file records it.

lm-eval writes each task's config into the results file (``configs.<task>``), with the task's
``metadata`` as given: what the user typed, not what ran (defaults, the chat template
actually fed, the tokenizer the prompts were counted with). ``settings`` is the record our
tasks add under ``configs.<task>.metadata.longctx`` (docs/provenance.md). The other
functions learn, from one ``simple_evaluate`` call's arguments and its model, what the tasks
cannot see themselves (lm-eval builds the tasks without showing them the model).
"""

from __future__ import annotations

import hashlib
import json

from lm_eval_longctx.errors import LongCtxError

# The key of our record inside configs.<task>.metadata.
RECORD_KEY = "longctx"


def _sha256(text: str) -> str:
    # lm-eval's own hash_string (results' chat_template_sha), so the two can be compared.
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- one evaluation's model


def model_settings(model, model_args) -> dict:
    """Return the model arguments of a ``simple_evaluate`` call as a dict, as lm-eval merges
    them under the tasks' metadata when it builds the TaskManager itself: ``model_args`` parsed,
    or, for a model passed as a built object, what its tokenizer and window are."""
    if isinstance(model_args, dict):
        return dict(model_args)
    if isinstance(model_args, str) and model_args.strip():
        from lm_eval.utils import simple_parse_args_string

        return simple_parse_args_string(model_args)
    if isinstance(model, str):
        return {}
    learned = {}
    tokenizer = getattr(model, "tokenizer", None)
    name = getattr(tokenizer, "name_or_path", None)
    if isinstance(name, str) and name:
        learned["tokenizer"] = name
    for key in ("add_bos_token", "chat_template_args"):
        value = getattr(model, key, None)
        if value is not None and value != {}:
            learned[key] = value
    try:
        max_length = model.max_length
    except Exception:  # an LM without a window (an API model, a stub)
        max_length = None
    if isinstance(max_length, int) and not isinstance(max_length, bool):
        learned["max_length"] = max_length
    return learned


def chat_template_args(metadata: dict, task: str) -> dict:
    """Return the keyword arguments lm-eval's ``hf`` model gives the chat template: its
    ``chat_template_args`` model argument, with ``enable_thinking`` merged in when given
    (``HFLM.__init__``), so that prompts are counted as the template renders them."""
    args = metadata.get("chat_template_args") or {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            args = None
    if not isinstance(args, dict):
        raise LongCtxError(
            f"{task}: chat_template_args={metadata.get('chat_template_args')!r} is not a dict of chat template "
            'arguments; give the whole --model_args as JSON: \'{"pretrained": "DIR", "chat_template_args": '
            '{"enable_thinking": false}}\''
        )
    if metadata.get("enable_thinking") is not None:
        args = {**args, "enable_thinking": metadata["enable_thinking"]}
    return args


# --------------------------------------------------------------------------- the chat template fed


def fed_template(tokenizer, args: dict) -> tuple[str | None, str]:
    """Return (name, text) of the chat template ``tokenizer.apply_chat_template(..., **args)``
    renders with: a name only when the tokenizer holds several named templates."""
    text = tokenizer.get_chat_template(args.get("chat_template"), args.get("tools"))
    templates = tokenizer.chat_template if isinstance(tokenizer.chat_template, dict) else {}
    name = next((key for key, value in templates.items() if value == text), None)
    return name, text


def named_template_warning(task: str, requested, fed_name: str | None, names) -> str | None:
    """Return the warning for ``--apply_chat_template NAME`` when another template is fed, else None.

    lm-eval 0.4.13 records NAME's template (``lm.chat_template(NAME)``: results' ``chat_template``
    and ``chat_template_sha``) but its ``hf`` model renders prompts with
    ``tokenizer.apply_chat_template(..., **chat_template_args)``, without NAME: the default.
    """
    if not isinstance(requested, str) or requested == fed_name:
        return None
    fed = f"the template {fed_name!r}" if fed_name else "the tokenizer's only template"
    available = f" (the tokenizer's templates: {sorted(names)})" if names else ""
    return (
        f"{task}: --apply_chat_template {requested}: lm-eval 0.4.13's hf model does not feed the template named "
        f"{requested!r}, it renders with {fed}{available} (the results' chat_template and chat_template_sha may "
        f"still show {requested!r}'s). Prompts were counted with the one fed, and "
        f"configs.<task>.metadata.{RECORD_KEY}.chat_template records it. To feed {requested!r}, pass it to the "
        f"model: --model_args '{{\"pretrained\": \"DIR\", \"chat_template_args\": {{\"chat_template\": \"{requested}\"}}}}'."
    )


# --------------------------------------------------------------------------- the record


def settings(spec, counter, *, generator_version: int, data_key: str, docs) -> dict:
    """Return what the task's prompts were built with, for ``configs.<task>.metadata.longctx``:
    the grid, the prompt format, the chat template fed, the tokenizer, the generator."""
    from lm_eval_longctx import __version__

    source = spec.tokenizer
    first = docs[0] if len(docs) else {}
    chat = None
    if counter.chat_template:
        name, text = fed_template(counter.tokenizer, counter.chat_template_args)
        # None, not {}, without arguments: an empty struct breaks the JSON loader of `datasets`,
        # which lm-eval's Hub export reads results files with.
        chat = {"name": name, "sha256": _sha256(text), "args": dict(counter.chat_template_args) or None}
    return {
        "max_seq_lengths": None if spec.max_seq_lengths is None else list(spec.max_seq_lengths),
        "depths": list(spec.depths),
        "num_samples": spec.num_samples,
        "seed": spec.seed,
        "prompt_style": spec.prompt_style,
        "answer_prefix": spec.answer_prefix,
        "answer_prefix_example": first.get("answer_prefix") or "",
        "prefix_in_user_turn": spec.prefix_in_user_turn,
        "chat_template": chat,
        "tokenizer": {
            "name": source.name,
            "gguf_file": source.gguf_file,
            "revision": source.revision,
            "add_bos_token": source.add_bos_token,
            "class": type(counter.tokenizer).__name__,
            "fingerprint": counter.fingerprint(),
        },
        "generator_version": generator_version,
        "package_version": __version__,
        "data_key": data_key,
        "num_prompts": len(docs),
    }

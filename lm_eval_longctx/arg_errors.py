"""One-line messages, each with the fix, for lm-eval argument mistakes users commonly make.

Pure functions of the values given. ``compat.lmeval_cli.patch_cli`` decides when lm-eval 0.4.13 made the
mistake (its error text, its defaults) and prints what these return.
"""

from __future__ import annotations

import ast
import json
import os

# Shown when a value cannot be turned into the JSON the user meant.
EXAMPLES = {
    "--metadata": '{"max_seq_lengths": [4096, 8192], "num_samples": 10}',
    "--model_args": '{"pretrained": "DIR", "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}',
}
# Run options lm-eval passes to the model itself, beside --model_args.
OWN_FLAGS = {"batch_size": "--batch_size", "max_batch_size": "--max_batch_size", "device": "--device"}
MAX_SHOWN = 200  # characters of a value quoted back in a message


def _shown(value: str) -> str:
    return value if len(value) <= MAX_SHOWN else value[:MAX_SHOWN] + "..."


def _split_pairs(text: str) -> list[str]:
    """Split ``key=value,key=value`` on commas outside brackets, braces and quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[({":
            depth += 1
        elif char in "])}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]


def _value(text: str):
    """Return a ``key=value`` value as meant: true/false, JSON, a Python literal, else the text."""
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return text


def _as_json(obj) -> str | None:
    try:
        return json.dumps(obj)
    except (TypeError, ValueError):
        return None


def _pairs_as_object(text: str) -> dict | None:
    """Return ``key=value,...`` as a dict, or None when a part is not ``key=value``."""
    out = {}
    for part in _split_pairs(text):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            return None
        out[key.strip()] = _value(value)
    return out or None


def _literal_object(text: str) -> dict | None:
    """Return a dict written in Python syntax (single quotes, trailing comma), else None."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def rope_shorthand(scaling) -> str | None:
    """Return ``hf-longctx``'s ``KIND:FACTOR[:key=value]`` form of a RoPE dict, else None."""
    from lm_eval_longctx.rope import ALIASES

    if not isinstance(scaling, dict):
        return None
    params = dict(scaling)
    kind = params.pop("rope_type", None) or params.pop("type", None)
    factor = params.pop("factor", None)
    if not isinstance(kind, str) or isinstance(factor, bool) or not isinstance(factor, (int, float)):
        return None
    short = {name: alias for alias, name in ALIASES.items() if alias != "type"}
    fields = [kind, f"{factor:g}"]
    for key, value in params.items():
        if isinstance(value, (list, tuple)):
            value = "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        elif isinstance(value, float):
            value = f"{value:g}"
        fields.append(f"{short.get(key, key)}={value}")
    return ":".join(str(f) for f in fields)


def invalid_json(option: str, value: str) -> str:
    """Message for lm-eval's "Invalid JSON" on ``option`` (``--metadata`` or ``--model_args``)."""
    if value.lstrip().startswith("{"):
        try:
            json.loads(value)
            reason = "lm-eval could not read it"
        except json.JSONDecodeError as exc:
            reason = f"{exc.msg} at character {exc.pos + 1}"
        meant = _as_json(_literal_object(value)) if _literal_object(value) else None
        return (
            f"{option} {_shown(value)} is not valid JSON ({reason}). Write one JSON object with double-quoted "
            f"keys and strings, in single quotes for the shell: {option} '{meant or EXAMPLES[option]}'"
        )
    pairs = _pairs_as_object(value)
    whole = _as_json(pairs) if pairs else None
    message = (
        f"{option} {_shown(value)}: lm-eval 0.4.13 cannot read a {{...}} value after a comma in key=value "
        f"arguments (it says \"Invalid JSON\"). Give the whole {option} as one JSON object: "
        f"{option} '{whole or EXAMPLES[option]}'"
    )
    shorthand = rope_shorthand((pairs or {}).get("rope_scaling")) if option == "--model_args" else None
    if shorthand:
        message += f"; or, with --model hf-longctx, write rope_scaling={shorthand} in key=value form"
    return message + "."


def twice_given(name: str, in_model_args, from_lm_eval) -> str:
    """Message for a run option also given inside --model_args (the model would get it twice)."""
    flag = OWN_FLAGS[name]
    return (
        f"--model_args {name}={in_model_args}: lm-eval passes {flag} (here {from_lm_eval}) to the model "
        f"itself, so the model would get {name} twice and fail. Remove {name} from --model_args and "
        f"use {flag} {in_model_args}."
    )


def _local_path(text: str) -> bool:
    """True when ``text`` can only be a local path: a hub name is ``name`` or ``org/name``."""
    return text.startswith(("/", "./", "../", "~")) or text.count("/") > 1 or (os.sep != "/" and os.sep in text)


def missing_pretrained(pretrained) -> str | None:
    """Message for a ``pretrained`` that names a local folder that is not there, else None."""
    if not isinstance(pretrained, str) or not pretrained:
        return None
    if os.path.isfile(pretrained):
        name = os.path.basename(pretrained)
        hint = f" (with gguf_file={name} for a GGUF file)" if name.lower().endswith(".gguf") else ""
        return (
            f"--model_args pretrained={pretrained} is a file; give the folder of a Hugging Face model "
            f"(the one holding config.json){hint}: pretrained={os.path.dirname(pretrained) or '.'}."
        )
    if _local_path(pretrained) and not os.path.isdir(pretrained):
        return (
            f"--model_args pretrained={pretrained}: no such folder. Give the folder of a Hugging Face model "
            "(the one holding config.json) or a hub name such as HuggingFaceTB/SmolLM2-135M-Instruct; "
            "`lm-eval-longctx smollm2` prints the folder of the embedded model."
        )
    return None


# Model arguments that each set one thing: given twice, lm-eval 0.4.13's MergeDictAction keeps the
# last one without a word (``rope_scaling=linear:2`` then a ``rope_scaling={...}`` argument).
ONCE_ARGS = ("rope_scaling", "rope_theta", "pretrained", "max_length", "max_model_len")


def _model_args_values(argv: list[str]) -> list[str]:
    """Return the values given to ``--model_args`` / ``-a`` in ``argv`` (each may be several arguments)."""
    values, taking = [], False
    for arg in argv:
        flag, eq, rest = arg.partition("=")
        if arg in ("--model_args", "-a"):
            taking = True
        elif eq and flag in ("--model_args", "-a"):
            values.append(rest)
            taking = True
        elif arg.startswith("-"):
            taking = False
        elif taking:
            values.append(arg)
    return values


def _keys_of(value: str) -> list[str]:
    text = value.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return []
        return list(parsed) if isinstance(parsed, dict) else []
    return [part.partition("=")[0].strip() for part in _split_pairs(text) if "=" in part]


def given_twice(argv: list[str]) -> str | None:
    """Return a one-line error when ``--model_args`` sets one of ``ONCE_ARGS`` more than once, else None."""
    values = _model_args_values(argv)
    for name in ONCE_ARGS:
        where = [value for value in values for key in _keys_of(value) if key == name]
        if len(where) > 1:
            shown = " and ".join(repr(_shown(value)) for value in where)
            return (
                f"--model_args sets {name} twice ({shown}); lm-eval would keep the last one without a word. "
                f"Give {name} once, e.g. --model_args pretrained=DIR,rope_scaling=dynamic:2."
            )
    return None

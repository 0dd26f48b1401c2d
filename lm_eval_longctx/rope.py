"""RoPE scaling as a user types it, checked against the ``KINDS`` table (pure: no torch, no lm-eval).

Merging a checked setting into a model config is ``rope_config``.

``rope_scaling`` takes any of these forms; every one ends as a transformers-style dict
(``{"rope_type": "yarn", "factor": 4.0, ...}``) before the model is built:

* the shorthand, which survives lm-eval 0.4.13's comma-split ``key=value`` model args::

      rope_scaling=KIND:FACTOR[:KEY=VALUE]...      e.g. dynamic:2   linear:4
                                                        yarn:4:orig=4096
                                                        llama3:8:low=1:high=4:orig=8192
                                                        longrope:4:short=1/1/1.2:long=2/3/4

  Fields are separated by ``:`` (``;`` also works, but quote it in a shell). The first field
  after KIND is the factor; ``factor=4`` may be written out instead. Keys are transformers'
  ``rope_parameters`` names or these short aliases: ``orig`` original_max_position_embeddings,
  ``low`` low_freq_factor, ``high`` high_freq_factor, ``attn`` attention_factor, ``short``
  short_factor, ``long`` long_factor. List values (longrope) join numbers with ``/``.
* ``none`` (or ``default``): no scaling at all, even if the checkpoint ships some. Leaving
  ``rope_scaling`` out (or ``None``) keeps the checkpoint's own settings.
* a dict: ``{"rope_type": "dynamic", "factor": 2.0}`` (legacy ``"type"`` accepted), as a real
  dict (the whole ``--model_args`` given as JSON) or as a JSON / Python dict-literal string
  (``--model_args pretrained=M 'rope_scaling={"rope_type":"dynamic","factor":2.0}'``: lm-eval
  0.4.13 reads a dict only as its own space-separated argument, never after a comma).

``rope_theta=500000`` is a model argument of its own; a ``rope_theta`` key inside the dict is
the same thing. Kinds and their keys come from the ``KINDS`` table: adding a kind is adding a
row. Windows: the native window is ``original_max_position_embeddings`` when set, else
``max_position_embeddings``; scaling by ``factor`` gives the effective window.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lm_eval_longctx.errors import LongCtxError

logger = logging.getLogger("lm_eval.longctx")
DEFAULT_THETA = 10_000.0  # transformers' default when a config names no rope_theta
ORIGINAL = "original_max_position_embeddings"
FORMS = "forms: KIND:FACTOR[:key=value...], a dict, or none"
ALIASES = {
    "orig": ORIGINAL,
    "low": "low_freq_factor",
    "high": "high_freq_factor",
    "attn": "attention_factor",
    "short": "short_factor",
    "long": "long_factor",
    "type": "rope_type",  # transformers 4.3x and older configs
}
# Keys that describe the model, not its scaling: kept whatever scaling replaces the old one.
MODEL_KEYS = ("partial_rotary_factor", "mrope_section")


# Value readers: each takes what the user gave (a string from the shorthand, or a JSON value)
# and returns the canonical value, or raises with the example of the kind being parsed.


def _number(text):
    if isinstance(text, bool):
        raise ValueError
    return float(text)


def _positive(key, value, fail):
    try:
        number = _number(value)
    except (TypeError, ValueError):
        fail(f"{key} must be a number > 0, got {value!r}")
    if not (number > 0 and math.isfinite(number)):
        fail(f"{key} must be a finite number > 0, got {value!r}")
    return number


def _real(key, value, fail):
    try:
        return _number(value)
    except (TypeError, ValueError):
        fail(f"{key} must be a number, got {value!r}")


def _positive_int(key, value, fail):
    number = _positive(key, value, fail)
    if number != int(number):
        fail(f"{key} must be a whole number of tokens, got {value!r}")
    return int(number)


def _boolean(key, value, fail):
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    fail(f"{key} must be true or false, got {value!r}")


def _positive_list(key, value, fail):
    items = value.split("/") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        fail(f"{key} must be numbers joined by '/', got {value!r}")
    return [_positive(key, item, fail) for item in items]


VALUE_READERS: dict[str, Callable] = {
    "factor": _positive,
    ORIGINAL: _positive_int,
    "attention_factor": _positive,
    "beta_fast": _real,
    "beta_slow": _real,
    "mscale": _real,
    "mscale_all_dim": _real,
    "truncate": _boolean,
    "low_freq_factor": _positive,
    "high_freq_factor": _positive,
    "short_factor": _positive_list,
    "long_factor": _positive_list,
}


def _check_yarn(params, fail):
    if "beta_fast" in params and "beta_slow" in params and params["beta_fast"] <= params["beta_slow"]:
        fail(
            f"beta_fast ({params['beta_fast']:g}) must be greater than beta_slow ({params['beta_slow']:g}): "
            "YaRN interpolates the dimensions below beta_slow rotations and keeps those above beta_fast"
        )


def _check_llama3(params, fail):
    if params["high_freq_factor"] <= params["low_freq_factor"]:
        fail(
            f"high_freq_factor ({params['high_freq_factor']:g}) must be greater than "
            f"low_freq_factor ({params['low_freq_factor']:g})"
        )


@dataclass(frozen=True)
class RopeKind:
    """One row of the table: what a kind accepts and what transformers expects around it."""

    example: str  # an accepted shorthand, shown in every error about this kind
    required: frozenset = frozenset()
    optional: frozenset = frozenset()
    needs_original: bool = False  # transformers reads original_max_position_embeddings
    stretches_config: bool = True  # config.max_position_embeddings becomes the scaled window
    check: Callable | None = None  # constraints between keys
    # The rotation depends on the prompt's length (dynamic NTK grows its base past the native
    # window): such a kind needs one base per prompt length (compat.fixed_ntk_base) and differs
    # from engines that hold the base fixed.
    depends_on_prompt_length: bool = False


KINDS: dict[str, RopeKind] = {
    "default": RopeKind("none", stretches_config=False),
    "linear": RopeKind("linear:4", required=frozenset({"factor"})),
    # Dynamic NTK reads max_position_embeddings as the native length in its base formula.
    "dynamic": RopeKind(
        "dynamic:2", required=frozenset({"factor"}), stretches_config=False, depends_on_prompt_length=True
    ),
    "yarn": RopeKind(
        "yarn:4:orig=4096",
        required=frozenset({"factor"}),
        optional=frozenset(
            {ORIGINAL, "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"}
        ),
        needs_original=True,
        check=_check_yarn,
    ),
    "llama3": RopeKind(
        "llama3:8:low=1:high=4:orig=8192",
        required=frozenset({"factor", "low_freq_factor", "high_freq_factor"}),
        optional=frozenset({ORIGINAL}),
        needs_original=True,
        check=_check_llama3,
    ),
    "longrope": RopeKind(
        "longrope:4:short=1/1/1.2:long=2/3/4",
        required=frozenset({"factor", "short_factor", "long_factor"}),
        optional=frozenset({ORIGINAL, "attention_factor"}),
        needs_original=True,
        depends_on_prompt_length=True,  # short_factor up to the native window, long_factor past it
    ),
}


def depends_on_prompt_length(rope_type) -> bool:
    """True when ``rope_type`` (a rotary module's, or a spec's) rotates by the prompt's length (KINDS)."""
    kind = KINDS.get(str(rope_type).lower()) if rope_type else None
    return bool(kind and kind.depends_on_prompt_length)


def _failer(given, example, arg="rope_scaling"):
    def fail(problem):
        raise LongCtxError(f"{arg}={given!r}: {problem}. Write it like {arg}={example} ({FORMS}).")

    return fail


def _read_dict_literal(text, fail):
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        fail(
            "this is not a complete dict (lm-eval 0.4.13 cuts key=value model args at every comma); "
            "use the shorthand, give the dict as its own space-separated --model_args argument, "
            "or pass the whole --model_args as JSON"
        )
    if not isinstance(value, dict):
        fail("expected a dict")
    return value


def _read_shorthand(text, given, arg="rope_scaling"):
    if text.lower() in ("none", "default"):
        return {"rope_type": "default"}
    kind, *fields = re.split(r"[:;]", text)
    fail = _failer(given, KINDS.get(kind.strip().lower(), KINDS["dynamic"]).example, arg)
    params = {"rope_type": kind.strip()}
    for position, item in enumerate(fields):
        key, sep, value = item.partition("=")
        if sep:
            key = key.strip()
        elif position == 0:
            key, value = "factor", item  # KIND:FACTOR
        else:
            fail(f"{item!r} is not key=value")
        if key in params or ALIASES.get(key) in params:
            fail(f"{key} is given twice")
        params[key] = value.strip()
    return params


def parse_rope_scaling(value, arg: str = "rope_scaling") -> dict | None:
    """Return the scaling asked for as a transformers-style dict, or None to keep the checkpoint's.

    Raises LongCtxError, naming the value and an accepted form, for an unknown kind, a missing
    or unknown key, or a value of the wrong type or sign. ``arg`` is the name the user typed
    (``rope_scaling`` for hf-longctx, ``server_rope`` for a served model's recorded setting).
    """
    if value is None:
        return None
    fail = _failer(value, "dynamic:2", arg)
    if isinstance(value, Mapping):
        params = dict(value)
    elif isinstance(value, str) and value.strip().startswith("{"):
        params = _read_dict_literal(value.strip(), fail)
    elif isinstance(value, str) and value.strip():
        params = _read_shorthand(value.strip(), value, arg)
    else:
        fail("give a kind and a factor")
    return _normalise(params, value, arg)


def _normalise(params, given, arg="rope_scaling"):
    fail = _failer(given, "dynamic:2", arg)
    named = {}
    for key, value in params.items():
        canonical = ALIASES.get(key, key)
        if canonical in named and named[canonical] != value:
            fail(f"{key} and {canonical} disagree")
        named[canonical] = value
    kind_name = str(named.pop("rope_type", "")).strip().lower()
    kind_name = "default" if kind_name == "none" else kind_name
    if not kind_name:
        fail("no kind given (rope_type)")
    kind = KINDS.get(kind_name)
    if kind is None:
        fail(f"unknown kind {kind_name!r}; known kinds: {', '.join(sorted(KINDS))}")
    fail = _failer(given, kind.example, arg)
    theta = named.pop("rope_theta", None)
    unknown = set(named) - kind.required - kind.optional
    if unknown:
        accepted = ", ".join(sorted(kind.required | kind.optional)) or "nothing"
        fail(f"{kind_name} does not take {', '.join(sorted(unknown))} (it takes {accepted})")
    missing = kind.required - set(named)
    if missing:
        fail(f"{kind_name} needs {', '.join(sorted(missing))}")
    spec = {"rope_type": kind_name}
    spec.update({key: VALUE_READERS[key](key, value, fail) for key, value in named.items()})
    _check_factor(kind_name, spec, fail)
    if kind.check:
        kind.check(spec, fail)
    if theta is not None:
        spec["rope_theta"] = parse_rope_theta(theta)
    return spec


# The longest window a setting may give (native x factor): past it a factor is a typo, not a
# context length (16M tokens; the tasks' own guard stops at 1,048,576 tokens a prompt).
MAX_WINDOW = 2**24


def _check_factor(kind_name: str, spec: dict, fail) -> None:
    """Refuse a factor that shrinks the window, warn about one that changes nothing."""
    factor = spec.get("factor")
    if factor is None or kind_name == "default":
        return
    if factor < 1:
        fail(
            f"factor {factor:g} < 1 shrinks the context window to {factor:g} of the native one instead of "
            "extending it; give the factor by which to extend it (>= 1)"
        )
    if factor == 1:
        logger.warning(
            "rope_scaling %s with factor 1 extends nothing (the window stays native); "
            "rope_scaling=none says the same, a factor > 1 extends it.", kind_name
        )


def parse_rope_theta(value) -> float | None:
    """Return the rope_theta override as a float > 0, or None when none is given."""
    if value is None:
        return None
    try:
        theta = _number(value)
    except (TypeError, ValueError):
        theta = float("nan")
    if not (theta > 0 and math.isfinite(theta)):
        raise LongCtxError(f"rope_theta={value!r}: must be a number > 0. Write it like rope_theta=500000.")
    return theta


def parse_rope_args(rope_scaling=None, rope_theta=None) -> tuple[dict | None, float | None]:
    """Return (scaling spec, theta override) from the two model args, reconciling a theta in the spec."""
    spec = parse_rope_scaling(rope_scaling)
    theta = parse_rope_theta(rope_theta)
    inner = spec.pop("rope_theta", None) if spec else None
    if inner is not None and theta is not None and inner != theta:
        raise LongCtxError(
            f"rope_theta={rope_theta!r} disagrees with rope_theta={inner:g} inside rope_scaling={rope_scaling!r}; "
            "give it once, e.g. rope_theta=500000."
        )
    return spec, theta if theta is not None else inner

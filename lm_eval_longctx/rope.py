"""RoPE scaling as a user types it, checked and merged into a model config (pure: no torch, no lm-eval).

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
import copy
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

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


# Merging into a config. Inputs and outputs are plain dicts (``config.to_dict()``), so both
# transformers shapes are testable whichever one is installed.


@dataclass(frozen=True)
class RopeSetup:
    """What merging gave: attributes to set on the config, and the windows they imply."""

    config_updates: dict = field(default_factory=dict)
    rope_parameters: dict | None = None  # 5.x-style view, rope_theta inside
    native_window: int | None = None
    effective_window: int | None = None


def rope_parameters_of(config: Mapping) -> dict | None:
    """Return the config's RoPE settings as one 5.x-style dict (rope_theta inside), or None."""
    if config.get("rope_parameters") is not None:  # transformers 5.x
        return dict(config["rope_parameters"])
    scaling, theta = config.get("rope_scaling"), config.get("rope_theta")
    if scaling is None and theta is None:
        return None  # not a RoPE model (or its RoPE lives in a sub-config)
    params = {ALIASES.get(k, k): v for k, v in (scaling or {"rope_type": "default"}).items()}
    return {**params, "rope_theta": theta if theta is not None else DEFAULT_THETA}


def _native_window(config, current, spec):
    for candidate in (spec.get(ORIGINAL), config.get(ORIGINAL), (current or {}).get(ORIGINAL)):
        if candidate:
            return int(candidate)
    return config.get("max_position_embeddings")


def _check_against_model(config, spec, fail):
    if spec["rope_type"] != "longrope":
        return
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    pairs = int(head_dim * config.get("partial_rotary_factor", 1.0)) // 2
    for key in ("short_factor", "long_factor"):
        if len(spec[key]) != pairs:
            fail(f"{key} has {len(spec[key])} numbers; this model's rotary dimension needs {pairs}")


def layout_read_by(transformers_version: str) -> str:
    """Return the config key a transformers version reads RoPE from: rope_parameters from 5.0, rope_scaling before."""
    return "rope_parameters" if int(transformers_version.split(".")[0]) >= 5 else "rope_scaling"


def merge_rope(
    config: Mapping, scaling: dict | None = None, theta: float | None = None, reads: str | None = None
) -> RopeSetup:
    """Return the config updates that apply ``scaling`` and ``theta``, and the windows they give.

    The model's own ``rope_theta`` (and partial rotary factor) is kept unless ``theta`` overrides
    it; ``original_max_position_embeddings`` is filled where the kind needs it. With neither
    argument nothing changes and the effective window is the config's max_position_embeddings.
    ``reads`` is the layout the installed transformers reads (``layout_read_by``; left out, the
    config's own). A config saved by 5.x read by 4.x, which ignores ``rope_parameters`` and would
    run with its default rope_theta, gets 4.x's layout written too, even with neither argument.
    (5.x converts a 4.x-saved config itself; a remote-code config keeps the layout its code reads.)
    """
    current = rope_parameters_of(config)
    max_positions = config.get("max_position_embeddings")
    own = _layout_of(config)
    layouts = [own, reads] if own == "rope_parameters" and reads == "rope_scaling" else [own]
    if scaling is None and theta is None:
        if len(layouts) == 1 or not _scalable(current):
            return RopeSetup({}, current, _native_window(config, current, {}), max_positions)
        translated = LAYOUTS[reads](config, current, {})  # the checkpoint's own settings, as 4.x reads them
        return RopeSetup(translated, current, _native_window(config, current, {}), max_positions)
    given = f"rope_theta={theta!r}" if scaling is None else f"rope_scaling={scaling!r}"
    if not _scalable(current):
        why = "has no RoPE settings" if current is None else "keeps one RoPE setting per layer type"
        raise LongCtxError(
            f"{given}: this model's config {why}, which hf-longctx cannot scale. Leave rope_scaling and "
            "rope_theta out for it (e.g. --model_args pretrained=gpt2), or pick a Llama-style RoPE model."
        )
    theta = theta if theta is not None else current.get("rope_theta", DEFAULT_THETA)
    kept = {key: current[key] for key in MODEL_KEYS if key in current}
    if scaling is None:  # only the base changes; the checkpoint's own scaling and window stay
        new = {**current, "rope_theta": theta}
        return RopeSetup(_updates(layouts, config, new, {}), new, _native_window(config, current, {}), max_positions)

    kind = KINDS[scaling["rope_type"]]
    fail = _failer(scaling, kind.example)
    native = _native_window(config, current, scaling)
    if native is None:
        fail(f"the model's config gives no max_position_embeddings to scale; add orig=N (e.g. {kind.example})")
    new = {**kept, **scaling, "rope_theta": theta}
    if kind.needs_original:
        new[ORIGINAL] = native
    _check_against_model(config, new, fail)
    window = round(native * new.get("factor", 1.0))
    if window > MAX_WINDOW:
        fail(
            f"factor {new['factor']:g} x the native window of {native} tokens gives a window of {window:,} tokens, "
            f"past the {MAX_WINDOW:,} any run could use; give the factor that reaches the length you test "
            f"(e.g. {max(2, round(131072 / native))} for 131072 tokens)"
        )
    stretched = {"max_position_embeddings": window if kind.stretches_config else native}
    return RopeSetup(_updates(layouts, config, new, stretched), new, native, window)


def _updates_v5(config, new, extra):
    """transformers 5.x: everything in ``rope_parameters``, rope_theta inside."""
    updates = {"rope_parameters": new, **extra}
    if config.get(ORIGINAL) is not None and ORIGINAL in new:
        # 5.x copies a top-level original_max_position_embeddings (Phi-3 style) over the nested one.
        updates[ORIGINAL] = new[ORIGINAL]
    return updates


def _updates_v4(config, new, extra):
    """transformers 4.4x: ``rope_scaling`` (None for no scaling) plus a top-level ``rope_theta``."""
    scaling = {key: value for key, value in new.items() if key != "rope_theta"}
    kind = scaling.get("rope_type", "default")
    # "type" too: remote-code models of that era read rope_scaling["type"].
    scaling = None if kind == "default" else {**scaling, "type": kind}
    updates = {"rope_scaling": scaling, "rope_theta": new["rope_theta"], **extra}
    if ORIGINAL in new and (kind == "longrope" or config.get(ORIGINAL) is not None):
        # 4.4x longrope reads the top-level attribute, not the one inside rope_scaling.
        updates[ORIGINAL] = new[ORIGINAL]
    return updates


LAYOUTS = {"rope_parameters": _updates_v5, "rope_scaling": _updates_v4}


def _layout_of(config):
    return "rope_parameters" if config.get("rope_parameters") is not None else "rope_scaling"


def _scalable(current):
    # None: no RoPE; neither key: one setting per layer type (Gemma 3 style), which we do not scale.
    return current is not None and ("rope_type" in current or "rope_theta" in current)


def _updates(layouts, config, new, extra):
    updates = {}
    for layout in layouts:
        updates.update(LAYOUTS[layout](config, new, extra))
    return updates


# Every config attribute a RopeSetup's updates may set (both layouts): what a new setting resets.
CONFIG_KEYS = ("rope_parameters", "rope_scaling", "rope_theta", "max_position_embeddings", ORIGINAL)


def put_on_config(config, checkpoint: Mapping, setup: RopeSetup) -> None:
    """Write ``setup`` onto a config object the way a fresh load gets it: each of ``CONFIG_KEYS``
    back to the checkpoint's own value (``checkpoint`` is its ``to_dict()`` as loaded; a key it
    lacks is removed), then the setup's updates. Nothing of a setting put on before stays."""
    for key in CONFIG_KEYS:
        if key in checkpoint:
            setattr(config, key, copy.deepcopy(checkpoint[key]))
        elif key in vars(config):
            delattr(config, key)
    for key, value in setup.config_updates.items():
        setattr(config, key, copy.deepcopy(value))

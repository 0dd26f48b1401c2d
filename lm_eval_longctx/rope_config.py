"""A checked RoPE setting (``rope.parse_rope_args``) merged into a model config: the updates to
put on it, for transformers 5.x (``rope_parameters``) and 4.x (``rope_scaling`` and a top-level
``rope_theta``), and the windows they give. Inputs and outputs are plain dicts
(``config.to_dict()``), so both transformers shapes are testable whichever one is installed.
Pure: no torch, no lm-eval.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.rope import ALIASES, DEFAULT_THETA, KINDS, MAX_WINDOW, MODEL_KEYS, ORIGINAL, _failer


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

"""Where a run came from: its model, its RoPE setting and windows, from ``config.longctx``
(hf-longctx), the checkpoint's ``config.json`` (stock hf) or ``longctx_served`` (served models)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lm_eval_longctx import rope_config
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.catalog import TASKS

# The model arguments that set RoPE (hf-longctx's, as rope.parse_rope_args takes them): runs whose
# other arguments agree are one model under different RoPE settings.
ROPE_ARGS = ("rope_scaling", "rope_theta")
# Set per setting and shown in the comparison's window column, so not part of the model's setup:
# the papers' table runs `none` with max_length past its window beside the scaled settings.
WINDOW_ARGS = (*ROPE_ARGS, "max_length")
UNKNOWN_ROPE = (2,)  # rope_order of a setting nobody recorded: after every known one


@dataclass(frozen=True)
class Provenance:
    """Where a run's RoPE setting and windows came from."""

    rope: str  # in words: "linear x2", "none (stock hf)"
    rope_order: tuple
    native_window: int | None
    native_window_source: str
    max_length: int | None
    effective_window: int | None


def model_args(config: Mapping) -> dict:
    """Return ``--model_args`` as a dict (lm-eval stores a dict, or the string as typed)."""
    args = config.get("model_args") or {}
    if isinstance(args, str):
        return dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    return dict(args)


def model_label(config: Mapping, served: Mapping | None = None) -> str:
    """Return the model's short name: the last part of ``pretrained`` (a served model: its name
    as sent to the server, and the server's address)."""
    if served is not None:
        name = served.get("model") or Path(str(served.get("tokenizer") or "model").rstrip("/")).name
        host = str(served.get("base_url", "")).split("//", 1)[-1].split("/", 1)[0]
        return f"{Path(str(name).rstrip('/')).name} @ {host}"
    pretrained = model_args(config).get("pretrained")
    if not isinstance(pretrained, str) or not pretrained:
        return str(config.get("model") or "unknown model")
    return Path(pretrained.rstrip("/")).name


def rope_label(rope_parameters: Mapping | None, rope_theta_override=None) -> str:
    """Return a RoPE setting in words: ``none``, ``linear x2``, ``yarn x4 theta=500000``."""
    params = rope_parameters or {}
    kind = params.get("rope_type") or params.get("type") or "default"
    label = "none" if kind == "default" else f"{kind} x{float(params.get('factor', 1)):g}"
    if rope_theta_override is not None:
        label += f" theta={float(rope_theta_override):g}"
    return label


def rope_order(rope_parameters: Mapping | None, rope_theta_override=None) -> tuple:
    """Return a sort key for a RoPE setting: no scaling first, then by kind, factor and theta."""
    params = rope_parameters or {}
    kind = params.get("rope_type") or params.get("type") or "default"
    theta = float(rope_theta_override) if rope_theta_override is not None else 0.0
    if kind == "default":
        return (0 if rope_theta_override is None else 1, "none", 1.0, theta)
    return (1, str(kind), float(params.get("factor", 1)), theta)


def model_setup(config: Mapping) -> str:
    """Return the lm-eval model and its arguments apart from RoPE and max_length: ``hf-longctx pretrained=/m,dtype=float32``."""
    args = {key: value for key, value in model_args(config).items() if key not in WINDOW_ARGS}
    listed = ",".join(f"{key}={value}" for key, value in sorted(args.items()))
    return f"{config.get('model') or 'unknown model'} {listed}".strip()


def _checkpoint_config(config: Mapping) -> dict | None:
    pretrained = model_args(config).get("pretrained")
    path = Path(pretrained) / "config.json" if isinstance(pretrained, str) else None
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else None
    except (OSError, ValueError):
        return None


def served_record(results: Mapping) -> dict | None:
    """Return what served the model (``longctx_served`` in a longctx task's metadata), if served."""
    for task, task_config in (results.get("configs") or {}).items():
        if task in TASKS and isinstance(task_config, Mapping):
            record = (task_config.get("metadata") or {}).get("longctx_served")
            if isinstance(record, Mapping):
                return {**record, "tokenizer": (task_config.get("metadata") or {}).get("tokenizer")}
    return None


def _served_provenance(record: Mapping) -> Provenance:
    """Provenance of a served run: the server's RoPE as the user recorded it (server_rope).

    Its effective window is unknown: it is the server's context size, which lm-eval does not record.
    """
    if record.get("server_rope_parameters") is not None:
        label = f"{rope_label(record['server_rope_parameters'])} (served)"
        order = rope_order(record["server_rope_parameters"])
    else:
        label, order = "as set on the server, not recorded (served)", UNKNOWN_ROPE
    tokenizer = record.get("tokenizer")
    checkpoint = _checkpoint_config({"model_args": {"pretrained": tokenizer}}) if isinstance(tokenizer, str) else None
    if checkpoint:
        try:
            native = rope_config.merge_rope(checkpoint).native_window
        except LongCtxError:
            native = None
        if native:
            return Provenance(label, order, native, "the served model's config.json (tokenizer folder)", None, None)
    return Provenance(label, order, None, "unknown (served; no config.json beside the tokenizer)", None, None)


def provenance(results: Mapping) -> Provenance:
    """Return the run's RoPE setting, its windows, and where the native window came from."""
    config = results.get("config") or {}
    record = served_record(results)
    if record is not None:
        return _served_provenance(record)
    longctx = config.get("longctx")
    if isinstance(longctx, Mapping):  # written by --model hf-longctx
        theta = (longctx.get("rope_args") or {}).get("rope_theta")
        params = longctx.get("rope_parameters")
        return Provenance(
            rope_label(params, theta), rope_order(params, theta), longctx.get("native_window"), "hf-longctx provenance",
            longctx.get("max_length"), longctx.get("effective_window") or longctx.get("max_length"),
        )
    # Stock hf: no scaling of ours; the checkpoint's own RoPE and window, when its config is readable.
    max_length = results.get("max_length")
    checkpoint = _checkpoint_config(config) or {}
    try:
        setup = rope_config.merge_rope(checkpoint)
    except LongCtxError:
        setup = rope_config.RopeSetup()
    label = rope_label(setup.rope_parameters)
    label = f"{label} (stock hf)" if label == "none" else f"{label} (checkpoint, stock hf)"
    order = rope_order(setup.rope_parameters)
    native = setup.native_window or checkpoint.get("n_positions") or checkpoint.get("n_ctx")
    if native:  # stock hf takes max_length tokens (from max_position_embeddings unless given)
        return Provenance(label, order, native, "the checkpoint's config.json", max_length, max_length)
    if max_length:
        source = "lm-eval's max_length (checkpoint config not readable)"
        return Provenance(label, order, int(max_length), source, max_length, max_length)
    source = "unknown (no hf-longctx provenance, checkpoint config not readable)"
    return Provenance(label, order, None, source, None, None)

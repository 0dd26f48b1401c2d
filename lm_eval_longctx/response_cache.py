"""What keys lm-eval's response cache (``--use_cache PATH``): the model setting, not only the request.

lm-eval 0.4.13 keys each cached answer on the request alone (the prompt and its generation
settings), so a second run with the same ``PATH`` and another RoPE setting, ``max_length``,
dtype, attention kernel or model got the first run's answers back. ``setting_of`` describes
everything that decides what a model answers; ``compat.lmeval_cache.key_response_cache`` keeps the
answers of each setting in their own table of the cache file (``table_name``), so another
setting finds none of them and the same setting finds all of them again. ``AnswerStore`` never
keeps a beyond-window marker: whether a prompt fits is the run's own question (another
``max_length`` can run it), and marking costs nothing to redo.

The setting is, JSON-encoded and hashed:
* the model as named (``hf``, ``hf-longctx``, a class name) and its arguments as given, less
  those that only place it (``batch_size``, ``max_batch_size``, ``device``, ``parallelize``, ...);
* what each local path among those arguments holds (every file's name, size and modification
  time: a model folder written again, a new adapter), and the hub commit of a downloaded model;
* for lm-eval's HF models (``hf``, ``hf-longctx``): the loaded model's config (architecture,
  ``rope_parameters``/``rope_theta``, what a checkpoint ships), its attention kernel, dtype,
  ``max_length``, the device type (CPU and GPU numbers differ) and the torch and transformers
  versions; for any other model, what its ``longctx_cache_setting()`` returns, if it has one.
A model handed to lm-eval as a built object whose weights came from no path cannot be told
from another such model: ``--use_cache`` is refused for it (``refuse_unidentifiable``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.window import BEYOND_WINDOW

# Model arguments that place the same computation somewhere (or size its batches), or say how a
# client waits for a server (lm-eval's API models), without changing the answer it gives.
PLACEMENT_ARGS = frozenset(
    {"batch_size", "max_batch_size", "device", "parallelize", "device_map", "max_memory_per_gpu",
     "max_cpu_memory", "offload_folder", "timeout", "max_retries", "num_concurrent"}
)  # fmt: skip


def _path_identity(value: str) -> list | None:
    """Return (name, size, mtime_ns) of the file ``value`` names, or of each file in the folder
    it names (one level), else None."""
    path = Path(value).expanduser()
    try:
        if path.is_file():
            stat = path.stat()
            return [[path.name, stat.st_size, stat.st_mtime_ns]]
        if path.is_dir():
            return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.iterdir()) if f.is_file()]
    except OSError:
        return None
    return None


def _hf_state(lm) -> dict:
    """Return what an lm-eval HF model (HFLM or a subclass) computes with, read from the loaded model."""
    import torch
    import transformers

    model = lm.model
    config = model.config
    return {
        "config": config.to_dict(),
        "commit": getattr(config, "_commit_hash", None),
        "attn_implementation": getattr(config, "_attn_implementation", None),
        "dtype": str(getattr(model, "dtype", None)),
        "max_length": lm.max_length,
        "device_type": getattr(lm.device, "type", str(lm.device)),
        "add_bos_token": getattr(lm, "add_bos_token", None),
        "weights": _path_identity(getattr(model, "name_or_path", "") or ""),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }


def _is_hf(lm) -> bool:
    return any(cls.__name__ == "HFLM" and cls.__module__.startswith("lm_eval.") for cls in type(lm).__mro__)


def refuse_unidentifiable(lm, cache_db: str) -> None:
    """Refuse a response cache for an HF model built from an object (its weights have no name)."""
    if _is_hf(lm) and not isinstance(getattr(lm, "pretrained", None), str):
        raise LongCtxError(
            f"--use_cache {cache_db.rsplit('_rank', 1)[0]}: the model was given as a built object, whose weights the "
            "response cache cannot tell from another model's, so a later run could get this one's answers. Pass the "
            "model as pretrained=PATH (a folder or hub name), or leave --use_cache out."
        )


def setting_of(lm, model, model_args: dict) -> dict:
    """Return what decides the answers of ``lm``, built by lm-eval from ``model`` and ``model_args``."""
    args = {key: value for key, value in sorted(model_args.items()) if key not in PLACEMENT_ARGS}
    setting = {
        "model": model if isinstance(model, str) else f"{type(lm).__module__}.{type(lm).__qualname__}",
        "model_args": args,
        "paths": {key: _path_identity(value) for key, value in args.items() if isinstance(value, str) and _path_identity(value)},
    }
    if _is_hf(lm):
        setting["state"] = _hf_state(lm)
    elif callable(getattr(lm, "longctx_cache_setting", None)):
        setting["state"] = lm.longctx_cache_setting()
    return setting


def table_name(setting: dict) -> str:
    """Return the table of the cache file that holds the answers of ``setting``."""
    digest = hashlib.sha256(json.dumps(setting, sort_keys=True, default=str).encode()).hexdigest()
    return f"longctx_{digest[:32]}"


class AnswerStore:
    """The mapping lm-eval's CachingLM and CacheHook read and write (``in``, ``[]``, ``[]=``,
    ``commit``), over one setting's table; a beyond-window marker is never stored nor served."""

    def __init__(self, dbdict):
        self.dbdict = dbdict

    def __contains__(self, key) -> bool:
        try:
            return self.dbdict[key] != BEYOND_WINDOW
        except KeyError:
            return False

    def __getitem__(self, key):
        value = self.dbdict[key]
        if value == BEYOND_WINDOW:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value) -> None:
        if value != BEYOND_WINDOW:
            self.dbdict[key] = value

    def commit(self, *args, **kwargs):
        return self.dbdict.commit(*args, **kwargs)

    def close(self, *args, **kwargs):
        return self.dbdict.close(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.dbdict)


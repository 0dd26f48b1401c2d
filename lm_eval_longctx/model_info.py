"""``config.longctx``: the settings an ``hf-longctx`` run actually used, for its results file.

lm-eval merges a model's ``get_model_info()`` into ``results["config"]``; ``HFLongCtxLM`` adds
``longctx_info`` there: the effective RoPE parameters, the RoPE arguments as typed, native and
effective window, max_length, attention implementation, dtype, device, the beyond-window count,
package versions and, on CUDA, the peak memory of every GPU the model spans.
"""

from __future__ import annotations

import importlib.metadata

import torch

from lm_eval_longctx import rope_config

DYNAMIC_NTK = "per-request rotation from its prompt length, fixed while decoding"
VERSIONED = ("torch", "transformers", "lm_eval", "lm_eval_longctx")


def longctx_info(
    model, device, rope_args: dict, setup: rope_config.RopeSetup, max_length: int, beyond_window: int, dynamic_ntk: bool
) -> dict:
    """Return the ``longctx`` section of the results' model config for a loaded ``model``."""
    config = model.config
    info = {
        "rope_parameters": rope_config.rope_parameters_of(config.to_dict()),
        "rope_args": {k: v if v is None or isinstance(v, (str, int, float, dict)) else repr(v)
                      for k, v in rope_args.items()},  # as typed, JSON-safe
        "native_window": setup.native_window,
        "effective_window": setup.effective_window,
        "max_length": max_length,
        "dynamic_ntk": DYNAMIC_NTK if dynamic_ntk else None,
        "beyond_window_requests": beyond_window,
        "attn_implementation": getattr(config, "_attn_implementation", None),
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": str(device),
        "versions": {name: _version(name) for name in VERSIONED},
    }  # fmt: skip
    devices = cuda_devices_of(model, device) if torch.cuda.is_available() else []
    if devices:
        # Peak over the whole run (model load and every request) on every GPU the model spans
        # (several with parallelize=True), for memory reports.
        info["peak_gpu_memory_gib"] = {d: _gib(torch.cuda.max_memory_allocated(d)) for d in devices}
        info["peak_gpu_memory_reserved_gib"] = {d: _gib(torch.cuda.max_memory_reserved(d)) for d in devices}
    return info


def reset_peak_memory(model, device) -> None:
    """Zero the peak-memory counters of every GPU the model spans (a no-op off CUDA)."""
    if torch.cuda.is_available():
        for name in cuda_devices_of(model, device):
            torch.cuda.reset_peak_memory_stats(name)


def cuda_devices_of(model, device) -> list[str]:
    """Return the CUDA devices holding ``model`` (``["cuda:0", "cuda:1"]``), in index order.

    With ``parallelize=True`` accelerate's ``hf_device_map`` names them (an int is a GPU index;
    "cpu" and "disk" offload are not GPUs); otherwise the model sits on ``device``.
    """
    placed = list((getattr(model, "hf_device_map", None) or {}).values()) or [device]
    names = set()
    for where in placed:
        name = f"cuda:{where}" if isinstance(where, int) else str(where)
        if name == "cuda":
            name = f"cuda:{torch.cuda.current_device()}"
        if name.startswith("cuda:"):
            names.add(name)
    return sorted(names, key=lambda name: int(name.split(":")[1]))


def _gib(n_bytes: int) -> float:
    return round(n_bytes / 2**30, 3)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None

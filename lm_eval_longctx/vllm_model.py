"""``vllm-longctx``: lm-eval's in-process ``vllm`` model with RoPE scaling applied and no silent cut.

lm-eval's ``vllm`` model gets long-context runs wrong without saying so: vLLM has no
``rope_scaling`` argument since 0.11 (it takes ``hf_overrides``, whose ``rope_parameters``
replaces the config's whole, ``rope_theta`` included), its dynamic NTK holds one base for every
prompt, and prompts longer than ``max_model_len`` are cut from the left. Here, as in ``hf-longctx``:

* ``rope_scaling``/``rope_theta`` in every form ``hf-longctx`` takes (``lm_eval_longctx.rope``) are
  checked before anything loads, merged into the model's own config (its ``rope_theta`` kept,
  ``rope_config.merge_rope``) and handed to vLLM as ``hf_overrides`` in the layout the installed
  vLLM reads (``compat.vllm.engine_overrides``).
* ``max_model_len`` defaults to the scaled window; an explicit ``max_model_len``/``max_length`` wins.
* A generation request whose prompt plus ``max_gen_toks`` does not fit is not run: its answer is
  ``window.BEYOND_WINDOW`` with one warning; an over-long loglikelihood request raises.
* ``config.longctx`` records the RoPE parameters vLLM loaded (read back from the engine's model
  config), the windows, the vLLM version and the tensor/data parallel sizes. A ``dynamic``
  request says there, and once on stderr, that vLLM holds the base fixed, and for which length.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

from lm_eval_longctx import compat, rope, rope_config, window

# version("vllm") must answer for vLLM's CPU build before lm-eval's vllm module is imported.
compat.install_for(__name__)

from lm_eval.models.utils import normalize_gen_kwargs  # noqa: E402
from lm_eval.models.vllm_causallms import VLLM  # noqa: E402

from lm_eval_longctx.compat import vllm as vllm_compat  # noqa: E402
from lm_eval_longctx.errors import LongCtxError  # noqa: E402

logger = logging.getLogger(__name__)
MODEL_NAME = "vllm-longctx"
ROPE_KEYS = ("rope_parameters", "rope_scaling", "rope_theta")  # hf_overrides keys that set RoPE
VERSIONED = ("torch", "transformers", "lm_eval", "lm_eval_longctx")


def checkpoint_config(pretrained: str, trust_remote_code: bool = False, revision=None) -> dict:
    """Return the model's config as a dict, as vLLM reads it (a ``.gguf`` file: from its header)."""
    from transformers import AutoConfig

    path = Path(pretrained).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LongCtxError(f"pretrained={pretrained}: no such GGUF file; give the path of a .gguf file.")
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    else:
        config = AutoConfig.from_pretrained(pretrained, trust_remote_code=trust_remote_code, revision=revision)
    return config.to_dict()


def on_cpu() -> bool:
    """True when vLLM runs on its CPU platform (there CUDA graphs and torch.compile are off by default here)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class VLLMLongCtxLM(VLLM):
    """lm-eval's ``vllm`` model for long context: every ``vllm`` argument, plus these.

    ``rope_scaling``: as for ``hf-longctx`` (``KIND:FACTOR[:KEY=VALUE]...``, a dict, or ``none``),
    e.g. ``rope_scaling=yarn:2``, ``rope_scaling=dynamic:2``. ``rope_theta``: the RoPE base.
    Both become ``hf_overrides`` (give those yourself only without rope_scaling/rope_theta, and
    with ``rope_theta`` inside ``rope_parameters``). ``max_model_len`` (or ``max_length``):
    defaults to the scaled window, native x factor. ``enforce_eager``: defaults to True on vLLM's
    CPU platform. Over-long prompts are never cut: a generation request whose prompt plus
    ``max_gen_toks`` exceeds ``max_model_len`` returns ``lm_eval_longctx.window.BEYOND_WINDOW``
    (counted as ``beyond_window``); an over-long loglikelihood request raises.
    """

    marks_beyond_window = True  # window.py: the tasks let over-long prompts through to be marked

    def __init__(
        self,
        pretrained: str,
        rope_scaling=None,
        rope_theta=None,
        max_model_len: int | None = None,
        max_length: int | None = None,
        hf_overrides=None,
        enforce_eager: bool | None = None,
        truncation: bool | None = False,
        trust_remote_code: bool = False,
        revision: str | None = None,
        **kwargs,
    ) -> None:
        # Checked first: a bad argument must fail before vLLM starts.
        spec, theta = rope.parse_rope_args(rope_scaling, rope_theta)
        overrides = vllm_compat.parse_hf_overrides(hf_overrides)
        problem = vllm_compat.rope_problem({"hf_overrides": overrides}, MODEL_NAME)
        if problem:
            raise LongCtxError(problem)
        if (spec or theta) and any(key in overrides for key in ROPE_KEYS):
            raise LongCtxError(
                f"rope_scaling={rope_scaling!r}/rope_theta={rope_theta!r} and hf_overrides={overrides} both set RoPE; "
                "give one: rope_scaling=KIND:FACTOR (vllm-longctx builds the hf_overrides), or hf_overrides alone."
            )
        if truncation:
            raise LongCtxError(
                f"truncation={truncation!r}: vllm-longctx never cuts prompts; over-long ones are marked beyond the "
                "window. Leave truncation out and raise max_model_len or the RoPE factor instead."
            )
        limit = None
        for name, value in (("max_model_len", max_model_len), ("max_length", max_length)):
            from lm_eval_longctx.model_args import max_length_arg

            given = max_length_arg(value, "the scaled window (native window x RoPE factor)")
            if given is not None and limit is not None:
                raise LongCtxError(f"max_model_len={max_model_len} and max_length={max_length}: give one of them.")
            limit = given if given is not None else limit
        config = checkpoint_config(pretrained, trust_remote_code, revision)
        own = {k: v for k, v in overrides.items() if k in ROPE_KEYS or k == "max_position_embeddings"}
        setup = rope_config.merge_rope({**config, **own}, spec, theta, rope_config.layout_read_by(_transformers()))
        overrides = {**overrides, **vllm_compat.engine_overrides(setup.config_updates, setup.native_window, setup.effective_window)}
        if enforce_eager is None:
            enforce_eager = on_cpu()
        self._rope_args = {"rope_scaling": rope_scaling, "rope_theta": rope_theta}  # as typed
        self.rope_setup = setup
        self.beyond_window_count = 0
        super().__init__(
            pretrained,
            max_model_len=limit or setup.effective_window,
            trust_remote_code=trust_remote_code,
            revision=revision,
            enforce_eager=enforce_eager,
            **({"hf_overrides": overrides} if overrides else {}),
            **kwargs,
        )
        note = vllm_compat.fixed_base_note(self.loaded_rope()[0], self.loaded_rope()[1])
        if note:
            window.warn_once(note)

    def loaded_rope(self) -> tuple[dict | None, int | None]:
        """Return the RoPE parameters and max_position_embeddings vLLM's engine loaded (its model config)."""
        if self.data_parallel_size > 1:  # no engine in this process: the config the replicas build
            from vllm.engine.arg_utils import EngineArgs

            hf_config = EngineArgs(**self.model_args).create_model_config().hf_config
        else:
            hf_config = self.model.llm_engine.model_config.hf_config
        text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
        return rope_config.rope_parameters_of(text.to_dict()), getattr(text, "max_position_embeddings", None)

    def _engine_dtype(self) -> str:
        if self.data_parallel_size > 1:
            return str(self.model_args.get("dtype"))
        return str(self.model.llm_engine.model_config.dtype).removeprefix("torch.")

    # Requests: never truncate.

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        prompt_lens = [len(ids) for ids in self.tok_encode([req.args[0] for req in requests])] if requests else []
        budgets = [normalize_gen_kwargs(req.args[1], self.max_gen_toks)["max_gen_toks"] for req in requests]
        fits = [i for i, (n, budget) in enumerate(zip(prompt_lens, budgets)) if n + budget <= self.max_length]
        needed = [n + budget for n, budget in zip(prompt_lens, budgets) if n + budget > self.max_length]
        if needed:
            self.beyond_window_count += len(needed)
            shown = ", ".join(str(n) for n in sorted(set(needed))[:10]) + (", ..." if len(set(needed)) > 10 else "")
            logger.warning(
                "vllm-longctx: %d of %d generation requests do not fit the %d-token window (prompt + max_gen_toks = "
                "%s tokens); they were not run and are marked beyond the window, never cut. To run them, raise "
                "max_model_len (max_model_len=%d) or the RoPE factor (rope_scaling=KIND:FACTOR).",
                len(needed), len(requests), self.max_length, shown, max(needed),
            )  # fmt: skip
        ran = super().generate_until([requests[i] for i in fits], disable_tqdm=disable_tqdm) if fits else []
        results = [window.BEYOND_WINDOW] * len(requests)
        for i, output in zip(fits, ran):
            results[i] = output
        return results

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False):
        # lm-eval's vllm model keeps the last max_length - 1 tokens of context + continuation.
        too_long = sorted({len(c) + len(x) for _, c, x in requests if len(c) + len(x) > self.max_length - 1})
        if too_long:
            raise LongCtxError(
                f"loglikelihood inputs of {too_long[:10]} tokens exceed max_model_len={self.max_length} - 1; "
                f"vllm-longctx does not cut them. Raise max_model_len (e.g. max_model_len={too_long[-1] + 1}) or "
                "the RoPE factor (rope_scaling=KIND:FACTOR)."
            )
        return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm)

    # Provenance: lm-eval merges get_model_info() into results["config"].

    def get_model_info(self) -> dict:
        info = super().get_model_info() if hasattr(super(), "get_model_info") else {}
        loaded, max_positions = self.loaded_rope()
        info["longctx"] = {
            "engine": "vllm",
            "rope_parameters": loaded,  # read back from vLLM's model config
            "max_position_embeddings": max_positions,
            "rope_args": {k: v if v is None or isinstance(v, (str, int, float, dict)) else repr(v)
                          for k, v in self._rope_args.items()},
            "hf_overrides": self.model_args.get("hf_overrides"),
            "native_window": self.rope_setup.native_window,
            "effective_window": self.rope_setup.effective_window,
            "max_length": self.max_length,
            "dynamic_ntk": vllm_compat.fixed_base_note(loaded, max_positions),
            "beyond_window_requests": self.beyond_window_count,
            "dtype": self._engine_dtype(),
            "enforce_eager": self.model_args.get("enforce_eager"),
            "tensor_parallel_size": self.tensor_parallel_size,
            "data_parallel_size": self.data_parallel_size,
            "versions": {"vllm": _vllm_version(), **{name: _version(name) for name in VERSIONED}},
        }  # fmt: skip
        return info


def _transformers() -> str:
    import transformers

    return transformers.__version__


def _vllm_version() -> str | None:
    import vllm

    return getattr(vllm, "__version__", None)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None

"""``hf-longctx``: lm-eval's ``hf`` model with RoPE scaling applied right and no silent truncation.

lm-eval's ``hf`` model gets long-context numbers wrong without saying so: 0.4.13 cannot parse a
``rope_scaling`` dict in ``key=value`` args, transformers 5.x drops ``rope_theta`` when
``rope_scaling`` goes to ``from_pretrained``, ``max_length`` stays at the unscaled window so
prompts are cut from the left, and dynamic NTK scores depend on what ran before. Here:

* RoPE args (see ``lm_eval_longctx.rope``) are checked before anything loads, merged into the
  model's own config (its ``rope_theta`` kept) and passed as ``config=``.
* ``max_length`` defaults to the scaled window; an explicit ``max_length`` wins.
* A generation request whose prompt plus ``max_gen_toks`` does not fit is not run: its answer
  is ``BEYOND_WINDOW`` and one warning says how many, how long, and the fix. Loglikelihood
  requests that do not fit raise ``LongCtxError``, but ``longctx_ppl`` windows, which are marked
  beyond the window (``ppl_scoring``). Nothing is ever cut.
* Dynamic NTK: each request rotates with the base a fresh model picks for its prompt, kept
  fixed while it decodes (see ``fixed_ntk_base``).
* ``switch_rope`` puts another setting on the loaded model in place, equal to a fresh load of
  that setting (``lm-eval-longctx sweep`` runs every setting on one load this way). One step,
  ``_set_rope``, puts a setting on the config (before the weights load) and on the built model.
* The tasks learn that this model marks over-long prompts from ``marks_beyond_window`` through
  the evaluation it runs in (``window.evaluation``), never from module state.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from collections import defaultdict

import torch
import transformers
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import has_bos_prefix, normalize_gen_kwargs
from tqdm import tqdm

from lm_eval_longctx import compat, generation, model_args, model_info, ppl_scoring, rope, rope_config, rope_switch, window
from lm_eval_longctx.compat.transformers_rotary import fixed_ntk_base
from lm_eval_longctx.errors import LongCtxError

logger = logging.getLogger(__name__)
ROPE_LAYOUT = rope_config.layout_read_by(transformers.__version__)  # rope_parameters (5.x) or rope_scaling (4.x)


def runtime_defaults(device, dtype, attn_implementation, *, cuda: bool, flash_attn: bool):
    """Return (device, dtype, attn_implementation) with what the user left out filled in."""
    on_gpu = cuda and str(device or "cuda").startswith("cuda")
    if not device or (str(device).startswith("cuda") and not cuda):
        # lm-eval's CLI passes cuda:0 even when no GPU is there; HFLM then falls back to the CPU.
        device = "cuda" if on_gpu else "cpu"
    dtype = dtype or ("bfloat16" if on_gpu else "float32")
    if attn_implementation is None:
        half = str(dtype).removeprefix("torch.") in ("bfloat16", "float16")
        attn_implementation = "flash_attention_2" if on_gpu and half and flash_attn else "sdpa"
    return device, dtype, attn_implementation


class HFLongCtxLM(HFLM):
    """lm-eval's ``hf`` model for long context: every ``hf`` argument, plus these.

    ``rope_scaling``: ``KIND:FACTOR[:KEY=VALUE]...`` with KIND one of linear, dynamic, yarn,
    llama3, longrope, e.g. ``rope_scaling=dynamic:2``, ``rope_scaling=yarn:4:orig=4096``,
    ``rope_scaling=llama3:8:low=1:high=4:orig=8192``, ``rope_scaling=longrope:4:short=1/1.2:long=2/4``.
    Fields split on ``:`` (or ``;``); KEY is a transformers name or an alias (``orig``, ``low``,
    ``high``, ``attn``, ``short``, ``long``); lists join numbers with ``/``. Also a dict:
    ``{"rope_type": "dynamic", "factor": 2.0}`` (``type`` accepted) from JSON ``--model_args``
    or as its own space-separated ``--model_args`` argument. ``none`` drops any scaling the
    checkpoint ships; leaving it out keeps the checkpoint's. ``original_max_position_embeddings``
    defaults to the model's native window.
    ``rope_theta``: override the RoPE base, e.g. ``rope_theta=500000``.
    ``max_length``: defaults to the scaled window, native x factor (native is the config's
    ``original_max_position_embeddings``, else ``max_position_embeddings``).
    Defaults on CUDA: ``device=cuda``, ``dtype=bfloat16``, ``attn_implementation`` flash_attention_2
    when flash_attn is installed, else sdpa; on CPU float32 and sdpa.

    Over-long prompts are never cut: a generation request whose prompt plus ``max_gen_toks``
    exceeds ``max_length`` returns ``lm_eval_longctx.window.BEYOND_WINDOW`` (the tasks count it
    as ``beyond_window``) with one warning per call; an over-long loglikelihood request raises.
    Generation batches hold prompts of one token length (no padding). With dynamic NTK each
    request rotates with the base a fresh model picks for its prompt length (prompt only, not
    the generated tokens), kept fixed while it decodes, whatever ran before or beside it.
    The results file gets ``config.longctx``: effective RoPE parameters, native and effective
    window, max_length, attention implementation, dtype, device, beyond-window count, versions.
    """

    marks_beyond_window = True  # window.py: the tasks let over-long prompts through to be marked

    def __init__(
        self,
        pretrained,
        rope_scaling=None,
        rope_theta=None,
        max_length: int | None = None,
        device: str | None = None,
        dtype=None,
        attn_implementation: str | None = None,
        truncation: bool | None = False,
        **kwargs,
    ) -> None:
        # Checked first: a bad argument must fail before any download or weight load.
        pretrained, max_length = model_args.check(pretrained, max_length, device, dtype, attn_implementation, kwargs)
        spec, theta = rope.parse_rope_args(rope_scaling, rope_theta)
        if truncation:
            raise LongCtxError(
                f"truncation={truncation!r}: hf-longctx never cuts prompts; over-long ones are marked "
                "beyond the window. Leave truncation out and raise max_length or the RoPE factor instead."
            )
        if not isinstance(pretrained, str) and (spec or theta):
            raise LongCtxError(
                "rope_scaling/rope_theta need pretrained as a path or hub name (got a built model, whose "
                "rotary frequencies are already fixed); e.g. pretrained=HuggingFaceTB/SmolLM2-135M."
            )
        device, dtype, attn_implementation = runtime_defaults(
            device,
            dtype,
            attn_implementation,
            cuda=torch.cuda.is_available(),
            flash_attn=importlib.util.find_spec("flash_attn") is not None,
        )
        self._rope_args = {"rope_scaling": rope_scaling, "rope_theta": rope_theta}  # as typed
        self._checkpoint_config = None  # the config as loaded, before any setting: set by _get_config
        self._derived = None  # rope_switch.DerivedState of the setting on the built model, once switched
        self.rope_setup = None  # the setting's windows: set by _set_rope only
        self._start_evaluation()
        # HFLM reads the config (_get_config puts the RoPE setting on it), then builds the model from it.
        super().__init__(
            pretrained,
            max_length=max_length,  # HFLM keeps it as _max_length: an explicit value wins (max_length below)
            device=device,
            dtype=dtype,
            attn_implementation=attn_implementation,
            **kwargs,
        )
        if not isinstance(pretrained, str):  # a built model: HFLM read no config; record its own RoPE
            self._set_rope(None, None)

    # RoPE: one step (_set_rope) puts a setting on the config before the model is built, and on the
    # built model when a sweep switches settings in place.

    def _get_config(self, pretrained, **kwargs) -> None:
        super()._get_config(pretrained, **kwargs)
        self._checkpoint_config = self._config.to_dict()  # what every setting is merged into
        # transformers computes rotary frequencies once, at init: the config must hold the setting before.
        self._set_rope(**self._rope_args)

    def _create_model(self, pretrained, **kwargs) -> None:
        # config= carries the merged RoPE; rope_scaling= to from_pretrained loses rope_theta on 5.x.
        super()._create_model(pretrained, config=self._config, **kwargs)

    def _set_rope(self, rope_scaling, rope_theta) -> None:
        """Put a RoPE setting on the config and, once the model is built, on the model, as a fresh
        load with these model args has it; set ``rope_setup`` (the windows). Raises LongCtxError,
        changing nothing, when the setting does not fit this model or cannot be put on it in place."""
        spec, theta = rope.parse_rope_args(rope_scaling, rope_theta)
        if self._checkpoint_config is None:  # a built model: its rotary frequencies are fixed as they are
            setup = rope_config.merge_rope(self._config.to_dict())
        else:
            setup = rope_config.merge_rope(self._checkpoint_config, spec, theta, ROPE_LAYOUT)
            if hasattr(self, "_model"):
                self._put_rope_on_model(setup)
            rope_config.put_on_config(self._config, self._checkpoint_config, setup)
        self.rope_setup = setup
        self._rope_args = {"rope_scaling": rope_scaling, "rope_theta": rope_theta}

    def _put_rope_on_model(self, setup: rope_config.RopeSetup) -> None:
        model = self.model
        config = copy.deepcopy(model.config)
        rope_config.put_on_config(config, self._checkpoint_config, setup)
        after = rope_switch.DerivedState.of(type(model), config)  # what a fresh load of this setting derives
        before = self._derived or rope_switch.DerivedState.of(type(model), model.config)
        problem = after.problem_with(model)
        if problem:
            raise LongCtxError(
                f"the loaded {type(model).__name__} cannot switch RoPE settings in place: {problem}. Run each "
                "setting as its own lm_eval --model hf-longctx run."
            )
        rope_config.put_on_config(model.config, self._checkpoint_config, setup)
        after.put_on(model, before)
        self._derived = after

    def switch_rope(self, rope_scaling=None, rope_theta=None) -> None:
        """Put another RoPE setting on the loaded model in place.

        Afterwards the model computes, and reports (``max_length``, ``config.longctx``), exactly what
        ``HFLongCtxLM`` loaded with these ``rope_scaling``/``rope_theta`` and the same other arguments
        would, and this evaluation's counters start at zero. Raises LongCtxError, changing nothing,
        for a setting that does not fit the model, and for a model that cannot match a fresh load in
        place (one given as a built object; one whose modules differ from what its class builds).
        """
        if self._checkpoint_config is None:
            raise LongCtxError(
                "switching RoPE in place needs the model loaded by hf-longctx from pretrained=PATH (it was "
                "given as a built model, so there is no checkpoint config to put another setting on)."
            )
        self._set_rope(rope_scaling, rope_theta)
        self._start_evaluation()

    def _start_evaluation(self) -> None:
        """Zero what one evaluation counts or tunes: beyond-window requests, batch sizes, peak memory."""
        self.beyond_window_count = 0
        self._auto_batch_size = None
        self.batch_sizes = {}  # HFLM's batch_size=auto schedule
        if hasattr(self, "_model"):
            model_info.reset_peak_memory(self.model, self.device)

    @property
    def max_length(self) -> int:
        # An explicit max_length (HFLM's _max_length) wins; else the scaled window of the setting.
        window = self.rope_setup.effective_window if self.rope_setup else None
        return getattr(self, "_max_length", None) or window or super().max_length

    @property
    def dynamic_ntk(self) -> bool:
        """True when a rotary module of the model grows its base with the prompt (dynamic NTK)."""
        return any(rope.depends_on_prompt_length(getattr(m, "rope_type", None)) for m in self.model.modules())

    # Requests: never truncate; one dynamic-NTK base per prompt length.

    _encoded: dict = {}  # context -> token ids, filled for the length of one generate_until call

    def _prompt_len(self, context: str) -> int:
        return len(self._encode_once([context])[0])

    def tok_batch_encode(self, strings, padding_side="left", left_truncate_len=None, truncation=False):
        # Prompts that do not fit were set aside before batching; the rest are never cut.
        encoded = [self._encoded.get(s) for s in strings]
        if encoded and all(e is not None for e in encoded) and len({len(e) for e in encoded}) == 1:
            # An equal-length batch encoded once in generate_until: no padding, all ones.
            ids = torch.tensor(encoded, dtype=torch.long)
            return ids, torch.ones_like(ids)
        return super().tok_batch_encode(strings, padding_side=padding_side)

    def tok_encode(self, string, add_special_tokens=None, left_truncate_len=None, **kwargs):
        # lm-eval's generate_until encodes each context once more only to sort by length.
        if add_special_tokens is None and not left_truncate_len and string in self._encoded:
            return self._encoded[string]
        return super().tok_encode(string, add_special_tokens=add_special_tokens, left_truncate_len=left_truncate_len, **kwargs)

    def _encode_once(self, contexts: list[str]) -> list[list[int]]:
        """Encode every context once, batched (the Rust tokenizer runs in parallel), with the
        special-token rule of HFLM.tok_batch_encode: no BOS added to a text that starts with it."""
        bos = getattr(self.tokenizer, "bos_token", None)
        special = {} if self.add_bos_token is None else {"add_special_tokens": self.add_bos_token}
        starts_with_bos = [has_bos_prefix(c, bos) for c in contexts]
        with_bos = [i for i, starts in enumerate(starts_with_bos) if starts]
        plain = [i for i, starts in enumerate(starts_with_bos) if not starts]
        ids: list[list[int]] = [[] for _ in contexts]
        for indices, kwargs in ((plain, special), (with_bos, {"add_special_tokens": False})):
            if indices:
                out = self.tokenizer([contexts[i] for i in indices], return_attention_mask=False, **kwargs)
                for i, row in zip(indices, out["input_ids"]):
                    ids[i] = row
        return ids

    def _warn_beyond_window(self, needed: list[int], total: int) -> None:
        shown = ", ".join(str(n) for n in sorted(set(needed))[:10]) + (", ..." if len(set(needed)) > 10 else "")
        logger.warning(
            "hf-longctx: %d of %d generation requests do not fit the %d-token window "
            "(prompt + max_gen_toks = %s tokens); they were not run and are marked beyond the window, "
            "never cut. To run them, raise max_length (max_length=%d) or the RoPE factor (rope_scaling=KIND:FACTOR).",
            len(needed),
            total,
            self.max_length,
            shown,
            max(needed),
        )

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        contexts = [req.args[0] for req in requests]
        self._encoded = dict(zip(contexts, self._encode_once(contexts)))
        try:
            return self._generate_by_length(requests, disable_tqdm)
        finally:
            self._encoded = {}

    def _generate_by_length(self, requests, disable_tqdm: bool) -> list[str]:
        prompt_lens = [len(self._encoded[req.args[0]]) for req in requests]
        budgets = [normalize_gen_kwargs(req.args[1], self.max_gen_toks)["max_gen_toks"] for req in requests]
        fits = [i for i, (n, budget) in enumerate(zip(prompt_lens, budgets)) if n + budget <= self.max_length]
        needed = [n + budget for n, budget in zip(prompt_lens, budgets) if n + budget > self.max_length]
        if needed:
            self.beyond_window_count += len(needed)
            self._warn_beyond_window(needed, len(requests))
        pbar = tqdm(total=len(fits), disable=disable_tqdm or self.rank != 0, desc="hf-longctx")
        generate = super().generate_until

        def run(length, indices):
            self._group_shape = (length, max(budgets[i] for i in indices))  # for batch_size=auto
            with generation.reproducible_attention(self.device):
                outputs = generate([requests[i] for i in indices], disable_tqdm=True)
            pbar.update(len(indices))
            return outputs

        # Equal-length batches: no padding, so sdpa/flash run their fused causal kernels, and
        # dynamic NTK has one base per batch.
        ran = self._run_by_length(fits, [prompt_lens[i] for i in fits], run)
        pbar.close()
        results = [window.BEYOND_WINDOW] * len(requests)
        for i, output in zip(fits, ran):
            results[i] = output
        return results

    def _run_by_length(self, items: list, lengths: list[int], run) -> list:
        """Return ``run(length, group)`` for ``items`` grouped by ``lengths`` (the token count each
        is run at), longest group first (an OOM shows at once, like HFLM), each group under the
        dynamic-NTK base a fresh model picks for that length, the outputs back in ``items``' order."""
        by_length = defaultdict(list)
        for i, length in enumerate(lengths):
            by_length[length].append(i)
        results = [None] * len(items)
        for length in sorted(by_length, reverse=True):
            indices = by_length[length]
            with fixed_ntk_base(self.model, length):
                outputs = run(length, [items[i] for i in indices])
            for i, output in zip(indices, outputs):
                results[i] = output
        return results

    fast_generate = True  # False: every batch through model.generate (benchmarks compare both)

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        # Greedy batches decode in generation.greedy_generate: the tokens model.generate gives for
        # the text lm-eval keeps, without its per-step cache copy, ending once every row is settled.
        new_tokens = max_length - context.shape[1]
        blocker = generation.fast_path_blocker(self.model, self.tokenizer, generation_kwargs)
        if not self.fast_generate or blocker or new_tokens < 1:
            logger.debug("hf-longctx: model.generate for this batch (%s)", blocker or "fast path off")
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        with torch.autocast(
            device_type=self.device.type,
            dtype=self.mixed_precision_dtype,
            enabled=self.mixed_precision_dtype is not None,
        ):
            return generation.greedy_generate(
                self.model,
                context,
                max_new_tokens=new_tokens,
                stop=stop,
                tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id,
                early_stop=self.think_end_token is None,  # a stop sequence inside the thinking is no answer
            )

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        # longctx_ppl windows: one forward each, log-probs of the scored tokens only; marked, not
        # run, past max_length (ppl_scoring). Every other request as HFLM does it.
        return ppl_scoring.loglikelihood(self, requests, super().loglikelihood, disable_tqdm)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        # The model sees context + continuation minus the last token.
        input_lens = [len(context) + len(continuation) - 1 for _, context, continuation in requests]
        too_long = sorted({n for n in input_lens if n > self.max_length})
        if too_long:
            raise LongCtxError(
                f"loglikelihood inputs of {too_long[:10]} tokens exceed max_length={self.max_length}; "
                f"hf-longctx does not cut them. Raise max_length (e.g. max_length={too_long[-1]}) or the "
                "RoPE factor (rope_scaling=KIND:FACTOR)."
            )
        loglikelihood = super()._loglikelihood_tokens
        if not self.dynamic_ntk:
            return loglikelihood(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        return self._run_by_length(
            requests, input_lens, lambda _, group: loglikelihood(group, disable_tqdm=disable_tqdm, override_bs=override_bs)
        )

    _group_shape = None  # (prompt length, max_gen_toks) of the generation batch being run

    def _detect_batch_size(self, requests=None, pos: int = 0):
        # generate_until asks once per call and we call it once per prompt length: on a GPU each
        # length gets the batch its KV cache and prefill fit in free memory; elsewhere ask once.
        if requests:
            return super()._detect_batch_size(requests, pos)
        free = generation.free_device_bytes(self.device)
        if self._group_shape and free is not None:
            config, dtype = self.model.config, self.model.dtype
            return generation.batch_size_for(config, dtype, *self._group_shape, free, self.max_batch_size)
        if self._auto_batch_size is None:
            self._auto_batch_size = super()._detect_batch_size()
        return self._auto_batch_size

    # Provenance: lm-eval merges get_model_info() into results["config"].

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["longctx"] = model_info.longctx_info(
            self.model, self.device, self._rope_args, self.rope_setup, self.max_length, self.beyond_window_count,
            self.dynamic_ntk,
        )
        return info



# The start-up hook (or the "lm_eval.models" entry point) already named us and scoped lm-eval's
# evaluations (window.py); with LM_EVAL_LONGCTX_NO_AUTOLOAD=1 a direct import does both here.
compat.install_for(__name__)

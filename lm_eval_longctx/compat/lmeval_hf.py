"""lm-eval 0.4.13's ``HFLM`` (``lm_eval/models/huggingface.py``): what ``hf-longctx`` builds on.

One patch, ``plan_cpu_batches`` (``--batch_size auto`` on CPU, for ``hf`` and ``hf-longctx``).
Otherwise no patch: ``HFLongCtxLM`` subclasses ``HFLM`` and overrides some of its protected methods, calls
them back with ``super()``, and reads some of its attributes. They are not lm-eval's public API,
so they are listed here with the parameters they take in 0.4.13; tests/test_compat.py compares
each with the installed lm-eval and fails naming the method (and the parameters it takes now).
"""

from __future__ import annotations

import logging

WRITTEN_FOR = {"lm_eval": "0.4.13"}

log = logging.getLogger("lm_eval.longctx")

# HFLM method -> its parameters in lm-eval 0.4.13, for the methods HFLongCtxLM overrides.
# Why each is overridden:
OVERRIDDEN = {
    # the RoPE setting goes on the config before the model is built from it
    "_get_config": ("self", "pretrained", "revision", "trust_remote_code", "gguf_file", "subfolder"),
    # the model is built from that config (config=), never from rope_scaling=
    "_create_model": (
        "self", "pretrained", "revision", "dtype", "trust_remote_code", "parallelize", "gpus",
        "max_memory_per_gpu", "max_cpu_memory", "offload_folder", "tp_plan", "peft", "delta", "autogptq",
        "gptqmodel", "gguf_file", "quantization_config", "subfolder", "kwargs",
    ),  # fmt: skip
    # greedy batches decode in generation.greedy_generate
    "_model_generate": ("self", "context", "max_length", "stop", "generation_kwargs"),
    # longctx_ppl windows scored by ppl_scoring (one forward, the scored tokens' logits only)
    "loglikelihood": ("self", "requests", "disable_tqdm"),
    # over-long inputs refused, never cut; dynamic NTK grouped by length
    "_loglikelihood_tokens": ("self", "requests", "disable_tqdm", "override_bs"),
    # batch_size=auto: one batch size per prompt length from free memory
    "_detect_batch_size": ("self", "requests", "pos"),
    # an equal-length batch, encoded once, without padding or truncation
    "tok_batch_encode": ("self", "strings", "padding_side", "left_truncate_len", "truncation"),
    # the sorting encode of generate_until served from the one encoding
    "tok_encode": ("self", "string", "add_special_tokens", "left_truncate_len", "kwargs"),
    # beyond-window requests set aside, the rest run grouped by prompt length
    "generate_until": ("self", "requests", "disable_tqdm"),
    # config.longctx: the settings the run used
    "get_model_info": ("self",),
}
# HFLM.__init__ parameters HFLongCtxLM passes by name (the rest of its own go through **kwargs:
# attn_implementation reaches from_pretrained that way).
INIT_ARGUMENTS = ("pretrained", "max_length", "device", "dtype", "kwargs")
# HFLM properties HFLongCtxLM overrides (max_length: the scaled window unless given).
OVERRIDDEN_PROPERTIES = ("max_length",)
# Attributes of a built HFLM that HFLongCtxLM reads or sets (``_config`` is set by _get_config,
# ``_max_length`` holds the max_length argument, ``batch_sizes`` the batch_size=auto schedule).
ATTRIBUTES = (
    "_config", "_model", "_max_length", "batch_sizes", "max_gen_toks", "max_batch_size", "think_end_token",
    "mixed_precision_dtype", "add_bos_token", "rank", "tokenizer", "device", "model",
    "prefix_token_id", "cache_hook",
)  # fmt: skip
# lm-eval 0.4.13 helper functions called as HFLM calls them -> their parameters.
HELPERS = {
    "lm_eval.models.utils.has_bos_prefix": ("sequence", "bos_str"),
    "lm_eval.models.utils.normalize_gen_kwargs": ("gen_kwargs", "default_max_gen_toks"),
    "lm_eval.models.utils.resolve_max_length": ("config", "tokenizer", "default"),
    "lm_eval.models.utils_hf.stop_sequences_criteria": (
        "tokenizer", "stop_sequences", "initial_decoder_input_length", "batch_size",
    ),  # fmt: skip
}


# --------------------------------------------------------------------------- lm-eval: batch_size=auto on CPU

# lm-eval 0.4.13 ``models/huggingface.py``: ``HFLM._detect_batch_size(self, requests=None, pos=0)``
# runs the model five times on ``max_batch_size`` (64) x the longest input (``self.max_length``
# when no requests are given, as for generation) and halves on an out-of-memory error. On a GPU
# that error comes; on CPU the allocation succeeds in swap or the kernel kills the process (64 x
# 8,192 tokens x a 49,152-token vocabulary is 100 GB of logits alone).


def plan_cpu_batches(hflm_class) -> None:
    """Make ``HFLM._detect_batch_size`` on CPU pick the batch ``cpu_batch.batch_size`` plans from
    the model's shapes and the memory available, without running the model; one log line says
    what it picked. Other devices keep lm-eval's probe. Idempotent."""
    original = hflm_class._detect_batch_size
    if getattr(original, "longctx_cpu", False):
        return

    def _detect_batch_size(self, requests=None, pos: int = 0):
        if getattr(self.device, "type", str(self.device)) != "cpu":
            return original(self, requests, pos)
        from lm_eval_longctx import cpu_batch

        if requests:  # loglikelihood: lm-eval's probe shape for the request at pos
            _, context, continuation = requests[pos]
            length, logits = len((context + continuation)[-(self.max_length + 1) :][:-1]), True
        else:  # generation (or rolling windows): lm-eval sizes for the whole window
            length, logits = self.max_length, False
        model = self.model
        plan = cpu_batch.plan(model.config, model.dtype, length, self.max_batch_size, logits=logits)
        log.info("%s", plan.line())
        return plan.batch_size

    _detect_batch_size.longctx_cpu = True
    _detect_batch_size.__wrapped__ = original
    hflm_class._detect_batch_size = _detect_batch_size

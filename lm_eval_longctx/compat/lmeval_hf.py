"""lm-eval 0.4.13's ``HFLM`` (``lm_eval/models/huggingface.py``): what ``hf-longctx`` builds on.

No patch: ``HFLongCtxLM`` subclasses ``HFLM`` and overrides some of its protected methods, calls
them back with ``super()``, and reads some of its attributes. They are not lm-eval's public API,
so they are listed here with the parameters they take in 0.4.13; tests/test_compat.py compares
each with the installed lm-eval and fails naming the method (and the parameters it takes now).
"""

from __future__ import annotations

WRITTEN_FOR = {"lm_eval": "0.4.13"}

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

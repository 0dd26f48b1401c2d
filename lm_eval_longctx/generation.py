"""Greedy generation for ``hf-longctx``: the tokens ``model.generate`` would give, for less.

lm-eval's ``hf`` model decodes through ``model.generate``. At long context three things cost
there (measured in ``benchmarks/RESULTS.md``): transformers' ``DynamicCache`` grows by
``torch.cat``, copying the whole KV cache at every decoded token; lm-eval's stop criteria are
batch-wide per stop sequence, so a batch whose rows stop on different sequences (or never on
the same one) runs to ``max_gen_toks``; and the prefill of a very long prompt holds every
layer's activations for all of its tokens at once. Here:

* ``PreallocatedLayer``: each layer's keys and values live in one buffer of prompt + new tokens
  (known before the prefill); a step writes one column and attention reads a view, no copy.
* ``StopRule``: replays ``model.generate``'s own stopping (EOS per row, lm-eval's criteria,
  padding of finished rows) and ends the batch once every row is finished or holds a stop
  sequence in its decoded text: the rest would be cut by lm-eval's post-processing anyway.
* ``prefill``: a prompt whose one-pass activations would not fit in free device memory beside
  its KV cache runs through the model in chunks of ``PREFILL_CHUNK`` tokens. Chunks attend to
  the cache through torch's end-aligned causal bias (``compat.attention.end_aligned_causal_chunks``),
  which flash attention serves (measured on an H100 at 131k tokens, 8B GQA shape: peak 1.03x
  weights + KV cache instead of 1.49x, 17.8 s against 18.1 s in one pass). A prompt that fits
  in one pass still gets one pass: it keeps ``model.generate``'s answers bit for bit.

``greedy_generate`` is used only where it returns what ``model.generate`` returns for the text
lm-eval keeps (``fast_path_blocker`` says why not otherwise): greedy decoding, no logits
processor in the model's generation config, an all-ones attention mask, plain full-attention
cache layers. Written for transformers 5.17-5.24 (``past_key_values`` renamed ``cache``).
"""

from __future__ import annotations

import contextlib
import inspect

import torch
from lm_eval.models.utils_hf import stop_sequences_criteria
from transformers.cache_utils import DynamicCache, DynamicLayer

from lm_eval_longctx.compat import attention

PREFILL_CHUNK = 4096  # tokens per prefill chunk, where the prompt does not fit in one pass
MEMORY_MARGIN = 0.9  # the share of free device memory a plan may fill (fragmentation, workspaces)

# Generation-config fields that change a greedy argmax, with their neutral value: any other value
# means model.generate must run (its logits processors), not this loop.
GREEDY_NEUTRAL = {
    "num_beams": 1,
    "num_beam_groups": 1,
    "penalty_alpha": None,
    "dola_layers": None,
    "guidance_scale": None,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "sequence_bias": None,
    "min_length": 0,
    "min_new_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "exponential_decay_length_penalty": None,
    "watermarking_config": None,
    "stop_strings": None,
    "max_time": None,
    "prompt_lookup_num_tokens": None,
    "assistant_early_exit": None,
    "cache_implementation": None,
}


_PARENT_INIT_TAKES_VALUES = "value_states" in inspect.signature(DynamicLayer.lazy_initialization).parameters


class PreallocatedLayer(DynamicLayer):
    """One layer's KV cache as views into a buffer of ``capacity`` tokens, filled in place."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        # transformers 5.x passes the values too; 4.5x's DynamicLayer takes the keys only.
        if _PARENT_INIT_TAKES_VALUES:
            super().lazy_initialization(key_states, value_states)
        else:
            super().lazy_initialization(key_states)
        (batch, heads, _, key_dim), value_dim = key_states.shape, value_states.shape[-1]
        self._key_buffer = key_states.new_empty((batch, heads, self.capacity, key_dim))
        self._value_buffer = value_states.new_empty((batch, value_states.shape[1], self.capacity, value_dim))
        self.keys, self.values = self._key_buffer[:, :, :0], self._value_buffer[:, :, :0]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache of {self.capacity} tokens asked to hold {end}")
        self._key_buffer[:, :, start:end].copy_(key_states)
        self._value_buffer[:, :, start:end].copy_(value_states)
        self.keys, self.values = self._key_buffer[:, :, :end], self._value_buffer[:, :, :end]
        return self.keys, self.values


def preallocated_cache(config, capacity: int) -> DynamicCache | None:
    """Return a cache of ``PreallocatedLayer`` for ``config``'s model, or None where a layer
    is not plain full attention (sliding window, linear attention: transformers' own then)."""
    cache = DynamicCache(config=config)
    if cache.layers:
        if any(type(layer) is not DynamicLayer for layer in cache.layers):
            return None
        cache.layers = [PreallocatedLayer(capacity) for _ in cache.layers]
    elif getattr(cache, "layer_class_to_replicate", None) is DynamicLayer:
        cache.layer_class_to_replicate = lambda: PreallocatedLayer(capacity)
    else:
        return None
    return cache


def fast_path_blocker(model, tokenizer, generation_kwargs: dict) -> str | None:
    """Return why ``greedy_generate`` would not match ``model.generate`` here, or None.

    ``generation_kwargs`` are what lm-eval's ``HFLM._model_generate`` would pass on after its
    own temperature rule (temperature 0 and no do_sample means greedy).
    """
    kwargs = dict(generation_kwargs)
    mask = kwargs.pop("attention_mask", None)
    temperature = kwargs.pop("temperature", 0.0)
    do_sample = kwargs.pop("do_sample", None)
    if do_sample is None and temperature == 0.0:
        do_sample = False
    if do_sample is not False:
        return "sampling"
    if kwargs:
        return f"generation kwargs {sorted(kwargs)}"
    if mask is not None and not bool(mask.all()):
        return "padded batch"
    config = model.generation_config
    changed = [k for k, neutral in GREEDY_NEUTRAL.items() if getattr(config, k, None) not in (None, neutral)]
    if changed:
        return f"generation config sets {changed}"
    if getattr(model.config, "is_encoder_decoder", False):
        return "encoder-decoder model"
    if preallocated_cache(model.config, 1) is None:
        return "cache layers other than full attention"
    pad = tokenizer.pad_token_id
    if pad is not None and pad not in tokenizer.all_special_ids:
        return "pad token decodes to text"  # model.generate's trailing pads would reach the answer
    return None


def _eos_ids(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


class StopRule:
    """Replays ``model.generate``'s stopping for one batch, step by step, on the host, and says
    when every row's answer is settled.

    ``model.generate`` marks a row finished at EOS (when the generation config has one) or when
    lm-eval's criteria fire (a stop sequence in the last tokens of *every* row), pads finished
    rows, and stops when all rows are finished or at ``max_new_tokens``. A row whose decoded text
    (as lm-eval decodes answers) already holds a stop sequence is settled too: lm-eval cuts the
    answer at the first stop sequence, so what follows never reaches it.
    """

    def __init__(self, tokenizer, stop: list[str], batch: int, max_new_tokens: int, eos_ids: list[int],
                 pad_token_id: int | None, early_stop: bool):  # fmt: skip
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.criteria = stop_sequences_criteria(tokenizer, stop, 0, batch)  # lm-eval's, as HFLM builds them
        self.max_new_tokens = max_new_tokens
        self.eos_ids = eos_ids
        self.pad = pad_token_id if pad_token_id is not None else (eos_ids or [0])[0]  # as model.generate
        self.early_stop = early_stop
        self.tokens: list[list[int]] = [[] for _ in range(batch)]
        self.finished = [False] * batch
        self.settled = [False] * batch

    def add(self, step_tokens: list[int]) -> bool:
        """Record one step's argmax tokens; return True when the batch may stop after it."""
        for row, token in enumerate(step_tokens):
            # model.generate feeds finished rows the pad token (when it stops at EOS).
            self.tokens[row].append(self.pad if self.finished[row] and self.eos_ids else token)
        step_done = bool(self.criteria(torch.tensor(self.tokens), None).any())
        length_done = len(self.tokens[0]) >= self.max_new_tokens
        for row, tokens in enumerate(self.tokens):
            if step_done or length_done or tokens[-1] in self.eos_ids:
                self.finished[row] = True
            if self.early_stop and not (self.settled[row] or self.finished[row]):
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                self.settled[row] = any(s in text for s in self.stop)
        return all(f or s for f, s in zip(self.finished, self.settled))


def _cache_argument(model) -> str:
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _forward(model, ids, start: int, cache, cache_arg: str, **kwargs):
    positions = torch.arange(start, start + ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
    return model(input_ids=ids, position_ids=positions, use_cache=True, **{cache_arg: cache}, **kwargs)


def prefill(model, input_ids, cache, cache_arg: str, chunk: int) -> torch.Tensor:
    """Run the prompt into ``cache``, ``chunk`` tokens at a time, and return the last position's
    logits (float32)."""
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    chunked = attention.end_aligned_causal_chunks() if chunk < input_ids.shape[1] else contextlib.nullcontext()
    with chunked:
        for start in range(0, input_ids.shape[1], chunk):
            out = _forward(model, input_ids[:, start : start + chunk], start, cache, cache_arg, **keep)
    return out.logits[:, -1].float()


def prefill_chunk(model, batch: int, length: int, new_tokens: int, free_bytes: int | None) -> int:
    """Return the tokens per prefill pass: the whole prompt where its one-pass activations fit in
    ``free_bytes`` beside the KV cache (or memory is not known), else ``PREFILL_CHUNK``."""
    if free_bytes is None or _length_dependent_rope(model):
        return length
    config, dtype = model.config, model.dtype
    need = batch * (length + new_tokens) * kv_bytes_per_token(config, dtype)
    need += batch * length * activation_bytes_per_token(config, dtype)
    return length if need <= free_bytes * MEMORY_MARGIN else min(length, PREFILL_CHUNK)


def reproducible_attention(device):
    """Return a context in which greedy answers repeat run to run and whatever else is in the
    batch: on CUDA, sdpa decode steps (one-token queries) leave out the cuDNN backend (flash,
    then memory-efficient, then math) and prefills put cuDNN first; elsewhere a no-op.

    Measured on an H100 (torch 2.11, Llama-2-7B shape, benchmarks/RESULTS.md): cuDNN's decode
    kernel returns other bits for the same keys in another buffer, so greedy tokens changed
    between runs and batch compositions; flash decoding repeats bit for bit. cuDNN prefills
    repeat too (same batch twice, rows shared with another batch: identical tokens) and are
    faster than flash's (2.35 s against 2.73 s for 4 x 16k, 2.82 s against 3.62 s for 2 x 32k).
    """
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend

    decode = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return attention.attention_kernels_by_query_length(many=[SDPBackend.CUDNN_ATTENTION, *decode], one=decode)


def free_device_bytes(device: torch.device) -> int | None:
    """Return the bytes a new allocation can still get on ``device`` (None off CUDA)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def _length_dependent_rope(model) -> bool:
    # These pick their frequencies from the longest position in the call: a chunk would see others.
    from lm_eval_longctx.rope import depends_on_prompt_length

    return any(depends_on_prompt_length(getattr(m, "rope_type", None)) for m in model.modules())


class _HostCopy:
    """A device tensor copied to the host without waiting; ``get`` waits for that copy only."""

    def __init__(self, tensor: torch.Tensor):
        if tensor.device.type == "cuda":
            self.host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self.host.copy_(tensor, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host, self.event = tensor.clone(), None

    def get(self) -> list[int]:
        if self.event is not None:
            self.event.synchronize()
        return self.host.tolist()


@torch.inference_mode()
def greedy_generate(model, input_ids: torch.Tensor, *, max_new_tokens: int, stop: list[str], tokenizer,
                    pad_token_id: int | None, early_stop: bool = True) -> torch.Tensor:  # fmt: skip
    """Return prompt + greedy tokens (on the host) as ``model.generate`` returns them for
    lm-eval's ``HFLM._model_generate``, up to the step where every row's answer is settled.

    The next step is queued on the device before the host looks at the last one, so the host's
    stop check never leaves the device idle; at most one step is computed past the stop.
    """
    batch, length = input_ids.shape
    cache = preallocated_cache(model.config, length + max_new_tokens)
    cache_arg = _cache_argument(model)
    rule = StopRule(tokenizer, stop, batch, max_new_tokens, _eos_ids(model), pad_token_id, early_stop)
    chunk = prefill_chunk(model, batch, length, max_new_tokens, free_device_bytes(input_ids.device))
    token = prefill(model, input_ids, cache, cache_arg, chunk).argmax(-1)
    pending = _HostCopy(token)
    for step in range(1, max_new_tokens + 1):
        queued = None
        if step < max_new_tokens:
            logits = _forward(model, token[:, None], length + step - 1, cache, cache_arg).logits
            token = logits[:, -1].float().argmax(-1)
            queued = _HostCopy(token)
        if rule.add(pending.get()) or queued is None:
            break
        pending = queued
    del cache
    return torch.cat([input_ids.cpu(), torch.tensor(rule.tokens, dtype=input_ids.dtype)], dim=1)


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Return the KV cache bytes one token takes in every layer of a ``config`` model."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    return 2 * text.num_hidden_layers * kv_heads * head_dim * torch.finfo(dtype).bits // 8


def activation_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Return the peak activation bytes a one-pass prefill holds per prompt token (beyond weights
    and KV cache): 8 hidden-wide and 2 MLP-wide values; measured on an H100 with sdpa, 97 KiB
    (Llama-2-7B shape, 4 x 16k) and 117 KiB (Llama-3-8B shape, 131k) against 107 and 120 here."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    intermediate = getattr(text, "intermediate_size", None) or 4 * text.hidden_size
    return (8 * text.hidden_size + 2 * intermediate) * torch.finfo(dtype).bits // 8


def batch_size_for(config, dtype: torch.dtype, prompt_len: int, new_tokens: int, free_bytes: int, limit: int) -> int:
    """Return how many ``prompt_len``-token prompts fit ``free_bytes`` at once (at least 1, at
    most ``limit``): each row's KV cache for prompt + new tokens and its one-pass prefill
    activations, in ``MEMORY_MARGIN`` of the free memory. A row that does not fit alone gets a
    batch of 1, whose prefill then runs in chunks."""
    row = prompt_len * (kv_bytes_per_token(config, dtype) + activation_bytes_per_token(config, dtype))
    row += new_tokens * kv_bytes_per_token(config, dtype)
    return max(1, min(limit, int(free_bytes * MEMORY_MARGIN) // row))

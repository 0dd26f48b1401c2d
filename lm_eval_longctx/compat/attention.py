"""transformers' attention-kernel registry: which sdpa kernel serves prefill chunks and decode steps.

Relied on (transformers 5.17-5.25 and 4.57): an attention module looks its kernel up at every call
in ``modeling_utils.ALL_ATTENTION_FUNCTIONS`` (a ``GeneralInterface``: item assignment is a local
override, ``del`` drops it) under ``config._attn_implementation``, and calls it as
``fn(module, query, key, value, attention_mask, dropout=..., scaling=..., **kwargs)`` with query
(batch, heads, q, dim), key and value (batch, kv_heads, kv, dim) holding the cache up to this
chunk, and takes back ``(output (batch, q, heads, dim), weights)``. For a prefill chunk after the
first, transformers builds an explicit mask (and repeats GQA keys and values, since sdpa's GQA
path needs no mask), which sdpa serves with a slower kernel than the fused causal one. torch 2.x:
``torch.nn.attention.sdpa_kernel`` (``set_priority`` from 2.6) and ``bias.causal_lower_right``.
"""

from __future__ import annotations

import contextlib

WRITTEN_FOR = {"transformers": "5.17-5.25, 4.57", "torch": "2.x"}


def end_aligned_sdpa(stock):
    """Return an sdpa attention function that serves a prefill chunk after the first through
    ``causal_lower_right`` and hands every other call to ``stock``."""
    import torch
    from torch.nn.attention.bias import causal_lower_right

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        q_len, kv_len = query.shape[2], key.shape[2]
        special = dropout or any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "sliding_window"))
        if q_len == 1 or q_len >= kv_len or special or getattr(module, "is_causal", True) is False:
            return stock(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        gqa = {"enable_gqa": True} if query.shape[1] != key.shape[1] else {}
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=causal_lower_right(q_len, kv_len), scale=scaling, **gqa
        )
        return out.transpose(1, 2).contiguous(), None

    return attention


@contextlib.contextmanager
def _sdpa_wrapped_by(wrap):
    """Inside, attention modules that look up "sdpa" get ``wrap(the entry before)``; on exit the
    entry is what it was (an earlier local override kept)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    local = ALL_ATTENTION_FUNCTIONS._local_mapping
    had, before = "sdpa" in local, local.get("sdpa")
    ALL_ATTENTION_FUNCTIONS["sdpa"] = wrap(ALL_ATTENTION_FUNCTIONS["sdpa"])
    try:
        yield
    finally:
        if had:
            ALL_ATTENTION_FUNCTIONS["sdpa"] = before
        else:
            del ALL_ATTENTION_FUNCTIONS["sdpa"]


def end_aligned_causal_chunks():
    """Return a context in which a prefill chunk after the first attends to the cache through
    torch's ``causal_lower_right`` bias (causal, aligned at the last key), which flash attention
    serves natively, instead of the explicit mask transformers builds; one-token steps, whole
    prompts and anything unusual (dropout, softcap, sliding windows, position bias) go to the
    stock sdpa.

    Only for batches without padding: the mask of such a chunk is exactly that bias, so the
    given mask is not read. ``generation.prefill`` enters it for chunked prompts only, which
    run on the fast path (an all-ones attention mask, full-attention layers).
    """
    return _sdpa_wrapped_by(end_aligned_sdpa)


def attention_kernels_by_query_length(many, one):
    """Return a context in which each sdpa attention call runs with torch's
    ``sdpa_kernel(backends, set_priority=True)``: ``one`` for one-token queries (decode steps),
    ``many`` otherwise (prefills). ``end_aligned_causal_chunks`` may be entered inside it."""
    from torch.nn.attention import sdpa_kernel

    def kernels(backends):
        try:
            return sdpa_kernel(backends, set_priority=True)
        except TypeError:  # torch before 2.6: no priorities, the default order among these
            return sdpa_kernel(backends)

    def wrap(stock):
        def attention(module, query, key, value, attention_mask, *args, **kwargs):
            with kernels(one if query.shape[2] == 1 else many):
                return stock(module, query, key, value, attention_mask, *args, **kwargs)

        return attention

    return _sdpa_wrapped_by(wrap)

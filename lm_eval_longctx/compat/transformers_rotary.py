"""transformers' rotary modules: dynamic NTK with one base per prompt, kept while decoding.

Relied on (transformers 5.23-5.25 and 4.57 ``modeling_rope_utils``): a rotary module
(``LlamaRotaryEmbedding`` and the like) holds ``rope_type``, ``inv_freq`` (a buffer),
``original_inv_freq``, ``original_max_seq_len``, ``max_seq_len_cached`` and ``config``;
``dynamic_rope_update`` recomputes ``inv_freq`` in forward only while ``"dynamic" in rope_type``,
with ``ROPE_INIT_FUNCTIONS["dynamic"](config, device, seq_len=...)``.
"""

from __future__ import annotations

import contextlib

WRITTEN_FOR = {"transformers": "5.23-5.25, 4.57"}


def _fresh_inv_freq(rotary, prompt_len: int):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if prompt_len <= rotary.original_max_seq_len:
        return rotary.original_inv_freq.clone()  # a fresh model keeps its init frequencies up to native
    import torch

    # The very call a fresh model's dynamic_rope_update makes at prefill (a tensor seq_len, same math).
    seq_len = torch.tensor(prompt_len, device=rotary.original_inv_freq.device)
    inv_freq, _ = ROPE_INIT_FUNCTIONS["dynamic"](rotary.config, rotary.original_inv_freq.device, seq_len=seq_len)
    return inv_freq


@contextlib.contextmanager
def fixed_ntk_base(model, prompt_len: int):
    """Inside, every dynamic-NTK rotary module uses the base a fresh model picks for a
    ``prompt_len``-token prompt, and keeps it while decoding; on exit each is fresh again.

    "The base its own length implies" is the prompt's token count, not prompt plus generated
    tokens: transformers would grow the base at each decoding step past that, while the cached
    keys keep the old rotation (transformers issue #25104). Other modules are left alone.
    """
    rotaries = [
        module
        for module in model.modules()
        if getattr(module, "rope_type", None) == "dynamic" and hasattr(module, "original_inv_freq")
    ]
    for rotary in rotaries:
        rotary.register_buffer("inv_freq", _fresh_inv_freq(rotary, prompt_len), persistent=False)
        rotary.rope_type = "default"  # dynamic_rope_update recomputes only modules named "dynamic"
    try:
        yield
    finally:
        for rotary in rotaries:
            rotary.rope_type = "dynamic"
            rotary.register_buffer("inv_freq", rotary.original_inv_freq.clone(), persistent=False)
            rotary.max_seq_len_cached = rotary.original_max_seq_len

"""The batch size ``--batch_size auto`` gets on CPU: planned from the model's shapes, never probed.

lm-eval finds an automatic batch size by running ``max_batch_size`` (64) rows of the longest
input and halving on an out-of-memory error. On CPU that error does not come: the allocation
goes to swap or the kernel kills the process (issue 19: past 20 GB on a 135M model). Here a row's
memory is estimated from the config (KV cache, prefill activations, attention scores, logits)
and the batch is what fits in ``SHARE`` of the memory available now, at least 1 and at most
``max_batch_size``. ``compat.lmeval_hf.plan_cpu_batches`` puts this in HFLM's place on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lm_eval_longctx.generation import activation_bytes_per_token, kv_bytes_per_token

SHARE = 0.5  # of the available memory: the estimate is rough and a CPU host runs other work too


def available_bytes() -> int | None:
    """Return the memory a new allocation can get now (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def row_bytes(config, dtype, length: int, logits: bool) -> int:
    """Return the peak bytes one row of ``length`` tokens takes beyond the weights: KV cache,
    prefill activations, one layer's attention scores and their softmax (CPU attention with a
    padding mask materializes them), and float32 logits with their log-softmax, over every
    position for loglikelihood (``logits=True``), else the last position."""
    import torch

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    itemsize = torch.finfo(dtype).bits // 8
    heads = getattr(text, "num_attention_heads", 1) or 1
    scored = length if logits else 1
    return (
        length * (kv_bytes_per_token(config, dtype) + activation_bytes_per_token(config, dtype))
        + 2 * heads * length * length * itemsize
        + 2 * scored * text.vocab_size * 4
    )


@dataclass(frozen=True)
class Plan:
    """A batch size and the numbers it came from."""

    batch_size: int
    length: int
    row_bytes: int
    available_bytes: int | None
    limit: int

    def line(self) -> str:
        """Return the log line that says what was picked and why."""
        free = f"{self.available_bytes / 2**30:.1f} GiB" if self.available_bytes is not None else "unknown"
        return (
            f"batch_size=auto on CPU: batch size {self.batch_size} for inputs of up to {self.length} tokens "
            f"(about {self.row_bytes / 2**30:.2f} GiB a row by the model's shapes; {free} of memory available, "
            f"{SHARE:.0%} of it planned; at most max_batch_size={self.limit}). lm-eval's probe of {self.limit} rows "
            "is skipped on CPU, where running out of memory kills the process instead of raising."
        )


def plan(config, dtype, length: int, limit: int, logits: bool, available: int | None = None) -> Plan:
    """Return the batch for rows of ``length`` tokens: as many as fit ``SHARE`` of the available
    memory (``available_bytes()`` unless given), at least 1, at most ``limit``; 1 when unknown."""
    available = available_bytes() if available is None else available
    row = row_bytes(config, dtype, max(1, length), logits)
    fits = int(available * SHARE) // row if available is not None else 1
    return Plan(max(1, min(int(limit), fits)), length, row, available, int(limit))

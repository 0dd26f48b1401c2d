"""Decode-step time of each sdpa backend at 7B shape, after a one-pass prefill into our
preallocated cache: which deterministic kernel should decode (issue 15, after hf-longctx left
cuDNN out for reproducible answers).

One GPU, Llama-2-7B shape (random bf16 weights), random prompts; per (length, batch) and backend
set, ``generation.greedy_generate`` with 1 and with 25 new tokens (a stop string never seen):
the difference over 24 is one decode step. The bandwidth floor of a step is the weights plus
the batch's KV cache read once.

    python benchmarks/gpu_decode_kernels.py --tokenizer DIR --out DIR
    python benchmarks/gpu_decode_kernels.py --tokenizer DIR --out DIR --split

``--split``: instead, is a cuDNN prefill followed by pinned decoding (flash, efficient, math)
still repeatable? Per shape, rows [0, 1, ...] twice and [0, 2, ...] once (what another
data-parallel rank batches), 25 greedy tokens, under the split and under pinned throughout;
tokens compared per prompt, and the time of each call.
"""

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from gpu_speed import build

from lm_eval_longctx import generation

BACKENDS = {
    "default (cuDNN first)": None,
    "flash": [SDPBackend.FLASH_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
    "pinned (flash, efficient, math)": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--tokenizer", required=True, help="any tokenizer folder (stop checks only)")
    parser.add_argument("--shapes", default="16384:4,32768:2")
    parser.add_argument("--split", action="store_true", help="cuDNN prefill + pinned decode: repeatable?")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = build("7b", args.tokenizer, "cuda")  # gpu_speed's Llama-2-7B shape, random bf16 weights
    config = model.config
    model.generation_config.eos_token_id = None
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if args.split:
        return split(model, tokenizer, args, out)
    for shape in args.shapes.split(","):
        length, batch = (int(x) for x in shape.split(":"))
        ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(1)).cuda()
        kv = batch * (length + 25) * generation.kv_bytes_per_token(config, torch.bfloat16)
        for name, backends in BACKENDS.items():
            context = contextlib.nullcontext() if backends is None else sdpa_kernel(backends)
            seconds = {}
            with context:
                for new in (1, 25, 1, 25):  # the second pair is measured, the first warms up
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    tokens = generation.greedy_generate(model, ids, max_new_tokens=new, stop=["<<never>>"],
                                                        tokenizer=tokenizer, pad_token_id=0, early_stop=False)  # fmt: skip
                    torch.cuda.synchronize()
                    seconds[new] = time.perf_counter() - start
            row = {"length": length, "batch": batch, "backends": name, "prefill_s": round(seconds[1], 3),
                   "step_ms": round((seconds[25] - seconds[1]) / 24 * 1000, 2),
                   "floor_step_ms": round((weights + kv) / 3.0e12 * 1000, 2), "answer": tokens[0, length:].tolist()}  # fmt: skip
            print(json.dumps(row), flush=True)
            with open(out / "rows.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            torch.cuda.empty_cache()


PINNED = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
CUDNN_FIRST = [SDPBackend.CUDNN_ATTENTION, *PINNED]


def split(model, tokenizer, args, out: Path) -> None:
    stock_prefill = generation.prefill

    def cudnn_prefill(*a, **k):
        with sdpa_kernel(CUDNN_FIRST, set_priority=True):
            return stock_prefill(*a, **k)

    for shape in args.shapes.split(","):
        length, batch = (int(x) for x in shape.split(":"))
        ids = torch.randint(0, model.config.vocab_size, (2 * batch, length), generator=torch.Generator().manual_seed(1)).cuda()
        first, other = list(range(batch)), list(range(0, 2 * batch, 2))
        for name, prefill in (("cudnn prefill, pinned decode", cudnn_prefill), ("pinned throughout", stock_prefill)):
            generation.prefill = prefill
            answers, seconds = [], []
            try:
                with sdpa_kernel(PINNED):
                    for rows in (first, first, other, first):
                        torch.cuda.synchronize()
                        start = time.perf_counter()
                        tokens = generation.greedy_generate(model, ids[rows], max_new_tokens=25, stop=["<<never>>"],
                                                            tokenizer=tokenizer, pad_token_id=0, early_stop=False)  # fmt: skip
                        torch.cuda.synchronize()
                        seconds.append(round(time.perf_counter() - start, 3))
                        answers.append(dict(zip(rows, tokens[:, length:].tolist())))
            finally:
                generation.prefill = stock_prefill
            a, b, c = answers[1], answers[3], answers[2]  # answers[0] warms up
            row = {"length": length, "batch": batch, "mode": name, "seconds": seconds,
                   "same_batch_twice": sum(a[r] == b[r] for r in first), "of": batch,
                   "other_batch_shared_rows": sum(a[r] == c[r] for r in first if r in c),
                   "shared": len([r for r in first if r in c])}  # fmt: skip
            print(json.dumps(row), flush=True)
            with open(out / "split.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

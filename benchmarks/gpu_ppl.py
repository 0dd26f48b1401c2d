"""Throughput of hf-longctx's perplexity scoring (``ppl_scoring.window_loglikelihood``, the exact
function it calls per window) against bare ``model(input_ids)`` forwards of the same tokens.

Llama-2-7B shape, random bf16 weights (``from_config``), windows of 16,384 and 32,768 tokens,
scoring a first window (all tokens) and a sliding one (the last 256). Target: ratio >= 0.8.

    python benchmarks/gpu_ppl.py                 # on the GPU; JSON to $OUT/gpu_ppl.json (or --out)
    python benchmarks/gpu_ppl.py --tiny          # CPU smoke check (tests/test_benchmarks_smoke.py)
"""

from __future__ import annotations

import argparse
import json
import os
import time


def build(tiny: bool):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if tiny:
        config = LlamaConfig(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip
        device, dtype = "cpu", torch.float32
    else:  # Llama-2-7B
        config = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                             num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=32768)  # fmt: skip
        device, dtype = "cuda", torch.bfloat16
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype).eval()
    return model, device


def timed(fn, repeats: int, device: str) -> float:
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    fn()  # warmup
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def measure(model, device: str, length: int, scored: int, repeats: int) -> dict:
    import torch

    from lm_eval_longctx.ppl_scoring import window_loglikelihood

    tokens = torch.randint(0, model.config.vocab_size, (length,), device=device)

    def bare():
        with torch.no_grad():
            model(input_ids=tokens[:-1].unsqueeze(0), use_cache=False)

    ours = timed(lambda: window_loglikelihood(model, tokens, scored), repeats, device)
    forward = timed(bare, repeats, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"length": length, "scored": scored, "ours_tokens_per_s": (length - 1) / ours,
            "bare_tokens_per_s": (length - 1) / forward, "ratio": forward / ours, "peak_gib": peak}  # fmt: skip


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (smoke check)")
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON file (default $OUT/gpu_ppl.json when $OUT is set)")
    args = parser.parse_args(argv)
    lengths = args.lengths or ([128, 256] if args.tiny else [16384, 32768])
    model, device = build(args.tiny)
    rows = []
    for length in lengths:
        for scored in (length - 1, min(256, length - 1)):
            row = measure(model, device, length, scored, args.repeats)
            rows.append(row)
            print(f"L={row['length']:>6} scored={row['scored']:>6}: ours {row['ours_tokens_per_s']:,.0f} tok/s, "
                  f"bare forward {row['bare_tokens_per_s']:,.0f} tok/s, ratio {row['ratio']:.3f} (target >= 0.8)",
                  flush=True)  # fmt: skip
    out = args.out or (os.path.join(os.environ["OUT"], "gpu_ppl.json") if os.environ.get("OUT") else None)
    if out:
        with open(out, "w") as f:
            json.dump({"device": device, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()

"""Where a longctx generation batch spends its time on a GPU, side by side in one run.

For one batch of equal-length prompts (random tokens, SmolLM2-135M shape, random bf16 weights):
the bare prefill, a plain greedy loop over the KV cache, ``model.generate``, lm-eval's
``HFLM._model_generate`` (generate plus lm-eval's stop-sequence criteria) and the same through
``hf-longctx``; per-step decode cost = (total - prefill) / new tokens.

    python benchmarks/gpu_generate_profile.py --model DIR --length 8192 --batch 8 --new 32
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up (kernels, allocator)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new", type=int, default=32)
    args = parser.parse_args()

    from lm_eval.models.huggingface import HFLM

    from lm_eval_longctx.model import HFLongCtxLM

    stock = HFLM(pretrained=args.model, dtype="bfloat16", batch_size=args.batch)
    model = stock.model
    ids = torch.randint(1000, model.config.vocab_size, (args.batch, args.length), device="cuda")
    new = args.new

    def prefill():
        with torch.inference_mode():
            model(ids, logits_to_keep=1)

    def greedy_loop():
        with torch.inference_mode():
            out = model(ids, logits_to_keep=1, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            for _ in range(new - 1):
                out = model(token, past_key_values=cache, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)

    def generate():
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)

    def lm_eval_generate(lm):
        def run():
            with torch.inference_mode():
                lm._model_generate(ids, max_length=args.length + new, stop=["\n\n\n", "[INST]"], do_sample=False,
                                   temperature=0.0, min_new_tokens=new)  # fmt: skip
        return run

    row = {"length": args.length, "batch": args.batch, "new_tokens": new, "device": torch.cuda.get_device_name()}
    row["prefill_s"] = timed(prefill)
    row["greedy_loop_s"] = timed(greedy_loop)
    row["generate_s"] = timed(generate)
    row["hflm_model_generate_s"] = timed(lm_eval_generate(stock))
    del stock
    ours = HFLongCtxLM(pretrained=args.model, batch_size=args.batch)
    model = ours.model
    row["hf_longctx_model_generate_s"] = timed(lm_eval_generate(ours))
    for key in ("greedy_loop_s", "generate_s", "hflm_model_generate_s", "hf_longctx_model_generate_s"):
        row[key[:-2] + "_ms_per_step"] = round(1000 * (row[key] - row["prefill_s"]) / new, 2)
    row["prefill_tok_s"] = round(args.batch * args.length / row["prefill_s"])
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

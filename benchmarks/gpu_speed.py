"""Generation speed and memory of ``hf-longctx`` at user sizes, before and after
``generation.greedy_generate``, side by side in one process (random bf16 weights, sdpa).

``seven``: Llama-2-7B shape, ``longctx_kv`` prompts at 16k (batch 4) and 32k (batch 2: batch 4
needs 64 GiB of KV cache alone), 32 prompts each. Per length: the bare prefill of one batch, one
batch through each path (tokens compared), a torch.profiler table of each path, then lm-eval's
``simple_evaluate`` through each path (answers compared, generation phase timed, decode steps
counted). Then lm-eval's RULER port (``niah_multikey_3``) through the stock ``hf`` model on the
same weights, prompt count and batch, in the same process (start-up and model load excluded
for both).

``eight``: Llama-3-8B GQA shape, ``rope_scaling=llama3:16:low=1:high=4:orig=8192``, one
``longctx_kv`` prompt of 131,000 tokens through model.generate, the new path without chunked
prefill, and with it; peak memory against weights + KV cache; then the longest prompt the card
holds by the measured per-token cost.

    python benchmarks/gpu_speed.py seven --tokenizer DIR --out DIR [--deadline 560]
    python benchmarks/gpu_speed.py eight --tokenizer DIR --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import time
from pathlib import Path

import torch

SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, max_position_embeddings=40960,
               rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, max_position_embeddings=131072,
               rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 16.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=40960,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
}  # fmt: skip
NEVER = "<<never>>"
KV_ANSWER = 24  # longctx_kv's max_gen_toks: the KV cache holds prompt + this
START = time.perf_counter()


class Log:
    def __init__(self, out: Path, deadline: float):
        self.out, self.deadline = out, deadline
        out.mkdir(parents=True, exist_ok=True)

    def row(self, **row) -> None:
        row = {"t": round(time.perf_counter() - START, 1), **row}
        print(json.dumps(row), flush=True)
        with open(self.out / "rows.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def has(self, seconds: float, step: str) -> bool:
        left = self.deadline - (time.perf_counter() - START)
        if left < seconds:
            self.row(step=step, skipped=f"needs ~{seconds:.0f}s, {left:.0f}s left")
        return left >= seconds


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - start, result


def gib(n: float) -> float:
    return round(n / 2**30, 2)


def over(peak_gib: float | None, floor: float) -> float | None:
    return None if peak_gib is None else round(peak_gib * 2**30 / floor, 3)


def build(shape: str, tokenizer: str, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(tokenizer)
    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         **SHAPES[shape])  # fmt: skip
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    return model.eval()


def wrap(model, tokenizer: str, batch_size, **kwargs):
    from lm_eval_longctx.model import HFLongCtxLM

    return HFLongCtxLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **kwargs)


def read_bandwidth(device: str) -> float:
    """Bytes/s the card reads (a sum over 4 GiB), the floor's denominator."""
    x = torch.ones(2 * 2**30, dtype=torch.bfloat16, device=device)
    x.sum()
    best = min(timed(lambda: x.sum())[0] for _ in range(5))
    del x
    return 4 * 2**30 / best


def floor_step_s(model, batch: int, tokens: int, bandwidth: float) -> float:
    """One decode step's bytes (every weight, the batch's KV cache) over the read bandwidth."""
    from lm_eval_longctx.generation import kv_bytes_per_token

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return (weights + batch * tokens * kv_bytes_per_token(model.config, model.dtype)) / bandwidth


def profile_table(fn, path: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        fn()
        sync()
    for key in ("self_device_time_total", "self_cuda_time_total", "self_cpu_time_total"):
        try:
            path.write_text(prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=60))
            return
        except (AttributeError, KeyError, RuntimeError):
            continue


def micro(lm, log: Log, length: int, batch: int, new: int, bandwidth: float, repeats: int, profile: bool) -> dict:
    """One batch of random tokens: bare prefill, model.generate path, new path; tokens compared."""
    model = lm.model
    ids = torch.randint(1000, model.config.vocab_size - 1, (batch, length), device=model.device)
    mask = torch.ones_like(ids)

    def prefill():
        with torch.inference_mode():
            model(ids, use_cache=False, logits_to_keep=1)

    def generate(fast):
        lm.fast_generate = fast
        with torch.inference_mode():
            return lm._model_generate(ids, max_length=length + new, stop=[NEVER], attention_mask=mask, do_sample=False)

    model(ids[:, :256], use_cache=False, logits_to_keep=1)  # kernels and allocator warm
    row = {"step": "micro", "length": length, "batch": batch, "new_tokens": new}
    row["prefill_s"] = min(timed(prefill)[0] for _ in range(repeats))
    outputs = {}
    for name, fast in (("new", True), ("generate", False)):
        times = []
        for _ in range(repeats):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            seconds, out = timed(lambda: generate(fast))
            times.append(seconds)
        outputs[name] = out.cpu()
        row[f"{name}_s"] = min(times)
        row[f"{name}_ms_per_step"] = round(1000 * (min(times) - row["prefill_s"]) / max(1, out.shape[1] - length), 2)
        if profile:
            profile_table(lambda: generate(fast), log.out / f"profile-{name}-{length}.txt")
    shortest = min(o.shape[1] for o in outputs.values())
    row["tokens_identical"] = bool(torch.equal(outputs["new"][:, :shortest], outputs["generate"][:, :shortest]))
    row["floor_ms_per_step"] = round(1000 * floor_step_s(model, batch, length + new // 2, bandwidth), 2)
    log.row(**row)
    del ids, mask
    return row


def chunk_attention_probe(log: Log, past: int = 126_976, chunk: int = 4096, heads: int = 32, kv_heads: int = 8) -> None:
    """One layer's attention for the last 4096-token chunk of a 131k prompt (8B GQA shape):
    compat.attention.end_aligned_causal_chunks' kernel against transformers' stock sdpa with its explicit
    mask (cuDNN allowed and not), times and largest difference from a float32 reference."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from lm_eval_longctx import generation
    from lm_eval_longctx.compat import attention

    torch.manual_seed(0)
    kv = past + chunk
    q = torch.randn(1, heads, chunk, 128, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, kv_heads, kv, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    mask = (torch.arange(chunk, device="cuda")[:, None] + past >= torch.arange(kv, device="cuda")[None, :])[None, None]
    ours = attention.end_aligned_sdpa(sdpa_attention_forward)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q[:, :, -512:].float(), k.float().repeat_interleave(4, 1), v.float().repeat_interleave(4, 1), attn_mask=mask[:, :, -512:]
    ).transpose(1, 2)  # the chunk's last 512 queries, float32 math

    def run(fn, pinned: bool):
        context = generation.reproducible_attention("cuda") if pinned else contextlib.nullcontext()
        with context, torch.inference_mode():
            fn()  # warm-up
            seconds, out = timed(lambda: [fn() for _ in range(5)][-1])
        return seconds / 5, out[0]

    for name, fn, pinned in [
        ("stock-mask-default", lambda: sdpa_attention_forward(module, q, k, v, mask, scaling=128**-0.5), False),
        ("stock-mask-pinned", lambda: sdpa_attention_forward(module, q, k, v, mask, scaling=128**-0.5), True),
        ("end-aligned-pinned", lambda: ours(module, q, k, v, mask, scaling=128**-0.5), True),
    ]:
        try:
            seconds, out = run(fn, pinned)
            diff = (out[:, -512:].float() - ref).abs().max().item()
            log.row(step="chunk-attention", kernel=name, ms=round(seconds * 1000, 2), max_diff_vs_fp32=round(diff, 5))
        except RuntimeError as error:
            log.row(step="chunk-attention", kernel=name, error=str(error)[:300])


def identity_probe(lm, log: Log, length: int, batch: int, steps: int = 12) -> None:
    """Logits of the new cache against model.generate's own (DynamicCache), teacher-forced on the
    same tokens: the first step where they differ and the largest difference, for keys/values
    handed to attention as views of the preallocated buffer or as contiguous copies, under the
    default attention backend and under flash."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers import DynamicCache

    from lm_eval_longctx import generation

    model = lm.model
    cache_arg = generation._cache_argument(model)
    ids = torch.randint(1000, model.config.vocab_size - 1, (batch, length), device=model.device)
    positions = torch.arange(length + steps, device=ids.device).expand(batch, -1)

    def reference():
        cache, logits = DynamicCache(config=model.config), []
        mask = torch.ones((batch, length), dtype=ids.dtype, device=ids.device)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions[:, :length], use_cache=True,
                    logits_to_keep=1, **{cache_arg: cache})  # fmt: skip
        logits.append(out.logits[:, -1].float())
        tokens = [logits[-1].argmax(-1)]
        for t in range(steps):
            mask = torch.ones((batch, length + t + 1), dtype=ids.dtype, device=ids.device)
            out = model(input_ids=tokens[-1][:, None], attention_mask=mask, position_ids=positions[:, length + t : length + t + 1],
                        use_cache=True, **{cache_arg: cache})  # fmt: skip
            logits.append(out.logits[:, -1].float())
            tokens.append(logits[-1].argmax(-1))
        return logits, tokens

    def ours(tokens):
        cache = generation.preallocated_cache(model.config, length + steps + 24)
        logits = [generation.prefill(model, ids, cache, cache_arg, length)]
        for t in range(steps):
            logits.append(generation._forward(model, tokens[t][:, None], length + t, cache, cache_arg).logits[:, -1].float())
        return logits

    layer = generation.PreallocatedLayer
    original_update = layer.update

    def always_contiguous(self, key_states, value_states, *args, **kwargs):
        keys, values = original_update(self, key_states, value_states, *args, **kwargs)
        return keys.contiguous(), values.contiguous()

    row = {"step": "probe", "length": length, "batch": batch, "decode_steps": steps}
    for backend in ("default", "flash"):
        context = sdpa_kernel([SDPBackend.FLASH_ATTENTION]) if backend == "flash" else contextlib.nullcontext()
        with torch.inference_mode(), context:
            ref, tokens = reference()
            gaps = [(lambda top: float((top[:, 0] - top[:, 1]).min()))(r.topk(2, dim=-1).values) for r in ref]
            row[f"{backend}_top2_gap_min"] = round(min(gaps), 4)
            for name, update in (("views", original_update), ("contiguous", always_contiguous)):
                layer.update = update
                try:
                    diffs = [float((a - b).abs().max()) for a, b in zip(ours(tokens), ref)]
                finally:
                    layer.update = original_update
                first = next((i for i, d in enumerate(diffs) if d), None)
                row[f"{backend}_{name}"] = {"first_differing_step": first, "max_diff": max(diffs)}
        log.row(**row)
        if backend == "default":
            first_logits = ref[0]
    # Chunked prefill (4 chunks): rounding-level differences only, if the chunks attend right.
    with torch.inference_mode():
        cache = generation.preallocated_cache(model.config, length + 1)
        chunked = generation.prefill(model, ids, cache, cache_arg, length // 4)
        del cache
    log.row(step="probe-chunked", length=length, chunks=4, max_diff=float((chunked - first_logits).abs().max()),
            logit_absmax=float(first_logits.abs().max()),
            same_argmax=bool(torch.equal(chunked.argmax(-1), first_logits.argmax(-1))))  # fmt: skip
    del ids


def metadata(tokenizer: str, length: int, samples: int) -> dict:
    depths = [round(i / (samples - 1), 4) for i in range(samples)] if samples > 1 else [0.5]
    return {"pretrained": tokenizer, "max_seq_lengths": [length], "depths": depths, "num_samples": 1}


def evaluate(lm, md: dict, fast: bool | None, task: str = "longctx_kv", limit: int | None = None) -> dict:
    """simple_evaluate on ``task``; the generation phase timed, decode steps counted."""
    import lm_eval

    import lm_eval_longctx

    if fast is not None:
        lm.fast_generate = fast
    phase, steps = [], [0]
    original = type(lm).generate_until

    def generate_until(requests, disable_tqdm=False):
        seconds, out = timed(lambda: original(lm, requests, disable_tqdm))
        phase.append(seconds)
        return out

    def count(module, args, kwargs, out):
        ids = kwargs.get("input_ids", args[0] if args else None)
        steps[0] += ids is not None and ids.shape[1] == 1

    lm.generate_until = generate_until
    hook = lm.model.register_forward_hook(count, with_kwargs=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        seconds, results = timed(lambda: lm_eval.simple_evaluate(
            model=lm, tasks=[task], task_manager=lm_eval_longctx.task_manager(metadata=md),
            bootstrap_iters=0, log_samples=True, limit=limit))  # fmt: skip
    finally:
        hook.remove()
        del lm.generate_until
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    return {
        "evaluate_s": round(seconds, 1),
        "generation_phase_s": round(sum(phase), 2),
        "decode_steps": steps[0],
        "peak_allocated_gib": gib(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None,
        "answers": [s["resps"][0][0] for s in samples],
        "prompt_tokens": [len(lm.tok_encode(s["arguments"][0][0])) for s in samples[:1]],
    }


def seven(args, log: Log) -> None:
    from lm_eval.models.huggingface import HFLM

    bandwidth = read_bandwidth(args.device)
    model = build(args.shape, args.tokenizer, args.device)
    log.row(step="built", shape=args.shape, read_bandwidth_tb_s=round(bandwidth / 1e12, 3),
            weights_gib=gib(sum(p.numel() * 2 for p in model.parameters())))  # fmt: skip
    first = args.lengths[0][0]
    for length, batch in args.lengths:
        lm = wrap(model, args.tokenizer, batch)
        if length == first and not args.no_probe:
            identity_probe(lm, log, length, batch)
        if log.has(40 * length / 16384, f"micro {length}"):
            micro(lm, log, length, batch, args.new, bandwidth, repeats=2 if length == first else 1,
                  profile=length == first)  # fmt: skip
        md = metadata(args.tokenizer, length, args.samples)
        runs = {}
        for name, fast in (("new", True), ("generate", False)):
            if name == "generate" and length != first:
                continue  # the before path's generation phase: at the first length only (device time)
            if not log.has(60 * length / 16384, f"evaluate {length} {name}"):
                continue
            runs[name] = evaluate(lm, md, fast)
            log.row(step="evaluate", length=length, batch=batch, path=name,
                    **{k: v for k, v in runs[name].items() if k != "answers"})  # fmt: skip
        if len(runs) == 2:
            same = [a == b for a, b in zip(runs["new"]["answers"], runs["generate"]["answers"])]
            log.row(step="answers", length=length, identical=sum(same), of=len(same),
                    sample=runs["new"]["answers"][:2])  # fmt: skip
        del lm
        gc.collect()
    # lm-eval's RULER port through the stock hf model, same weights, prompt count and batch.
    length, batch = args.lengths[0]
    if not args.no_ruler and log.has(150 * length / 16384, f"ruler {length}"):
        stock = HFLM(pretrained=model, tokenizer=args.tokenizer, batch_size=batch)
        run = evaluate(stock, {"pretrained": args.tokenizer, "max_seq_lengths": [length]}, None,
                       task="niah_multikey_3", limit=args.samples)  # fmt: skip
        log.row(step="ruler", task="niah_multikey_3", length=length, batch=batch,
                **{k: v for k, v in run.items() if k != "answers"})  # fmt: skip


def eight(args, log: Log) -> None:
    from lm_eval_longctx import generation

    total = torch.cuda.get_device_properties(0).total_memory if args.device == "cuda" else 80 * 2**30
    model = build(args.shape, args.tokenizer, args.device)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    per_token = generation.kv_bytes_per_token(model.config, model.dtype)
    log.row(step="built", shape=args.shape, weights_gib=gib(weights), kv_kib_per_token=per_token / 1024,
            total_gib=gib(total))  # fmt: skip
    length = args.lengths[0][0]
    md = metadata(args.tokenizer, length, 1)
    lm = wrap(model, args.tokenizer, 1)
    if args.device == "cuda":
        chunk_attention_probe(log)
    if not args.no_probe:
        identity_probe(lm, log, 16384, 1)
    import lm_eval_longctx

    seconds, _ = timed(lambda: lm_eval_longctx.task_manager(metadata=md).load(["longctx_kv"]))
    log.row(step="dataset", length=length, build_s=round(seconds, 1))
    # The prefill's plan follows free memory: pretend plenty (one pass) or none (chunks).
    plenty, none = (lambda device: 2**62), (lambda device: 0)
    variants = [("generate", False, plenty, generation.PREFILL_CHUNK), ("new-one-pass", True, plenty, generation.PREFILL_CHUNK)]
    variants += [("new-chunked", True, none, c) for c in [generation.PREFILL_CHUNK, *args.chunks]]
    if args.paths:  # e.g. only new-chunked: the longest row needs only its measured overhead
        variants = [v for v in variants if v[0] in args.paths]
    measured_free, default_chunk = generation.free_device_bytes, generation.PREFILL_CHUNK
    answers, chunked_peak = {}, None
    for name, fast, free, chunk in variants:
        if not log.has(60, f"{name} {chunk}"):
            continue
        generation.free_device_bytes, generation.PREFILL_CHUNK = free, chunk
        try:
            run = evaluate(lm, md, fast)
        finally:
            generation.free_device_bytes, generation.PREFILL_CHUNK = measured_free, default_chunk
        floor = weights + (run["prompt_tokens"][0] + KV_ANSWER) * per_token
        answers[f"{name}-{chunk}"] = run["answers"]
        log.row(step="long", length=length, path=name, chunk=chunk if name == "new-chunked" else None,
                floor_gib=gib(floor), peak_over_floor=over(run["peak_allocated_gib"], floor),
                **{k: v for k, v in run.items() if k != "answers"}, answer=run["answers"][0][:60])  # fmt: skip
        if name == "new-chunked" and chunk == default_chunk and run["peak_allocated_gib"]:
            chunked_peak = (run["peak_allocated_gib"] * 2**30 - floor) / run["prompt_tokens"][0]  # bytes per token
            chunked_s = run["generation_phase_s"] + run.get("build_s", 0)
    log.row(step="answers", length=length, distinct=len({tuple(a) for a in answers.values()}), runs=list(answers))
    if chunked_peak is None or args.device != "cuda":
        return
    # The longest prompt: what is left after the weights, per token of KV cache plus the chunked
    # prefill's measured overhead per token (repeated GQA keys/values and the chunk's mask grow with it).
    longest = int((total * 0.97 - weights) / (per_token + chunked_peak)) // 1000 * 1000
    log.row(step="longest-predicted", length=longest, overhead_kib_per_token=round(chunked_peak / 1024, 1))
    if args.longest:
        longest = min(longest, args.longest)
    del lm
    gc.collect()
    torch.cuda.empty_cache()
    lm = wrap(model, args.tokenizer, 1, max_length=longest + 64)
    # Attention dominates the chunked prefill: time grows with the square of the length.
    estimate = 1.3 * chunked_s * (longest / length) ** 2
    if log.has(estimate, f"longest {longest}"):
        md = metadata(args.tokenizer, longest, 1)
        generation.free_device_bytes = none  # what the card would leave at that length
        try:
            run = evaluate(lm, md, True)
            floor = weights + (run["prompt_tokens"][0] + KV_ANSWER) * per_token
            log.row(step="longest", length=longest, floor_gib=gib(floor),
                    peak_over_floor=over(run["peak_allocated_gib"], floor),
                    **{k: v for k, v in run.items() if k != "answers"})  # fmt: skip
        except torch.OutOfMemoryError as error:
            log.row(step="longest", length=longest, oom=str(error)[:300])
        finally:
            generation.free_device_bytes = measured_free


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["seven", "eight"])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--shape", default=None)
    parser.add_argument("--lengths", default=None, help="LENGTH:BATCH,... (seven: 16384:4,32768:2; eight: 131000:1)")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--new", type=int, default=24, help="tokens per micro batch (longctx_kv's max_gen_toks)")
    parser.add_argument("--chunks", type=int, nargs="*", default=[], help="eight: other prefill chunk sizes to try")
    parser.add_argument("--paths", nargs="*", choices=["generate", "new-one-pass", "new-chunked"],
                        help="eight: the paths to run at the first length (default all)")
    parser.add_argument("--longest", type=int, default=None, help="eight: cap on the longest prompt tried")
    parser.add_argument("--deadline", type=float, default=560.0, help="seconds; later steps are skipped")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-ruler", action="store_true")
    parser.add_argument("--no-probe", action="store_true")
    args = parser.parse_args()
    args.shape = args.shape or {"seven": "7b", "eight": "8b"}[args.what]
    default = {"seven": "16384:4,32768:2", "eight": "131000:1"}[args.what]
    args.lengths = [tuple(int(x) for x in item.split(":")) for item in (args.lengths or default).split(",")]
    log = Log(Path(args.out), args.deadline)
    log.row(step="start", argv=sys.argv[1:], device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            torch=torch.__version__, transformers=__import__("transformers").__version__)  # fmt: skip
    (seven if args.what == "seven" else eight)(args, log)
    log.row(step="done")


if __name__ == "__main__":
    main()

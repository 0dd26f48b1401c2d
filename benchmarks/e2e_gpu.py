"""End to end on a GPU: stock lm_eval with longctx_kv vs lm-eval's RULER niah_multikey_3.

Same model (SmolLM2-135M or Llama-2-7B shape, random bf16 weights, window 40960 so 32k prompts
and their answers fit), same lengths and sample count. Also the limit: the model's bare batched
prefill of the same token counts, measured in the same run.

    python benchmarks/e2e_gpu.py --tokenizer DIR --lengths 8192 16384 32768 --samples 50 --out DIR
    python benchmarks/e2e_gpu.py --shape 7b --tokenizer DIR --lengths 16384 --samples 32 --batch 4 --no-stock-hf --out DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

SMOLLM2_135M = dict(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, rope_theta=100000.0, tie_word_embeddings=True,
)  # fmt: skip
LLAMA2_7B = dict(
    hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, rope_theta=10000.0,
)  # fmt: skip
SHAPES = {"smollm2": SMOLLM2_135M, "7b": LLAMA2_7B}


def build(tokenizer_dir: str, folder: Path, shape: str = "smollm2") -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=40960, **SHAPES[shape])
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model  # the lm_eval commands run in other processes: hand them the whole card
    torch.cuda.empty_cache()


def bare_prefill(folder: Path, length: int, samples: int, batch: int) -> float:
    """Return tokens/s of forward passes alone over ``samples`` prompts of ``length`` tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
    ids = torch.randint(0, model.config.vocab_size, (batch, length), device="cuda")
    with torch.inference_mode():
        model(ids[:1, :256], logits_to_keep=1)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        done = 0
        while done < samples:
            n = min(batch, samples - done)
            model(ids[:n], logits_to_keep=1)
            done += n
        torch.cuda.synchronize()
    return samples * length / (time.perf_counter() - start)


def lm_eval(args: list[str], log: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(["lm_eval", *args], capture_output=True, text=True)
    log.write_text(f"$ lm_eval {' '.join(args)}\n" + proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"lm_eval failed, see {log}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384, 32768])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", required=True)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2")
    parser.add_argument("--no-stock-hf", action="store_true", help="skip longctx_kv through the stock hf model")
    parser.add_argument("--skip-ruler-above", type=int, default=10**9, help="time RULER only up to this length")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(f"/tmp/{args.shape}-shape-random")
    build(args.tokenizer, folder, args.shape)
    depths = [round(i / (args.samples - 1), 4) for i in range(args.samples)] if args.samples > 1 else [0.5]
    for length in args.lengths:
        row = {"shape": args.shape, "length": length, "samples": args.samples, "batch": args.batch}
        grid = json.dumps({"max_seq_lengths": [length], "depths": depths, "num_samples": 1})
        common = ["--batch_size", str(args.batch), "--metadata", grid]
        row["longctx_kv_hf_longctx_s"] = lm_eval(
            ["--model", "hf-longctx", "--model_args", f"pretrained={folder}", "--tasks", "longctx_kv", *common],
            out / f"kv-hflongctx-{length}.log",
        )
        print(json.dumps(row), flush=True)
        if not args.no_stock_hf:
            row["longctx_kv_hf_s"] = lm_eval(
                ["--model", "hf", "--model_args", f"pretrained={folder},dtype=bfloat16", "--tasks", "longctx_kv", *common],
                out / f"kv-hf-{length}.log",
            )
        if length <= args.skip_ruler_above:
            ruler = json.dumps({"max_seq_lengths": [length]})
            row["niah_multikey_3_hf_s"] = lm_eval(
                ["--model", "hf", "--model_args", f"pretrained={folder},dtype=bfloat16", "--tasks", "niah_multikey_3",
                 "--batch_size", str(args.batch), "--metadata", ruler, "--limit", str(args.samples)],
                out / f"ruler-{length}.log",
            )  # fmt: skip
        row["bare_prefill_tok_s"] = bare_prefill(folder, length, args.samples, args.batch)
        tokens = length * args.samples
        for key in [k for k in row if k.endswith("_s") and not k.endswith("tok_s")]:
            row[key[:-2] + "_tok_s"] = tokens / row[key]
        print(json.dumps(row), flush=True)
        with open(out / "rows.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""Peak GPU memory of a Llama-2-shaped model (random bf16 weights) on longctx_kv at long lengths.

Builds the model on the GPU, saves it with a tokenizer, then runs the stock
``lm_eval --model hf-longctx`` once per length (batch 1) and reads the peak memory that
hf-longctx records in the results file, beside the floor: weights + KV cache of one sequence.

    python benchmarks/gpu_memory.py --shape 7b --tokenizer DIR --lengths 8000 16000 32000 --out DIR
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import time
from pathlib import Path

SHAPES = {  # Llama-2 dimensions; the vocabulary is the tokenizer's (random weights either way).
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40),
}


def build(shape: str, tokenizer_dir: str, folder: Path) -> dict:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=4096, rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **SHAPES[shape],
    )  # fmt: skip
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return {"params": params, "layers": config.num_hidden_layers, "kv_width": config.hidden_size}


def floor_gib(info: dict, tokens: int) -> float:
    weights = info["params"] * 2
    kv_cache = 2 * info["layers"] * info["kv_width"] * tokens * 2  # K and V, bf16, batch 1
    return (weights + kv_cache) / 2**30


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=SHAPES, default="7b")
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--lengths", type=int, nargs="+", default=[8000, 16000, 32000])
    parser.add_argument("--factor", type=int, default=8, help="linear RoPE factor over the native 4096")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(f"/tmp/llama2-{args.shape}-random")
    t0 = time.time()
    info = build(args.shape, args.tokenizer, folder)
    print(f"built and saved {args.shape}: {info['params'] / 1e9:.2f}B params in {time.time() - t0:.0f}s", flush=True)
    rows = []
    for length in args.lengths:
        run_dir = out / f"{args.shape}-{length}"
        grid = json.dumps({"max_seq_lengths": [length], "depths": [0.5], "num_samples": 1})
        cmd = [
            "lm_eval", "--model", "hf-longctx",
            "--model_args", f"pretrained={folder},rope_scaling=linear:{args.factor}", "--batch_size", "1",
            "--tasks", "longctx_kv", "--metadata", grid, "--output_path", str(run_dir),
        ]  # fmt: skip
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        (out / f"{args.shape}-{length}.log").write_text(proc.stdout + proc.stderr)
        results = glob.glob(str(run_dir / "*" / "results_*.json"))
        longctx = json.load(open(results[0]))["config"]["longctx"] if results else {}
        row = {
            "shape": args.shape, "length": length, "rc": proc.returncode, "wall_s": round(wall, 1),
            "peak_gib": longctx.get("peak_gpu_memory_gib"), "reserved_gib": longctx.get("peak_gpu_memory_reserved_gib"),
            "floor_gib": round(floor_gib(info, length + 32), 2), "beyond_window": longctx.get("beyond_window_requests"),
            "attn": longctx.get("attn_implementation"), "dtype": longctx.get("dtype"),
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(out / "rows.jsonl", "a") as fh:  # kept even if a later length runs out of time
            fh.write(json.dumps(row) + "\n")
    (out / f"memory-{args.shape}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

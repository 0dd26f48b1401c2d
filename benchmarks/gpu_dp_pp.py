"""Data parallel and model parallel with stock ``lm_eval --model hf-longctx`` on a 2-GPU machine.

Random-weight Llama-2 shapes (bf16) with SmolLM2's tokenizer, native window 4096, linear RoPE.

1. The issue-13 command: ``longctx_kv``, one length (16384), 32 depths from 0 to 1, 1 sample,
   ``--batch_size 4``, ``--log_samples``: on two GPUs with ``accelerate launch --num_processes 2``
   (fresh dataset cache: counts how many processes built the prompts), then on one GPU
   (``CUDA_VISIBLE_DEVICES=0``, same cache); compares per-sample answers and metrics, and times the
   generation phase (hf-longctx's progress bar on rank 0) and the whole command.
2. If time is left: ``parallelize=True`` (one process, layers spread over both GPUs), 13B shape,
   one prompt whose weights + KV cache floor exceeds one card's memory; records per-device peaks.

    python benchmarks/gpu_dp_pp.py --tokenizer DIR --out DIR [--budget_s 330]
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {  # Llama-2 dimensions; the vocabulary is the tokenizer's.
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40),
}
NATIVE = 4096
DEPTHS = [round(i / 31, 4) for i in range(32)]

BUILD = """
import sys, torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
shape, tok_dir, folder = sys.argv[1], sys.argv[2], sys.argv[3]
dims = {dims}[shape]
tok = AutoTokenizer.from_pretrained(tok_dir)
config = LlamaConfig(vocab_size=len(tok), max_position_embeddings={native}, rope_theta=10000.0,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **dims)
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
with torch.device("cuda"):
    model = LlamaForCausalLM(config)
model.save_pretrained(folder)
tok.save_pretrained(folder)
print(sum(p.numel() for p in model.parameters()))
"""


def build(shape: str, tokenizer: str, folder: str) -> int:
    code = BUILD.format(dims=repr(SHAPES), native=NATIVE)
    done = subprocess.run([sys.executable, "-c", code, shape, tokenizer, folder], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return int(done.stdout.split()[-1])


def run(cmd: list[str], log: Path, env: dict) -> tuple[int, float]:
    start = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env}).returncode
    return rc, round(time.perf_counter() - start, 1)


def generation_s(log: Path) -> float | None:
    """Return the elapsed time on hf-longctx's progress bar (rank 0), the generation phase."""
    found = re.findall(r"hf-longctx: 100%\|[^|]*\| \d+/\d+ \[(?:(\d+):)?(\d+):(\d+)<", log.read_text(errors="replace"))
    if not found:
        return None
    h, m, s = found[-1]
    return int(h or 0) * 3600 + int(m) * 60 + int(s)


def results_of(output: Path) -> tuple[dict, list[dict]]:
    results = json.loads(Path(glob.glob(str(output / "*" / "results_*.json"))[0]).read_text())
    samples = []
    for path in glob.glob(str(output / "*" / "samples_*.jsonl")):
        samples += [json.loads(line) for line in open(path)]
    return results, samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget_s", type=float, default=330, help="skip the model-parallel row after this")
    args = parser.parse_args()
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"gpus": subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout.strip().splitlines()}  # fmt: skip

    def save():
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(f"[{time.perf_counter() - t0:.0f}s]", json.dumps(summary), flush=True)

    save()
    params = build("7b", args.tokenizer, "/tmp/llama2-7b")
    summary["7b"] = {"params": params, "built_s": round(time.perf_counter() - t0, 1)}
    grid = json.dumps({"max_seq_lengths": [16384], "depths": DEPTHS, "num_samples": 1})
    lm_eval_args = [
        "--model", "hf-longctx", "--model_args", "pretrained=/tmp/llama2-7b,rope_scaling=linear:8",
        "--tasks", "longctx_kv", "--metadata", grid, "--batch_size", "4", "--log_samples",
    ]  # fmt: skip
    accelerate = ["accelerate", "launch", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no", "-m", "lm_eval"]  # fmt: skip
    runs = {"two": (accelerate, {}), "one": (["lm_eval"], {"CUDA_VISIBLE_DEVICES": "0"})}
    for name, (launcher, env) in runs.items():
        log = out / f"{name}.log"
        rc, wall = run([*launcher, *lm_eval_args, "--output_path", f"/tmp/run-{name}"], log, {"LM_EVAL_LONGCTX_CACHE": "/tmp/cache", **env})
        summary[name] = {"rc": rc, "wall_s": wall, "generation_s": generation_s(log),
                         "prompt_builds": log.read_text(errors="replace").count("building prompts")}  # fmt: skip
        save()
    if summary["one"]["rc"] == 0 and summary["two"]["rc"] == 0:
        answers, metrics = {}, {}
        for name in runs:
            results, samples = results_of(Path(f"/tmp/run-{name}"))
            answers[name] = {f"{s['doc']['max_seq_length']}/{s['doc']['depth']:g}/{s['doc']['sample']}": s["filtered_resps"][0] for s in samples}
            metrics[name] = results["results"]["longctx_kv"]
            (out / f"results-{name}.json").write_text(json.dumps({k: results[k] for k in ("results", "config", "n-samples")}, indent=1))
        same = sum(answers["one"][k] == answers["two"].get(k) for k in answers["one"])
        summary["compare"] = {"samples": [len(answers["one"]), len(answers["two"])], "identical_answers": same,
                              "identical_metrics": metrics["one"] == metrics["two"]}  # fmt: skip
        (out / "answers.json").write_text(json.dumps(answers, indent=1))
        save()
    elapsed = time.perf_counter() - t0
    if elapsed > args.budget_s:
        summary["parallelize"] = f"skipped: {elapsed:.0f}s spent of the {args.budget_s:.0f}s budget"
        save()
        return
    # Model parallel: one prompt whose floor (weights + KV cache) exceeds one card.
    card_bytes = int(summary["gpus"][0].split(",")[1].split()[0]) * 2**20
    start = time.perf_counter()
    params = build("13b", args.tokenizer, "/tmp/llama2-13b")
    dims = SHAPES["13b"]
    kv_per_token = 2 * dims["num_hidden_layers"] * dims["hidden_size"] * 2
    length = math.ceil((card_bytes * 1.05 - 2 * params) / kv_per_token / 1000) * 1000
    factor = math.ceil((length + 32) / NATIVE)
    floor = 2 * params + kv_per_token * (length + 32)
    log = out / "pp13b.log"
    cmd = [
        "lm_eval", "--model", "hf-longctx",
        "--model_args", f"pretrained=/tmp/llama2-13b,rope_scaling=linear:{factor},parallelize=True",
        "--tasks", "longctx_kv", "--metadata", json.dumps({"max_seq_lengths": [length], "depths": [0.5], "num_samples": 1}),
        "--batch_size", "1", "--output_path", "/tmp/run-pp",
    ]  # fmt: skip
    rc, wall = run(cmd, log, {"LM_EVAL_LONGCTX_CACHE": "/tmp/cache"})
    row = {"params": params, "built_s": round(time.perf_counter() - start - wall, 1), "length": length,
           "rope": f"linear:{factor}", "floor_gib": round(floor / 2**30, 1), "card_gib": round(card_bytes / 2**30, 1),
           "rc": rc, "wall_s": wall, "generation_s": generation_s(log)}  # fmt: skip
    if rc == 0:
        results, _ = results_of(Path("/tmp/run-pp"))
        info = results["config"]["longctx"]
        row.update({k: info.get(k) for k in ("peak_gpu_memory_gib", "peak_gpu_memory_reserved_gib", "beyond_window_requests")})
        (out / "results-pp13b.json").write_text(json.dumps({k: results[k] for k in ("results", "config")}, indent=1))
    summary["parallelize"] = row
    save()


if __name__ == "__main__":
    main()

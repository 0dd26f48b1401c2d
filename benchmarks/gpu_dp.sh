#!/usr/bin/env bash
# Data parallel on two GPUs: the same longctx_kv run on one GPU and with `accelerate launch` on
# two, same model (SmolLM2-135M shape, random bf16 weights), same grid; compares per-sample
# answers and wall time, and counts how many processes built the dataset.
# Usage (2-GPU machine, after gpu_setup.sh): bash benchmarks/gpu_dp.sh OUT_DIR
set -uo pipefail
out=${1:?OUT_DIR}
python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; from e2e_gpu import build; build('.smoltok', Path('/tmp/rand'))"
grid='{"max_seq_lengths": [8192, 16384], "depths": [0, 0.25, 0.5, 0.75, 1], "num_samples": 8}'
args=(--model hf-longctx --model_args pretrained=/tmp/rand --batch_size 8 --tasks longctx_kv --metadata "$grid" --log_samples)
start=$(date +%s)
LM_EVAL_LONGCTX_CACHE=/tmp/cache-one CUDA_VISIBLE_DEVICES=0 lm_eval "${args[@]}" --output_path /tmp/one > "$out/one.log" 2>&1
echo "one GPU: rc=$? wall=$(( $(date +%s) - start ))s" | tee "$out/summary.txt"
start=$(date +%s)
LM_EVAL_LONGCTX_CACHE=/tmp/cache-two accelerate launch --num_processes 2 --num_machines 1 --mixed_precision no \
  --dynamo_backend no -m lm_eval "${args[@]}" --output_path /tmp/two > "$out/two.log" 2>&1
echo "two GPUs: rc=$? wall=$(( $(date +%s) - start ))s" | tee -a "$out/summary.txt"
echo "dataset builds in the two-GPU run: $(grep -c 'building prompts' "$out/two.log")" | tee -a "$out/summary.txt"
for run in one two; do
  cp /tmp/$run/*/results_*.json "$out/results-$run.json"
  cp /tmp/$run/*/samples_longctx_kv_*.jsonl "$out/samples-$run.jsonl"
done
python3 - "$out" <<'PY' | tee -a "$out/summary.txt"
import json, sys
out = sys.argv[1]
answers = {}
for run in ("one", "two"):
    rows = [json.loads(line) for line in open(f"{out}/samples-{run}.jsonl")]
    answers[run] = {(r["doc"]["max_seq_length"], r["doc"]["depth"], r["doc"]["sample"]): r["filtered_resps"][0] for r in rows}
    res = json.load(open(f"{out}/results-{run}.json"))["results"]["longctx_kv"]
    print(run, "samples", len(rows), {k: v for k, v in res.items() if k.startswith(("exact,", "contains,", "beyond_window,"))})
same = sum(answers["one"][k] == answers["two"].get(k) for k in answers["one"])
print(f"identical answers: {same} of {len(answers['one'])}")
PY

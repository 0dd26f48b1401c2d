#!/usr/bin/env bash
# SmolLM2-135M-Instruct (native window 8192) through the stock lm_eval command with hf-longctx,
# under no scaling, linear x2, dynamic x2 and yarn x2, on the longctx group at 4k-16k, in both
# prompt modes (plain, and --apply_chat_template). The eight runs share one GPU at once (the
# model is small), so their wall times are not speeds. Writes OUT_DIR/summary.txt (lm-eval's
# tables, depth rows left out), OUT_DIR/answers.jsonl (every answer, via answers.py) and
# OUT_DIR/results.tgz (the results JSON files).
# Usage (GPU machine, after gpu_setup.sh): bash benchmarks/gpu_smollm2_rope.sh OUT_DIR
set -uo pipefail
out=${1:?OUT_DIR}
work=${WORK:-/tmp/rope-runs}
mkdir -p "$out" "$work"
grid='{"max_seq_lengths": [4000, 8000, 12000, 16000], "depths": [0, 0.5, 1], "num_samples": 5}'
run() {  # SETTING MODE
  local name=${1/:/x}-$2 extra=""
  [ "$2" = chat ] && extra=--apply_chat_template
  local start=$(date +%s)
  lm_eval --model hf-longctx --model_args "pretrained=/tmp/smolhf,rope_scaling=$1" --batch_size 8 \
    --tasks longctx $extra --metadata "$grid" \
    --output_path "$work/$name" --log_samples > "$work/$name.log" 2>&1
  echo "$1 $2 rc=$? wall=$(( $(date +%s) - start ))s (eight runs at once)" > "$work/$name.status"
}
for mode in plain chat; do
  # Build each mode's prompts once before the parallel runs (the cache is shared).
  python3 -c "
import json, lm_eval_longctx
md = {**json.loads('$grid'), 'pretrained': '/tmp/smolhf', 'max_length': 20000, 'chat_template': '$mode' == 'chat'}
lm_eval_longctx.task_manager(metadata=md).load(['longctx'])"
done
for mode in plain chat; do
  for setting in none linear:2 dynamic:2 yarn:2; do run "$setting" "$mode" & done
done
wait
for mode in plain chat; do
  for setting in none linear:2 dynamic:2 yarn:2; do
    name=${setting/:/x}-$mode
    cat "$work/$name.status" >> "$out/summary.txt"
    grep -E "^\|" "$work/$name.log" | grep -vE "_depth_" >> "$out/summary.txt"
    python3 benchmarks/answers.py "$work/$name" >> "$out/answers.jsonl"
  done
done
(cd "$work" && tar czf "$out/results.tgz" $(find . -name "results_*.json"))

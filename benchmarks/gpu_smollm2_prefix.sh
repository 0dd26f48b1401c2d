#!/usr/bin/env bash
# Why the answer prefix exists: SmolLM2-135M-Instruct through the stock `lm_eval --model hf` on the
# longctx group at 512/1024/2048 tokens (depths 0/0.5/1, 4 samples: 12 prompts per length and
# task), with the answer prefix (task version 2) and with the first version's prompts
# (answer_prefix: false), each in plain mode and under --apply_chat_template. The four runs share
# one GPU at once. Writes OUT_DIR/prefix-summary.txt and OUT_DIR/prefix-answers.jsonl.
# Usage (GPU machine, after gpu_setup.sh): bash benchmarks/gpu_smollm2_prefix.sh OUT_DIR
set -uo pipefail
out=${1:?OUT_DIR}
work=${WORK:-/tmp/prefix-runs}
mkdir -p "$out" "$work"
run() {  # MODE PREFIX
  local name=$1-prefix_$2 extra=""
  [ "$1" = chat ] && extra=--apply_chat_template
  local start=$(date +%s)
  lm_eval --model hf --model_args pretrained=/tmp/smolhf --batch_size 8 --tasks longctx $extra \
    --metadata "{\"max_seq_lengths\": [512, 1024, 2048], \"depths\": [0, 0.5, 1], \"num_samples\": 4, \"answer_prefix\": $2}" \
    --output_path "$work/$name" --log_samples > "$work/$name.log" 2>&1
  echo "$name rc=$? wall=$(( $(date +%s) - start ))s (four runs at once)" > "$work/$name.status"
}
for mode in plain chat; do for prefix in true false; do run $mode $prefix & done; done
wait
for mode in plain chat; do
  for prefix in true false; do
    name=$mode-prefix_$prefix
    cat "$work/$name.status" >> "$out/prefix-summary.txt"
    grep -E "^\|" "$work/$name.log" | grep -vE "_depth_" >> "$out/prefix-summary.txt"
    python3 benchmarks/answers.py "$work/$name" >> "$out/prefix-answers.jsonl"
  done
done

#!/usr/bin/env bash
# SmolLM2-135M-Instruct (native window 8192) through the stock lm_eval command with hf-longctx,
# under no scaling, linear x2, dynamic x2 and yarn x2, on the longctx group at 4k-16k.
# Usage (GPU machine, after gpu_setup.sh): bash benchmarks/gpu_smollm2_rope.sh OUT_DIR
set -uo pipefail
out=${1:?OUT_DIR}
grid='{"max_seq_lengths": [4000, 8000, 12000, 16000], "depths": [0, 0.5, 1], "num_samples": 5}'
for setting in none linear:2 dynamic:2 yarn:2; do
  name=${setting/:/x}
  start=$(date +%s)
  lm_eval --model hf-longctx \
    --model_args "pretrained=/tmp/smolhf,rope_scaling=$setting" --batch_size 8 \
    --tasks longctx --metadata "$grid" \
    --output_path "$out/smollm2-$name" --log_samples > "$out/smollm2-$name.log" 2>&1
  echo "$setting rc=$? wall=$(( $(date +%s) - start ))s" | tee -a "$out/summary.txt"
  grep -E "^\|" "$out/smollm2-$name.log" | grep -vE "_depth_" >> "$out/summary.txt"
done

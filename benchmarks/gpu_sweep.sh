#!/usr/bin/env bash
# Issue 14 on one GPU: `lm-eval-longctx sweep` over four RoPE settings against the four separate
# `lm_eval --model hf-longctx` commands it replaces, same machine, same model, same arguments.
# Model: Llama-2-7B shape (native window 4096), random bf16 weights, saved once to local disk
# (gpu_dp_pp.build, the two-GPU benchmark's model).
# Tasks: longctx_kv and longctx_passkey at 4k and 8k (8k prompts and their answers fit no window here: marked) plus
# tiny_arith, a small standard-style YAML task. Then: do the per-setting results and answers equal?
#   bash benchmarks/gpu_sweep.sh OUT TOKENIZER_DIR
set -uo pipefail
out=${1:?output folder}; tok=${2:?tokenizer folder}
model=/tmp/llama2-7b-shape-random
mkdir -p "$out" /tmp/r/stdtask && cp tests/fixtures/report/tiny_arith_task/* /tmp/r/stdtask/
python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from gpu_dp_pp import build; build('7b', '$tok', '$model')"
settings=(none linear:2 dynamic:2 yarn:2)
common=(--tasks longctx_kv,longctx_passkey,tiny_arith --include_path /tmp/r/stdtask --batch_size 4 --log_samples
        --metadata '{"max_seq_lengths": [4096, 8192], "depths": [0, 0.33, 0.67, 1], "num_samples": 2}')
timed() { local name=$1; shift; local t0=$(date +%s.%N); "$@" > "$out/$name.log" 2>&1; local rc=$?
          echo "{\"step\": \"$name\", \"rc\": $rc, \"wall_s\": $(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{printf "%.1f", a-b}')}" | tee -a "$out/rows.jsonl"; }
# The prompts are built by the first command and cached for the rest (under a second here).
for s in "${settings[@]}"; do
  slug=rope_${s//:/}
  timed "separate-$slug" lm_eval --model hf-longctx --model_args pretrained=$model,rope_scaling=$s "${common[@]}" \
    --output_path "$out/separate/$slug"
done
timed sweep lm-eval-longctx sweep --rope "${settings[@]}" --model hf-longctx --model_args pretrained=$model \
  "${common[@]}" --output_path "$out/sweep"
python3 benchmarks/compare_runs.py "$out/separate" "$out/sweep" | tee "$out/compare.txt"

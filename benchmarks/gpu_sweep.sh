#!/usr/bin/env bash
# Issue 14 on one GPU: `lm-eval-longctx sweep` over four RoPE settings against the four separate
# `lm_eval --model hf-longctx` commands it replaces, same machine, same model, same arguments.
# Model: Llama-2-7B shape (native window 4096), random bf16 weights, saved once to local disk.
# Tasks: longctx_kv and longctx_passkey at 4k and 8k (8k is beyond `none`'s window: marked) plus
# tiny_arith, a small standard-style YAML task. Then: do the per-setting results and answers equal?
#   bash benchmarks/gpu_sweep.sh OUT TOKENIZER_DIR
set -uo pipefail
out=${1:?output folder}; tok=${2:?tokenizer folder}
model=/tmp/llama2-7b-shape-random
mkdir -p "$out" /tmp/r/stdtask && cp tests/fixtures/report/tiny_arith_task/* /tmp/r/stdtask/
python3 - "$tok" "$model" <<'PY'
import sys, torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
tok = AutoTokenizer.from_pretrained(sys.argv[1])
config = LlamaConfig(vocab_size=len(tok), hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                     num_attention_heads=32, max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id)
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlamaForCausalLM(config).to(torch.bfloat16)
model.config.dtype = torch.bfloat16
model.save_pretrained(sys.argv[2]); tok.save_pretrained(sys.argv[2])
PY
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

#!/usr/bin/env bash
# --use_cache under two RoPE settings, --predict_only and a variant YAML on the embedded model (CPU):
# benchmarks/use_cache_settings.sh [OUT]; run in the environment of scripts/setup.sh. RESULTS.md, issue 19.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
M=$(lm-eval-longctx smollm2)
W=${1:-/tmp/real}; rm -rf "$W"; mkdir -p "$W"; cd "$W"
MD='{"max_seq_lengths": [512], "depths": [0.5], "num_samples": 2}'
for s in none linear:8 none; do
  echo "=== use_cache rope_scaling=$s"
  /usr/bin/time -f "wall %e s" lm_eval --model hf-longctx --model_args pretrained=$M,rope_scaling=$s --tasks longctx_passkey \
    --metadata "$MD" --device cpu --use_cache $W/rc --output_path $W/out_$s --log_samples 2>&1 | grep -E "Cached requests|table|exact |wall|error" 
done
echo "=== predict_only"
lm_eval --model hf --model_args pretrained=$M --tasks longctx_kv --metadata "$MD" --device cpu --predict_only --log_samples --output_path $W/po 2>&1 | tail -3
wc -l $(find $W/po -name "samples_*.jsonl"); head -c 600 $(find $W/po -name "samples_*.jsonl" | head -1); echo
echo "=== variant"
mkdir -p my_tasks && cat > my_tasks/my_multikey.yaml <<YAML
include: $(lm-eval-longctx tasks-dir)/_longctx_common.yaml
task: my_multikey
dataset_kwargs: {longctx_task: longctx_kv_multikey}
YAML
lm_eval --model hf --model_args pretrained=$M --include_path my_tasks --tasks my_multikey --device cpu \
  --metadata '{"max_seq_lengths": [512], "depths": [0.5], "num_samples": 2, "num_keys": 8}' 2>&1 | grep -E "my_multikey|error" | head -5

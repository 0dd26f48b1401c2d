set -e
cd /work/main && . .venv-test/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
while pgrep -f /tmp/pplcpu/run.sh > /dev/null; do sleep 10; done
model=$(lm-eval-longctx smollm2)
for rs in none linear:2 dynamic:2 yarn:2; do
  extra=""; [ "$rs" = none ] && extra=",max_length=16384"
  s=$(date +%s)
  lm_eval --model hf-longctx --model_args "pretrained=$model,rope_scaling=$rs$extra" --tasks longctx_ppl \
    --metadata '{"max_seq_lengths": [8192, 16384], "stride": 2048, "documents": ".alice"}' --device cpu \
    --output_path /tmp/pplcpu/alice/${rs/:/} > /tmp/pplcpu/alice_${rs/:/}.log 2>&1
  echo "alice $rs $(( $(date +%s) - s )) s" >> /tmp/pplcpu/times
done

#!/usr/bin/env bash
# The SmolLM2 perplexity table (issue 21): SmolLM2-135M-Instruct (native window 8192) under
# none, linear:2, dynamic:2, yarn:2, on (a) the shipped PI paper at 1k, 2k, 4k and (b) a longer
# public-domain text at 2k, 4k, 8k, 16k, stride 256. `none` past 8192 runs with max_length=16384
# (hf-longctx runs past the native window only when max_length says so), to show the blow-up.
#   bash benchmarks/ppl_smollm2.sh DOC_FOLDER [OUT]
# DOC_FOLDER holds alice29.txt (39,357 SmolLM2 tokens), from the Brotli 1.1.0 sdist:
#   pip download --no-binary :all: --no-deps brotli==1.1.0 && tar xzf Brotli-1.1.0.tar.gz
#   mkdir alice && cp Brotli-1.1.0/tests/testdata/alice29.txt alice/
set -euo pipefail
docs=${1:?usage: benchmarks/ppl_smollm2.sh DOC_FOLDER [OUT]}
out=${2:-${OUT:-results/ppl_smollm2}}
model=$(lm-eval-longctx smollm2)
for rs in none linear:2 dynamic:2 yarn:2; do
  extra=""
  [ "$rs" = none ] && extra=",max_length=16384"
  lm_eval --model hf-longctx --model_args "pretrained=$model,rope_scaling=$rs$extra" --tasks longctx_ppl \
    --metadata '{"max_seq_lengths": [1024, 2048, 4096], "stride": 256}' \
    --output_path "$out/pi_paper/${rs/:/}"
  lm_eval --model hf-longctx --model_args "pretrained=$model,rope_scaling=$rs$extra" --tasks longctx_ppl \
    --metadata "{\"max_seq_lengths\": [2048, 4096, 8192, 16384], \"stride\": 256, \"documents\": \"$docs\"}" \
    --output_path "$out/alice/${rs/:/}"
done

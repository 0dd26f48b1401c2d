#!/usr/bin/env bash
# Prints the path of a portable llama-cpp-python wheel (the served-model tests' server), building
# it once into a cache folder:  scripts/llama_cpp_wheel.sh PYTHON
# The build takes about 5 minutes on 2 cores. It is portable on purpose: the default native build
# crashed at the first token on the project's machine (general protection fault in libggml-cpu).
# LONGCTX_WHEELS sets the cache folder (default ~/.cache/lm_eval_longctx/wheels).
set -euo pipefail
py=${1:?usage: scripts/llama_cpp_wheel.sh PYTHON}
version=${LLAMA_CPP_VERSION:-0.3.36}
dir=${LONGCTX_WHEELS:-$HOME/.cache/lm_eval_longctx/wheels}
mkdir -p "$dir"
find_wheel() { ls "$dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -1 || true; }
wheel=$(find_wheel)
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $version (portable CPU build, about 5 minutes; cached in $dir)" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
    "$py" -m pip wheel -q --no-deps --no-binary llama-cpp-python -w "$tmp" "llama-cpp-python==$version" >&2
  mv "$tmp"/llama_cpp_python-*.whl "$dir"/  # complete wheels only: a failed build leaves nothing
  wheel=$(find_wheel)
fi
echo "$wheel"

#!/usr/bin/env bash
# On the GPU machine (no network): install lm-eval and this package from the carried wheelhouse
# (.devwh, made here with ../shared/device/wheelhouse.sh) and rebuild SmolLM2-135M-Instruct from
# its two carried GGUF parts (.smol1 copied to /tmp/smol by an earlier call, .smol2 now).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps .devwh/*.whl
python3 -m pip install -q --no-deps --no-build-isolation -e .
python3 -c "import lm_eval, datasets, lm_eval_longctx; print('imports ok')"
if [ -d .smol2 ]; then
  cp .smol2/.smol-part.* /tmp/smol/ && cat /tmp/smol/.smol-part.* > /tmp/smol/model.gguf
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  /tmp/smol/model.gguf" | sha256sum -c
  lm-eval-longctx smollm2 --gguf /tmp/smol/model.gguf --output /tmp/smolhf
fi

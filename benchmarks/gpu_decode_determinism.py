"""Which attention backend makes greedy decoding of a random-weight 7B shape repeatable?

One GPU, Llama-2-7B shape (random bf16 weights), prompts of 16,384 random tokens, 32 greedy
tokens: batch [0, 1, 2, 3] twice (run to run) and batch [0, 2, 4, 6] (what a second
data-parallel rank would batch), under each sdpa backend, and with
torch.use_deterministic_algorithms(True) on the default backends.

    CUBLAS_WORKSPACE_CONFIG=:4096:8 python benchmarks/gpu_decode_determinism.py
"""

import contextlib
import json
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from random_7b import model_and_prompts

model, ids = model_and_prompts()


def greedy(rows):
    with torch.inference_mode():
        out = model.generate(ids[rows], attention_mask=torch.ones_like(ids[rows]), max_new_tokens=32,
                             do_sample=False, pad_token_id=0)  # fmt: skip
    return {row: out[i, ids.shape[1]:].tolist() for i, row in enumerate(rows)}


@contextlib.contextmanager
def deterministic():
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)


settings = {
    "default": contextlib.nullcontext,
    "default + use_deterministic_algorithms": deterministic,
    "flash": lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION]),
    "efficient": lambda: sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]),
    "cudnn": lambda: sdpa_kernel([SDPBackend.CUDNN_ATTENTION]),
}
report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
for name, setting in settings.items():
    start = time.perf_counter()
    try:
        with setting():
            g1, g2, gb = greedy([0, 1, 2, 3]), greedy([0, 1, 2, 3]), greedy([0, 2, 4, 6])
        report[name] = {
            "same batch twice, prompts 0-3 equal": [g1[r] == g2[r] for r in range(4)],
            "[0,1,2,3] vs [0,2,4,6], prompts 0 and 2 equal": [g1[0] == gb[0], g1[2] == gb[2]],
            "seconds": round(time.perf_counter() - start, 1),
        }
    except Exception as exc:  # a backend that cannot run these shapes
        report[name] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
    print(name, report[name], flush=True)
print(json.dumps(report, indent=1))

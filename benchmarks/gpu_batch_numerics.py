"""Is a greedy answer of a random-weight 7B shape fixed, or does it move with the batch it sits in?

One GPU, Llama-2-7B shape (random bf16 weights, sdpa), 8 prompts of 16,384 random tokens. Compares
the last-token logits and 32 greedy tokens of prompt 0 and 2 in batch [0, 1, 2, 3] twice (run to
run), against batch [0, 2, 4, 6] (the split a second data-parallel rank makes) and alone.

    python benchmarks/gpu_batch_numerics.py
"""

import json

import torch
from random_7b import model_and_prompts

model, ids = model_and_prompts()


def last_logits(rows):
    with torch.inference_mode():
        return model(ids[rows], logits_to_keep=1).logits[:, -1].float()


def greedy(rows):
    with torch.inference_mode():
        out = model.generate(ids[rows], attention_mask=torch.ones_like(ids[rows]), max_new_tokens=32,
                             do_sample=False, pad_token_id=0)  # fmt: skip
    return {row: out[i, ids.shape[1]:].tolist() for i, row in enumerate(rows)}


a1, a2, b, alone = last_logits([0, 1, 2, 3]), last_logits([0, 1, 2, 3]), last_logits([0, 2, 4, 6]), last_logits([0])
report = {
    "device": torch.cuda.get_device_name(0),
    "logits max |diff|, prompt 0, same batch twice": (a1[0] - a2[0]).abs().max().item(),
    "logits max |diff|, prompt 0, batch [0,1,2,3] vs [0,2,4,6]": (a1[0] - b[0]).abs().max().item(),
    "logits max |diff|, prompt 2, batch [0,1,2,3] vs [0,2,4,6]": (a1[2] - b[1]).abs().max().item(),
    "logits max |diff|, prompt 0, batch of 4 vs alone": (a1[0] - alone[0]).abs().max().item(),
}
g1, g2, gb = greedy([0, 1, 2, 3]), greedy([0, 1, 2, 3]), greedy([0, 2, 4, 6])
report["greedy tokens equal, same batch twice (prompts 0-3)"] = [g1[r] == g2[r] for r in range(4)]
report["greedy tokens equal, [0,1,2,3] vs [0,2,4,6] (prompts 0, 2)"] = [g1[0] == gb[0], g1[2] == gb[2]]
report["first differing step, prompt 0 / 2 across batches"] = [
    next((i for i, (x, y) in enumerate(zip(g1[r], gb[r])) if x != y), None) for r in (0, 2)
]
print(json.dumps(report, indent=1))

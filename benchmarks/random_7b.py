"""The random-weight Llama-2-7B shape and random prompts of the GPU numerics probes
(``gpu_batch_numerics.py``, ``gpu_decode_determinism.py``): one GPU, bf16, seeded."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def model_and_prompts(rows: int = 8, length: int = 16384):
    """Return the model (seed 0) and ``rows`` prompts of ``length`` random token ids (seed 1), on the GPU."""
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    config = LlamaConfig(vocab_size=49152, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, max_position_embeddings=32768)  # fmt: skip
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 49152, (rows, length), generator=torch.Generator().manual_seed(1)).cuda()
    return model, ids

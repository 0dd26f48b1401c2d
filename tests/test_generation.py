"""hf-longctx's greedy decoding loop (lm_eval_longctx.generation) against model.generate on tiny Llamas:
the same answers, the same tokens up to where it stops, and a batch that stops once every row has."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from conftest import make_tiny_llama
from lm_eval.api.instance import Instance

from lm_eval_longctx import generation
from lm_eval_longctx.model import HFLongCtxLM, fixed_ntk_base

# The generation path must match model.generate under transformers 4.x too (scripts/test_tf4.sh).
pytestmark = pytest.mark.tf4

WORDS = "The grass is green. The sky is blue. '1234abcd' = 'ff00'. There and back again. "
NEVER = "<<never>>"


@pytest.fixture(scope="module")
def sp_sharp_model_dir(tmp_path_factory, sp_tokenizer_dir):
    return make_tiny_llama(tmp_path_factory.mktemp("sharp_gen_sp"), sp_tokenizer_dir, initializer_range=0.5)


def requests_for(prompts, **gen_kwargs):
    kwargs = {"until": [NEVER], "max_gen_toks": 12, "do_sample": False, **gen_kwargs}
    return [Instance("generate_until", {}, (p, dict(kwargs)), i) for i, p in enumerate(prompts)]


def run(lm, prompts, fast: bool, **gen_kwargs) -> list[str]:
    lm.fast_generate = fast
    return lm.generate_until(requests_for(prompts, **gen_kwargs), disable_tqdm=True)


def equal_length_prompts(lm, n_tokens: int, rows: int) -> list[str]:
    """``rows`` different prompts of one token length, at least ``n_tokens`` long."""
    base = WORDS * max(1, n_tokens // lm._prompt_len(WORDS))
    while lm._prompt_len(base) < n_tokens:
        base += WORDS
    by_length = defaultdict(list)
    for i in range(400):
        candidate = f"{base}'{i * 7919 % 65536:04x}' ="
        by_length[lm._prompt_len(candidate)].append(candidate)
        if len(by_length[lm._prompt_len(candidate)]) == rows:
            return by_length[lm._prompt_len(candidate)]
    raise AssertionError("no equal-length prompts")


def stops_at_different_steps(answers: list[str]) -> list[str]:
    """A stop string from each row's free answer, each at another place (row i: from char i + 1)."""
    stops = []
    for i, text in enumerate(answers):
        start = min(i + 1, max(0, len(text) - 2))
        piece = text[start : start + 2]
        if piece.strip() and piece not in stops:
            stops.append(piece)
    return stops


@pytest.fixture
def greedy_calls(monkeypatch):
    calls = []
    original = generation.greedy_generate

    def spy(model, input_ids, **kwargs):
        calls.append({"shape": tuple(input_ids.shape), **{k: kwargs[k] for k in ("max_new_tokens", "stop")}})
        return original(model, input_ids, **kwargs)

    monkeypatch.setattr(generation, "greedy_generate", spy)
    return calls


@pytest.mark.parametrize(
    ("rope_scaling", "n_tokens", "rows", "batch_size"),
    [
        (None, 60, 4, 4),
        (None, 200, 3, 2),
        (None, 300, 1, 1),
        ("linear:2", 700, 3, 4),
        ("dynamic:4", 300, 3, 3),  # under the native 512: init frequencies
        ("dynamic:4", 700, 4, 4),  # past it: the base of a fresh model for that length
    ],
)
def test_answers_match_model_generate_with_stops_at_different_steps(
    sharp_model_dir, greedy_calls, rope_scaling, n_tokens, rows, batch_size
):
    lm = HFLongCtxLM(pretrained=sharp_model_dir, batch_size=batch_size, rope_scaling=rope_scaling)
    prompts = equal_length_prompts(lm, n_tokens, rows) + [WORDS * 3]  # plus a batch of another length
    free = run(lm, prompts, fast=False)
    stops = stops_at_different_steps(free)
    assert run(lm, prompts, fast=True) == free
    assert run(lm, prompts, fast=True, until=stops) == run(lm, prompts, fast=False, until=stops)
    assert greedy_calls and all(call["stop"][: len(stops)] == stops for call in greedy_calls[-2:])


def test_sentencepiece_family_matches_model_generate(sp_sharp_model_dir, greedy_calls):
    lm = HFLongCtxLM(pretrained=sp_sharp_model_dir, batch_size=4)
    prompts = equal_length_prompts(lm, 150, 4)
    free = run(lm, prompts, fast=False)
    stops = stops_at_different_steps(free)
    assert run(lm, prompts, fast=True, until=stops) == run(lm, prompts, fast=False, until=stops)
    assert greedy_calls


def test_tokens_match_model_generate_up_to_the_stop_with_eos_rows_padded(sharp_model_dir):
    lm = HFLongCtxLM(pretrained=sharp_model_dir, batch_size=4)
    prompts = equal_length_prompts(lm, 120, 4)
    ids = torch.tensor([lm._encode_once([p])[0] for p in prompts])
    n = ids.shape[1]
    free = lm.model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)[:, n:]
    # An EOS that row 0 emits at step 4: model.generate pads that row after it, the others go on.
    lm.model.generation_config.eos_token_id = int(free[0, 4])
    kwargs = {"attention_mask": torch.ones_like(ids), "do_sample": False}

    def tokens(fast, stop):
        lm.fast_generate = fast
        return lm._model_generate(ids, max_length=n + 12, stop=stop, **kwargs)[:, n:]

    for stop in ([NEVER], stops_at_different_steps([lm.tok_decode(row) for row in free.tolist()])):
        fast, plain = tokens(True, stop), tokens(False, stop)
        assert fast.shape[1] <= plain.shape[1]
        assert torch.equal(fast, plain[:, : fast.shape[1]].cpu())
        assert set(fast[0, 5:].tolist()) <= {lm.tokenizer.pad_token_id}


def test_batch_stops_once_every_row_has_stopped(sharp_model_dir):
    lm = HFLongCtxLM(pretrained=sharp_model_dir, batch_size=4)
    prompts = equal_length_prompts(lm, 100, 4)
    free = run(lm, prompts, fast=False, max_gen_toks=16)
    stops = stops_at_different_steps(free)
    steps = []
    hook = lm.model.register_forward_hook(lambda module, args, kwargs, out: steps.append(kwargs["input_ids"].shape[1]),
                                          with_kwargs=True)  # fmt: skip
    try:
        fast = run(lm, prompts, fast=True, until=stops, max_gen_toks=16)
        fast_steps, steps[:] = len(steps), []
        plain = run(lm, prompts, fast=False, until=stops, max_gen_toks=16)
    finally:
        hook.remove()
    assert fast == plain
    # lm-eval's criteria stop a batch only when every row holds the same stop string: here never.
    assert len(steps) == 16
    settled = [min(len(lm.tok_encode(a.split(s)[0])) for s in stops if s in a) for a in free]
    assert fast_steps < 16 and fast_steps <= max(settled) + 4


def prefill_lengths(lm):
    """A list that collects the token count of each forward pass (prefill chunks, decode steps)."""
    seen = []
    lm.model.register_forward_hook(lambda module, args, kwargs, out: seen.append(kwargs["input_ids"].shape[1]),
                                   with_kwargs=True)  # fmt: skip
    return seen


def test_a_prefill_that_does_not_fit_runs_in_chunks_with_the_same_answers(sharp_model_dir, greedy_calls, monkeypatch):
    lm = HFLongCtxLM(pretrained=sharp_model_dir, batch_size=3, rope_scaling="linear:2")
    prompts = equal_length_prompts(lm, 600, 3)
    whole = run(lm, prompts, fast=True)
    monkeypatch.setattr(generation, "free_device_bytes", lambda device: 10_000)  # a card with no room
    monkeypatch.setattr(generation, "PREFILL_CHUNK", 100)
    passes = prefill_lengths(lm)
    assert run(lm, prompts, fast=True) == whole
    assert passes[:2] == [100, 100] and max(passes) == 100


def test_prefill_chunks_attend_through_the_end_aligned_causal_bias(sharp_model_dir, monkeypatch):
    """Chunks after the first attend to the cache through torch's causal_lower_right bias (flash
    attention serves it on a GPU) instead of transformers' explicit mask: same logits as the
    masked chunks and as one pass, on a GQA model (4 query heads, 2 key/value heads)."""
    from torch.nn.attention.bias import CausalBias

    lm = HFLongCtxLM(pretrained=sharp_model_dir, batch_size=2)
    assert lm.model.config.num_key_value_heads < lm.model.config.num_attention_heads
    ids = torch.tensor(equal_length_prompts_ids(lm, 300, 2))
    cache_arg = generation._cache_argument(lm.model)

    def last_logits(chunk):
        cache = generation.preallocated_cache(lm.model.config, ids.shape[1] + 1)
        with torch.inference_mode():
            return generation.prefill(lm.model, ids, cache, cache_arg, chunk)

    dispatched = []
    real = CausalBias._dispatch
    monkeypatch.setattr(CausalBias, "_dispatch", staticmethod(lambda *a, **k: dispatched.append(k["attn_mask"]) or real(*a, **k)))
    one_pass = last_logits(ids.shape[1])
    assert dispatched == []
    chunked = last_logits(128)  # about 300 tokens: chunks of 128, 128 and the rest; the first is a plain causal pass
    layers, n = lm.model.config.num_hidden_layers, ids.shape[1]
    assert 256 < n < 384
    assert [(b.seq_len_q, b.seq_len_kv) for b in dispatched] == [(128, 256)] * layers + [(n - 256, n)] * layers
    with torch.inference_mode():  # the stock path: transformers' explicit mask for every chunk
        cache = generation.preallocated_cache(lm.model.config, ids.shape[1] + 1)
        for start in range(0, ids.shape[1], 128):
            out = generation._forward(lm.model, ids[:, start : start + 128], start, cache, cache_arg)
        masked = out.logits[:, -1].float()
    torch.testing.assert_close(chunked, masked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked, one_pass, rtol=1e-4, atol=1e-4)
    assert torch.equal(chunked.argmax(-1), one_pass.argmax(-1))
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    assert "sdpa" not in ALL_ATTENTION_FUNCTIONS._local_mapping  # the stock kernel is back


def equal_length_prompts_ids(lm, length, n):
    return [lm._encode_once([p])[0] for p in equal_length_prompts(lm, length, n)]


def test_a_prefill_that_fits_runs_in_one_pass(sharp_model_dir, monkeypatch):
    lm = HFLongCtxLM(pretrained=sharp_model_dir, batch_size=1)
    monkeypatch.setattr(generation, "free_device_bytes", lambda device: 2**40)
    monkeypatch.setattr(generation, "PREFILL_CHUNK", 100)
    passes = prefill_lengths(lm)
    prompt = WORDS * 8  # about 300 tokens: three chunks' worth
    run(lm, [prompt], fast=True, max_gen_toks=2)
    assert passes[0] == lm._prompt_len(prompt)


def test_prefill_chunk_follows_free_memory(sharp_model_dir):
    lm = HFLongCtxLM(pretrained=sharp_model_dir, batch_size=1)
    config, dtype = lm.model.config, lm.model.dtype
    per_token = generation.kv_bytes_per_token(config, dtype) + generation.activation_bytes_per_token(config, dtype)
    need = 2 * 10_000 * per_token + 2 * 24 * generation.kv_bytes_per_token(config, dtype)
    assert generation.prefill_chunk(lm.model, 2, 10_000, 24, None) == 10_000  # memory not known (CPU)
    assert generation.prefill_chunk(lm.model, 2, 10_000, 24, int(need / generation.MEMORY_MARGIN) + 1) == 10_000
    assert generation.prefill_chunk(lm.model, 2, 10_000, 24, need) == generation.PREFILL_CHUNK
    assert generation.prefill_chunk(lm.model, 2, 1000, 24, 0) == 1000  # shorter than a chunk


def greedy_two(lm, ids):
    tokenizer = lm.tokenizer
    return generation.greedy_generate(lm.model, ids, max_new_tokens=2, stop=[NEVER], tokenizer=tokenizer, pad_token_id=0)


def test_no_chunks_where_frequencies_follow_the_length(sharp_model_dir, monkeypatch):
    lm = HFLongCtxLM(pretrained=sharp_model_dir, batch_size=1, rope_scaling="dynamic:4")
    monkeypatch.setattr(generation, "free_device_bytes", lambda device: 0)
    monkeypatch.setattr(generation, "PREFILL_CHUNK", 100)
    passes = prefill_lengths(lm)
    ids = torch.tensor([lm._encode_once([WORDS * 40])[0]])
    greedy_two(lm, ids)
    assert passes[0] == ids.shape[1]  # a dynamic model outside fixed_ntk_base: one pass
    passes.clear()
    with fixed_ntk_base(lm.model, ids.shape[1]):  # inside it (as hf-longctx runs), the base is fixed: chunks
        greedy_two(lm, ids)
    assert passes[0] == 100


@pytest.mark.parametrize(
    "gen_kwargs",
    [{"do_sample": True, "temperature": 0.7, "top_k": 1}, {"num_beams": 2}, {"min_new_tokens": 3}],
)
def test_sampling_and_other_generate_settings_go_to_model_generate(sharp_model_dir, greedy_calls, gen_kwargs):
    lm = HFLongCtxLM(pretrained=sharp_model_dir, batch_size=2)
    run(lm, [WORDS * 4], fast=True, **gen_kwargs)
    assert greedy_calls == []


def test_a_generation_config_with_logits_processors_goes_to_model_generate(sharp_model_dir, greedy_calls):
    lm = HFLongCtxLM(pretrained=sharp_model_dir, batch_size=2)
    lm.model.generation_config.repetition_penalty = 1.3
    run(lm, [WORDS * 4], fast=True)
    assert greedy_calls == []


def test_a_users_max_gen_toks_and_until_win(sharp_model_dir, greedy_calls):
    import lm_eval
    from lm_eval.tasks import TaskManager

    metadata = {"pretrained": sharp_model_dir, "max_seq_lengths": [240], "depths": [0.5], "num_samples": 2}
    lm = HFLongCtxLM(pretrained=sharp_model_dir, batch_size=2)
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=["longctx_kv"],
        task_manager=TaskManager(metadata=metadata),
        gen_kwargs="max_gen_toks=3,until=Q",
        bootstrap_iters=0,
        log_samples=True,
    )
    assert greedy_calls and all(call["max_new_tokens"] == 3 and call["stop"][0] == "Q" for call in greedy_calls)
    answers = [sample["resps"][0][0] for sample in results["samples"]["longctx_kv"]]
    assert answers and all(len(lm.tok_encode(a)) <= 3 for a in answers)


def test_batch_size_for_fits_kv_cache_and_prefill_in_free_memory():
    from transformers import LlamaConfig

    llama2_7b = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)
    kv = generation.kv_bytes_per_token(llama2_7b, torch.bfloat16)
    assert kv == 512 * 1024
    row = lambda n: n * (kv + generation.activation_bytes_per_token(llama2_7b, torch.bfloat16)) + 24 * kv  # noqa: E731
    free = 66 * 2**30  # an 80 GB card with 7B weights loaded
    sizes = {n: generation.batch_size_for(llama2_7b, torch.bfloat16, n, 24, free, 64) for n in (4096, 16384, 32768)}
    assert sizes[4096] > sizes[16384] > sizes[32768] >= 1
    for n, size in sizes.items():
        assert size * row(n) <= generation.MEMORY_MARGIN * free < (size + 1) * row(n)
    assert sizes[32768] < 4  # four 32k rows need 64 GiB of KV cache alone
    assert generation.batch_size_for(llama2_7b, torch.bfloat16, 4096, 24, free, limit=2) == 2
    assert generation.batch_size_for(llama2_7b, torch.bfloat16, 10**6, 24, free, limit=64) == 1


def test_reproducible_attention_leaves_cudnn_out_of_decode_steps_on_cuda_only(tiny_model_dir, monkeypatch):
    """Decode steps (one-token queries) run without cuDNN, prefills with it first; on the CPU
    nothing changes. Checked where sdpa is called, through a real model's attention."""
    from transformers import AutoModelForCausalLM

    from lm_eval_longctx.generation import reproducible_attention

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, *args, **kwargs):
        seen.append((query.shape[2], torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()))
        return real(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)

    def prefill_and_step():
        seen.clear()
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([[1, 2, 3, 4]]), use_cache=True)
            cache = {generation._cache_argument(model): out.past_key_values}
            model(input_ids=torch.tensor([[5]]), use_cache=True, **cache)
        return sorted(set(seen), reverse=True)

    before = torch.backends.cuda.cudnn_sdp_enabled()
    with reproducible_attention("cuda:0"):
        assert prefill_and_step() == [(4, True, True), (1, False, True)]
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with reproducible_attention("cpu"):
        assert prefill_and_step() == [(4, before, True), (1, before, True)]

"""The ``hf-longctx`` model on tiny offline Llamas: RoPE merge, window rule, marking, dynamic NTK.

Runs under transformers 5.x and, in scripts/test.sh's second environment, 4.x (marker ``tf4``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from conftest import llama_config_args, make_tiny_llama, transformers_major
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from lm_eval_longctx import rope, rope_config, window
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.model import HFLongCtxLM, fixed_ntk_base, runtime_defaults
from lm_eval_longctx.model_info import cuda_devices_of

pytestmark = pytest.mark.tf4

WORDS = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
GREEDY = {"until": ["<<never>>"], "max_gen_toks": 8, "do_sample": False}


@pytest.fixture(scope="module")
def theta_model_dir(tmp_path_factory, bpe_tokenizer_dir):
    """A tiny Llama whose own rope_theta (500000) must survive any scaling."""
    return make_tiny_llama(
        tmp_path_factory.mktemp("theta_llama"),
        bpe_tokenizer_dir,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
    )


@pytest.fixture(scope="module", params=["bpe", "sp"])
def either_family_dir(request, tiny_model_dir, sp_tokenizer_dir, tmp_path_factory):
    """The tiny Llama with each tokenizer family: byte-level BPE (no BOS) and SentencePiece-style (BOS)."""
    if request.param == "bpe":
        return tiny_model_dir
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama_sp"), sp_tokenizer_dir)


def rope_parameters(model) -> dict:
    """Return the built model's RoPE settings in one form on both versions (5.x form, rope_theta inside)."""
    return rope_config.rope_parameters_of(model.config.to_dict())


def load(model_dir, **model_args) -> HFLongCtxLM:
    return HFLongCtxLM(pretrained=model_dir, **{"batch_size": 4, **model_args})


def generate(lm, prompts, **gen_kwargs):
    requests = [Instance("generate_until", {}, (p, {**GREEDY, **gen_kwargs}), i) for i, p in enumerate(prompts)]
    return lm.generate_until(requests, disable_tqdm=True)


def prompt_of_at_least(lm, n_tokens):
    """Repeat WORDS until the prompt has at least ``n_tokens`` (the tiny tokenizer is trained on the spot)."""
    reps = max(1, n_tokens * 10 // lm._prompt_len(WORDS * 10) - 1)  # a guess just under, then grow
    while lm._prompt_len(WORDS * reps) < n_tokens:
        reps += 1
    return WORDS * reps


def random_tokens(n, seed):
    return torch.randint(3, 500, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def ll_request(n_context, seed):
    return (("ctx", "cont"), random_tokens(n_context, seed), random_tokens(5, seed + 1000))


def stock_model(model_dir, spec):
    """A fresh stock transformers model with the same merged config: the per-request reference."""
    config = transformers.AutoConfig.from_pretrained(model_dir)
    for key, value in rope_config.merge_rope(config.to_dict(), rope.parse_rope_scaling(spec)).config_updates.items():
        setattr(config, key, value)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, config=config, dtype=torch.float32, attn_implementation="sdpa"
    )
    return model.eval()


@torch.no_grad()
def stock_logprob(model, request):
    _, context, continuation = request
    logits = model(torch.tensor([(context + continuation)[:-1]])).logits
    logprobs = torch.log_softmax(logits, dim=-1)[0, -len(continuation) :]
    return logprobs.gather(1, torch.tensor(continuation)[:, None]).sum().item()


# --- registration -----------------------------------------------------------------------------


def test_lazy_registry_entry_loads_our_class():
    from lm_eval.api.registry import get_model

    assert get_model("hf-longctx") is HFLongCtxLM
    assert issubclass(get_model("hf"), HFLM) and get_model("hf") is not HFLongCtxLM


@pytest.mark.parametrize("autoload", ["on", "off"])
def test_registered_in_a_fresh_process(autoload):
    code = (
        "import importlib\n"
        "from lm_eval.api.registry import get_model\n"
        + ("import lm_eval_longctx.model\n" if autoload == "off" else "")
        + "assert get_model('hf-longctx').__name__ == 'HFLongCtxLM'\n"
        "assert get_model('hf').__name__ == 'HFLM'\n"
        "import lm_eval_longctx.model\n"
        "importlib.reload(lm_eval_longctx.model)\n"  # importing again must not register twice
    )
    env = {**os.environ, **({"LM_EVAL_LONGCTX_NO_AUTOLOAD": "1"} if autoload == "off" else {})}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


# --- RoPE args reach the built model ----------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda d: HFLongCtxLM.create_from_arg_string(f"pretrained={d},rope_scaling=yarn:4,rope_theta=500000"),
        lambda d: HFLongCtxLM.create_from_arg_obj(
            {"pretrained": d, "rope_scaling": {"rope_type": "yarn", "factor": 4}, "rope_theta": 500000}
        ),
        lambda d: HFLongCtxLM.create_from_arg_obj(
            {"pretrained": d, "rope_scaling": '{"type": "yarn", "factor": 4.0}', "rope_theta": 5e5}
        ),
    ],
    ids=["string-model-args", "json-model-args", "dict-literal"],
)
def test_rope_forms_reach_the_built_model(tiny_model_dir, build):
    lm = build(tiny_model_dir)
    assert rope_parameters(lm.model) == {
        "rope_type": "yarn",
        "factor": 4.0,
        "rope_theta": 500000.0,
        "original_max_position_embeddings": 512,
    }
    assert lm.model.config.max_position_embeddings == 2048
    assert lm.max_length == 2048


KIND_SPECS = {
    "linear": "linear:2",
    "dynamic": "dynamic:2",
    "yarn": "yarn:2",
    "llama3": "llama3:2:low=1:high=4",
    "longrope": "longrope:2:short=1/1/1/1:long=1/2/3/4",  # head_dim 8 -> 4 frequency pairs
}


@pytest.mark.parametrize("kind", KIND_SPECS)
def test_every_kind_builds_on_the_installed_transformers(theta_model_dir, kind):
    lm = load(theta_model_dir, rope_scaling=KIND_SPECS[kind])
    config = lm.model.config
    params = rope_parameters(lm.model)
    assert params["rope_type"] == kind
    assert params["rope_theta"] == 500000.0  # the model's own base, kept
    if rope.KINDS[kind].needs_original:
        assert params["original_max_position_embeddings"] == 512
        # the ratio transformers checks (and 4.4x derives factor from)
        assert config.max_position_embeddings / params["original_max_position_embeddings"] == params["factor"]
    expected, _ = ROPE_INIT_FUNCTIONS[kind](config, "cpu")
    torch.testing.assert_close(lm.model.model.rotary_emb.inv_freq, expected)
    assert lm.max_length == 1024


def test_linear_divides_the_model_s_own_frequencies(theta_model_dir):
    plain = load(theta_model_dir).model.model.rotary_emb.inv_freq
    scaled = load(theta_model_dir, rope_scaling="linear:2").model.model.rotary_emb.inv_freq
    torch.testing.assert_close(scaled, plain / 2)


def test_every_kind_of_the_installed_transformers_is_covered():
    ours = set(rope.KINDS) - {"default"}
    theirs = set(ROPE_INIT_FUNCTIONS) - {"default"}
    assert set(KIND_SPECS) == ours <= theirs  # each kind we take exists here and is built above and below
    if transformers_major() < 5:
        assert theirs == ours  # 4.x: every kind it has


# Each KIND_SPECS setting as a user of the installed transformers writes it by hand for the theta
# model (native window 512, rope_theta 500000): 5.x form, turned into 4.x's by llama_config_args.
DIRECT = {
    "linear": ({"rope_type": "linear", "factor": 2.0}, {"max_position_embeddings": 1024}),
    "dynamic": ({"rope_type": "dynamic", "factor": 2.0}, {"max_position_embeddings": 512}),
    "yarn": (
        {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 512},
        {"max_position_embeddings": 1024},
    ),
    "llama3": (
        {"rope_type": "llama3", "factor": 2.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 512},
        {"max_position_embeddings": 1024},
    ),
    "longrope": (  # Phi-3 style: the native window at the top level as well
        {"rope_type": "longrope", "factor": 2.0, "short_factor": [1.0] * 4, "long_factor": [1.0, 2.0, 3.0, 4.0],
         "original_max_position_embeddings": 512},
        {"max_position_embeddings": 1024, "original_max_position_embeddings": 512},
    ),
}  # fmt: skip


def saved_config(model_dir) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text())


def direct_model(model_dir, params, top_level):
    """The model the installed transformers builds from a hand-written RoPE setting (theta 500000)."""
    config = {k: v for k, v in saved_config(model_dir).items() if k not in ("rope_theta", "rope_scaling", "rope_parameters")}
    config.update(top_level, **llama_config_args(rope_parameters={**params, "rope_theta": 500000.0}))
    return transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, config=transformers.LlamaConfig.from_dict(config), dtype=torch.float32, attn_implementation="sdpa"
    ).eval()


def assert_same_rope(ours, theirs):
    """Same rotary frequencies and attention scaling, and the same logits on a prompt past the native window."""
    mine, stock = ours.model.rotary_emb, theirs.model.rotary_emb
    torch.testing.assert_close(mine.inv_freq, stock.inv_freq, rtol=0, atol=0)
    assert mine.attention_scaling == stock.attention_scaling
    ids = torch.tensor([random_tokens(700, seed=5)])  # > 512: longrope's long factors, dynamic's growth
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits)


@pytest.mark.parametrize("kind", KIND_SPECS)
def test_every_kind_equals_the_model_its_transformers_builds_from_that_setting(theta_model_dir, kind):
    lm = load(theta_model_dir, rope_scaling=KIND_SPECS[kind])
    assert_same_rope(lm.model, direct_model(theta_model_dir, *DIRECT[kind]))


def in_the_other_layout(config: dict) -> dict:
    """Return a config.json as the other transformers major version saves it."""
    config = dict(config)
    if "rope_parameters" in config:  # 5.x saves rope_parameters only; 4.x saves rope_theta and rope_scaling
        params = dict(config.pop("rope_parameters"))
        config["rope_theta"] = params.pop("rope_theta")
        config["rope_scaling"] = None if params["rope_type"] == "default" else params
        return {**config, "transformers_version": "4.57.6"}
    params = {**(config.pop("rope_scaling") or {"rope_type": "default"}), "rope_theta": config.pop("rope_theta")}
    return {**config, "rope_parameters": params, "transformers_version": "5.0.0"}


@pytest.mark.parametrize("spec", [None, "linear:2"])
def test_a_checkpoint_saved_by_the_other_transformers_version_keeps_its_theta(theta_model_dir, tmp_path, spec):
    # A 5.x-saved Llama read by 4.x: stock 4.x ignores rope_parameters and runs with rope_theta 10000.
    import shutil

    checkpoint = shutil.copytree(theta_model_dir, tmp_path / "other")
    (checkpoint / "config.json").write_text(json.dumps(in_the_other_layout(saved_config(theta_model_dir))))
    lm = load(str(checkpoint), **({"rope_scaling": spec} if spec else {}))
    params, top_level = DIRECT["linear"] if spec else ({"rope_type": "default"}, {"max_position_embeddings": 512})
    assert_same_rope(lm.model, direct_model(theta_model_dir, params, top_level))
    assert rope_parameters(lm.model) == {**params, "rope_theta": 500000.0}
    assert lm.max_length == top_level["max_position_embeddings"]


@pytest.fixture
def no_weights(monkeypatch):
    """Make any model or tokenizer load fail the test."""

    def boom(*args, **kwargs):
        raise AssertionError("weights or tokenizer were loaded before the spec was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"rope_scaling": "warp:2"}, "unknown kind"),
        ({"rope_scaling": "dynamic:0"}, "factor must be a finite number > 0"),
        ({"rope_scaling": "dynamic:x"}, "factor must be a number"),
        ({"rope_scaling": "llama3:8"}, "llama3 needs"),
        ({"rope_scaling": "yarn:4:foo=1"}, "yarn does not take foo"),
        ({"rope_scaling": "longrope:2:short=1/1:long=1/1"}, "rotary dimension needs 4"),  # found on the config
        ({"rope_theta": "fast"}, "rope_theta='fast'"),
        ({"truncation": True}, "never cuts prompts"),
        ({"max_length": -1}, r"max_length=-1 is not a number of tokens"),
        ({"max_length": 0}, r"max_length=0 is not a number of tokens"),
        ({"max_length": "abc"}, r"max_length='abc' is not a number of tokens"),
        ({"max_length": 1.5}, r"max_length=1.5 is not a number of tokens"),
        ({"max_length": True}, r"max_length=True is not a number of tokens"),
        ({"dtype": "flaot16"}, r"dtype='flaot16' is not a torch dtype"),
        ({"device": "cdua"}, r"device='cdua' is not a device"),
        ({"attn_implementation": "flash"}, r"attn_implementation='flash' is not one of"),
        ({"batch_size": "abc"}, r"batch_size='abc': use a whole number"),
        ({"gguf_file": "missing.gguf"}, r"gguf_file=missing.gguf: no such file in"),
    ],
)
def test_bad_spec_fails_before_any_weights_load(tiny_model_dir, no_weights, args, problem):
    with pytest.raises(LongCtxError, match=problem):
        load(tiny_model_dir, **args)


def test_a_missing_pretrained_folder_is_one_line_before_any_load(no_weights):
    with pytest.raises(LongCtxError, match=r"^pretrained=/nonexistent/folder: no such folder\. Give the folder"):
        load("/nonexistent/folder")


# --- the window: max_length rule and no truncation --------------------------------------------


@pytest.mark.parametrize(
    ("args", "max_length", "windows"),
    [
        ({}, 512, (512, 512)),
        ({"rope_theta": 1e6}, 512, (512, 512)),
        ({"rope_scaling": "linear:2"}, 1024, (512, 1024)),
        ({"rope_scaling": "dynamic:2.5"}, 1280, (512, 1280)),
        ({"rope_scaling": "yarn:4:orig=256"}, 1024, (256, 1024)),
        ({"rope_scaling": "linear:2", "max_length": 700}, 700, (512, 1024)),  # explicit wins
        ({"rope_scaling": "none"}, 512, (512, 512)),
    ],
)
def test_max_length_is_the_scaled_window_unless_given(tiny_model_dir, args, max_length, windows):
    lm = load(tiny_model_dir, **args)
    assert lm.max_length == max_length
    assert (lm.rope_setup.native_window, lm.rope_setup.effective_window) == windows


def test_beyond_window_is_marked_never_cut(tiny_model_dir, caplog):
    lm = load(tiny_model_dir, rope_scaling="linear:2")  # 512 x 2 = 1024 tokens
    prompts = [prompt_of_at_least(lm, n) for n in (100, 900, 1100)]
    too_long = lm._prompt_len(prompts[2]) + 8
    with caplog.at_level(logging.WARNING, logger="lm_eval_longctx.model"):
        out = generate(lm, prompts)
    assert out[2] == window.BEYOND_WINDOW
    assert window.BEYOND_WINDOW not in out[:2]
    assert out[1] == generate(lm, [prompts[1]])[0]  # the fitting ones are unaffected
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    for words in ("1 of 3", "1024-token window", f"{too_long} tokens", f"max_length={too_long}", "KIND:FACTOR"):
        assert words in warnings[0]
    assert lm.get_model_info()["longctx"]["beyond_window_requests"] == 1


def test_window_boundary_counts_prompt_plus_max_gen_toks(either_family_dir):
    lm = load(either_family_dir)
    prompt = prompt_of_at_least(lm, 100)
    n = lm._prompt_len(prompt)  # what the model is fed, BOS included where the tokenizer adds one
    assert generate(load(either_family_dir, max_length=n + 8), [prompt])[0] != window.BEYOND_WINDOW
    assert generate(load(either_family_dir, max_length=n + 7), [prompt])[0] == window.BEYOND_WINDOW
    assert generate(load(either_family_dir, max_length=n + 40), [prompt], max_gen_toks=41)[0] == window.BEYOND_WINDOW


def test_batch_encoding_never_left_truncates(tiny_model_dir):
    lm = load(tiny_model_dir)
    prompt = prompt_of_at_least(lm, 600)
    ids, _ = lm.tok_batch_encode([prompt], left_truncate_len=10, truncation=True)
    assert ids.shape[1] == lm._prompt_len(prompt) >= 600


def test_loglikelihood_beyond_the_window_raises(tiny_model_dir):
    lm = load(tiny_model_dir, rope_scaling="linear:2")
    with pytest.raises(LongCtxError, match=r"\[1029\] tokens exceed max_length=1024.*max_length=1029"):
        lm._loglikelihood_tokens([ll_request(1025, seed=0)])
    assert len(lm._loglikelihood_tokens([ll_request(1020, seed=0)])) == 1


# --- batching, devices, batch_size=auto -------------------------------------------------------


def test_generation_batches_hold_one_prompt_length_and_no_padding(tiny_model_dir, monkeypatch):
    lm = load(tiny_model_dir, rope_scaling="linear:2", batch_size=8)
    seen = []
    original = lm._model_generate

    def spy(context, max_length, stop, **kwargs):
        seen.append((context.shape, bool(kwargs["attention_mask"].all())))
        return original(context, max_length, stop, **kwargs)

    monkeypatch.setattr(lm, "_model_generate", spy)
    short, middle, long = (prompt_of_at_least(lm, n) for n in (100, 400, 800))
    generate(lm, [short, long, short, middle, long])
    lengths = [lm._prompt_len(p) for p in (short, middle, long)]
    assert sorted(seen) == sorted([((2, lengths[0]), True), ((1, lengths[1]), True), ((2, lengths[2]), True)])


def test_each_prompt_is_tokenized_once_and_fed_as_the_stock_encoding(tiny_model_dir, monkeypatch):
    lm = load(tiny_model_dir, batch_size=2)
    prompts = [prompt_of_at_least(lm, n) for n in (100, 100, 300)]
    stock = [lm.tok_batch_encode([p])[0][0].tolist() for p in prompts]  # HFLM's own encoding
    fed, encoded = [], []
    original_generate, tokenizer_class = lm._model_generate, type(lm.tokenizer)
    original_call, original_encode = tokenizer_class.__call__, tokenizer_class.encode

    def spy_generate(context, max_length, stop, **kwargs):
        fed.extend(context.tolist())
        return original_generate(context, max_length, stop, **kwargs)

    def counting_call(self, text, *args, **kwargs):
        encoded.extend([text] if isinstance(text, str) else list(text))
        return original_call(self, text, *args, **kwargs)

    def counting_encode(self, text, *args, **kwargs):
        encoded.append(text)
        return original_encode(self, text, *args, **kwargs)

    monkeypatch.setattr(lm, "_model_generate", spy_generate)
    monkeypatch.setattr(tokenizer_class, "__call__", counting_call)
    monkeypatch.setattr(tokenizer_class, "encode", counting_encode)
    generate(lm, prompts)
    # Once each (stop sequences are encoded too, by lm-eval's stopping criteria).
    assert sorted(e for e in encoded if e in prompts) == sorted(prompts)
    assert sorted(fed) == sorted(stock)


def test_batch_size_auto_detects_once(tiny_model_dir, monkeypatch):
    calls = []
    original = HFLM._detect_batch_size

    def counting(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_detect_batch_size", counting)
    lm = load(tiny_model_dir, batch_size="auto", max_batch_size=2)
    out = generate(lm, [prompt_of_at_least(lm, n) for n in (50, 150, 300)])
    assert window.BEYOND_WINDOW not in out
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("given", "cuda", "flash", "expected"),
    [
        ((None, None, None), True, True, ("cuda", "bfloat16", "flash_attention_2")),
        ((None, None, None), True, False, ("cuda", "bfloat16", "sdpa")),
        ((None, "float32", None), True, True, ("cuda", "float32", "sdpa")),  # flash needs half precision
        ((None, None, "eager"), True, True, ("cuda", "bfloat16", "eager")),
        ((None, None, None), False, True, ("cpu", "float32", "sdpa")),
        (("cpu", None, None), True, True, ("cpu", "float32", "sdpa")),
        (("cuda:1", None, None), True, True, ("cuda:1", "bfloat16", "flash_attention_2")),
        (("cuda:0", None, None), False, True, ("cpu", "float32", "sdpa")),  # lm-eval CLI default, no GPU
    ],
)
def test_runtime_defaults(given, cuda, flash, expected):
    assert runtime_defaults(*given, cuda=cuda, flash_attn=flash) == expected


def test_cpu_defaults_on_this_machine(tiny_model_dir):
    lm = load(tiny_model_dir)
    assert lm.model.dtype == torch.float32
    assert lm.model.config._attn_implementation == "sdpa"


# --- dynamic NTK: no leaks between requests, consistent decoding -------------------------------


def test_dynamic_ntk_loglikelihood_matches_a_fresh_model_whatever_ran_before(sharp_model_dir):
    short, a, b = ll_request(300, seed=1), ll_request(600, seed=2), ll_request(900, seed=3)
    fresh = {name: stock_model(sharp_model_dir, "dynamic:4") for name in ("short", "a")}  # one request each
    reference = {"short": stock_logprob(fresh["short"], short), "a": stock_logprob(fresh["a"], a)}

    lm = load(sharp_model_dir, rope_scaling="dynamic:4")
    lm._loglikelihood_tokens([b])
    after_b = lm._loglikelihood_tokens([a])[0][0]
    in_one_batch = lm._loglikelihood_tokens([b, a, short])
    assert after_b == pytest.approx(reference["a"], rel=1e-6, abs=1e-5)
    assert in_one_batch[1][0] == pytest.approx(reference["a"], rel=1e-6, abs=1e-5)
    assert in_one_batch[2][0] == pytest.approx(reference["short"], rel=1e-6, abs=1e-5)

    # Stock transformers leaks here: after the 905-token request, A is scored with B's base.
    leaky = stock_model(sharp_model_dir, "dynamic:4")
    stock_logprob(leaky, b)
    assert abs(stock_logprob(leaky, a) - reference["a"]) > 1e-2


def test_dynamic_ntk_generation_does_not_depend_on_order_or_batch(sharp_model_dir):
    lm = load(sharp_model_dir, rope_scaling="dynamic:4")
    a, b = prompt_of_at_least(lm, 600), prompt_of_at_least(lm, 1000)  # both past the 512 native window
    alone = generate(lm, [a])[0]
    lm = load(sharp_model_dir, rope_scaling="dynamic:4")
    generate(lm, [b])
    assert generate(lm, [a])[0] == alone
    assert generate(lm, [b, a])[1] == alone


def test_dynamic_ntk_decoding_keeps_cached_keys_consistent(sharp_model_dir):
    lm = load(sharp_model_dir, rope_scaling="dynamic:4")
    prompt = prompt_of_at_least(lm, 600)
    ids, _ = lm.tok_batch_encode([prompt])
    n, steps = ids.shape[1], 8

    def cached_and_recomputed(model):
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps,
            do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0,
        )
        with torch.no_grad():
            recomputed = [model(out.sequences[:, : n + t], use_cache=False).logits[0, -1] for t in range(steps)]
        return out.sequences[0, n:], torch.stack(out.logits)[:, 0], torch.stack(recomputed)

    with fixed_ntk_base(lm.model, n):
        tokens, cached, recomputed = cached_and_recomputed(lm.model)
        prefill = lm.model(ids).logits[0, -1]
    torch.testing.assert_close(cached, recomputed, atol=1e-3, rtol=1e-4)
    # the prefill is exactly what a fresh model computes for this prompt
    with torch.no_grad():
        torch.testing.assert_close(prefill, stock_model(sharp_model_dir, "dynamic:4")(ids).logits[0, -1])
    # and generate_until decodes the same tokens
    assert generate(lm, [prompt], max_gen_toks=steps)[0] == lm.tok_decode(tokens.tolist())

    # Stock transformers (issue #25104): the base grows while decoding, cached keys keep the old one.
    _, stock_cached, stock_recomputed = cached_and_recomputed(stock_model(sharp_model_dir, "dynamic:4"))
    assert (stock_cached - stock_recomputed).abs().max() > 0.1


def test_dynamic_rotary_modules_have_what_fixed_ntk_base_sets(sharp_model_dir):
    # fixed_ntk_base works on the rotary modules' own attributes: the installed transformers must have them.
    lm = load(sharp_model_dir, rope_scaling="dynamic:4")
    rotaries = [m for m in lm.model.modules() if getattr(m, "rope_type", None) == "dynamic"]
    assert rotaries
    for rotary in rotaries:
        for name in ("inv_freq", "original_inv_freq", "original_max_seq_len", "max_seq_len_cached", "config"):
            assert hasattr(rotary, name), f"{type(rotary).__name__} has no {name} in transformers {transformers.__version__}"
    with fixed_ntk_base(lm.model, 900):
        expected, _ = ROPE_INIT_FUNCTIONS["dynamic"](rotaries[0].config, "cpu", seq_len=900)
        torch.testing.assert_close(rotaries[0].inv_freq, expected)
        assert rotaries[0].rope_type != "dynamic"  # transformers' own per-forward update is off


def test_rotary_modules_are_fresh_after_each_batch(sharp_model_dir):
    lm = load(sharp_model_dir, rope_scaling="dynamic:4")
    rotary = lm.model.model.rotary_emb
    generate(lm, [prompt_of_at_least(lm, 900)])
    assert rotary.rope_type == "dynamic"
    assert rotary.max_seq_len_cached == rotary.original_max_seq_len
    torch.testing.assert_close(rotary.inv_freq, rotary.original_inv_freq)


# --- provenance and the stock lm_eval command ---------------------------------------------------


def test_model_info_records_rope_windows_attention_dtype_versions(tiny_model_dir):
    info = load(tiny_model_dir, rope_scaling="yarn:4", rope_theta=20000).get_model_info()["longctx"]
    assert info["rope_parameters"] == {
        "rope_type": "yarn",
        "factor": 4.0,
        "rope_theta": 20000.0,
        "original_max_position_embeddings": 512,
    }
    assert info["rope_args"] == {"rope_scaling": "yarn:4", "rope_theta": 20000}
    assert (info["native_window"], info["effective_window"], info["max_length"]) == (512, 2048, 2048)
    assert (info["attn_implementation"], info["dtype"], info["device"]) == ("sdpa", "float32", "cpu")
    assert info["versions"]["torch"] == torch.__version__
    assert info["versions"]["transformers"] == transformers.__version__
    assert info["versions"]["lm_eval"]
    json.dumps(info)  # goes into the results file as is


def test_model_info_records_peak_memory_of_every_gpu_the_model_spans(tiny_model_dir, monkeypatch):
    lm = load(tiny_model_dir)
    assert "peak_gpu_memory_gib" not in lm.get_model_info()["longctx"]  # on the CPU: no GPU to report
    # What parallelize=True leaves behind: accelerate's map of modules to GPU indices (and offload).
    lm.model.hf_device_map = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "lm_head": "cpu"}
    peaks = {"cuda:0": 3 * 2**30, "cuda:1": 5.5 * 2**30}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: peaks[device])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device: peaks[device] + 2**30)
    info = lm.get_model_info()["longctx"]
    assert info["peak_gpu_memory_gib"] == {"cuda:0": 3.0, "cuda:1": 5.5}
    assert info["peak_gpu_memory_reserved_gib"] == {"cuda:0": 4.0, "cuda:1": 6.5}
    json.dumps(info)


def test_a_model_on_one_gpu_reports_that_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert cuda_devices_of(torch.nn.Linear(1, 1), torch.device("cuda:0")) == ["cuda:0"]
    assert cuda_devices_of(torch.nn.Linear(1, 1), "cuda") == ["cuda:1"]  # HFLM's device with parallelize=True


TASK_YAML = """\
task: longctx_model_smoke
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["<<never>>"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
metadata:
  version: 1.0
"""


def test_lm_eval_command_runs_hf_longctx_and_records_provenance(tiny_model_dir, tmp_path):
    data = tmp_path / "docs.jsonl"
    docs = [{"prompt": WORDS * n, "answer": "green"} for n in (2, 10, 80)]  # 80 x >= 24 tokens: beyond 1024
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    task = tmp_path / "smoke.yaml"
    task.write_text(TASK_YAML.format(data=data))
    command = [
        str(Path(sys.executable).parent / "lm_eval"),
        "--model", "hf-longctx",
        "--model_args", f"pretrained={tiny_model_dir},rope_scaling=linear:2",
        "--tasks", str(task),
        "--batch_size", "2",
        "--output_path", str(tmp_path / "out"),
        "--log_samples",
    ]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "1 of 3 generation requests do not fit the 1024-token window" in done.stderr

    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    info = results["config"]["longctx"]
    assert info["rope_parameters"] == {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    assert (info["native_window"], info["effective_window"], info["max_length"]) == (512, 1024, 1024)
    assert info["beyond_window_requests"] == 1
    assert (info["attn_implementation"], info["dtype"], info["device"]) == ("sdpa", "float32", "cpu")
    assert set(info["versions"]) == {"torch", "transformers", "lm_eval", "lm_eval_longctx"}

    samples = [json.loads(line) for line in next((tmp_path / "out").rglob("samples_*.jsonl")).read_text().splitlines()]
    marked = {s["doc"]["prompt"].count("grass"): s["resps"][0][0] == window.BEYOND_WINDOW for s in samples}
    assert marked == {2: False, 10: False, 80: True}

"""Switching RoPE in place (``HFLongCtxLM.switch_rope``, what ``lm-eval-longctx sweep`` runs on):
after each switch the model equals one freshly loaded with that setting, whatever ran before.

Runs under transformers 5.x (``rope_parameters``) and, in scripts/test_tf4.sh's environment, 4.57
(``rope_scaling`` + ``rope_theta``): marker ``tf4``. Each model folder is also tried with its config
in the other major version's layout.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from conftest import llama_config_args, make_tiny_llama
from lm_eval.api.instance import Instance

from lm_eval_longctx import rope_switch, window
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.model import HFLongCtxLM

pytestmark = pytest.mark.tf4

# Every kind, on a model of native window 512 and head_dim 8 (longrope: 4 frequency pairs).
SETTINGS = {
    "none": "none",
    "linear": "linear:2",
    "dynamic": "dynamic:2",
    "yarn": "yarn:2",
    "llama3": "llama3:2:low=1:high=4",
    "longrope": "longrope:2:short=1/1/1/1:long=1/2/3/4",
}
# (setting loaded first, then the settings switched to). None: the checkpoint's own RoPE.
ORDERS = [
    (None, ["none", "linear", "dynamic", "yarn", "llama3", "longrope", "none"]),
    ("dynamic", ["longrope", "dynamic", "none", "yarn", "linear", "llama3", "dynamic", "none"]),
]
WORDS = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


def in_the_other_layout(config: dict) -> dict:
    """Return a config.json as the other transformers major version saves it."""
    config = dict(config)
    if "rope_parameters" in config:
        params = dict(config.pop("rope_parameters"))
        config["rope_theta"] = params.pop("rope_theta")
        config["rope_scaling"] = None if params["rope_type"] == "default" else params
        return config
    params = {**(config.pop("rope_scaling") or {"rope_type": "default"}), "rope_theta": config.pop("rope_theta")}
    return {**config, "rope_parameters": params}


@pytest.fixture(scope="module", params=["own-layout", "other-layout"])
def model_dir(request, tmp_path_factory, bpe_tokenizer_dir):
    """A sharp tiny Llama (greedy answers vary with the RoPE) whose own rope_theta, 500000, must stay."""
    path = make_tiny_llama(
        tmp_path_factory.mktemp("switch_llama"),
        bpe_tokenizer_dir,
        initializer_range=0.5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
    )
    if request.param == "other-layout":
        config = Path(path) / "config.json"
        config.write_text(json.dumps(in_the_other_layout(json.loads(config.read_text()))))
    return path


def load(model_dir, kind=None, **args) -> HFLongCtxLM:
    rope = {"rope_scaling": SETTINGS[kind]} if kind else {}
    return HFLongCtxLM(pretrained=model_dir, batch_size=2, device="cpu", **rope, **args)


def token_ids(n, seed):
    return torch.randint(3, 500, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def rotary_state(model) -> dict:
    """Every buffer and plain attribute of the modules holding non-persistent buffers (the rotary ones)."""
    internals = set(vars(torch.nn.Module()))
    state = {}
    for name, module in model.named_modules():
        if not module._non_persistent_buffers_set:
            continue
        state[name] = {key: value for key, value in module._buffers.items()}
        state[name].update(
            {key: value for key, value in vars(module).items() if key not in internals and key != "config"}
        )
    return state


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def run_everything(lm) -> dict:
    """What the model computes and reports, run in a fixed sequence that leaves RoPE state behind
    (raw forwards past the native window grow dynamic NTK's base and fill longrope's cache)."""
    prompts = [WORDS, WORDS * 9]  # about 60 and 570 tokens: below and beyond the 512 native window
    gen = {"until": ["<<never>>"], "max_gen_toks": 6, "do_sample": False}
    requests = [Instance("generate_until", {}, (p, gen), i) for i, p in enumerate(prompts)]
    answers = lm.generate_until(requests, disable_tqdm=True)
    loglikelihoods = lm._loglikelihood_tokens(
        [(("c", "x"), token_ids(n, n), token_ids(4, n + 1)) for n in (100, 480)], disable_tqdm=True
    )
    with torch.no_grad():
        logits = [lm.model(torch.tensor([token_ids(n, 7)])).logits for n in (300, 700, 200)]
    info = lm.get_model_info()["longctx"]
    info.pop("versions")
    return {
        "answers": answers,
        "loglikelihoods": loglikelihoods,
        "logits": logits,
        "max_length": lm.max_length,
        "dynamic_ntk": lm.dynamic_ntk,
        "longctx": info,
        "model_config": lm.model.config.to_dict(),
        "lm_config": lm.config.to_dict(),
        "rotary": rotary_state(lm.model),
    }


def assert_equal_runs(switched: dict, fresh: dict, where: str) -> None:
    for key in fresh:
        if key == "logits":
            for ours, theirs in zip(switched[key], fresh[key]):
                assert torch.equal(ours, theirs), f"{where}: logits differ from a fresh load (max {(ours - theirs).abs().max()})"
        else:
            assert same(switched[key], fresh[key]), f"{where}: {key} differs from a fresh load:\n{switched[key]}\n{fresh[key]}"


@pytest.fixture(scope="module")
def fresh_runs(model_dir):
    """What a model freshly loaded with each setting computes (run_everything), per kind."""
    return {kind: run_everything(load(model_dir, kind)) for kind in SETTINGS}


@pytest.mark.parametrize(("first", "order"), ORDERS, ids=["from-checkpoint", "from-dynamic"])
def test_switching_in_place_equals_a_fresh_load_in_any_order(model_dir, fresh_runs, first, order):
    lm = load(model_dir, first)
    if first:
        assert_equal_runs(run_everything(lm), fresh_runs[first], f"loaded with {first}")
    answers = set()
    for step, kind in enumerate(order):
        lm.switch_rope(SETTINGS[kind])
        assert lm.rope_setup.rope_parameters["rope_theta"] == 500000.0  # the model's own base, kept
        run = run_everything(lm)
        assert_equal_runs(run, fresh_runs[kind], f"step {step}: {' -> '.join(order[: step + 1])}")
        answers.add(tuple(run["answers"]))
    assert len(answers) > 2  # the settings really differ on this model


def test_the_checkpoint_s_own_setting_comes_back_when_rope_scaling_is_left_out(model_dir):
    lm = load(model_dir, "yarn")
    lm.switch_rope(None)
    assert_equal_runs(run_everything(lm), run_everything(load(model_dir)), "yarn -> the checkpoint's own")


def test_an_explicit_max_length_stays_for_every_setting_as_in_separate_runs(model_dir):
    lm = load(model_dir, "linear", max_length=700)
    for kind in ("dynamic", "none", "yarn"):
        lm.switch_rope(SETTINGS[kind])
        assert lm.max_length == 700 == load(model_dir, kind, max_length=700).max_length
        assert lm.get_model_info()["longctx"]["effective_window"] == (512 if kind == "none" else 1024)


def test_each_setting_counts_its_own_beyond_window_requests(model_dir):
    lm = load(model_dir, "none")
    request = Instance("generate_until", {}, (WORDS * 9, {"until": ["\n"], "max_gen_toks": 4}), 0)
    assert lm.generate_until([request], disable_tqdm=True) == [window.BEYOND_WINDOW]
    assert lm.get_model_info()["longctx"]["beyond_window_requests"] == 1
    lm.switch_rope("linear:2")
    assert lm.get_model_info()["longctx"]["beyond_window_requests"] == 0
    assert lm.generate_until([request], disable_tqdm=True) != [window.BEYOND_WINDOW]


def test_a_setting_that_does_not_fit_the_model_changes_nothing(model_dir, fresh_runs):
    lm = load(model_dir, "yarn")
    with pytest.raises(LongCtxError, match=r"short_factor has 2 numbers; this model's rotary dimension needs 4"):
        lm.switch_rope("longrope:2:short=1/1:long=1/1")
    assert_equal_runs(run_everything(lm), fresh_runs["yarn"], "after a refused setting")


def test_a_model_given_as_a_built_object_is_refused(model_dir):
    lm = HFLongCtxLM(pretrained=load(model_dir).model, tokenizer=model_dir, batch_size=1)
    with pytest.raises(LongCtxError, match=r"switching RoPE in place needs the model loaded by hf-longctx from pretrained=PATH"):
        lm.switch_rope("linear:2")


def test_a_model_whose_modules_differ_from_its_class_is_refused(model_dir, fresh_runs):
    lm = load(model_dir, "llama3")
    lm.model.model.adapter = torch.nn.Linear(2, 2)  # what an adapter or a patched model looks like
    with pytest.raises(LongCtxError, match=r"cannot switch RoPE settings in place: its modules differ .*'model.adapter'"):
        lm.switch_rope("linear:2")
    del lm.model.model.adapter
    assert_equal_runs(run_everything(lm), fresh_runs["llama3"], "after a refused switch")


# --- rope_switch.DerivedState on a toy model class: which state it replaces, which it keeps -----------


class ToyConfig:
    def __init__(self, factor):
        self.factor = factor


class ToyRotary(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.rope_type = f"x{config.factor}"
        self.register_buffer("inv_freq", torch.arange(4.0) / config.factor, persistent=False)


class ToyAttention(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.scaling = 0.125 * config.factor  # RoPE-derived state outside the rotary module (DeepSeek's yarn mscale)
        self.layer_idx = 0
        self.proj = torch.nn.Linear(2, 2)


class Toy(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.rotary = ToyRotary(config)
        self.attn = ToyAttention(config)


def test_derived_state_replaces_what_the_setting_derives_and_keeps_the_rest():
    model = Toy(ToyConfig(1.0))
    weight = model.attn.proj.weight.detach().clone()
    model.rotary.long_inv_freq = torch.ones(4)  # a cache a forward left behind
    model.rotary._hf_hook = "hook"  # what accelerate attaches
    model.attn.layer_idx = 5  # changed after construction, not by RoPE: kept
    before, after = rope_switch.DerivedState.of(Toy, ToyConfig(1.0)), rope_switch.DerivedState.of(Toy, ToyConfig(4.0))
    assert after.problem_with(model) is None
    after.put_on(model, before)
    assert torch.equal(model.rotary.inv_freq, torch.arange(4.0) / 4) and model.rotary.rope_type == "x4.0"
    assert model.attn.scaling == 0.5 and model.attn.layer_idx == 5
    assert not hasattr(model.rotary, "long_inv_freq") and model.rotary._hf_hook == "hook"
    assert torch.equal(model.attn.proj.weight, weight)  # weights come from the checkpoint, untouched
    assert model.attn.proj.weight.device.type == "cpu"  # the skeleton's meta weights never reach the model


def test_derived_state_keeps_the_loaded_buffer_s_dtype():
    model = Toy(ToyConfig(1.0)).to(torch.bfloat16)
    rope_switch.DerivedState.of(Toy, ToyConfig(2.0)).put_on(model, rope_switch.DerivedState.of(Toy, ToyConfig(1.0)))
    assert model.rotary.inv_freq.dtype == torch.bfloat16


def test_a_class_that_cannot_be_built_from_its_config_is_refused():
    with pytest.raises(LongCtxError, match=r"Toy cannot be rebuilt from its config .* run each RoPE setting as its own"):
        rope_switch.DerivedState.of(Toy, None)


# --- what DerivedState relies on in transformers and accelerate: fails naming what changed ---------

CHANGED_TF = "transformers changed since 5.25: {what}. Update lm_eval_longctx/rope_switch.py ({patch}) and this test."


def _llama(rope_parameters):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=64, max_position_embeddings=64, **llama_config_args(rope_parameters=rope_parameters),
    )  # fmt: skip


def test_a_weightless_skeleton_computes_the_buffers_a_built_model_has():
    import torch
    from accelerate import init_empty_weights
    from transformers import LlamaForCausalLM

    assert "include_buffers" in inspect.signature(init_empty_weights).parameters, CHANGED_TF.format(
        what="accelerate.init_empty_weights has no include_buffers", patch="DerivedState.of"
    )
    config = _llama({"rope_type": "yarn", "factor": 2.0, "rope_theta": 5e5, "original_max_position_embeddings": 64})
    built = LlamaForCausalLM(config)
    state = rope_switch.DerivedState.of(LlamaForCausalLM, config)
    assert state.problem_with(built) is None
    for name, module in built.named_modules():
        kept = {k: v for k, v in module._buffers.items() if k in module._non_persistent_buffers_set}
        assert kept.keys() == state.buffers[name].keys(), CHANGED_TF.format(
            what=f"{name}'s non-persistent buffers differ in a weightless skeleton", patch="DerivedState"
        )
        for key, value in kept.items():
            assert torch.equal(value, state.buffers[name][key]), CHANGED_TF.format(
                what=f"{name}.{key} is computed differently without weights", patch="DerivedState"
            )
    rotary = built.model.rotary_emb
    assert rotary._non_persistent_buffers_set, CHANGED_TF.format(
        what="the rotary module keeps inv_freq in no non-persistent buffer", patch="DerivedState.put_on"
    )
    assert state.attributes["model.rotary_emb"]["attention_scaling"] == rotary.attention_scaling != 1.0


def test_for_a_llama_rope_state_lives_only_in_modules_with_non_persistent_buffers():
    # put_on replaces the whole state of those modules; anywhere else it copies only what differs.
    from transformers import LlamaForCausalLM

    linear = rope_switch.DerivedState.of(LlamaForCausalLM, _llama({"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}))
    yarn = rope_switch.DerivedState.of(
        LlamaForCausalLM,
        _llama({"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4, "original_max_position_embeddings": 64}),
    )
    differing = {
        name for name, attributes in linear.attributes.items()
        if attributes.keys() != yarn.attributes[name].keys()
        or not all(rope_switch._same(value, yarn.attributes[name][key]) for key, value in attributes.items())
    }  # fmt: skip
    assert differing == {"model.rotary_emb"}, CHANGED_TF.format(
        what=f"RoPE settings now change state of {sorted(differing)}", patch="DerivedState"
    )

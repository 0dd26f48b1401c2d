"""RoPE spec parsing, validation and config merging (pure dict logic, both transformers shapes)."""

from __future__ import annotations

import copy
import sys

import pytest

from lm_eval_longctx import rope, rope_config
from lm_eval_longctx.errors import LongCtxError

pytestmark = pytest.mark.tf4  # also run under transformers 4.x (scripts/test.sh)

# --- every form a user types ----------------------------------------------------------------

SHORTHAND = {
    "dynamic:2": {"rope_type": "dynamic", "factor": 2.0},
    "linear:2.5": {"rope_type": "linear", "factor": 2.5},
    "DYNAMIC:2": {"rope_type": "dynamic", "factor": 2.0},
    "yarn:4": {"rope_type": "yarn", "factor": 4.0},
    "yarn:4:orig=4096": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
    "yarn:4;orig=4096;beta_fast=16;truncate=false": {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 4096,
        "beta_fast": 16.0,
        "truncate": False,
    },
    "yarn:factor=4:attn=1.2": {"rope_type": "yarn", "factor": 4.0, "attention_factor": 1.2},
    "llama3:8:low=1:high=4:orig=8192": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "longrope:4:short=1/1.5:long=2/4": {
        "rope_type": "longrope",
        "factor": 4.0,
        "short_factor": [1.0, 1.5],
        "long_factor": [2.0, 4.0],
    },
    "none": {"rope_type": "default"},
    "default": {"rope_type": "default"},
}


@pytest.mark.parametrize("text", SHORTHAND)
def test_shorthand_parses_to_transformers_dict(text):
    assert rope.parse_rope_scaling(text) == SHORTHAND[text]


@pytest.mark.parametrize(
    "value",
    [
        {"rope_type": "dynamic", "factor": 2.0},
        {"type": "dynamic", "factor": 2},  # transformers 4.3x key
        {"rope_type": "dynamic", "type": "dynamic", "factor": 2.0},
        '{"rope_type": "dynamic", "factor": 2.0}',  # JSON string
        "{'rope_type': 'dynamic', 'factor': 2}",  # Python dict literal
        "dynamic:factor=2",
    ],
)
def test_dict_forms_parse_like_the_shorthand(value):
    assert rope.parse_rope_scaling(value) == {"rope_type": "dynamic", "factor": 2.0}


def test_leaving_it_out_keeps_the_checkpoint_scaling():
    assert rope.parse_rope_args(None, None) == (None, None)


def test_rope_theta_inside_the_dict_is_the_override():
    assert rope.parse_rope_args({"rope_type": "linear", "factor": 2, "rope_theta": 5e5}) == (
        {"rope_type": "linear", "factor": 2.0},
        500000.0,
    )


def _cli_model_args(*argv):
    """Parse ``--model_args`` exactly as the ``lm_eval`` command of the installed lm-eval does."""
    from lm_eval._cli.harness import HarnessCLI

    saved = sys.argv
    sys.argv = ["lm_eval", "--model", "hf-longctx", "--tasks", "x", "--model_args", *argv]
    try:
        return HarnessCLI().parse_args().model_args
    finally:
        sys.argv = saved


CLI = [
    (["pretrained=m,rope_scaling=dynamic:2"], {"rope_type": "dynamic", "factor": 2.0}, None),
    (
        ["pretrained=m,rope_scaling=yarn:4:orig=4096,rope_theta=500000"],
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
        500000.0,
    ),
    (
        ["pretrained=m,rope_scaling=llama3:8:low=1:high=4:orig=8192"],
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        None,
    ),
    (["pretrained=m,rope_theta=1e6"], None, 1e6),
    (["pretrained=m,rope_scaling=none"], {"rope_type": "default"}, None),
    (["pretrained=m", "rope_scaling=linear:2", "max_length=4096"], {"rope_type": "linear", "factor": 2.0}, None),
    # A dict literal survives 0.4.13 only as its own space-separated argument.
    (
        ["pretrained=m", 'rope_scaling={"rope_type":"dynamic","factor":2.0}'],
        {"rope_type": "dynamic", "factor": 2.0},
        None,
    ),
    (["pretrained=m", "rope_scaling={'type':'dynamic','factor':2}"], {"rope_type": "dynamic", "factor": 2.0}, None),
    # The whole --model_args as JSON: lm-eval hands over a real dict.
    (
        ['{"pretrained": "m", "rope_scaling": {"rope_type": "yarn", "factor": 4}, "rope_theta": 500000}'],
        {"rope_type": "yarn", "factor": 4.0},
        500000.0,
    ),
]


@pytest.mark.parametrize(("argv", "spec", "theta"), CLI)
def test_cli_strings_through_lm_evals_own_parser(argv, spec, theta):
    model_args = _cli_model_args(*argv)
    assert model_args["pretrained"] == "m"
    assert rope.parse_rope_args(model_args.get("rope_scaling"), model_args.get("rope_theta")) == (spec, theta)


def test_python_api_string_model_args():
    from lm_eval.utils import simple_parse_args_string

    args = simple_parse_args_string("pretrained=m,rope_scaling=yarn:4:orig=4096,rope_theta=500000")
    assert rope.parse_rope_args(args["rope_scaling"], args["rope_theta"]) == (
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
        500000.0,
    )


def test_dict_after_a_comma_is_cut_by_lm_eval_and_we_say_so():
    from lm_eval.utils import simple_parse_args_string

    args = simple_parse_args_string('pretrained=m,rope_scaling={"rope_type":"dynamic","factor":2.0}')
    with pytest.raises(LongCtxError, match="cuts key=value model args at every comma"):
        rope.parse_rope_scaling(args["rope_scaling"])


# --- every bad spec ---------------------------------------------------------------------------

BAD = [
    ("warp:2", "unknown kind 'warp'"),
    ({"rope_type": "ntk", "factor": 2}, "unknown kind 'ntk'"),
    ({"factor": 2.0}, "no kind given"),
    ("dynamic:0", "factor must be a finite number > 0, got '0'"),
    ("linear:0.5", "factor 0.5 < 1 shrinks the context window to 0.5 of the native one"),
    ("yarn:0.25:orig=4096", "factor 0.25 < 1 shrinks the context window"),
    ("yarn:4:beta_fast=1:beta_slow=32", "beta_fast (1) must be greater than beta_slow (32)"),
    ("linear:-2", "factor must be a finite number > 0"),
    ("dynamic:abc", "factor must be a number"),
    ("dynamic:inf", "factor must be a finite number > 0"),
    ({"rope_type": "linear", "factor": True}, "factor must be a number"),
    ("dynamic", "dynamic needs factor"),
    ({"rope_type": "yarn"}, "yarn needs factor"),
    ("llama3:8:orig=8192", "llama3 needs high_freq_factor, low_freq_factor"),
    ("llama3:8:low=4:high=1", "must be greater than low_freq_factor"),
    ("longrope:4", "longrope needs long_factor, short_factor"),
    ("longrope:4:short=1/x:long=1/1", "short_factor must be a number"),
    ("yarn:4:foo=1", "yarn does not take foo"),
    ("dynamic:2:orig=4096", "dynamic does not take original_max_position_embeddings"),
    ({"rope_type": "linear", "factor": 2, "partial_rotary_factor": 0.5}, "linear does not take partial_rotary_factor"),
    ("yarn:4:orig=40.5", "whole number"),
    ("yarn:4:truncate=maybe", "true or false"),
    ("linear:2:4", "'4' is not key=value"),
    ("yarn:4:factor=8", "factor is given twice"),
    ({"rope_type": "linear", "type": "dynamic", "factor": 2}, "disagree"),
    ('{"rope_type":"dynamic"', "not a complete dict"),
    (2, "give a kind and a factor"),
    ("", "give a kind and a factor"),
]


@pytest.mark.parametrize(("value", "problem"), BAD)
def test_bad_spec_says_what_and_shows_an_accepted_form(value, problem):
    with pytest.raises(LongCtxError) as caught:
        rope.parse_rope_scaling(value)
    message = str(caught.value)
    assert problem in message
    assert f"rope_scaling={value!r}" in message  # names the value given
    assert "Write it like rope_scaling=" in message  # and an accepted form


@pytest.mark.parametrize("theta", ["abc", 0, -1, "nan"])
def test_bad_rope_theta(theta):
    with pytest.raises(LongCtxError, match=r"rope_theta=.*Write it like rope_theta=500000"):
        rope.parse_rope_args(None, theta)


def test_theta_given_twice_differently():
    with pytest.raises(LongCtxError, match="disagrees"):
        rope.parse_rope_args({"rope_type": "linear", "factor": 2, "rope_theta": 1e4}, 5e5)


def test_a_factor_of_one_warns_that_it_extends_nothing(caplog):
    with caplog.at_level("WARNING", logger="lm_eval.longctx"):
        assert rope.parse_rope_scaling("linear:1")["factor"] == 1.0
    assert "rope_scaling linear with factor 1 extends nothing" in caplog.text


def test_a_window_past_any_run_is_refused_naming_the_window():
    with pytest.raises(LongCtxError) as caught:
        rope_config.merge_rope(V5_LLAMA, rope.parse_rope_scaling("linear:1e6"))
    message = str(caught.value)
    assert "gives a window of 4,096,000,000 tokens, past the 16,777,216 any run could use" in message
    assert "(e.g. 32 for 131072 tokens)" in message and "Write it like rope_scaling=linear:4" in message


def test_the_table_says_which_kinds_rotate_by_prompt_length():
    assert {name for name, kind in rope.KINDS.items() if kind.depends_on_prompt_length} == {"dynamic", "longrope"}
    assert rope.depends_on_prompt_length("dynamic") and not rope.depends_on_prompt_length("linear")
    assert not rope.depends_on_prompt_length(None) and not rope.depends_on_prompt_length("unknown")


def test_every_kind_has_an_example_that_parses():
    for name, kind in rope.KINDS.items():
        assert rope.parse_rope_scaling(kind.example)["rope_type"] == name


# --- merging into a config, transformers 5.x shape ----------------------------------------------

V5_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_attention_heads": 4,
    "max_position_embeddings": 4096,
    "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
}


def test_v5_yarn_keeps_theta_fills_original_and_stretches_window():
    setup = rope_config.merge_rope(V5_LLAMA, rope.parse_rope_scaling("yarn:4"))
    assert setup.config_updates == {
        "rope_parameters": {
            "rope_type": "yarn",
            "factor": 4.0,
            "rope_theta": 500000.0,
            "original_max_position_embeddings": 4096,
        },
        "max_position_embeddings": 16384,
    }
    assert (setup.native_window, setup.effective_window) == (4096, 16384)


def test_v5_dynamic_keeps_max_positions_native():
    # transformers' dynamic-NTK formula reads max_position_embeddings as the native length.
    setup = rope_config.merge_rope(V5_LLAMA, rope.parse_rope_scaling("dynamic:2"))
    assert setup.config_updates["max_position_embeddings"] == 4096
    assert setup.config_updates["rope_parameters"] == {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 500000.0}
    assert setup.effective_window == 8192


def test_v5_theta_override_and_partial_rotary_kept():
    config = {**V5_LLAMA, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}}
    setup = rope_config.merge_rope(config, rope.parse_rope_scaling("linear:2"), 5e5)
    assert setup.rope_parameters == {
        "rope_type": "linear",
        "factor": 2.0,
        "rope_theta": 5e5,
        "partial_rotary_factor": 0.5,
    }


def test_v5_phi3_style_top_level_original_is_updated_too():
    config = {
        **V5_LLAMA,
        "original_max_position_embeddings": 4096,
        "max_position_embeddings": 131072,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e4},
    }
    setup = rope_config.merge_rope(config, rope.parse_rope_scaling("yarn:2"))
    assert setup.config_updates["original_max_position_embeddings"] == 4096
    assert (setup.native_window, setup.effective_window) == (4096, 8192)


def test_v5_explicit_orig_wins_over_the_config():
    setup = rope_config.merge_rope(V5_LLAMA, rope.parse_rope_scaling("yarn:4:orig=2048"))
    assert setup.rope_parameters["original_max_position_embeddings"] == 2048
    assert setup.effective_window == 8192


def test_v5_none_drops_shipped_scaling_back_to_native():
    llama31 = {
        **V5_LLAMA,
        "max_position_embeddings": 131072,
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    }
    setup = rope_config.merge_rope(llama31, rope.parse_rope_scaling("none"))
    assert setup.config_updates == {
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
        "max_position_embeddings": 8192,
    }
    assert (setup.native_window, setup.effective_window) == (8192, 8192)


def test_no_args_changes_nothing_and_window_is_the_config_s():
    llama31 = {**V5_LLAMA, "max_position_embeddings": 131072}
    llama31["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 5e5, "original_max_position_embeddings": 8192}
    setup = rope_config.merge_rope(llama31)
    assert setup.config_updates == {}
    assert (setup.native_window, setup.effective_window) == (8192, 131072)


def test_theta_only_keeps_the_checkpoint_scaling_and_window():
    shipped = {**V5_LLAMA, "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}
    setup = rope_config.merge_rope(shipped, None, 5e5)
    assert setup.config_updates == {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}}
    assert setup.effective_window == 4096


def test_longrope_lists_must_match_the_rotary_dimension():
    # head_dim 16 -> 8 frequency pairs
    with pytest.raises(LongCtxError, match="short_factor has 2 numbers; this model's rotary dimension needs 8"):
        rope_config.merge_rope(V5_LLAMA, rope.parse_rope_scaling("longrope:4:short=1/1:long=2/2"))
    ones = "/".join(["1"] * 8)
    setup = rope_config.merge_rope(V5_LLAMA, rope.parse_rope_scaling(f"longrope:4:short={ones}:long={ones}"))
    assert setup.rope_parameters["original_max_position_embeddings"] == 4096


def test_original_missing_and_not_derivable():
    no_window = {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}, "hidden_size": 64}
    problem = r"no max_position_embeddings to scale; add orig=N \(e.g. yarn:4:orig=4096\)"
    with pytest.raises(LongCtxError, match=problem):
        rope_config.merge_rope(no_window, rope.parse_rope_scaling("yarn:4"))
    assert rope_config.merge_rope(no_window, rope.parse_rope_scaling("yarn:4:orig=1024")).effective_window == 4096


def test_model_without_rope_refuses_a_spec():
    gpt2 = {"model_type": "gpt2", "n_positions": 1024}
    with pytest.raises(LongCtxError, match=r"rope_scaling=.*no RoPE settings.*Leave rope_scaling and rope_theta out"):
        rope_config.merge_rope(gpt2, rope.parse_rope_scaling("linear:2"))
    assert rope_config.merge_rope(gpt2).config_updates == {}


def test_per_layer_rope_is_refused_clearly():
    gemma3 = {
        "max_position_embeddings": 4096,
        "layer_types": ["full_attention", "sliding_attention"],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
    }
    with pytest.raises(LongCtxError, match="one RoPE setting per layer type"):
        rope_config.merge_rope(gemma3, None, 1e6)
    with pytest.raises(LongCtxError, match="one RoPE setting per layer type"):
        rope_config.merge_rope(gemma3, rope.parse_rope_scaling("linear:2"))


# --- merging into a config, transformers 4.4x shape (rope_scaling + top-level rope_theta) -------

V4_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_attention_heads": 4,
    "max_position_embeddings": 4096,
    "rope_theta": 500000.0,
    "rope_scaling": None,
}
ONES = "/".join(["1"] * 8)
V4_EXPECTED = {
    "linear:2": (
        {"rope_type": "linear", "type": "linear", "factor": 2.0},
        {"max_position_embeddings": 8192},
    ),
    "dynamic:2": (
        {"rope_type": "dynamic", "type": "dynamic", "factor": 2.0},
        {"max_position_embeddings": 4096},
    ),
    "yarn:4": (
        {"rope_type": "yarn", "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
        {"max_position_embeddings": 16384},
    ),
    "llama3:8:low=1:high=4": (
        {
            "rope_type": "llama3",
            "type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 4096,
        },
        {"max_position_embeddings": 32768},
    ),
    f"longrope:2:short={ONES}:long={ONES}": (
        {
            "rope_type": "longrope",
            "type": "longrope",
            "factor": 2.0,
            "short_factor": [1.0] * 8,
            "long_factor": [1.0] * 8,
            "original_max_position_embeddings": 4096,
        },
        # 4.4x longrope reads the top-level attribute and factor = max_positions / original.
        {"max_position_embeddings": 8192, "original_max_position_embeddings": 4096},
    ),
    "none": (None, {"max_position_embeddings": 4096}),
}


@pytest.mark.parametrize("text", V4_EXPECTED)
def test_v4_shape_translation(text):
    scaling, extra = V4_EXPECTED[text]
    setup = rope_config.merge_rope(V4_LLAMA, rope.parse_rope_scaling(text))
    assert setup.config_updates == {"rope_scaling": scaling, "rope_theta": 500000.0, **extra}
    assert "rope_parameters" not in setup.config_updates


def test_v4_llama31_shaped_config_scales_from_its_original_window():
    llama31 = {
        **V4_LLAMA,
        "max_position_embeddings": 131072,
        "rope_scaling": {
            "type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    }
    assert rope_config.rope_parameters_of(llama31)["rope_type"] == "llama3"
    setup = rope_config.merge_rope(llama31, rope.parse_rope_scaling("dynamic:2"))
    assert setup.config_updates == {
        "rope_scaling": {"rope_type": "dynamic", "type": "dynamic", "factor": 2.0},
        "rope_theta": 500000.0,
        "max_position_embeddings": 8192,
    }
    assert (setup.native_window, setup.effective_window) == (8192, 16384)


def test_v4_theta_only_and_no_args():
    assert rope_config.merge_rope(V4_LLAMA, None, 1e6).config_updates == {"rope_scaling": None, "rope_theta": 1e6}
    setup = rope_config.merge_rope(V4_LLAMA)
    assert setup.config_updates == {}
    assert setup.rope_parameters == {"rope_type": "default", "rope_theta": 500000.0}
    assert (setup.native_window, setup.effective_window) == (4096, 4096)


# --- the installed transformers reads one layout; a config.json may be saved in either ----------


def test_layout_read_by_each_major_version():
    assert rope_config.layout_read_by("4.57.6") == "rope_scaling"
    assert rope_config.layout_read_by("5.0.0") == rope_config.layout_read_by("5.24.0") == "rope_parameters"


def test_a_5x_saved_config_under_4x_gets_4x_s_layout_even_with_no_args():
    # 4.x ignores rope_parameters: without this it would run with its default rope_theta (10000).
    setup = rope_config.merge_rope(V5_LLAMA, reads="rope_scaling")
    assert setup.config_updates == {"rope_scaling": None, "rope_theta": 500000.0}
    assert (setup.native_window, setup.effective_window) == (4096, 4096)


def test_a_5x_saved_config_under_4x_is_scaled_in_both_layouts():
    setup = rope_config.merge_rope(V5_LLAMA, rope.parse_rope_scaling("yarn:4"), reads="rope_scaling")
    nested = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}
    assert setup.config_updates == {
        "rope_parameters": {**nested, "rope_theta": 500000.0},  # what provenance reads
        "rope_scaling": {**nested, "type": "yarn"},  # what 4.x builds from
        "rope_theta": 500000.0,
        "max_position_embeddings": 16384,
    }


@pytest.mark.parametrize("config", [V4_LLAMA, V5_LLAMA], ids=["4x-config-under-5x", "5x-config-under-5x"])
def test_under_5x_a_config_keeps_its_own_layout(config):
    # 5.x converts a 4.x-saved Llama config itself; a remote-code config keeps the layout its code reads.
    assert rope_config.merge_rope(config, reads="rope_parameters").config_updates == {}
    updates = rope_config.merge_rope(config, rope.parse_rope_scaling("linear:2"), reads="rope_parameters").config_updates
    assert updates == rope_config.merge_rope(config, rope.parse_rope_scaling("linear:2")).config_updates


# --- putting a setting on a config object (a sweep switches settings on one loaded config) ------


@pytest.mark.parametrize("checkpoint", [V4_LLAMA, V5_LLAMA], ids=["4x-layout", "5x-layout"])
@pytest.mark.parametrize("reads", ["rope_scaling", "rope_parameters"])
def test_a_setting_put_on_a_config_leaves_nothing_of_the_one_before(checkpoint, reads):
    import types

    def fresh(text):
        config = types.SimpleNamespace(**copy.deepcopy(checkpoint))
        rope_config.put_on_config(config, checkpoint, rope_config.merge_rope(checkpoint, rope.parse_rope_scaling(text), reads=reads))
        return vars(config)

    switched = types.SimpleNamespace(**copy.deepcopy(checkpoint))
    for text in [f"longrope:2:short={ONES}:long={ONES}", "yarn:4:orig=2048", "linear:2", "none", "dynamic:3"]:
        rope_config.put_on_config(switched, checkpoint, rope_config.merge_rope(checkpoint, rope.parse_rope_scaling(text), reads=reads))
        assert vars(switched) == fresh(text), text  # longrope's top-level original (4.x) is gone again, say

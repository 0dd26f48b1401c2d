"""vLLM as an engine of our tasks: ``vllm-longctx`` and stock ``--model vllm`` on a tiny model.

Runs in the vLLM leg (scripts/test_vllm.sh, venv .venv-test-vllm); skipped where vLLM is not
installed. The unit tests of the hf_overrides translation need no engine; the others start
vLLM's CPU engine through the ``lm_eval`` command, twice in all (about 30 s each here).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_longctx import rope, rope_config, window
from lm_eval_longctx.compat import vllm as vllm_compat

pytestmark = [
    pytest.mark.vllm,
    # In the vLLM leg (LONGCTX_REQUIRE_VLLM=1) a missing vLLM fails these tests instead of skipping them.
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None and not os.environ.get("LONGCTX_REQUIRE_VLLM"),
                       reason="vLLM is not installed (scripts/test_vllm.sh)"),  # fmt: skip
]

NATIVE = 512
THETA = 10_000.0
CONFIG = {"max_position_embeddings": NATIVE, "rope_parameters": {"rope_type": "default", "rope_theta": THETA},
          "hidden_size": 128, "num_attention_heads": 2}  # fmt: skip


# --------------------------------------------------------------------------- hf_overrides, no engine


@pytest.mark.parametrize("kind", sorted(rope.KINDS))
def test_every_kind_becomes_hf_overrides_with_the_model_s_theta(kind):
    example = rope.KINDS[kind].example
    if kind == "longrope":  # one factor per rotary pair: head_dim 64 -> 32
        example = "longrope:4:short=" + "/".join(["1"] * 32) + ":long=" + "/".join(["2"] * 32)
    spec, theta = rope.parse_rope_args(example)
    setup = rope_config.merge_rope(CONFIG, spec, theta, "rope_parameters")
    overrides = vllm_compat.engine_overrides(setup.config_updates, setup.native_window, setup.effective_window)
    params = overrides["rope_parameters"]
    assert params["rope_theta"] == THETA  # vLLM replaces rope_parameters whole: the base must travel
    assert params["rope_type"] == kind
    assert {k: v for k, v in spec.items() if k != "rope_type"}.items() <= params.items()
    if kind == "dynamic":  # one base, for the whole scaled window (vLLM's DynamicNTKScalingRotaryEmbedding)
        assert params["max_trained_positions"] == NATIVE
        assert overrides["max_position_embeddings"] == NATIVE * 2
    else:
        assert overrides == setup.config_updates


def test_no_rope_args_gives_no_overrides():
    setup = rope_config.merge_rope(CONFIG)
    assert vllm_compat.engine_overrides(setup.config_updates, setup.native_window, setup.effective_window) == {}


def test_dynamic_note_names_the_fixed_length():
    note = vllm_compat.fixed_base_note({"rope_type": "dynamic", "factor": 2.0, "max_trained_positions": 512}, 1024)
    assert "base for 1024 tokens (native window 512 x factor 2)" in note
    assert vllm_compat.fixed_base_note({"rope_type": "yarn", "factor": 2.0}, 1024) is None


@pytest.mark.parametrize(
    ("model", "args", "problem"),
    [
        ("vllm", {"rope_scaling": "yarn:2"}, "Use --model vllm-longctx with rope_scaling=yarn:2"),
        ("vllm", {"rope_theta": "500000"}, "Use --model vllm-longctx with rope_theta=500000"),
        ("vllm", {"hf_overrides": {"rope_parameters": {"rope_type": "linear", "factor": 2.0}}}, "has no rope_theta"),
        ("vllm-longctx", {"hf_overrides": '{"rope_parameters": {"rope_type": "yarn", "factor": 2}}'}, "has no rope_theta"),
        ("vllm", {"hf_overrides": "{rope_parameters"}, "is not a JSON object"),
    ],
)
def test_rope_args_vllm_would_refuse_or_misread_are_one_line(model, args, problem):
    assert problem in vllm_compat.rope_problem(args, model)


def test_hf_overrides_with_theta_and_plain_args_pass():
    good = {"hf_overrides": {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}}
    assert vllm_compat.rope_problem(good, "vllm") is None
    assert vllm_compat.rope_problem({"rope_scaling": "yarn:2"}, "vllm-longctx") is None  # ours takes it


def test_stock_vllm_window_check_reads_max_model_len():
    metadata = {"pretrained": "unused", "max_model_len": 1024}
    with window.evaluation(False, "vllm", metadata):
        window.refuse_lengths_beyond_window("longctx_passkey", metadata, [512, 960], 64)
        with pytest.raises(Exception, match=r"lm-eval's vllm model would cut them.*--model vllm-longctx"):
            window.refuse_lengths_beyond_window("longctx_passkey", metadata, [512, 1000], 64)


# --------------------------------------------------------------------------- real runs: the lm_eval command


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory, bpe_tokenizer_dir):
    """A tiny random Llama vLLM's CPU attention takes (head size 64), native window 512."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(bpe_tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=NATIVE, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, rope_parameters={"rope_type": "default",
        "rope_theta": THETA}, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vllm_llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _lm_eval(model: str, model_args: str, out: Path, lengths, extra=()) -> subprocess.CompletedProcess:
    metadata = {"max_seq_lengths": list(lengths), "depths": [0.5], "num_samples": 2}
    command = [
        str(Path(sys.executable).parent / "lm_eval"), "--model", model, "--model_args", model_args,
        "--tasks", "longctx_passkey", "--metadata", json.dumps(metadata), "--gen_kwargs", "max_gen_toks=8",
        "--output_path", str(out), "--log_samples", *extra,
    ]  # fmt: skip
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=out.parent)


def _outputs(out: Path):
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    samples = [json.loads(line) for line in next(out.rglob("samples_*.jsonl")).read_text().splitlines()]
    return results, samples


def _prompt_tokens(model_dir: str, sample: dict) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(model_dir)(sample["arguments"]["gen_args_0"]["arg_0"])["input_ids"])


def test_vllm_longctx_dynamic_records_what_vllm_loaded_and_marks_beyond_the_window(vllm_model_dir, tmp_path):
    out = tmp_path / "out"
    done = _lm_eval("vllm-longctx", f"pretrained={vllm_model_dir},rope_scaling=dynamic:2,dtype=float32", out, [256, 1020])
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stderr.count("vLLM's dynamic NTK holds the RoPE base fixed: the base for 1024 tokens") == 1
    assert "2 of 4 generation requests do not fit the 1024-token window" in done.stderr

    results, samples = _outputs(out)
    info = results["config"]["longctx"]
    assert info["rope_parameters"] == {  # read back from vLLM's engine config
        "rope_type": "dynamic", "factor": 2.0, "rope_theta": THETA, "max_trained_positions": NATIVE,
    }  # fmt: skip
    assert (info["max_position_embeddings"], info["native_window"], info["max_length"]) == (1024, NATIVE, 1024)
    assert "base for 1024 tokens" in info["dynamic_ntk"]
    assert info["beyond_window_requests"] == 2
    assert (info["tensor_parallel_size"], info["data_parallel_size"], info["enforce_eager"]) == (1, 1, True)
    assert info["versions"]["vllm"].startswith("0.32")

    by_length = {s["doc"]["target_tokens"]: s for s in samples}
    assert _prompt_tokens(vllm_model_dir, by_length[256]) == 256  # the exact length, vLLM's tokenizer
    marked = sorted((s["doc"]["target_tokens"], s["resps"][0][0] == window.BEYOND_WINDOW) for s in samples)
    assert marked == [(256, False), (256, False), (1020, True), (1020, True)]
    assert results["results"]["longctx_passkey"]["beyond_window_len_1020,none"] == 2.0  # a count


def test_stock_vllm_runs_our_tasks_at_exact_lengths(vllm_model_dir, tmp_path):
    out = tmp_path / "out"
    done = _lm_eval("vllm", f"pretrained={vllm_model_dir},max_model_len=512,dtype=float32,enforce_eager=True", out, [256, 480])
    assert done.returncode == 0, done.stderr[-4000:]
    results, samples = _outputs(out)
    assert sorted(_prompt_tokens(vllm_model_dir, s) for s in samples) == [256, 256, 480, 480]
    assert results["results"]["longctx_passkey"]["beyond_window,none"] == 0.0


def test_stock_vllm_with_rope_scaling_is_one_line_before_vllm_starts(vllm_model_dir, tmp_path):
    tmp_path.joinpath("out").mkdir()
    done = _lm_eval("vllm", f"pretrained={vllm_model_dir},rope_scaling=yarn:2", tmp_path / "out", [256])
    assert done.returncode == 2, done.stderr[-2000:]
    assert "lm-eval's vllm model passes this to vLLM, which has no such argument" in done.stderr
    assert "Traceback" not in done.stderr
    assert "Initializing a V1 LLM engine" not in done.stderr

"""What each file of lm_eval_longctx/compat/ relies on, checked against the installed versions.

compat/ was written for lm-eval 0.4.13 and transformers 5.23-5.25 (and runs on 4.57.6:
scripts/test_tf4.sh runs this file there too). When a release changes an internal that a patch,
or hf-longctx's subclass of HFLM, depends on, the test of it fails with a message naming it.
"""

import importlib
import importlib.util
import inspect
import logging
import os
import subprocess
import sys

import pytest
from conftest import llama_config_args

from lm_eval_longctx import _autoload, compat
from lm_eval_longctx.compat import attention, lmeval_cli, lmeval_evaluator, lmeval_hf, lmeval_plugins, transformers_rotary

pytestmark = pytest.mark.tf4  # also run under transformers 4.x (scripts/test_tf4.sh)

CHANGED = "lm-eval changed since 0.4.13: {what}. Update lm_eval_longctx/compat/ ({patch}) and this test."
CHANGED_TF = "transformers changed since 5.25: {what}. Update lm_eval_longctx/compat/ ({patch}) and this test."


def _params(function) -> list[str]:
    function = inspect.unwrap(function)
    return list(inspect.signature(function).parameters)


# --------------------------------------------------------------------------- the install table


@pytest.mark.parametrize("patch", compat.PATCHES, ids=lambda patch: patch.function)
def test_every_row_names_a_function_of_its_file_taking_the_module_it_patches(patch):
    file, name = patch.function.rsplit(".", 1)
    function = getattr(importlib.import_module(f"lm_eval_longctx.compat.{file}"), name, None)
    assert callable(function), f"compat.PATCHES names {patch.function}, which does not exist"
    assert len(_params(function)) == 1, f"{patch.function} must take the module it patches, and only it"
    assert patch.hook or patch.installed_by, f"nothing installs {patch.function}"
    importlib.import_module(patch.module)  # the module it patches exists in the installed lm-eval


def test_the_start_up_hook_watches_exactly_the_modules_of_the_hooked_rows():
    assert frozenset(_autoload.HOOKS) == compat.hooked_modules(), "update _autoload.HOOKS (and the .pth line) from compat.PATCHES"


def test_with_the_hook_off_each_owner_installs_its_rows_when_imported():
    # The direct-import path: importing an owner module installs what the table says, nothing else.
    owners = sorted({owner for patch in compat.PATCHES for owner in patch.installed_by if not owner.endswith("Task")})
    if importlib.util.find_spec("vllm") is None:  # vllm-longctx imports vLLM (tests/test_vllm.py covers it)
        owners.remove("lm_eval_longctx.vllm_model")
    code = (
        "import importlib, sys\n"
        "from lm_eval_longctx import compat\n"
        "ran = []\n"
        "compat._run = lambda patch, module: ran.append((patch.function, module.__name__))\n"
        f"for owner in {owners!r}:\n"
        "    importlib.import_module(owner)\n"
        "print(sorted(set(ran)))\n"
    )
    env = {**os.environ, "LM_EVAL_LONGCTX_NO_AUTOLOAD": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = sorted({(p.function, p.module) for p in compat.PATCHES if set(p.installed_by) & set(owners)})
    assert done.stdout.strip().splitlines()[-1] == str(expected)


# --------------------------------------------------------------------------- lmeval_plugins: lm-eval plugins


def test_task_manager_init_takes_the_arguments_our_wrapper_passes_by_position():
    from lm_eval.tasks.manager import TaskManager

    got = _params(TaskManager.__init__)
    assert got == ["self", "verbosity", "include_path", "include_defaults", "metadata"], CHANGED.format(
        what=f"TaskManager.__init__ takes {got}", patch="patch_task_manager"
    )


def test_lm_eval_0_4_13_loads_no_plugins_so_our_patches_apply():
    import lm_eval.api.registry
    import lm_eval.tasks.manager

    for module in (lm_eval.tasks.manager, lm_eval.api.registry):
        assert not lmeval_plugins.loads_entry_points(module), CHANGED.format(
            what=f"{module.__name__} now loads entry points itself (our hook steps aside; is that intended?)",
            patch="loads_entry_points",
        )


def test_model_registry_registers_lazily_and_knows_hf_by_its_three_names():
    from lm_eval.api.registry import get_model, model_registry
    from lm_eval.models.huggingface import HFLM

    register = inspect.signature(model_registry.register).parameters
    assert "target" in register and register["target"].kind is inspect.Parameter.KEYWORD_ONLY, CHANGED.format(
        what=f"model_registry.register takes {list(register)}, not target=", patch="register_model"
    )
    assert hasattr(model_registry, "__contains__"), CHANGED.format(what="model_registry has no 'in'", patch="register_model")
    for name in lmeval_cli.STOCK_HF_MODELS:
        assert get_model(name) is HFLM, CHANGED.format(what=f"{name!r} is no longer HFLM", patch="STOCK_HF_MODELS")


# --------------------------------------------------------------------------- lmeval_cli: the CLI


def test_harness_cli_parses_then_executes():
    from lm_eval.__main__ import cli_evaluate
    from lm_eval._cli.harness import HarnessCLI

    assert _params(HarnessCLI.parse_args) == ["self"], CHANGED.format(
        what="HarnessCLI.parse_args(self) changed", patch="patch_cli"
    )
    assert _params(HarnessCLI.execute) == ["self", "args"], CHANGED.format(
        what="HarnessCLI.execute(self, args) changed", patch="patch_cli"
    )
    source = inspect.getsource(cli_evaluate)
    assert "parse_args()" in source and "execute(args)" in source, CHANGED.format(
        what="lm_eval.__main__.cli_evaluate no longer calls HarnessCLI.parse_args then .execute", patch="patch_cli"
    )


def test_invalid_json_error_text_is_the_one_we_recognise():
    from lm_eval._cli.utils import try_parse_json

    value = '{"max_seq_lengths": [256],}'
    with pytest.raises(ValueError) as caught:
        try_parse_json(value)
    head, tail = lmeval_cli.INVALID_JSON
    assert str(caught.value) == f"{head}{value}{tail}", CHANGED.format(
        what=f"try_parse_json now says {str(caught.value)!r}", patch="INVALID_JSON"
    )


def test_model_args_and_metadata_are_parsed_by_merge_dict_action():
    from lm_eval._cli.harness import HarnessCLI
    from lm_eval._cli.utils import MergeDictAction

    run = HarnessCLI()._subparsers.choices["run"]
    by_flag = {flag: action for action in run._actions for flag in action.option_strings}
    for flag, dest in lmeval_cli.DICT_OPTIONS.items():
        assert flag in by_flag and isinstance(by_flag[flag], MergeDictAction), CHANGED.format(
            what=f"{flag} is no longer read by MergeDictAction", patch="DICT_OPTIONS"
        )
        assert by_flag[flag] is by_flag[dest]


def test_lm_eval_passes_batch_size_max_batch_size_and_device_to_the_model_itself():
    from dataclasses import fields

    from lm_eval import evaluator
    from lm_eval.api.model import LM
    from lm_eval.config.evaluate_config import EvaluatorConfig

    defaults = {f.name: f.default for f in fields(EvaluatorConfig)}
    assert (defaults["batch_size"], defaults["max_batch_size"], defaults["device"]) == (1, None, "cuda:0"), (
        CHANGED.format(what=f"EvaluatorConfig defaults changed: {defaults}", patch="OWN_MODEL_ARGS")
    )
    source = inspect.getsource(evaluator.simple_evaluate)
    for name in lmeval_cli.OWN_MODEL_ARGS:
        assert f'"{name}": {name}' in source, CHANGED.format(
            what=f"simple_evaluate no longer passes {name} beside model_args", patch="OWN_MODEL_ARGS"
        )

    class Dummy(LM):
        def __init__(self, **kwargs):
            pass

        loglikelihood = loglikelihood_rolling = generate_until = None

    with pytest.raises(TypeError, match="multiple values for keyword argument 'batch_size'"):
        Dummy.create_from_arg_obj({"batch_size": 2}, {"batch_size": 1})


def test_open_progress_bars_are_listed_where_fail_closes_them():
    import tqdm

    bar = tqdm.tqdm(total=3, disable=False)
    try:
        assert bar in tqdm.tqdm._instances, "tqdm changed: open bars are no longer in tqdm._instances (lmeval_cli.fail)"
    finally:
        bar.close()


def test_fail_closes_open_bars_quiets_asyncio_and_exits_2(capsys):
    import tqdm

    bar = tqdm.tqdm(total=3, disable=False)
    asyncio_logger = logging.getLogger("asyncio")
    level = asyncio_logger.level
    try:
        with pytest.raises(SystemExit) as caught:
            lmeval_cli.fail("the message")
        assert caught.value.code == 2
        assert bar not in tqdm.tqdm._instances  # closed: it will not redraw after our line
        assert asyncio_logger.level == logging.CRITICAL
        assert capsys.readouterr().err.strip().splitlines()[-1] == "lm-eval-longctx error: the message"
    finally:
        asyncio_logger.setLevel(level)
        bar.close()


# --------------------------------------------------------------------------- lmeval_cli: the run command, reused


def test_the_run_parser_is_lm_eval_s_and_executes_run():
    import argparse

    from lm_eval._cli.run import Run

    parser = lmeval_cli.lm_eval_run_parser(argparse.ArgumentParser)
    args = parser.parse_args(["--model_args", "pretrained=x,rope_scaling=dynamic:2", "--tasks", "a,b"])
    assert args.func == Run._execute, CHANGED.format(what="the run parser no longer sets func=Run._execute", patch="run_lm_eval")
    assert args.model_args == {"pretrained": "x", "rope_scaling": "dynamic:2"} and args.tasks == ["a", "b"]
    assert not hasattr(args, "command"), CHANGED.format(what="the run parser sets 'command'", patch="sweep.run_args")


@pytest.mark.parametrize(
    ("text", "value"),
    [("dynamic:2", "dynamic:2"), ("none", "none"), ('{"rope_type": "linear", "factor": 2}', {"rope_type": "linear", "factor": 2})],
)
def test_a_model_arg_gets_the_value_lm_eval_gives_it(text, value):
    from lm_eval._cli.harness import HarnessCLI

    assert lmeval_cli.model_arg_value("rope_scaling", text) == value
    run = HarnessCLI()._subparsers.choices["run"]
    parsed = run.parse_args(["--model_args", "pretrained=x", f"rope_scaling={text}", "--tasks", "t"]).model_args
    assert parsed["rope_scaling"] == value, CHANGED.format(what=f"--model_args rope_scaling={text} gives {parsed}", patch="model_arg_value")


def test_run_config_refuses_what_lm_eval_refuses_before_loading():
    import argparse

    parser = lmeval_cli.lm_eval_run_parser(argparse.ArgumentParser)
    with pytest.raises(ValueError, match="Specify --output_path if providing --log_samples"):
        lmeval_cli.run_config(parser.parse_args(["--tasks", "longctx_kv", "--log_samples"]))
    with pytest.raises(ValueError, match="Tasks not found: no_such_task"):  # resolved as Run._execute resolves them
        lmeval_cli.run_config(parser.parse_args(["--model_args", "pretrained=x", "--tasks", "longctx_kv,no_such_task"]))


def test_simple_evaluate_builds_the_registered_model_through_get_model():
    from lm_eval import evaluator
    from lm_eval.api import registry

    source = inspect.getsource(inspect.unwrap(evaluator.simple_evaluate))
    assert "lm_eval.api.registry.get_model(model).create_from_arg_obj(" in source, CHANGED.format(
        what="simple_evaluate no longer builds a named model with registry.get_model(model).create_from_arg_obj", patch="model_built_by"
    )
    built = []
    original = registry.get_model
    with lmeval_evaluator.model_built_by("hf-longctx", lambda args, extra: built.append((args, extra)) or "the loaded model"):
        model = registry.get_model("hf-longctx")
        assert model.create_from_arg_obj({"pretrained": "x"}, {"batch_size": 2, "device": None}) == "the loaded model"
        assert model.create_from_arg_string("pretrained=y", {}) == "the loaded model"
        assert model.marks_beyond_window is True  # the registered class's attributes
        assert registry.get_model("hf") is original("hf")
    assert built == [({"pretrained": "x"}, {"batch_size": 2}), ({"pretrained": "y"}, {})]
    assert registry.get_model is original


# --------------------------------------------------------------------------- lmeval_evaluator: one evaluation


def test_simple_evaluate_builds_the_model_before_the_tasks_and_is_scoped():
    import lm_eval
    from lm_eval import evaluator

    got = _params(evaluator.simple_evaluate)
    assert got[0] == "model", CHANGED.format(what=f"simple_evaluate takes {got}", patch="scope_evaluations")
    source = inspect.getsource(inspect.unwrap(evaluator.simple_evaluate))
    built, loaded = source.find(".create_from_arg_obj("), source.find("task_manager.load(")
    assert -1 < built < loaded, CHANGED.format(
        what="simple_evaluate no longer builds the model before it loads the tasks", patch="scope_evaluations"
    )
    lmeval_evaluator.scope_evaluations()
    assert evaluator.simple_evaluate.longctx_scoped and lm_eval.simple_evaluate is evaluator.simple_evaluate


def test_each_scoped_call_tells_its_tasks_whether_its_model_marks():
    import types

    from lm_eval_longctx import window

    class Marking:
        marks_beyond_window = True

    module = types.SimpleNamespace(simple_evaluate=lambda model, **kwargs: window.model_marks_beyond_window())
    lmeval_evaluator.scope_evaluations(module)
    lmeval_evaluator.scope_evaluations(module)  # idempotent
    assert module.simple_evaluate.__wrapped__.__name__ == "<lambda>"
    assert module.simple_evaluate(Marking()) is True
    assert module.simple_evaluate(object()) is False
    assert module.simple_evaluate("hf-longctx") is True and module.simple_evaluate("hf") is False
    assert module.simple_evaluate("no-such-model") is False  # simple_evaluate itself reports the name
    assert window.model_marks_beyond_window() is False


# --------------------------------------------------------------------------- lmeval_evaluator: aggregation


class _Task:
    def __init__(self, name):
        self.task_name = name

    def aggregation(self):
        from lm_eval.api.metrics import mean

        return {"exact": mean, "exact_len_256": mean}


@pytest.mark.parametrize("task, shown", [("longctx_kv", False), ("niah_single_1", True)])
def test_same_count_warning_is_dropped_for_our_tasks_only(caplog, task, shown):
    from lm_eval import evaluator_utils

    assert evaluator_utils.eval_logger.name == lmeval_evaluator.SAME_COUNT_LOGGER, CHANGED.format(
        what=f"evaluator_utils logs on {evaluator_utils.eval_logger.name!r}", patch="SAME_COUNT_LOGGER"
    )
    lmeval_evaluator.quiet_same_count_warning()
    lmeval_evaluator.quiet_same_count_warning()  # idempotent
    logger = logging.getLogger(lmeval_evaluator.SAME_COUNT_LOGGER)
    assert sum(isinstance(f, lmeval_evaluator.SameCountWarningFilter) for f in logger.filters) == 1
    raw = {("exact", "none"): [1.0, 0.0], ("exact_len_256", "none"): [1.0]}
    with caplog.at_level(logging.WARNING, logger=lmeval_evaluator.SAME_COUNT_LOGGER):
        evaluator_utils._compute_task_aggregations(_Task(task), raw, bootstrap_iters=0)
    warned = [r.getMessage() for r in caplog.records if lmeval_evaluator.SAME_COUNT_TEXT in r.getMessage()]
    if shown:
        assert warned, CHANGED.format(
            what=f"_compute_task_aggregations no longer warns {lmeval_evaluator.SAME_COUNT_TEXT!r}", patch="SAME_COUNT_TEXT"
        )
        assert warned[0].startswith(f"[{task}]"), CHANGED.format(
            what=f"the warning no longer starts with [task]: {warned[0]!r}", patch="SameCountWarningFilter"
        )
    else:
        assert not warned


def test_compute_task_aggregations_takes_task_and_raw_metrics_first():
    from lm_eval import evaluator_utils

    got = _params(evaluator_utils._compute_task_aggregations)
    assert got[:2] == ["task", "raw_metrics"], CHANGED.format(
        what=f"evaluator_utils._compute_task_aggregations takes {got}", patch="aggregate_cells_over_their_docs"
    )


def test_cells_are_aggregated_over_their_own_documents_only():
    from lm_eval import evaluator_utils

    lmeval_evaluator.aggregate_cells_over_their_docs()
    lmeval_evaluator.aggregate_cells_over_their_docs()  # idempotent: wrapped once
    assert not getattr(evaluator_utils._compute_task_aggregations.__wrapped__, "longctx_cells", False)
    ours = _Task("longctx_kv")
    ours.longctx_cells = True
    raw = {("exact", "none"): [1.0, 0.0, 1.0], ("exact_len_256", "none"): [1.0, None, None], ("exact_len_512", "none"): [None] * 3}
    metrics, _ = evaluator_utils._compute_task_aggregations(ours, raw, bootstrap_iters=0)
    assert metrics["exact_len_256,none"] == 1.0  # the mean over its one document, not over three
    assert "exact_len_512,none" not in metrics  # no document: no entry, never a placeholder
    theirs, _ = evaluator_utils._compute_task_aggregations(_Task("other"), {("exact", "none"): [1.0, 0.0]}, bootstrap_iters=0)
    assert theirs["exact,none"] == 0.5


# --------------------------------------------------------------------------- lm-eval: HFLM, subclassed


@pytest.mark.parametrize("name", sorted(lmeval_hf.OVERRIDDEN))
def test_each_hflm_method_we_override_takes_the_parameters_it_took_in_0_4_13(name):
    from lm_eval.models.huggingface import HFLM

    got = _params(getattr(HFLM, name, None) or (lambda: None))
    assert tuple(got) == lmeval_hf.OVERRIDDEN[name], CHANGED.format(
        what=f"HFLM.{name} takes {got}, not {list(lmeval_hf.OVERRIDDEN[name])}", patch=f"lmeval_hf.OVERRIDDEN[{name!r}]"
    )


def test_every_hflm_member_hf_longctx_overrides_is_listed():
    from lm_eval.models.huggingface import HFLM

    from lm_eval_longctx.model import HFLongCtxLM

    overridden = {
        name for name, member in vars(HFLongCtxLM).items()
        if hasattr(HFLM, name) and name != "__init__" and (inspect.isfunction(member) or isinstance(member, property))
    }  # fmt: skip
    listed = set(lmeval_hf.OVERRIDDEN) | set(lmeval_hf.OVERRIDDEN_PROPERTIES)
    assert overridden <= listed, f"HFLongCtxLM overrides {sorted(overridden - listed)}: list them in compat/lmeval_hf.py"
    for name in lmeval_hf.OVERRIDDEN_PROPERTIES:
        assert isinstance(inspect.getattr_static(HFLM, name), property), CHANGED.format(
            what=f"HFLM.{name} is no longer a property", patch="lmeval_hf.OVERRIDDEN_PROPERTIES"
        )
    init = _params(HFLM.__init__)
    for name in lmeval_hf.INIT_ARGUMENTS:
        assert name in init, CHANGED.format(what=f"HFLM.__init__ takes no {name}", patch="lmeval_hf.INIT_ARGUMENTS")


def test_a_built_hflm_has_the_attributes_we_read(tiny_model_dir):
    from lm_eval.models.huggingface import HFLM

    hflm = HFLM(pretrained=tiny_model_dir, device="cpu", dtype="float32")
    missing = [name for name in lmeval_hf.ATTRIBUTES if not hasattr(hflm, name)]
    assert not missing, CHANGED.format(what=f"a built HFLM has no {missing}", patch="lmeval_hf.ATTRIBUTES")


@pytest.mark.parametrize("path", sorted(lmeval_hf.HELPERS))
def test_each_lm_eval_helper_we_call_takes_the_parameters_it_took_in_0_4_13(path):
    module, name = path.rsplit(".", 1)
    got = _params(getattr(importlib.import_module(module), name))
    assert tuple(got) == lmeval_hf.HELPERS[path], CHANGED.format(what=f"{path} takes {got}", patch="lmeval_hf.HELPERS")


# --------------------------------------------------------------------------- transformers_rotary and attention


def _rotary(rope_type: str):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    parameters = {"rope_type": rope_type, "rope_theta": 10000.0}
    if rope_type == "dynamic":
        parameters["factor"] = 2.0
    config = LlamaConfig(
        hidden_size=32, num_attention_heads=2, max_position_embeddings=64, **llama_config_args(rope_parameters=parameters)
    )
    return LlamaRotaryEmbedding(config)


def test_rotary_module_has_what_fixed_ntk_base_sets_and_reads():
    rotary = _rotary("dynamic")
    for name in ("rope_type", "inv_freq", "original_inv_freq", "original_max_seq_len", "max_seq_len_cached", "config"):
        assert hasattr(rotary, name), CHANGED_TF.format(
            what=f"rotary modules have no {name}", patch="fixed_ntk_base / _fresh_inv_freq"
        )
    assert rotary.rope_type == "dynamic" and rotary.original_max_seq_len == 64


def test_dynamic_init_function_takes_config_device_and_seq_len():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    assert "dynamic" in ROPE_INIT_FUNCTIONS, CHANGED_TF.format(what="no ROPE_INIT_FUNCTIONS['dynamic']", patch="_fresh_inv_freq")
    got = _params(ROPE_INIT_FUNCTIONS["dynamic"])
    assert got[:2] == ["config", "device"] and "seq_len" in got, CHANGED_TF.format(
        what=f"ROPE_INIT_FUNCTIONS['dynamic'] takes {got}", patch="_fresh_inv_freq"
    )


def test_forward_recomputes_inv_freq_only_while_rope_type_is_dynamic():
    import torch

    long_positions = torch.arange(200)[None]
    x = torch.zeros(1, 200, 32)
    rotary = _rotary("dynamic")
    rotary(x, long_positions)
    assert not torch.equal(rotary.inv_freq, rotary.original_inv_freq), CHANGED_TF.format(
        what="a dynamic rotary module no longer grows its base past original_max_seq_len", patch="fixed_ntk_base"
    )
    rotary = _rotary("dynamic")
    rotary.rope_type = "default"  # what fixed_ntk_base does to keep its base
    rotary(x, long_positions)
    assert torch.equal(rotary.inv_freq, rotary.original_inv_freq), CHANGED_TF.format(
        what="rope_type='default' no longer stops dynamic_rope_update", patch="fixed_ntk_base"
    )


def test_fixed_ntk_base_keeps_the_prompt_base_and_restores_the_module():
    import torch

    fixed_ntk_base = transformers_rotary.fixed_ntk_base
    rotary = _rotary("dynamic")
    model = torch.nn.Sequential(rotary)
    with fixed_ntk_base(model, 128):
        inside = rotary.inv_freq.clone()
        rotary(torch.zeros(1, 200, 32), torch.arange(200)[None])  # decoding past the prompt
        assert torch.equal(rotary.inv_freq, inside) and rotary.rope_type == "default"
    assert not torch.equal(inside, rotary.original_inv_freq)  # 128 > 64 native: a larger base
    assert rotary.rope_type == "dynamic" and torch.equal(rotary.inv_freq, rotary.original_inv_freq)


def test_attention_kernels_are_looked_up_per_call_with_the_arguments_end_aligned_chunks_read(tiny_model_dir):
    """end_aligned_causal_chunks: an item set on ALL_ATTENTION_FUNCTIONS is a local override that
    del removes, and Llama attention calls the sdpa entry at every call as fn(module, query, key,
    value, mask, dropout=, scaling=) with query (batch, heads, q, dim) and key/value (batch,
    kv_heads, cache so far, dim)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from lm_eval_longctx import generation

    patch = "end_aligned_causal_chunks"
    stock = ALL_ATTENTION_FUNCTIONS["sdpa"]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    cache_arg = generation._cache_argument(model)
    seen = []

    def spy(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        seen.append((tuple(query.shape), tuple(key.shape), scaling))
        return stock(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)

    ALL_ATTENTION_FUNCTIONS["sdpa"] = spy
    try:
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([[1, 2, 3, 4]]), use_cache=True)
            model(input_ids=torch.tensor([[5, 6]]), use_cache=True, **{cache_arg: out.past_key_values})
    finally:
        del ALL_ATTENTION_FUNCTIONS["sdpa"]
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is stock, CHANGED_TF.format(what="del no longer drops an override", patch=patch)
    layers = model.config.num_hidden_layers
    assert len(seen) == 2 * layers, CHANGED_TF.format(what="attention no longer looks its kernel up per call", patch=patch)
    c = model.config
    heads, kv_heads, dim = c.num_attention_heads, c.num_key_value_heads, c.hidden_size // c.num_attention_heads
    got = [seen[0], seen[-1]]
    want = [((1, heads, 4, dim), (1, kv_heads, 4, dim), dim**-0.5), ((1, heads, 2, dim), (1, kv_heads, 6, dim), dim**-0.5)]
    assert got == want, CHANGED_TF.format(what=f"attention kernel arguments are {got}", patch=patch)
    with attention.end_aligned_causal_chunks():
        assert ALL_ATTENTION_FUNCTIONS["sdpa"] is not stock
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is stock

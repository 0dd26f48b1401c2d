"""Prompt formats and the answer prefix: placement in each mode, the first version's prompts,
generation settings from the format table, and the task declarations."""

import hashlib
import json
from pathlib import Path

import pytest
from conftest import _byte_level_bpe, _sentencepiece_style, lm_eval_context

from lm_eval_longctx.catalog import GROUPS, TASK_VERSION, TASKS
from lm_eval_longctx.formats import FORMATS, generation_settings
from lm_eval_longctx.records import Record
from lm_eval_longctx.registration import task_manager, tasks_dir
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter, TokenizerSource, load_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "first_version_prompt_digests.json"


def test_answer_prefix_false_reproduces_the_first_versions_prompts_byte_for_byte():
    # Digests of the prompts generator version 2 (task version 1) built, recorded before the
    # answer prefix was added: every task, both tokenizer families, both styles, chat on/off.
    expected = json.loads(FIXTURE.read_text())
    got = {}
    for family, make in (("bpe", _byte_level_bpe), ("sp", _sentencepiece_style)):
        tokenizer = make()
        for style in ("plain", "llama2_inst"):
            for chat in (False, True):
                counter = PromptCounter(tokenizer, chat_template=chat)
                common = dict(prompt_style=style, chat_template=chat, answer_prefix=False)
                grids = {
                    "kv": ("longctx_kv", GridSpec(max_seq_lengths=(300, 700), num_samples=2, **common)),
                    "passkey": ("longctx_passkey", GridSpec(max_seq_lengths=(300, 700), num_samples=2, **common)),
                    "pi_title": ("longctx_pi_title", GridSpec(max_seq_lengths=(3000,), depths=(0.0,), num_samples=1, **common)),
                    "pi_title_as_is": ("longctx_pi_title", GridSpec(max_seq_lengths=None, depths=(0.0,), num_samples=1, **common)),
                }
                for name, (task_name, spec) in grids.items():
                    task = TASKS[task_name]
                    records = task.generate(spec, counter)
                    assert {r.answer_prefix for r in records} == {""}
                    digest = hashlib.sha256(json.dumps([r.prompt for r in records]).encode()).hexdigest()
                    got[f"{name}/{family}/{style}/chat={chat}"] = digest
    assert got == expected


@pytest.fixture(scope="module")
def kv_records(tiny_model_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir)))
    task = TASKS["longctx_kv"]

    def build(**fields):
        spec = GridSpec(max_seq_lengths=(300,), depths=(0.5,), num_samples=1, **fields)
        return task.generate(spec, PromptCounter(counter.tokenizer, chat_template=spec.chat_template))[0]

    return build


def test_generators_return_declared_records(kv_records):
    record = kv_records()
    assert isinstance(record, Record)
    row = record.to_dict()
    assert row["target_tokens"] == row["max_seq_length"] == 300 and row["key"] in row["prompt"]


def test_plain_mode_puts_the_prefix_after_the_question(tiny_model_dir, hflm_cache, kv_records):
    record = kv_records().to_dict()
    context = lm_eval_context(hflm_cache(tiny_model_dir), record, chat_template=False)
    assert context == record["prompt"] + " " + record["answer_prefix"]
    assert context.endswith(f"What is the value of the key '{record['key']}'? The value of the key '{record['key']}' is '")


def test_chat_template_starts_the_assistant_turn_with_the_prefix(tiny_model_dir, hflm_cache, kv_records):
    record = kv_records(chat_template=True).to_dict()
    context = lm_eval_context(hflm_cache(tiny_model_dir), record, chat_template=True)
    # ChatML: the user's turn closes, the assistant's opens with the prefix and stays open.
    question = f"What is the value of the key '{record['key']}'?"
    assert context.endswith(f"{question}<|im_end|>\n<|im_start|>assistant\n{record['answer_prefix']}")


def test_llama2_inst_puts_the_prefix_after_inst_close(tiny_model_dir, hflm_cache, kv_records):
    record = kv_records(prompt_style="llama2_inst").to_dict()
    context = lm_eval_context(hflm_cache(tiny_model_dir), record, chat_template=False)
    assert context.endswith(f"? [/INST] {record['answer_prefix']}")


def test_llama2_chat_template_continues_the_assistant_turn(sp_model_dir, hflm_cache):
    counter = PromptCounter(load_tokenizer(TokenizerSource(sp_model_dir)), chat_template=True)
    task = TASKS["longctx_passkey"]
    spec = GridSpec(max_seq_lengths=(300,), depths=(0.5,), num_samples=1, chat_template=True)
    record = task.generate(spec, counter)[0].to_dict()
    hflm = hflm_cache(sp_model_dir)
    context = lm_eval_context(hflm, record, chat_template=True)
    assert context.endswith("What is the pass key? [/INST] The pass key is")  # no </s> after the prefix
    assert len(hflm.tok_batch_encode([context])[0][0]) == 300


def test_a_served_chat_endpoint_gets_the_prefix_at_the_end_of_the_user_turn(kv_records):
    record = kv_records(prefix_in_user_turn=True)
    assert record.answer_prefix == ""
    assert record.prompt.endswith(f"'? The value of the key '{record.details['key']}' is '")


def test_spec_ends_the_user_turn_with_the_prefix_only_for_a_chat_endpoint(tiny_model_dir):
    chat = {"pretrained": None, "tokenizer": tiny_model_dir, "base_url": "http://127.0.0.1:9/v1/chat/completions"}
    text = {**chat, "base_url": "http://127.0.0.1:9/v1/completions"}
    assert GridSpec.from_metadata(chat, "longctx_kv").prefix_in_user_turn is True
    assert GridSpec.from_metadata(text, "longctx_kv").prefix_in_user_turn is False
    assert GridSpec.from_metadata({"pretrained": tiny_model_dir}, "longctx_kv").prefix_in_user_turn is False


def test_generation_settings_come_from_the_format_row_and_the_declaration():
    for name, task in TASKS.items():
        assert generation_settings(GridSpec(), task) == {"until": ["\n"], "max_gen_toks": task.max_gen_toks({})}
        inst = generation_settings(GridSpec(prompt_style="llama2_inst"), task)
        assert inst["until"] == list(FORMATS["llama2_inst"].until)
        first = generation_settings(GridSpec(answer_prefix=False), task)
        if task.reference:
            assert first == {"until": list(task.reference.until), "max_gen_toks": task.reference.max_gen_toks}
        else:  # a task that never had a first version: no prefix, the format's settings
            assert first == generation_settings(GridSpec(), task)
    # The first version's settings, as its YAMLs had them.
    assert TASKS["longctx_kv"].reference.until == ("\n\n\n", "[INST]") and TASKS["longctx_kv"].reference.max_gen_toks == 32


@pytest.fixture
def metadata(tiny_model_dir):
    return {"pretrained": tiny_model_dir, "max_seq_lengths": [240], "depths": [0.5], "num_samples": 1}


def test_tasks_take_until_and_max_gen_toks_from_the_format(metadata):
    tasks = task_manager(metadata=metadata).load(["longctx"])["tasks"]
    for name in GROUPS["longctx"]:
        kwargs = tasks[name].config.generation_kwargs
        assert kwargs["until"] == ["\n"] and kwargs["max_gen_toks"] == TASKS[name].max_gen_toks({})
        assert kwargs["do_sample"] is False
    first = task_manager(metadata={**metadata, "answer_prefix": False}).load(["longctx_passkey"])["tasks"]
    assert first["longctx_passkey"].config.generation_kwargs["max_gen_toks"] == 16


def test_a_users_gen_kwargs_win(metadata, tiny_model_dir):
    import lm_eval

    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": tiny_model_dir, "device": "cpu"},
        tasks=["longctx_passkey"],
        task_manager=task_manager(metadata=metadata),
        gen_kwargs="max_gen_toks=3,until=Q",
        bootstrap_iters=0,
        log_samples=True,
    )
    kwargs = results["configs"]["longctx_passkey"]["generation_kwargs"]
    assert kwargs["max_gen_toks"] == 3 and kwargs["until"] in ("Q", ["Q"])


def test_a_users_yaml_settings_win(metadata, tmp_path):
    (tmp_path / "my_passkey.yaml").write_text(
        f"include: {tasks_dir() / 'longctx_passkey.yaml'}\n"
        "task: my_passkey\n"
        "generation_kwargs:\n  until: ['.']\n  max_gen_toks: 5\n"
    )
    task = task_manager(include_path=str(tmp_path), metadata=metadata).load(["my_passkey"])["tasks"]["my_passkey"]
    assert task.config.generation_kwargs["until"] == ["."] and task.config.generation_kwargs["max_gen_toks"] == 5
    assert task.dataset["test"][0]["answer_prefix"] == "The pass key is"


def test_task_versions_are_bumped_for_the_answer_prefix(metadata):
    loaded = task_manager(metadata=metadata).load(["longctx", "longctx_kv_variants"])
    assert TASK_VERSION == "2.0"  # the type lm-eval gives the group's version
    for name in TASKS:
        assert loaded["tasks"][name].VERSION == TASK_VERSION

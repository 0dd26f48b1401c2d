"""Offline fixtures: two tiny tokenizer families and a tiny Llama model built on the spot."""

from __future__ import annotations

import json
import random

import pytest

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA2_CHAT = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }} {{ eos_token }}{% endif %}{% endfor %}"
)


def _corpus() -> list[str]:
    """Text shaped like our prompts, so the tiny tokenizers learn multi-character hex and words."""
    rng = random.Random(0)
    hexd = "0123456789abcdef"
    lines = []
    for _ in range(3000):
        key = "".join(rng.choice(hexd) for _ in range(8))
        value = "".join(rng.choice(hexd) for _ in range(4))
        lines.append(f"'{key}' = '{value}'")
    lines += [
        "## UUID key/value pairs to remember:",
        "What is the value of the key? [INST] [/INST]",
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them.",
        "The pass key is 12345. Remember it. 12345 is the pass key. What is the pass key?",
        "Question: What's the title of this paper? Extending Context Window of Large Language Models",
    ] * 20
    return lines


def _byte_level_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    return fast


def _sentencepiece_style():
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(vocab_size=640, special_tokens=["<unk>", "<s>", "</s>"], max_token_length=8)
    tok.train_from_iterator(_corpus(), trainer)
    # Byte-fallback pieces are ordinary vocabulary in SentencePiece, not special tokens.
    state = json.loads(tok.to_str())
    vocab = state["model"]["vocab"]
    for i in range(256):
        vocab.setdefault(f"<0x{i:02X}>", len(vocab))
    tok = Tokenizer.from_str(json.dumps(state))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )
    fast.chat_template = LLAMA2_CHAT
    return fast


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(tmp_path_factory):
    """A byte-level BPE tokenizer that adds no BOS (GPT-2/SmolLM2 family), saved offline."""
    path = tmp_path_factory.mktemp("bpe_tok")
    _byte_level_bpe().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def sp_tokenizer_dir(tmp_path_factory):
    """A SentencePiece-style tokenizer (Metaspace, byte fallback) that adds BOS (Llama family)."""
    path = tmp_path_factory.mktemp("sp_tok")
    _sentencepiece_style().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session", params=["bpe", "sp"])
def tokenizer_dir(request, bpe_tokenizer_dir, sp_tokenizer_dir):
    """Both tokenizer families, one after the other."""
    return bpe_tokenizer_dir if request.param == "bpe" else sp_tokenizer_dir


def transformers_major() -> int:
    """Return the installed transformers' major version (4: rope_scaling + rope_theta, 5: rope_parameters)."""
    import transformers

    return int(transformers.__version__.split(".")[0])


def llama_config_args(**overrides) -> dict:
    """Return LlamaConfig arguments for the installed transformers: ``rope_parameters`` (5.x form,
    rope_theta inside) becomes ``rope_theta`` and ``rope_scaling`` on 4.x, which has no such argument."""
    params = overrides.pop("rope_parameters", None)
    if params is None or transformers_major() >= 5:
        return overrides if params is None else {**overrides, "rope_parameters": params}
    scaling = {key: value for key, value in params.items() if key != "rope_theta"}
    rope_args = {"rope_scaling": None if scaling.get("rope_type", "default") == "default" else scaling}
    if "rope_theta" in params:
        rope_args["rope_theta"] = params["rope_theta"]
    return {**overrides, **rope_args}


def make_tiny_llama(path, tokenizer_dir, max_position_embeddings=512, seed=0, **config_overrides):
    """Save a tiny random Llama (2 layers, 32 wide) with the given tokenizer into ``path``.

    ``config_overrides`` may give RoPE in the 5.x form (``rope_parameters``) on either version."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **llama_config_args(**config_overrides),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bpe_tokenizer_dir):
    """A tiny random Llama with the byte-level BPE tokenizer and a 512-token native window."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), bpe_tokenizer_dir)


@pytest.fixture(scope="session")
def sp_model_dir(tmp_path_factory, sp_tokenizer_dir):
    """A tiny random Llama with the SentencePiece-style tokenizer (adds BOS)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama_sp"), sp_tokenizer_dir)


@pytest.fixture(scope="session", params=["bpe", "sp"])
def family_model_dir(request, tiny_model_dir, sp_model_dir):
    """A tiny model folder of each tokenizer family, one after the other."""
    return tiny_model_dir if request.param == "bpe" else sp_model_dir


@pytest.fixture(scope="session")
def sharp_model_dir(tmp_path_factory, bpe_tokenizer_dir):
    """A tiny Llama with large weights: sharp attention, so a wrong RoPE base shows in the logits
    and greedy tokens vary."""
    return make_tiny_llama(tmp_path_factory.mktemp("sharp_llama"), bpe_tokenizer_dir, initializer_range=0.5)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own dataset cache, so no test reads another's files."""
    monkeypatch.setenv("LM_EVAL_LONGCTX_CACHE", str(tmp_path / "cache"))


def lm_eval_token_count(hflm, text: str) -> int:
    """Return how many tokens lm-eval's HF model feeds the model for a generation context."""
    ids, _ = hflm.tok_batch_encode([text])
    return int(ids.shape[1])


@pytest.fixture(scope="session")
def hflm_cache():
    """lm-eval HFLM objects built once per model folder."""
    built = {}

    def get(model_dir):
        if model_dir not in built:
            from lm_eval.models.huggingface import HFLM

            built[model_dir] = HFLM(pretrained=model_dir, device="cpu", batch_size=1)
        return built[model_dir]

    return get


def lm_eval_context(hflm, record: dict, chat_template: bool) -> str:
    """Return the context lm-eval 0.4.13 builds for a record: its own ``build_qa_turn`` with the
    task's ``gen_prefix`` (the record's answer prefix) and ``target_delimiter`` (" "), rendered
    in plain text or through the model's chat template, as ``ConfigurableTask.fewshot_context``."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.api.utils import multiturn_to_singleturn

    prefix = record.get("answer_prefix") or None
    messages = ConfigurableTask.build_qa_turn(None, q=record["prompt"], gen_prefix=prefix, tgt_delim=" ", few_delim="")
    if chat_template:
        return hflm.apply_chat_template(multiturn_to_singleturn(messages), add_generation_prompt=not prefix)
    return "".join(m.to_text() for m in messages)


def generate(task_name: str, spec, counter) -> list[dict]:
    """Return a task's records for ``spec`` as dataset rows (through its declaration)."""
    from lm_eval_longctx.catalog import TASKS

    task = TASKS[task_name]
    return [record.to_dict() for record in task.generate(spec, counter)]


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder no file can be created in: chmod 555 for a normal user; /sys/kernel for root,
    whom permissions do not stop (sysfs refuses new files)."""
    import os
    import tempfile
    from pathlib import Path

    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    candidates = [folder, Path("/sys/kernel")]
    try:
        for candidate in candidates:
            try:
                with tempfile.TemporaryFile(dir=candidate):
                    pass
            except OSError:
                yield candidate
                return
        pytest.skip(f"no read-only folder on this machine (uid {os.getuid()})")
    finally:
        folder.chmod(0o755)

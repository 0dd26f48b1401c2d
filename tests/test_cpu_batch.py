"""--batch_size auto on CPU: a bounded batch planned from the model's shapes, without running the model."""

import logging

import pytest
import torch

from lm_eval_longctx import cpu_batch
from lm_eval_longctx.compat import lmeval_hf


@pytest.fixture
def auto_hflm(tiny_model_dir, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    lmeval_hf.plan_cpu_batches(HFLM)
    lm = HFLM(pretrained=tiny_model_dir, device="cpu", batch_size="auto:4", max_batch_size=64)

    def no_forward(*args, **kwargs):
        raise AssertionError("the model ran to size a batch")

    monkeypatch.setattr(lm.model, "forward", no_forward)
    return lm


def test_auto_on_cpu_plans_without_running_the_model_and_says_so(auto_hflm, monkeypatch, caplog):
    monkeypatch.setattr(cpu_batch, "available_bytes", lambda: 8 * 2**30)
    with caplog.at_level(logging.INFO, logger="lm_eval.longctx"):
        batch = auto_hflm._detect_batch_size()  # what generate_until asks: sized for the whole window
    expected = cpu_batch.plan(auto_hflm.model.config, torch.float32, 512, 64, logits=False, available=8 * 2**30)
    assert batch == expected.batch_size and 1 <= batch <= 64
    assert f"batch_size=auto on CPU: batch size {batch} for inputs of up to 512 tokens" in caplog.text


def test_a_row_too_big_for_the_memory_gets_a_batch_of_one(auto_hflm, monkeypatch):
    monkeypatch.setattr(cpu_batch, "available_bytes", lambda: 2**20)  # 1 MiB
    assert auto_hflm._detect_batch_size() == 1


def test_loglikelihood_sizes_from_the_request_with_its_logits(auto_hflm, monkeypatch):
    monkeypatch.setattr(cpu_batch, "available_bytes", lambda: 2**30)
    requests = [(("a", "b"), list(range(300)), [1, 2, 3])]
    batch = auto_hflm._detect_batch_size(requests, 0)
    assert batch == cpu_batch.plan(auto_hflm.model.config, torch.float32, 302, 64, logits=True, available=2**30).batch_size


def test_the_plan_counts_the_memory_a_long_row_takes(monkeypatch):
    from transformers import LlamaConfig

    # SmolLM2-135M's shape at 8,192 tokens: lm-eval's probe (64 rows) needs ~100 GB of logits alone.
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3)  # fmt: skip
    loglikelihood = cpu_batch.row_bytes(config, torch.float32, 8192, logits=True)
    assert loglikelihood > 2 * 8192 * 49152 * 4  # every position's float32 logits and their log-softmax
    plan = cpu_batch.plan(config, torch.float32, 8192, 64, logits=True, available=20 * 2**30)
    assert plan.batch_size * plan.row_bytes <= 10 * 2**30  # half of the 20 GiB available, never more
    monkeypatch.setattr(cpu_batch, "available_bytes", lambda: None)  # memory unknown: one row at a time
    assert cpu_batch.plan(config, torch.float32, 8192, 64, logits=False).batch_size == 1


def test_other_devices_keep_lm_eval_s_probe():
    class Probing:  # lm-eval's probe, as HFLM has it
        device = torch.device("cuda:0")

        def _detect_batch_size(self, requests=None, pos=0):
            return 7

    lmeval_hf.plan_cpu_batches(Probing)
    assert Probing()._detect_batch_size() == 7

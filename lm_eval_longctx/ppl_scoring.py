"""``longctx_ppl`` windows in ``hf-longctx``: one forward each, log-probs of the scored tokens only.

lm-eval's ``HFLM._loglikelihood_tokens`` computes the full-vocabulary log-softmax at every position
of the input, then keeps the continuation's: at a 32k window of a 32k-vocabulary model that is
4 GiB of float32 the perplexity never reads. Here each window is one forward with
``logits_to_keep`` = its scored tokens (transformers computes the language-model head only
there), their log-softmax taken in chunks. The numbers are lm-eval's: the same tokens (encoded by
lm-eval's own ``_encode_pair`` / empty-context rule), the same sum of float32 log-probs.

A window longer than the model's ``max_length`` is not run: its answer is ``window.BEYOND_WINDOW``
(``ppl_task`` counts it in ``beyond_window``; the response cache never stores it). Other
loglikelihood requests go to HFLM as before. Dynamic NTK: each window under the base a fresh
model picks for its input length (``HFLongCtxLM._run_by_length``).
"""

from __future__ import annotations

import inspect
import logging

from lm_eval_longctx import window
from lm_eval_longctx.errors import LongCtxError

logger = logging.getLogger(__name__)
CHUNK = 4096  # scored positions whose log-softmax is taken at once (CHUNK x vocabulary float32)


def is_window(request) -> bool:
    """True for a request of a ``longctx_ppl`` window (its document row carries the window)."""
    doc = getattr(request, "doc", None)
    return isinstance(doc, dict) and {"scored_tokens", "max_seq_length", "continuation", "window"} <= set(doc)


def encode(lm, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Return (context tokens, continuation tokens) as lm-eval 0.4.13 ``TemplateLM.loglikelihood`` encodes them."""
    if context == "":
        tokens = lm.tok_encode(continuation, add_special_tokens=False)
        if lm.prefix_token_id != tokens[0]:
            return [lm.prefix_token_id], tokens
        return tokens[:1], tokens[1:]
    return lm._encode_pair(context, continuation)


def window_loglikelihood(model, tokens, scored: int, chunk: int = CHUNK) -> tuple[float, bool]:
    """Return (sum of log-probs of the last ``scored`` of ``tokens``, whether each is the greedy token).

    ``tokens``: a 1-D long tensor on the model's device, context + continuation; the model runs
    on all but the last token, once, computing logits only at the ``scored`` positions."""
    import torch

    inputs = tokens[:-1].unsqueeze(0)
    targets = tokens[-scored:]
    with torch.no_grad():
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            logits = model(input_ids=inputs, use_cache=False, logits_to_keep=scored).logits[0]
        else:  # a model without logits_to_keep: all positions, then the scored ones
            logits = model(input_ids=inputs, use_cache=False).logits[0, -scored:]
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        greedy = True
        for i in range(0, scored, chunk):
            logprobs = torch.log_softmax(logits[i : i + chunk].float(), dim=-1)
            part = targets[i : i + chunk]
            total += logprobs.gather(-1, part.unsqueeze(-1)).sum()
            greedy = greedy and bool((logprobs.argmax(-1) == part).all())
    return float(total), greedy


def loglikelihood(lm, requests, fallback, disable_tqdm: bool = False) -> list:
    """``HFLongCtxLM.loglikelihood``: windows scored here, every other request by ``fallback`` (HFLM's)."""
    windows = [i for i, request in enumerate(requests) if is_window(request)]
    if not windows:
        return fallback(requests, disable_tqdm=disable_tqdm)
    results = [None] * len(requests)
    others = [i for i in range(len(requests)) if i not in set(windows)]
    if others:
        for i, answer in zip(others, fallback([requests[i] for i in others], disable_tqdm=disable_tqdm)):
            results[i] = answer
    encoded = {}
    for i in windows:
        context, continuation = encode(lm, *requests[i].args)
        doc = requests[i].doc
        if len(context) + len(continuation) != doc["max_seq_length"] or len(continuation) != doc["scored_tokens"]:
            raise LongCtxError(
                f"longctx_ppl: window {doc['window']} of {doc.get('document_name')!r} at {doc['max_seq_length']} tokens "
                f"is {len(context) + len(continuation)} tokens ({len(continuation)} scored, {doc['scored_tokens']} "
                "planned) with this model's tokenizer: the windows were cut with another tokenizer. Give the model's "
                "own tokenizer (drop \"tokenizer\" from --metadata, or name the model's folder there)."
            )
        encoded[i] = context + continuation
    fits = [i for i in windows if len(encoded[i]) <= lm.max_length]
    beyond = [i for i in windows if len(encoded[i]) > lm.max_length]
    for i in beyond:
        results[i] = window.BEYOND_WINDOW
    if beyond:
        lm.beyond_window_count += len(beyond)
        lengths = sorted({len(encoded[i]) for i in beyond})
        logger.warning(
            "hf-longctx: %d longctx_ppl windows of %s tokens do not fit the %d-token window; not run, marked beyond "
            "the window. To run them, raise max_length (max_length=%d) or the RoPE factor (rope_scaling=KIND:FACTOR).",
            len(beyond), lengths, lm.max_length, lengths[-1],
        )  # fmt: skip
    import torch
    from tqdm import tqdm

    pbar = tqdm(total=len(fits), disable=disable_tqdm or lm.rank != 0, desc="hf-longctx perplexity windows")

    def run(_, group):
        out = []
        for i in group:
            tokens = torch.tensor(encoded[i], dtype=torch.long, device=lm.device)
            with torch.autocast(
                device_type=lm.device.type, dtype=lm.mixed_precision_dtype, enabled=lm.mixed_precision_dtype is not None
            ):
                answer = window_loglikelihood(lm.model, tokens, requests[i].doc["scored_tokens"])
            lm.cache_hook.add_partial("loglikelihood", requests[i].args, answer)
            out.append(answer)
            pbar.update(1)
        return out

    for i, answer in zip(fits, lm._run_by_length(fits, [len(encoded[i]) - 1 for i in fits], run)):
        results[i] = answer
    pbar.close()
    return results

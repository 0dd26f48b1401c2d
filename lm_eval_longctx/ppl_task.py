"""lm-eval glue of ``longctx_ppl``: the dataset of windows, the task class, its metrics.

One document of lm-eval's dataset is one window (``ppl.plan``): a ``loglikelihood`` request whose
context is the window's first tokens as text and whose continuation is the scored tokens as
text. Every window reports every metric (``None`` for the cells it is not in, as the data-parallel
gather needs); our own aggregations skip ``None``:

* ``ppl`` and ``ppl_len_<L>``: exp(total NLL / scored tokens), token-weighted;
* ``ppl_stderr`` and ``ppl_len_<L>_stderr``: the standard error from resampling documents, as
  metrics of their own, listed after their value's, so they replace the "N/A" lm-eval writes
  for an aggregation it cannot bootstrap (no patch);
* ``beyond_window`` / ``beyond_window_len_<L>``: windows the model could not take (``hf-longctx``
  marks them, ``window.BEYOND_WINDOW``); never scored;
* ``skipped_short_len_<L>``: documents shorter than L, not scored at L.

Not a member of the ``longctx`` group: a perplexity is not a 0-1 score and must not enter its mean.
"""

from __future__ import annotations

import logging

import datasets
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from lm_eval_longctx import ppl, ppl_source, served, window
from lm_eval_longctx.cells import BEYOND
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter, load_tokenizer

log = logging.getLogger("lm_eval.longctx")

TASK = ppl.TASK
VERSION = "1.0"
# Sized so the default run (the PI paper, 5,810 SmolLM2 tokens; stock hf) stays at 14 windows
# (8 at 1,024, 6 at 2,048) on a 2-core CPU, where a 1,024-token window takes about 13 s
# (benchmarks/RESULTS.md). The papers' table: --metadata '{"stride": 256, ...}'.
DEFAULT_LENGTHS = (1024, 2048)
DEFAULT_STRIDE = 768
EXAMPLE = '--metadata \'{"max_seq_lengths": [1024, 2048, 4096], "stride": 256}\''


def settings(metadata: dict) -> dict:
    """Return the task's settings from ``metadata``, checked: lengths, stride, mode, tokenizer."""
    spec = GridSpec.from_metadata(metadata, TASK, DEFAULT_LENGTHS)
    if spec.chat_template:
        raise LongCtxError(f"{TASK}: chat_template=true; perplexity is measured on plain text. Drop it.")
    mode = metadata.get("ppl_mode") or ppl.DEFAULT_MODE
    if mode not in ppl.MODES:
        modes = "; ".join(f"{name}: {what}" for name, what in ppl.MODES.items())
        raise LongCtxError(f"{TASK}: ppl_mode={mode!r} is not a mode. The modes are {modes}.")
    stride = metadata.get("stride", DEFAULT_STRIDE)
    if isinstance(stride, bool) or not str(stride).strip().isdigit() or int(stride) < 1:
        raise LongCtxError(f"{TASK}: stride={stride!r} must be a whole number of tokens, at least 1. {EXAMPLE}")
    stride = int(stride)
    too_short = [n for n in spec.max_seq_lengths if n < 2 or (mode == "sliding" and n <= stride)]
    if too_short:
        raise LongCtxError(
            f"{TASK}: max_seq_lengths holds {too_short}, not longer than stride={stride} (a window must keep "
            f"context before its scored tokens) or below 2. Give lengths above the stride. {EXAMPLE}"
        )
    return {"lengths": spec.max_seq_lengths, "stride": stride, "mode": mode, "tokenizer": spec.tokenizer}


def encoder_for(counter: PromptCounter, text: str) -> ppl.Encoder:
    """Return the ``ppl.Encoder`` of ``text``: its tokens as lm-eval encodes a continuation,
    and lm-eval's encoding of request texts (``tok_encode``: special tokens unless the text
    starts with BOS, or as ``add_bos_token`` says)."""
    tokenizer = counter.tokenizer

    def encode(piece: str, special: bool) -> list[int]:
        flag = counter._adds_special_tokens(piece) if special else False
        return tokenizer(piece, add_special_tokens=flag, return_attention_mask=False)["input_ids"]

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False)
    return ppl.Encoder(text, enc["input_ids"], enc["offset_mapping"], encode, len(encode("", True)))


def build(metadata: dict) -> tuple[list[dict], dict]:
    """Return the windows of every document at every length as dataset rows, and what was
    built (per length: documents, windows, scored and unscored tokens, documents skipped)."""
    setup = settings(metadata)
    docs = ppl_source.load_documents(metadata, TASK)
    counter = PromptCounter(load_tokenizer(setup["tokenizer"]), add_bos_token=setup["tokenizer"].add_bos_token)
    encoders = [encoder_for(counter, doc.text) for doc in docs]
    longest = max(range(len(docs)), key=lambda i: len(encoders[i].ids))
    supported = len(encoders[longest].ids) + 1  # the prefix token, then the document
    unreachable = [n for n in setup["lengths"] if n > supported]
    if unreachable:
        raise LongCtxError(
            f"{TASK}: no document reaches max_seq_lengths {unreachable}: the longest, {docs[longest].name!r}, is "
            f"{supported - 1:,} tokens ({supported:,} with the prefix token), so lengths up to {supported:,} can be "
            f"measured. Give shorter lengths or longer documents ({ppl_source.EXAMPLE})."
        )
    rows, built = [], {}
    for length in setup["lengths"]:
        cell = {"documents": 0, "windows": 0, "scored_tokens": 0, "unscored_tokens": 0, "skipped_short": 0}
        for index, (doc, encoder) in enumerate(zip(docs, encoders)):
            plan = ppl.plan(encoder, length, setup["stride"], setup["mode"])
            if plan is None:
                cell["skipped_short"] += 1
                continue
            cell["documents"] += 1
            cell["unscored_tokens"] += plan.unscored
            for number, w in enumerate(plan.windows):
                rows.append({
                    "document": index, "document_name": doc.name, "max_seq_length": length, "window": number,
                    "start": w.start, "end": w.end, "scored_tokens": w.scored,
                    "context": w.context, "continuation": w.continuation,
                })  # fmt: skip
                cell["windows"] += 1
                cell["scored_tokens"] += w.scored
        if cell["unscored_tokens"]:
            log.warning("%s: at %d tokens, %d token(s) of the documents are not scored: no window boundary "
                        "there re-encodes to the same tokens (recorded as unscored_tokens)",
                        TASK, length, cell["unscored_tokens"])  # fmt: skip
        built[length] = cell
    record = {
        "mode": setup["mode"], "stride": setup["stride"], "max_seq_lengths": list(setup["lengths"]),
        "source": ppl_source.source_of(metadata) or {"documents": ppl_source.DEFAULT_NAME},
        "document_tokens": {doc.name: len(e.ids) for doc, e in zip(docs, encoders)},
        "tokenizer_fingerprint": counter.fingerprint(), "by_length": built,
    }  # fmt: skip
    return rows, record


# --------------------------------------------------------------------------- aggregations


def count(items) -> float:
    """How many windows hold 1 (``None``: not in this cell)."""
    return float(sum(item for item in items if item is not None))


def constant(value: float):
    """An aggregation that reports ``value`` (a count known when the data was built)."""

    def aggregate(items) -> float:
        return float(value)

    aggregate.__name__ = f"constant_{value:g}"
    return aggregate


class WindowScorer:
    """``process_results`` of ``longctx_ppl``: every metric of the task for one window (``None`` in
    the cells it is not in). A metric's item is ``[document, NLL, scored tokens]``."""

    def __init__(self, lengths):
        self.lengths = tuple(lengths)

    def __call__(self, doc: dict, results: list) -> dict:
        answer = results[0]
        beyond = isinstance(answer, str) and answer == window.BEYOND_WINDOW
        item = None if beyond else [doc["document"], -float(answer[0]), int(doc["scored_tokens"])]
        out = {"ppl": item, "ppl_stderr": item, BEYOND: float(beyond)}
        for length in self.lengths:
            mine = length == doc["max_seq_length"]
            out[f"ppl_len_{length}"] = item if mine else None
            out[f"ppl_len_{length}_stderr"] = item if mine else None
            out[f"{BEYOND}_len_{length}"] = float(beyond) if mine else None
            out[f"skipped_short_len_{length}"] = None
        return out

    def __repr__(self) -> str:  # how lm-eval writes it into the results' task config
        return f"lm_eval_longctx.ppl_task.WindowScorer({list(self.lengths)})"


class PerplexityTask(ConfigurableTask):
    """``longctx_ppl``: a loglikelihood request per window, aggregated into perplexity per length."""

    def __init__(self, config: dict | None = None, **kwargs):
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        metadata = {**window.current().model_args, "version": VERSION, **(config.get("metadata") or {})}
        metadata["version"] = str(metadata["version"])
        config["metadata"] = metadata
        self._rows, self._record = build(metadata)
        self._check_window(metadata, self._record["max_seq_lengths"])
        config.setdefault("metric_list", [
            {"metric": "ppl", "aggregation": ppl.perplexity, "higher_is_better": False},
            {"metric": "ppl_stderr", "aggregation": ppl.bootstrap_stderr, "higher_is_better": False},
            {"metric": BEYOND, "aggregation": count, "higher_is_better": False},
        ])  # fmt: skip
        config.setdefault("process_results", WindowScorer(self._record["max_seq_lengths"]))
        super().__init__(config=config, **kwargs)
        for length, cell in self._record["by_length"].items():
            for name, aggregation in (
                (f"ppl_len_{length}", ppl.perplexity), (f"ppl_len_{length}_stderr", ppl.bootstrap_stderr),
                (f"{BEYOND}_len_{length}", count),
                (f"skipped_short_len_{length}", constant(cell["skipped_short"])),
            ):  # fmt: skip
                self._aggregation_list[name] = aggregation
                self._higher_is_better[name] = False

    def download(self, dataset_kwargs=None, **kwargs) -> None:
        self.dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(self._rows)})

    def _check_window(self, metadata: dict, lengths) -> None:
        """Refuse lengths lm-eval's ``hf`` model would cut (hf-longctx marks them instead)."""
        if served.is_served(metadata) or window.model_marks_beyond_window():
            return
        limit, source = window.stock_hf_window(metadata)
        too_long = [n for n in lengths if limit is not None and n - 1 > limit]
        if too_long:
            raise LongCtxError(
                f"{TASK}: windows of {too_long} tokens do not fit the model's window of {limit} tokens ({source}); "
                f"lm-eval's hf model would cut them from the left without telling. Use --model hf-longctx (it "
                f"applies rope_scaling and marks such windows beyond the window), pass a larger max_length "
                f"(positions past the trained window then extrapolate), or keep max_seq_lengths at most {limit + 1}."
            )
        found = window.extrapolation(metadata, lengths)
        if found:
            window.warn_once(
                f"{TASK}: windows of {found['lengths']} tokens run past the model's trained window of "
                f"{found['native_window']} (max_length={found['max_length']}, no rope_scaling): extrapolated positions."
            )
            self._record = {**self._record, "extrapolated": found}

    def fewshot_context(self, doc, num_fewshot, system_instruction=None, apply_chat_template=False, **kwargs):
        if num_fewshot or system_instruction or apply_chat_template:
            given = "--num_fewshot" if num_fewshot else "--system_instruction" if system_instruction else "--apply_chat_template"
            raise LongCtxError(
                f"{TASK}: {given} would add tokens to windows of an exact length; run longctx_ppl without it "
                "(a separate lm_eval command from tasks that need it)."
            )
        return doc["context"]

    def construct_requests(self, doc, ctx, **kwargs):
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        return Instance(request_type="loglikelihood", doc=doc, arguments=(doc["context"], doc["continuation"]), idx=0,
                        **kwargs)  # fmt: skip

    def dump_config(self) -> dict:
        """lm-eval's task config, with what the windows were built from under ``metadata.longctx``."""
        config = super().dump_config()
        config["metadata"] = {**(config.get("metadata") or {}), "longctx": self._record}
        return config

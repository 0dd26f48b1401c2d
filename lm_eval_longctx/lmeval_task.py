"""lm-eval glue: the functions our task YAMLs point at with ``!function``.

``*_dataset`` build (or read from cache) the records for the grid in ``--metadata``;
``process_*`` score one answer into lm-eval metrics, overall and per length and depth;
``LongCtxTask`` declares those per-cell metrics and refuses runs that would score a prompt
other than the one generated (a left-truncated context, an unexpected chat template).
"""

from __future__ import annotations

import logging

import datasets
from lm_eval.api.metrics import mean
from lm_eval.api.task import ConfigurableTask

from lm_eval_longctx import compat, scoring, served, window
from lm_eval_longctx.cache import cached_records
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter, load_tokenizer

# A child of lm-eval's logger, so our INFO lines show in its log format and level.
log = logging.getLogger("lm_eval.longctx")

# Bump when a generator's output changes for the same inputs: old cache entries then miss.
GENERATOR_VERSION = 2

BEYOND = "beyond_window"


def metric_name(base: str, length: int | None = None, depth: float | None = None) -> str:
    """Return the per-cell metric name: ``exact_len_4096``, ``exact_depth_0.5``."""
    if length is not None:
        return f"{base}_len_{length}"
    if depth is not None:
        return f"{base}_depth_{depth:g}"
    return base


# --------------------------------------------------------------------------- datasets


def build_dataset(task: str, metadata: dict, generate, extra_key: dict | None = None) -> dict:
    """Return ``{"test": Dataset}`` of ``task``'s records for the grid in ``metadata``."""
    spec = GridSpec.from_metadata(metadata, task)
    counter = PromptCounter(load_tokenizer(spec.tokenizer), spec.chat_template, spec.tokenizer.add_bos_token)
    material = {
        "task": task,
        "generator_version": GENERATOR_VERSION,
        "tokenizer": counter.fingerprint(),
        **spec.key_fields(),
        **(extra_key or {}),
    }

    def build():
        log.info("%s: building prompts for %s (not in the cache yet)", task, spec.max_seq_lengths)
        return generate(spec, counter, _progress(task, spec))

    records, path = cached_records(task, material, build)
    log.info("%s: %d prompts from %s", task, len(records), path)
    dataset = datasets.Dataset.from_list(records)
    dataset.info.description = f"{task} data, key {path.stem}"  # the cache file is named by the key
    return {"test": dataset}


def _progress(task: str, spec: GridSpec):
    """Return a callback that advances a progress bar by one prompt (shown after 1 s only)."""
    from tqdm.auto import tqdm

    total_tokens = sum(spec.max_seq_lengths) * len(spec.depths) * spec.num_samples
    bar = tqdm(total=total_tokens, desc=f"Building {task} prompts", unit="tok", unit_scale=True, delay=1.0)

    def advance(tokens: int) -> None:
        bar.update(tokens)
        if bar.n >= bar.total:
            bar.close()

    return advance


def kv_dataset(**metadata) -> dict:
    """``custom_dataset`` of ``longctx_kv``."""
    from lm_eval_longctx.haystack import generate_kv

    return build_dataset("longctx_kv", metadata, generate_kv)


def passkey_dataset(**metadata) -> dict:
    """``custom_dataset`` of ``longctx_passkey``."""
    from lm_eval_longctx.passkey import generate_passkey

    return build_dataset("longctx_passkey", metadata, generate_passkey)


def pi_title_dataset(**metadata) -> dict:
    """``custom_dataset`` of ``longctx_pi_title``: the paper as is, or one version per length.

    Depths and num_samples do not apply (the title is at the top; the document is fixed).
    """
    from lm_eval_longctx.pi_title import generate_pi_title

    as_is = "max_seq_lengths" not in metadata

    def generate(spec, counter, progress):
        return generate_pi_title(None if as_is else spec.max_seq_lengths, counter, spec.prompt_style, progress)

    metadata = {**metadata, "depths": [0.0], "num_samples": 1}
    return build_dataset("longctx_pi_title", metadata, generate, extra_key={"document_as_is": as_is})


# --------------------------------------------------------------------------- scoring


def count(items: list[float]) -> float:
    """Aggregation of the beyond-window flags: how many samples the model could not take."""
    return float(sum(items))


def _cell_metrics(doc: dict, scores: dict[str, float]) -> dict[str, float]:
    """Return ``scores`` overall, per length and per depth, plus the beyond-window count."""
    length, depth = doc["max_seq_length"], doc.get("depth")
    out = {BEYOND: 0.0, **scores}
    for base, value in scores.items():
        out[metric_name(base, length=length)] = value
        if depth is not None:
            out[metric_name(base, depth=depth)] = value
    return out


def _beyond_window(doc: dict, score_names: tuple[str, ...]) -> dict[str, float]:
    # The model could not take the prompt: it counts as failed overall ("no chance"), is
    # counted in beyond_window, and leaves its length/depth cells without a score.
    out = {name: 0.0 for name in score_names}
    out[BEYOND] = 1.0
    out[metric_name(BEYOND, length=doc["max_seq_length"])] = 1.0
    return out


def _scored(doc: dict, answer: str, scores: dict[str, float], headline: str) -> dict[str, float]:
    """Return per-cell metrics plus ``score``, the headline metric the ``longctx`` group averages."""
    if answer == window.BEYOND_WINDOW:
        return {"score": 0.0, **_beyond_window(doc, tuple(scores))}
    return {"score": scores[headline], **_cell_metrics(doc, scores)}


def process_kv(doc: dict, results: list[str]) -> dict[str, float]:
    """Score one ``longctx_kv`` answer: ``exact`` (headline) and ``contains``."""
    answer, value = results[0], doc["answer"]
    scores = {"exact": scoring.kv_exact(answer, value), "contains": scoring.kv_contains(answer, value)}
    return _scored(doc, answer, scores, "exact")


def process_passkey(doc: dict, results: list[str]) -> dict[str, float]:
    """Score one ``longctx_passkey`` answer: ``exact``, the first integer is the key."""
    answer = results[0]
    return _scored(doc, answer, {"exact": scoring.passkey_exact(answer, doc["answer"])}, "exact")


def process_pi_title(doc: dict, results: list[str]) -> dict[str, float]:
    """Score one ``longctx_pi_title`` answer: ``found``, the title is in the answer."""
    answer = results[0]
    return _scored(doc, answer, {"found": scoring.title_found(answer)}, "found")


# --------------------------------------------------------------------------- task class


# Our per-length and per-depth metrics cover a subset of the documents by design.
compat.quiet_same_count_warning()


class LongCtxTask(ConfigurableTask):
    """A ConfigurableTask whose metric list follows the generated grid."""

    def __init__(self, config: dict | None = None, **kwargs):
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        super().__init__(config=config, **kwargs)
        self._chat_template_given = "chat_template" in (self.config.metadata or {})
        self._adopt_dataset()

    def _adopt_dataset(self) -> None:
        """Declare a metric per length and depth of the generated data; check the window."""
        docs = self.dataset[self.config.test_split]
        self._grid_key = docs.info.description or ""
        score_names = [m["metric"] for m in self.config.metric_list if m["metric"] not in (BEYOND, "score")]
        lengths = sorted(set(docs["max_seq_length"]))
        depths = sorted(set(docs["depth"])) if "depth" in docs.column_names else []
        for base in score_names:
            for name in [metric_name(base, length=n) for n in lengths] + [metric_name(base, depth=d) for d in depths]:
                self._aggregation_list[name] = mean
                self._higher_is_better[name] = True
        for n in lengths:
            self._aggregation_list[metric_name(BEYOND, length=n)] = count
            self._higher_is_better[metric_name(BEYOND, length=n)] = False
        self._check_window(lengths)

    @property
    def _max_gen_toks(self) -> int:
        return int((self.config.generation_kwargs or {}).get("max_gen_toks", 256))

    def _check_window(self, lengths: list[int]) -> None:
        """Refuse lengths that lm-eval's stock ``hf`` model would cut from the left."""
        metadata = self.config.metadata or {}
        if served.is_served(metadata):
            # A server: the window is the server's; ServedRun.check asks it before any request.
            served.ServedRun.from_metadata(metadata, self.config.task).check_settings(
                self.config.task, lengths, self._max_gen_toks
            )
            return
        if window.marking_model_window() is not None:
            return  # hf-longctx is loaded: it marks such prompts beyond the window instead
        limit, source = window.stock_hf_window(metadata)
        if limit is None:
            return
        room = limit - self._max_gen_toks
        too_long = [n for n in lengths if n > room]
        if too_long:
            raise LongCtxError(
                f"{self.config.task}: prompts of {too_long} tokens do not fit the model's window of "
                f"{limit} tokens ({source}) with room for the answer; lm-eval's hf model would cut "
                f"them from the left without telling. Use --model hf-longctx (it applies rope_scaling "
                f"and scores such prompts as beyond the window), pass a larger max_length, or keep "
                f"max_seq_lengths at most {room}."
            )

    def fewshot_context(self, doc, num_fewshot, system_instruction=None, apply_chat_template=False, **kwargs):
        if num_fewshot:
            raise LongCtxError(
                f"{self.config.task}: --num_fewshot {num_fewshot} would add examples to prompts built "
                "to an exact length; run the longctx tasks zero-shot."
            )
        if system_instruction:
            raise LongCtxError(
                f"{self.config.task}: --system_instruction would add tokens to prompts built to an "
                "exact length; drop it for the longctx tasks."
            )
        if bool(apply_chat_template) != bool(doc["chat_template"]):
            given = "--apply_chat_template" if apply_chat_template else "no --apply_chat_template"
            raise LongCtxError(
                f"{self.config.task}: prompts were built with chat_template={doc['chat_template']} but "
                f"the run has {given}, so the model would see a different number of tokens than "
                f"generated. Drop chat_template from --metadata, or make it match."
            )
        context = super().fewshot_context(
            doc, num_fewshot, system_instruction=system_instruction, apply_chat_template=apply_chat_template, **kwargs
        )
        if not apply_chat_template and context != doc["prompt"]:
            raise LongCtxError(
                f"{self.config.task}: the context lm-eval built differs from the generated prompt "
                "(a description, gen_prefix or delimiter was added in the task config); remove it."
            )
        return context

    def build_all_requests(self, *, tokenizer_name: str = "", apply_chat_template: bool = False, **kwargs) -> None:
        built_with = bool(self.dataset[self.config.test_split][0]["chat_template"])
        if bool(apply_chat_template) != built_with and not self._chat_template_given:
            # Only now does the task learn whether lm-eval wraps prompts in the chat template:
            # rebuild them so they are exact with the template's tokens counted.
            metadata = {**(self.config.metadata or {}), "chat_template": bool(apply_chat_template)}
            self.dataset = self.config.custom_dataset(**metadata)
            self._adopt_dataset()
        if served.is_served(self.config.metadata):
            self._check_server(bool(apply_chat_template))
        # lm-eval's request cache key ignores metadata; without the grid key, --cache_requests
        # would reuse prompts built for other lengths or another tokenizer.
        return super().build_all_requests(
            tokenizer_name=f"{tokenizer_name}-{self._grid_key}", apply_chat_template=apply_chat_template, **kwargs
        )

    def _check_server(self, apply_chat_template: bool) -> None:
        """Ask the server, once, with this task's longest prompt; record what served the run."""
        metadata = self.config.metadata or {}
        task = self.config.task
        run = served.ServedRun.from_metadata(metadata, task)
        if run.chat and not apply_chat_template:
            raise LongCtxError(
                f"{task}: base_url={run.base_url} is a chat endpoint; lm-eval's local-chat-completions "
                "needs --apply_chat_template (the server then applies the model's chat template, and the "
                "prompts are built with its tokens counted)."
            )
        if apply_chat_template and not run.chat and not run.tokenized_requests:
            raise LongCtxError(
                f"{task}: --apply_chat_template with local-completions and tokenized_requests=False sends "
                "the chat as a JSON list to a text completions endpoint. Use --model local-chat-completions "
                "with base_url=.../v1/chat/completions, or drop --apply_chat_template."
            )
        spec = GridSpec.from_metadata(metadata, task)
        counter = PromptCounter(load_tokenizer(spec.tokenizer), spec.chat_template, spec.tokenizer.add_bos_token)

        def token_ids_of(prompt: str) -> list[int]:
            return counter.encode(prompt)[1]  # the ids lm-eval's API model sends with tokenized_requests

        docs = self.dataset[self.config.test_split]
        learned = run.check(task, docs, self._max_gen_toks, token_ids_of)
        self.config.metadata = {**metadata, "longctx_served": learned}

"""lm-eval glue: the functions our task YAMLs point at with ``!function``.

``dataset`` builds (or reads from cache) the records of the task a YAML names, for the grid
in ``--metadata``; ``Scorer`` scores one answer into lm-eval metrics, overall and per length
and depth; ``LongCtxTask`` takes its metrics, scorer and generation settings from the task's
declaration (``catalog.TASKS``), declares the per-cell metrics and refuses runs that would
score a prompt other than the one generated (a left-truncated context, an unexpected chat
template).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging

import datasets
from lm_eval.api.task import ConfigurableTask

from lm_eval_longctx import cells, compat, provenance, served, window
from lm_eval_longctx.cache import cached_records, set_key
from lm_eval_longctx.cells import BEYOND, count
from lm_eval_longctx.catalog import TASK_VERSION, TASKS, TaskDef
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.formats import generation_settings
from lm_eval_longctx.spec import DEFAULT_LENGTHS, GridSpec
from lm_eval_longctx.tokens import PromptCounter, join_answer_prefix, load_tokenizer

# A child of lm-eval's logger, so our INFO lines show in its log format and level.
log = logging.getLogger("lm_eval.longctx")

# Bump when a generator's output changes for the same inputs: old cache entries then miss.
GENERATOR_VERSION = 3


# --------------------------------------------------------------------------- datasets


def task_def(name) -> TaskDef:
    """Return the declaration of the task named in a YAML's ``dataset_kwargs.longctx_task``."""
    if name not in TASKS:
        raise LongCtxError(
            f"longctx_task={name!r} in the task YAML's dataset_kwargs is not a longctx task; it must be "
            f"one of {sorted(TASKS)} (declared in lm_eval_longctx/catalog.py)."
        )
    return TASKS[name]


def dataset(longctx_task=None, **metadata) -> dict:
    """``custom_dataset`` of every longctx task: ``{"test": Dataset}`` for the grid in
    ``metadata``; the YAML names the task in ``dataset_kwargs``."""
    return build_dataset(task_def(longctx_task), metadata)


def build_dataset(task: TaskDef, metadata: dict) -> dict:
    """Return ``{"test": Dataset}`` of ``task``'s records for the grid in ``metadata``.

    A task without a needle grid (the paper title) has one prompt per length, and its
    document as is when no ``max_seq_lengths`` is given. Sizes are checked before any work:
    the grid's guards (in ``GridSpec.from_metadata``) and the model's window.
    """
    given = {key for key, value in metadata.items() if value is not None}
    ignored = sorted((set(task.family.parameters) - set(task.tunable)) & given)
    if ignored:  # another task of the run may take them; this one is defined without them
        log.warning("%s: %s in --metadata is not a parameter of this task; ignored here", task.name, ", ".join(ignored))
    spec = grid_of(task, metadata)
    cells.refuse_colliding_depths(task.name, spec.depths)
    if spec.max_seq_lengths is not None:  # the document as is: its length is checked once built
        max_gen_toks = generation_settings(spec, task)["max_gen_toks"]  # the YAML's own, if set, is checked after
        window.refuse_lengths_beyond_window(task.name, metadata, spec.max_seq_lengths, max_gen_toks)
    counter = prompt_counter(spec)
    material = data_material(task, spec, counter)

    def build():
        log.info("%s: building prompts for %s (not in the cache yet)", task.name, spec.max_seq_lengths or "the document")
        with progress_bar(task.name, spec) as bar:
            progress = bar.update if bar is not None else None
            return [record.to_dict() for record in task.generate(spec, counter, progress)]

    records, path = cached_records(task.name, material, build)
    log.info("%s: %d prompts from %s", task.name, len(records), path or "this run (not cached)")
    dataset = datasets.Dataset.from_list(records)
    dataset.info.description = f"{task.name} data, key {set_key(material)[:32]}"  # the cache file's name
    return {"test": dataset}


def grid_of(task: TaskDef, metadata: dict) -> GridSpec:
    """Return the grid ``metadata`` asks of ``task`` (one depth and sample without a needle grid)."""
    if not task.needle_grid:
        metadata = {**metadata, "depths": [0.0], "num_samples": 1}
    params = task.parameters(metadata)
    return GridSpec.from_metadata(metadata, task.name, DEFAULT_LENGTHS if task.needle_grid else None, params)


def prompt_counter(spec: GridSpec) -> PromptCounter:
    """Return the counter of ``spec``'s prompts: its tokenizer, chat template and arguments."""
    return PromptCounter(load_tokenizer(spec.tokenizer), spec.chat_template, spec.tokenizer.add_bos_token, spec.chat_template_args)


def data_material(task: TaskDef, spec: GridSpec, counter: PromptCounter) -> dict:
    """Return everything that decides ``task``'s records (the cache key is its digest)."""
    return {"task": task.name, "generator_version": GENERATOR_VERSION, "tokenizer": counter.fingerprint(), **spec.key_fields()}


def progress_bar(task: str, spec: GridSpec):
    """Return a tqdm bar over the grid's prompt tokens, with rate and ETA, shown after 1 s
    (the generators call ``update(length)`` after each prompt); a null context for the
    document as is (one prompt)."""
    from tqdm.auto import tqdm

    if spec.max_seq_lengths is None:
        return contextlib.nullcontext()
    total_tokens = sum(spec.max_seq_lengths) * len(spec.depths) * spec.num_samples
    return tqdm(total=total_tokens, desc=f"Building {task} prompts", unit="tok", unit_scale=True, delay=1.0)


# --------------------------------------------------------------------------- scoring


class Scorer:
    """``process_results`` of one task: its scorer's metrics, the beyond-window flag and
    ``score`` (the headline metric, which the ``longctx`` group averages).
    ``LongCtxTask.process_results`` adds the per-length and per-depth cells (``cells.Grid``)."""

    def __init__(self, task: TaskDef):
        self.task = task

    def __call__(self, doc: dict, results: list[str]) -> dict[str, float]:
        answer = results[0]
        if answer == window.BEYOND_WINDOW:
            # The model could not take the prompt: it counts as failed overall ("no chance"), is
            # counted in beyond_window, and leaves its length/depth cells without a score.
            return {"score": 0.0, **{name: 0.0 for name in self.task.metrics}, BEYOND: 1.0}
        scores = self.task.score(answer, doc)
        return {"score": scores[self.task.headline], **scores, BEYOND: 0.0}

    def __repr__(self) -> str:  # how lm-eval writes it into the results' task config
        return f"lm_eval_longctx.lmeval_task.Scorer({self.task.name!r})"


def metric_list(task: TaskDef) -> list[dict]:
    """Return the task's lm-eval ``metric_list``: ``score``, its scorer's metrics, ``beyond_window``."""
    scores = [{"metric": name, "aggregation": "mean", "higher_is_better": True} for name in ("score", *task.metrics)]
    return scores + [{"metric": BEYOND, "aggregation": count, "higher_is_better": False}]


# --------------------------------------------------------------------------- task class


# Our per-length and per-depth metrics cover a subset of the documents by design: quiet lm-eval's
# warning about it (compat.PATCHES), with the start-up hook off too.
compat.install_for(__name__)


class LongCtxTask(ConfigurableTask):
    """A ConfigurableTask built from a task declaration, whose metric list follows the grid.

    From the declaration named in ``dataset_kwargs.longctx_task``: ``metric_list``,
    ``process_results``, and the ``until`` / ``max_gen_toks`` of the prompt format (or of the
    first version's prompts, with ``answer_prefix: false``); whatever the YAML sets wins, and
    ``--gen_kwargs`` wins over both.
    """

    longctx_cells = True  # compat.lmeval_evaluator.aggregate_cells_over_their_docs: each cell over its docs

    def __init__(self, config: dict | None = None, **kwargs):
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        task = task_def((config.get("dataset_kwargs") or {}).get("longctx_task"))
        # Under the metadata, as lm-eval merges them when it builds the TaskManager itself: the
        # evaluation's model arguments, also when the caller passed its own task_manager.
        metadata = {**window.current().model_args, "version": TASK_VERSION, **(config.get("metadata") or {})}
        # lm-eval writes a group's version as str(version): the tasks' are written the same way.
        metadata["version"] = str(metadata["version"])
        config["metadata"] = metadata
        self._built_with = dict(metadata)
        mode = GridSpec.prompt_mode(metadata, config.get("task", task.name), task.parameters(metadata))
        config["generation_kwargs"] = {**generation_settings(mode, task), **(config.get("generation_kwargs") or {})}
        config.setdefault("metric_list", metric_list(task))
        config.setdefault("process_results", Scorer(task))
        self._task_def = task
        super().__init__(config=config, **kwargs)
        compat.install_for("lm_eval_longctx.lmeval_task.LongCtxTask")  # per-cell aggregation
        self._chat_template_given = "chat_template" in (self.config.metadata or {})
        self._adopt_dataset()

    def _adopt_dataset(self) -> None:
        """Declare a metric per length and depth of the generated data; check the window."""
        docs = self.dataset[self.config.test_split]
        self._grid_key = docs.info.description or ""
        score_names = [m["metric"] for m in self.config.metric_list if m["metric"] not in (BEYOND, "score")]
        self._grid = cells.Grid.of(docs, score_names)
        for name, (aggregation, higher_is_better) in self._grid.aggregations().items():
            self._aggregation_list[name] = aggregation
            self._higher_is_better[name] = higher_is_better
        self._check_window(list(self._grid.lengths))

    def process_results(self, doc: dict, results: list) -> dict:
        """Return the doc's scores plus EVERY cell of the grid (``None`` where it is not in one).

        Every doc gives the same keys, so lm-eval's gather across data-parallel ranks works.
        Under ``--predict_only`` lm-eval has replaced our metrics with its ``bypass``: then its
        result goes through as is (there is nothing to put in cells).
        """
        overall = super().process_results(doc, results)
        if set(overall) == {"bypass"}:
            return overall
        return self._grid.doc_metrics(doc, overall)

    @property
    def _max_gen_toks(self) -> int:
        return int((self.config.generation_kwargs or {}).get("max_gen_toks", 256))

    def _check_window(self, lengths: list[int]) -> None:
        """Refuse lengths the model would cut (again: the built lengths, this config's budget,
        which lm-eval's ``--gen_kwargs`` has updated by the time requests are built)."""
        window.refuse_lengths_beyond_window(
            self.config.task, self.config.metadata or {}, lengths, self._max_gen_toks,
            budget="from --gen_kwargs, else the task's generation_kwargs",
        )  # fmt: skip

    def _record_extrapolation(self) -> None:
        """Warn once, and record in the task's metadata, when lengths run past the trained window unscaled."""
        found = window.extrapolation(self.config.metadata or {}, self._grid.lengths)
        if found is None:
            return
        window.warn_once(
            f"prompts of {found['lengths']} tokens run past the model's trained window of {found['native_window']} "
            f"tokens (max_length={found['max_length']} in --model_args, no rope_scaling): positions beyond "
            f"{found['native_window']} are extrapolated, so those scores show the unscaled model's extrapolation. "
            "To scale RoPE, use --model hf-longctx with rope_scaling=KIND:FACTOR. Recorded in the results as "
            "configs.<task>.metadata.longctx_extrapolated."
        )
        self.config.metadata = {**(self.config.metadata or {}), "longctx_extrapolated": found}

    def _check_selection(self, limit, samples) -> None:
        """Refuse a ``--limit`` or ``--samples`` that selects no prompt, or prompts that do not exist."""
        task, n = self.config.task, len(self.eval_docs)
        if limit is not None and int(limit) < 1:
            raise LongCtxError(
                f"{task}: --limit selects {int(limit)} of its {n} prompts. Give a whole number of at least 1 "
                f"(e.g. --limit 4) or a fraction between 0 and 1 (e.g. --limit 0.5), or leave --limit out to run all {n}."
            )
        if samples is None:
            return
        given = list(samples) if isinstance(samples, (list, tuple)) else None
        bad = [i for i in given or [] if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n]
        if not given or bad or len(set(given)) != len(given):
            what = f"holds {bad[0]!r}" if bad else "repeats an index" if given else "selects no prompt"
            raise LongCtxError(
                f"{task}: --samples {task}={samples!r} {what}; give distinct prompt indices from 0 to {n - 1}, "
                f'e.g. --samples \'{{"{task}": [0, 1]}}\'.'
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
        if not apply_chat_template and context != join_answer_prefix(doc["prompt"], doc.get("answer_prefix") or ""):
            raise LongCtxError(
                f"{self.config.task}: the context lm-eval built differs from the generated prompt and "
                "its answer prefix (a description, gen_prefix or target_delimiter was changed in the "
                "task config); keep those of tasks/_longctx_common.yaml."
            )
        return context

    def build_all_requests(
        self, *, tokenizer_name: str = "", apply_chat_template: bool = False, chat_template=None, **kwargs
    ) -> None:
        self._check_selection(kwargs.get("limit"), kwargs.get("samples"))
        cells.check_world_size(
            self.config.task, len(self.eval_docs), kwargs.get("world_size"), kwargs.get("limit"), kwargs.get("samples")
        )
        built_with = bool(self.dataset[self.config.test_split][0]["chat_template"])
        if bool(apply_chat_template) != built_with and not self._chat_template_given:
            # Only now does the task learn whether lm-eval wraps prompts in the chat template:
            # rebuild them so they are exact with the template's tokens counted.
            metadata = {**(self.config.metadata or {}), "chat_template": bool(apply_chat_template)}
            self.dataset = self.config.custom_dataset(**metadata, **(self.config.dataset_kwargs or {}))
            self._built_with = dict(metadata)
            self._adopt_dataset()
        self._check_window(list(self._grid.lengths))  # now with the --gen_kwargs budget
        self._record_extrapolation()
        if served.is_served(self.config.metadata):
            self._check_server(bool(apply_chat_template))
        elif apply_chat_template and callable(chat_template):
            self._check_template_fed(chat_template)
        return super().build_all_requests(
            tokenizer_name=self._request_cache_name(tokenizer_name, kwargs.get("samples")),
            apply_chat_template=apply_chat_template,
            chat_template=chat_template,
            **kwargs,
        )

    def _request_cache_name(self, tokenizer_name: str, samples) -> str:
        """Return the ``tokenizer_name`` lm-eval keys its ``--cache_requests`` file with, plus what
        its key leaves out (lm-eval 0.4.13 ``ConfigurableTask.build_all_requests``: task, shots,
        rank, chat template, system prompt and tokenizer name only): the grid (other lengths, another
        tokenizer), the generation settings the requests carry (``--gen_kwargs``), and ``--samples``
        (a cached set is cut with ``[:limit]`` only, so a sampled run would get the first documents)."""
        settings = json.dumps([self.config.generation_kwargs, samples], sort_keys=True, default=str)
        return f"{tokenizer_name}-{self._grid_key}-{hashlib.sha256(settings.encode()).hexdigest()[:16]}"

    def _check_template_fed(self, chat_template) -> None:
        """Refuse prompts counted with another chat template than the model renders; warn once
        when ``--apply_chat_template NAME`` names a template that is not the one fed."""
        counter = prompt_counter(grid_of(self._task_def, self._built_with))
        doc = self.dataset[self.config.test_split][0]
        fed = self.fewshot_context(
            doc, 0, apply_chat_template=True, chat_template=chat_template, gen_prefix=self.doc_to_prefix(doc)
        )
        if fed != counter.render(doc["prompt"], doc.get("answer_prefix") or ""):
            raise LongCtxError(
                f"{self.config.task}: the model renders prompts with another chat template than the one they were "
                f"counted with ({counter.tokenizer.name_or_path!r}'s, arguments {counter.chat_template_args}), so "
                "they would not have their exact lengths. Give the model's chat_template_args in --model_args, or "
                "--metadata '{\"tokenizer\": \"DIR\"}' naming the tokenizer the model uses."
            )
        evaluation = window.current()
        name, _ = provenance.fed_template(counter.tokenizer, counter.chat_template_args)
        names = counter.tokenizer.chat_template if isinstance(counter.tokenizer.chat_template, dict) else ()
        warning = provenance.named_template_warning(self.config.task, evaluation.apply_chat_template, name, names)
        if warning:
            window.warn_once(warning.replace(f"{self.config.task}: ", "", 1))

    def dump_config(self) -> dict:
        """Return lm-eval's task config (``configs.<task>`` in the results file), with what the
        prompts were built with under ``metadata.longctx`` (``provenance.settings``)."""
        config = super().dump_config()
        spec = grid_of(self._task_def, self._built_with)
        counter = prompt_counter(spec)
        record = provenance.settings(
            spec,
            counter,
            generator_version=GENERATOR_VERSION,
            data_key=set_key(data_material(self._task_def, spec, counter)),
            docs=self.dataset[self.config.test_split],
        )
        config["metadata"] = {**(config.get("metadata") or {}), provenance.RECORD_KEY: record}
        return config

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
        counter = prompt_counter(GridSpec.from_metadata(metadata, task))

        def token_ids_of(doc: dict) -> list[int]:
            # the ids lm-eval's API model sends with tokenized_requests
            return counter.encode(doc["prompt"], doc.get("answer_prefix") or "")[1]

        docs = self.dataset[self.config.test_split]
        learned = run.check(task, docs, self._max_gen_toks, token_ids_of)
        self.config.metadata = {**metadata, "longctx_served": learned}

"""Every patch of third-party code, in one place, each with the versions it was written for.

Written for lm-eval 0.4.13 and transformers 5.23-5.24 (torch 2.x, tqdm 4.x, accelerate 1.x); the
transformers parts also hold on 4.57.6 (scripts/test_tf4.sh runs tests/test_compat.py there).
Each patch, and each reliance on internals (the rotary modules' state, for dynamic NTK and for
switching RoPE in place), says what it relies on; tests/test_compat.py checks exactly that
against the installed versions and fails naming the patch when a release changes it. Nothing
heavy is imported at module level: the start-up hook (``_autoload``) imports this module only
once lm-eval itself is being imported; torch, transformers and accelerate are imported when used.
"""

import contextlib
import logging
import sys

WRITTEN_FOR = {"lm_eval": "0.4.13", "transformers": "5.17-5.24, 4.57", "accelerate": "1.15"}


# --------------------------------------------------------------------------- lm-eval: plugins

# lm-eval 0.4.13 loads no plugins (no entry_points() call anywhere). A newer lm-eval that
# loads them itself gets our "lm_eval.models" / "lm_eval.tasks" entry points from
# pyproject.toml, so each patch below steps aside when its module mentions entry_points(.
ENTRY_POINTS_MARK = "entry_points("


def loads_entry_points(module) -> bool:
    """True when an lm-eval module discovers plugins itself (releases after 0.4.13)."""
    path = getattr(module, "__file__", None)
    try:
        with open(path, encoding="utf-8") as fh:
            return ENTRY_POINTS_MARK in fh.read()
    except (OSError, TypeError):
        return False


def patch_task_manager(module) -> None:
    """lm-eval 0.4.13 ``lm_eval/tasks/manager.py``: ``TaskManager.__init__(self, verbosity=None,
    include_path=None, include_defaults=True, metadata=None)`` indexes only its own tasks and
    ``include_path``. Wrapped to put our task folder first on ``include_path``."""
    from lm_eval_longctx.registration import with_our_tasks

    manager_cls = getattr(module, "TaskManager", None)
    if manager_cls is None or getattr(manager_cls, "_longctx_patched", False) or loads_entry_points(module):
        return
    original_init = manager_cls.__init__

    def __init__(self, verbosity=None, include_path=None, include_defaults=True, metadata=None):
        if include_defaults:
            include_path = with_our_tasks(include_path)
        original_init(self, verbosity, include_path, include_defaults, metadata)

    __init__.__doc__ = original_init.__doc__
    __init__.__wrapped__ = original_init
    manager_cls.__init__ = __init__
    manager_cls._longctx_patched = True


def register_model(models_module) -> None:
    """lm-eval 0.4.13 ``lm_eval/api/registry.py``: ``model_registry.register(name, target="mod:Class")``
    names a model lazily. Hooked on ``lm_eval.models``, not on the registry: lm-eval imports its
    built-in models only while the registry is empty, so registering earlier would hide them."""
    from lm_eval.api import registry as registry_module

    from lm_eval_longctx.registration import MODEL_NAME, MODEL_TARGET

    registry = registry_module.model_registry
    if loads_entry_points(registry_module) or MODEL_NAME in registry:
        return
    registry.register(MODEL_NAME, target=MODEL_TARGET)


# --------------------------------------------------------------------------- lm-eval: the CLI


def close_progress_bars() -> None:
    """Close every open tqdm bar (tqdm 4.x keeps them in the class attribute ``tqdm._instances``),
    so none redraws itself after a line printed at the end of a failed run."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        try:
            bar.close()
        except Exception:
            pass


def fail(message: str) -> None:
    """Print one error line as the last thing on stderr, then exit 2.

    Open progress bars are closed first (``close_progress_bars``). With ``num_concurrent`` > 1,
    lm-eval 0.4.13's other pending aiohttp requests die with the run and asyncio (the stdlib's
    ``asyncio`` logger) would print "Task exception was never retrieved" for each, after our line.
    """
    close_progress_bars()
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    sys.stderr.write(f"\nlm-eval-longctx error: {message}\n")
    raise SystemExit(2) from None


# lm-eval 0.4.13 ``lm_eval/_cli/utils.py``: ``try_parse_json`` raises this for a value with a
# "{" that is not JSON, from inside argparse (``MergeDictAction``), as a traceback.
INVALID_JSON = ("Invalid JSON: ", ". Hint: Use double quotes for JSON strings.")
# Run options of lm-eval 0.4.13 parsed by MergeDictAction (their first value may be JSON).
DICT_OPTIONS = {"--model_args": "--model_args", "-a": "--model_args", "--metadata": "--metadata"}
# lm-eval 0.4.13 ``evaluator.simple_evaluate`` passes these to the model beside --model_args
# (``create_from_arg_obj(model_args, {"batch_size", "max_batch_size", "device"})``) when not
# None; ``EvaluatorConfig`` gives batch_size=1 and device="cuda:0" by default.
OWN_MODEL_ARGS = ("batch_size", "max_batch_size", "device")
# lm-eval 0.4.13 registers ``HFLM`` as these (``@register_model("hf-auto", "hf", "huggingface")``).
STOCK_HF_MODELS = ("hf", "hf-auto", "huggingface")


def _failed_json_option(message: str, argv: list[str]) -> tuple[str, str] | None:
    """Return (option, value) of an lm-eval "Invalid JSON" argument error, else None."""
    head, tail = INVALID_JSON
    if not (message.startswith(head) and message.endswith(tail)):
        return None
    value = message[len(head) : -len(tail)]
    for i, arg in enumerate(argv):
        if arg == value and i and argv[i - 1] in DICT_OPTIONS:
            return DICT_OPTIONS[argv[i - 1]], value
        flag, eq, rest = arg.partition("=")
        if eq and flag in DICT_OPTIONS and rest == value:
            return DICT_OPTIONS[flag], value
    return None


def _run_setting(args, name: str):
    """Return the value lm-eval 0.4.13 will use for a run option: the CLI's, else EvaluatorConfig's default."""
    value = getattr(args, name, None)
    if value or value == 0:
        return value
    from dataclasses import fields

    from lm_eval.config.evaluate_config import EvaluatorConfig

    return {f.name: f.default for f in fields(EvaluatorConfig)}[name]


def run_argument_problem(args) -> str | None:
    """Return a one-line error for ``lm_eval run`` arguments lm-eval would fail on late, else None."""
    from lm_eval_longctx import arg_errors

    model_args = getattr(args, "model_args", None)
    if not isinstance(model_args, dict):
        return None
    for name in OWN_MODEL_ARGS:
        if name in model_args and _run_setting(args, name) is not None:
            return arg_errors.twice_given(name, model_args[name], _run_setting(args, name))
    model = getattr(args, "model", None) or (None if getattr(args, "config", None) else _run_setting(args, "model"))
    if model in STOCK_HF_MODELS:
        return arg_errors.missing_pretrained(model_args.get("pretrained"))
    return None


def patch_cli(module) -> None:
    """lm-eval 0.4.13 ``lm_eval/_cli/harness.py``: ``HarnessCLI.parse_args(self)`` and
    ``HarnessCLI.execute(self, args)``, called by ``lm_eval.__main__.cli_evaluate``.

    Wrapped so that our errors (LongCtxError), faults of served runs and the lm-eval argument
    mistakes users commonly make print one line with the fix instead of a traceback; every other
    error keeps lm-eval's own message.
    """
    harness = getattr(module, "HarnessCLI", None)
    if harness is None or getattr(harness, "_longctx_patched", False):
        return
    original_parse, original_execute = harness.parse_args, harness.execute

    def parse_args(self):
        try:
            return original_parse(self)
        except ValueError as exc:
            failed = _failed_json_option(str(exc), sys.argv)
            if failed is None:
                raise
            from lm_eval_longctx import arg_errors

            fail(arg_errors.invalid_json(*failed))

    def execute(self, args):
        from lm_eval_longctx.errors import LongCtxError

        problem = run_argument_problem(args)
        if problem:
            fail(problem)
        try:
            return original_execute(self, args)
        except LongCtxError as exc:
            fail(str(exc))
        except Exception as exc:
            # A served run's request failed (timeout, server gone): say which length and the fix.
            from lm_eval_longctx.served import explain

            message = explain(exc, getattr(args, "use_cache", None))
            if message is None:
                raise
            fail(message)

    parse_args.__wrapped__ = original_parse
    execute.__wrapped__ = original_execute
    harness.parse_args = parse_args
    harness.execute = execute
    harness._longctx_patched = True


# --------------------------------------------------------------------------- lm-eval: the run command, reused


def lm_eval_run_parser(parser_class):
    """Return lm-eval 0.4.13's own ``lm_eval run`` argument parser (``lm_eval/_cli/run.py``:
    ``Run.create(subparsers)`` adds it as the "run" sub-parser, with ``func`` set to
    ``Run._execute``), built as a ``parser_class`` so its errors go where the caller says."""
    from lm_eval._cli.run import Run

    holder = parser_class(add_help=False).add_subparsers(parser_class=parser_class)
    Run.create(holder)
    return holder.choices["run"]


def model_arg_value(key: str, text: str):
    """Return the value lm-eval 0.4.13 gives ``key=text`` in ``--model_args`` (``_cli/utils.py``:
    ``key_val_to_dict``; ``dynamic:2`` stays a string, ``{...}`` becomes a dict, ``None`` None)."""
    from lm_eval._cli.utils import key_val_to_dict

    return key_val_to_dict(f"{key}={text}")[key]


def run_config(args):
    """Return lm-eval 0.4.13's ``EvaluatorConfig`` for parsed ``run`` arguments, validated and with
    its tasks resolved, as ``Run._execute`` makes it before loading the model
    (``EvaluatorConfig.from_cli(args)``, then ``process_tasks(metadata)``). lm-eval raises
    ValueError for what it refuses (no task found, --log_samples without --output_path)."""
    import copy

    from lm_eval.config.evaluate_config import EvaluatorConfig

    config = EvaluatorConfig.from_cli(copy.deepcopy(args))
    config.process_tasks(config.metadata)
    return config


def run_lm_eval(args) -> None:
    """Run lm-eval 0.4.13's ``run`` command on parsed arguments (``args.func`` is ``Run._execute``):
    it evaluates, prints its tables, and saves results and samples as ``lm_eval`` does."""
    args.func(args)


@contextlib.contextmanager
def model_built_by(name: str, build):
    """Inside, lm-eval builds model ``name`` with ``build(model_args, additional_config)`` instead of
    constructing the registered class: lm-eval 0.4.13 ``simple_evaluate`` calls
    ``lm_eval.api.registry.get_model(model).create_from_arg_obj(model_args, {"batch_size": ...,
    "max_batch_size": ..., "device": ...})`` (``create_from_arg_string`` for a string). Everything
    else the class says (``marks_beyond_window``, ...) is the registered class's. Restored on exit."""
    from lm_eval.api import registry

    original = registry.get_model

    class Built:
        def __init__(self, model_class):
            self._model_class = model_class

        def __getattr__(self, attribute):
            return getattr(self._model_class, attribute)

        def create_from_arg_obj(self, arg_dict, additional_config=None):
            extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
            return build(dict(arg_dict), extra)

        def create_from_arg_string(self, arg_string, additional_config=None):
            from lm_eval.utils import simple_parse_args_string

            return self.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def get_model(model_name):
        found = original(model_name)
        return Built(found) if model_name == name else found

    registry.get_model = get_model
    try:
        yield
    finally:
        registry.get_model = original


# --------------------------------------------------------------------------- lm-eval: one evaluation


def scope_evaluations(evaluator_module=None) -> None:
    """lm-eval 0.4.13 ``lm_eval/evaluator.py``: ``simple_evaluate(model, model_args, tasks, ...)``
    builds the model from ``model`` (a registered name, or an ``LM`` object used as is), then
    loads the tasks (``task_manager.load``), then evaluates. Wrapped so that each call runs
    under ``window.evaluation``: the tasks it loads learn whether its model marks over-long
    prompts (see ``window``). ``lm_eval.simple_evaluate`` resolves to this module's function at
    call time, so both names get the wrapper. Idempotent."""
    if evaluator_module is None:
        from lm_eval import evaluator as evaluator_module
    original = getattr(evaluator_module, "simple_evaluate", None)
    if original is None or getattr(original, "longctx_scoped", False):
        return
    import functools

    from lm_eval_longctx import window

    @functools.wraps(original)
    def simple_evaluate(model, *args, **kwargs):
        with window.evaluation(window.marks_beyond_window(model)):
            return original(model, *args, **kwargs)

    simple_evaluate.longctx_scoped = True
    evaluator_module.simple_evaluate = simple_evaluate


# --------------------------------------------------------------------------- lm-eval: aggregation

# lm-eval 0.4.13 ``lm_eval/evaluator_utils.py`` logs, on its module logger, "[<task>] ...
# not scored on the same number of documents ..." when a task's metrics cover different
# document counts.
SAME_COUNT_LOGGER = "lm_eval.evaluator_utils"
SAME_COUNT_TEXT = "not scored on the same number"


class SameCountWarningFilter(logging.Filter):
    """Drop lm-eval's "not scored on the same number of documents" warning for our tasks.

    Our per-length and per-depth metrics cover a subset of the documents by design, and the
    group score aggregates only metrics every document has, so the warning's concern
    (mis-weighted group scores) does not apply to them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("[longctx_") and SAME_COUNT_TEXT in message)


def quiet_same_count_warning() -> None:
    """Install ``SameCountWarningFilter`` on lm-eval's logger (once)."""
    logger = logging.getLogger(SAME_COUNT_LOGGER)
    if not any(isinstance(f, SameCountWarningFilter) for f in logger.filters):
        logger.addFilter(SameCountWarningFilter())


def aggregate_cells_over_their_docs() -> None:
    """Make lm-eval aggregate our tasks' per-cell metrics over the documents of each cell.

    Patch of lm-eval 0.4.13 ``lm_eval.evaluator_utils._compute_task_aggregations(task,
    raw_metrics, bootstrap_iters)``, which rank 0 calls after gathering every rank's values: for
    a task that marks itself ``longctx_cells = True``, it gets ``cells.members_only(raw_metrics)``
    (see ``cells``: why stripping before lm-eval aggregates keeps its own numbers). Other tasks
    are untouched. Idempotent.
    """
    import inspect

    import lm_eval
    from lm_eval import evaluator_utils

    from lm_eval_longctx.cells import members_only
    from lm_eval_longctx.errors import LongCtxError

    original = getattr(evaluator_utils, "_compute_task_aggregations", None)
    if getattr(original, "longctx_cells", False):
        return
    if original is None or list(inspect.signature(original).parameters)[:2] != ["task", "raw_metrics"]:
        raise LongCtxError(
            f"lm-eval {getattr(lm_eval, '__version__', '?')} aggregates metrics differently from "
            "lm-eval 0.4.13, which the longctx per-cell metrics were written for; install "
            "lm-eval==0.4.13 (pip install 'lm-eval==0.4.13')."
        )

    def _compute_task_aggregations(task, raw_metrics, *args, **kwargs):
        if getattr(task, "longctx_cells", False):
            raw_metrics = members_only(raw_metrics)
        return original(task, raw_metrics, *args, **kwargs)

    _compute_task_aggregations.longctx_cells = True
    _compute_task_aggregations.__wrapped__ = original
    evaluator_utils._compute_task_aggregations = _compute_task_aggregations


# --------------------------------------------------------------------------- transformers: RoPE

# transformers 5.23-5.24 and 4.57 ``modeling_rope_utils``: a rotary module (``LlamaRotaryEmbedding`` and
# the like) holds ``rope_type``, ``inv_freq`` (a buffer), ``original_inv_freq``,
# ``original_max_seq_len``, ``max_seq_len_cached`` and ``config``; ``dynamic_rope_update``
# recomputes ``inv_freq`` in forward only while ``"dynamic" in rope_type``, with
# ``ROPE_INIT_FUNCTIONS["dynamic"](config, device, seq_len=...)``.


def _fresh_inv_freq(rotary, prompt_len: int):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if prompt_len <= rotary.original_max_seq_len:
        return rotary.original_inv_freq.clone()  # a fresh model keeps its init frequencies up to native
    import torch

    # The very call a fresh model's dynamic_rope_update makes at prefill (a tensor seq_len, same math).
    seq_len = torch.tensor(prompt_len, device=rotary.original_inv_freq.device)
    inv_freq, _ = ROPE_INIT_FUNCTIONS["dynamic"](rotary.config, rotary.original_inv_freq.device, seq_len=seq_len)
    return inv_freq


@contextlib.contextmanager
def fixed_ntk_base(model, prompt_len: int):
    """Inside, every dynamic-NTK rotary module uses the base a fresh model picks for a
    ``prompt_len``-token prompt, and keeps it while decoding; on exit each is fresh again.

    "The base its own length implies" is the prompt's token count, not prompt plus generated
    tokens: transformers would grow the base at each decoding step past that, while the cached
    keys keep the old rotation (transformers issue #25104). Other modules are left alone.
    """
    rotaries = [
        module
        for module in model.modules()
        if getattr(module, "rope_type", None) == "dynamic" and hasattr(module, "original_inv_freq")
    ]
    for rotary in rotaries:
        rotary.register_buffer("inv_freq", _fresh_inv_freq(rotary, prompt_len), persistent=False)
        rotary.rope_type = "default"  # dynamic_rope_update recomputes only modules named "dynamic"
    try:
        yield
    finally:
        for rotary in rotaries:
            rotary.rope_type = "dynamic"
            rotary.register_buffer("inv_freq", rotary.original_inv_freq.clone(), persistent=False)
            rotary.max_seq_len_cached = rotary.original_max_seq_len


# --------------------------------------------------------------------------- transformers: prefill chunks

# transformers 5.17-5.24 and 4.57: an attention module looks its kernel up at every call in
# ``modeling_utils.ALL_ATTENTION_FUNCTIONS`` (a ``GeneralInterface``: item assignment is a local
# override, ``del`` drops it) under ``config._attn_implementation``, and calls it as
# ``fn(module, query, key, value, attention_mask, dropout=..., scaling=..., **kwargs)`` with query
# (batch, heads, q, dim), key and value (batch, kv_heads, kv, dim) holding the cache up to this
# chunk, and takes back ``(output (batch, q, heads, dim), weights)``. For a prefill chunk after
# the first, transformers builds an explicit mask (and repeats GQA keys and values, since sdpa's
# GQA path needs no mask), which sdpa serves with a slower kernel than the fused causal one.


def _end_aligned_sdpa(stock):
    import torch
    from torch.nn.attention.bias import causal_lower_right

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        q_len, kv_len = query.shape[2], key.shape[2]
        special = dropout or any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "sliding_window"))
        if q_len == 1 or q_len >= kv_len or special or getattr(module, "is_causal", True) is False:
            return stock(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        gqa = {"enable_gqa": True} if query.shape[1] != key.shape[1] else {}
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=causal_lower_right(q_len, kv_len), scale=scaling, **gqa
        )
        return out.transpose(1, 2).contiguous(), None

    return attention


@contextlib.contextmanager
def _sdpa_wrapped_by(wrap):
    """Inside, attention modules that look up "sdpa" get ``wrap(the entry before)``; on exit the
    entry is what it was (an earlier local override kept)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    local = ALL_ATTENTION_FUNCTIONS._local_mapping
    had, before = "sdpa" in local, local.get("sdpa")
    ALL_ATTENTION_FUNCTIONS["sdpa"] = wrap(ALL_ATTENTION_FUNCTIONS["sdpa"])
    try:
        yield
    finally:
        if had:
            ALL_ATTENTION_FUNCTIONS["sdpa"] = before
        else:
            del ALL_ATTENTION_FUNCTIONS["sdpa"]


def end_aligned_causal_chunks():
    """Return a context in which a prefill chunk after the first attends to the cache through
    torch's ``causal_lower_right`` bias (causal, aligned at the last key), which flash attention
    serves natively, instead of the explicit mask transformers builds; one-token steps, whole
    prompts and anything unusual (dropout, softcap, sliding windows, position bias) go to the
    stock sdpa.

    Only for batches without padding: the mask of such a chunk is exactly that bias, so the
    given mask is not read. ``generation.prefill`` enters it for chunked prompts only, which
    run on the fast path (an all-ones attention mask, full-attention layers).
    """
    return _sdpa_wrapped_by(_end_aligned_sdpa)


def attention_kernels_by_query_length(many, one):
    """Return a context in which each sdpa attention call runs with torch's
    ``sdpa_kernel(backends, set_priority=True)``: ``one`` for one-token queries (decode steps),
    ``many`` otherwise (prefills). ``end_aligned_causal_chunks`` may be entered inside it."""
    from torch.nn.attention import sdpa_kernel

    def kernels(backends):
        try:
            return sdpa_kernel(backends, set_priority=True)
        except TypeError:  # torch before 2.6: no priorities, the default order among these
            return sdpa_kernel(backends)

    def wrap(stock):
        def attention(module, query, key, value, attention_mask, *args, **kwargs):
            with kernels(one if query.shape[2] == 1 else many):
                return stock(module, query, key, value, attention_mask, *args, **kwargs)

        return attention

    return _sdpa_wrapped_by(wrap)


# --------------------------------------------------------------------------- transformers: RoPE in place

# transformers 5.23-5.24 and 4.57: what a model's constructor derives from its config and
# ``from_pretrained`` does not load from the checkpoint is its non-persistent buffers (a rotary
# module's ``inv_freq``, and ``original_inv_freq``: a buffer in 5.x, a plain attribute aliasing
# ``inv_freq`` in 4.57) and plain attributes (``rope_type``, ``attention_scaling``,
# ``max_seq_len_cached``, ``original_max_seq_len``; DeepSeek-style attention keeps a yarn-scaled
# ``scaling``). 5.x ``_init_weights`` recomputes rotary buffers after loading with the same
# functions. Forward passes leave state behind: dynamic NTK rewrites ``inv_freq`` and
# ``max_seq_len_cached``, 5.x longrope caches ``long_inv_freq`` as a plain tensor attribute.
# Built under ``accelerate.init_empty_weights(include_buffers=False)``, a skeleton of the model's
# class holds its parameters on the meta device (no memory) and computes those buffers for real.


def _module_internals() -> frozenset:
    import torch

    return frozenset(vars(torch.nn.Module()))


def _is_config(value) -> bool:
    return hasattr(value, "to_dict") and hasattr(value, "model_type")


class DerivedState:
    """What a model class's constructor derives from one config, module by module.

    ``buffers[name]``: the module's non-persistent buffers; ``attributes[name]``: its other
    attributes (tensors and functions such as 4.57's ``rope_init_fn`` included; the config, bound
    methods and nn.Module's own bookkeeping left out).
    """

    def __init__(self, buffers: dict, attributes: dict):
        self.buffers = buffers
        self.attributes = attributes

    @classmethod
    def of(cls, model_class, config) -> "DerivedState":
        """Build a weightless skeleton of ``model_class`` from a copy of ``config`` and read its state.

        Raises LongCtxError when the class cannot be built that way (then its RoPE state cannot be
        rebuilt in place)."""
        import copy
        import inspect

        from accelerate import init_empty_weights

        from lm_eval_longctx.errors import LongCtxError

        try:
            with init_empty_weights(include_buffers=False):
                skeleton = model_class(copy.deepcopy(config))
        except Exception as exc:
            raise LongCtxError(
                f"{model_class.__name__} cannot be rebuilt from its config ({type(exc).__name__}: {exc}), so its RoPE "
                "state cannot be switched in place to equal a fresh load; run each RoPE setting as its own "
                "lm_eval --model hf-longctx run."
            ) from None
        internals = _module_internals()
        buffers, attributes = {}, {}
        for name, module in skeleton.named_modules():
            buffers[name] = {
                key: value for key, value in module._buffers.items() if key in module._non_persistent_buffers_set
            }
            attributes[name] = {
                key: value
                for key, value in vars(module).items()
                if key not in internals and not _is_config(value) and not inspect.ismethod(value)
            }
        return cls(buffers, attributes)

    def problem_with(self, model) -> str | None:
        """Say why ``model`` does not have this skeleton's modules (adapters, a patched model), else None."""
        names = {name for name, _ in model.named_modules()}
        if names != set(self.buffers):
            extra, missing = sorted(names - set(self.buffers))[:3], sorted(set(self.buffers) - names)[:3]
            return f"its modules differ from those its class builds (extra {extra}, missing {missing})"
        return None

    def put_on(self, model, before: "DerivedState") -> None:
        """Give ``model`` this state where it is derived from RoPE: every non-persistent buffer and
        every plain attribute of modules holding such buffers (dropping tensors a forward cached),
        and any other attribute that differs from ``before`` (the state of the setting it leaves).
        Buffers keep the device and dtype the loaded model gave them."""
        import torch

        for name, module in model.named_modules():
            buffers, attributes = self.buffers[name], self.attributes[name]
            derived = buffers or any(key in module._non_persistent_buffers_set for key in module._buffers)
            if not derived:
                old = before.attributes[name]
                for key, value in attributes.items():
                    if key not in old or not _same(old[key], value):
                        module.__dict__[key] = value
                continue
            placed = {}  # skeleton tensor id -> the tensor put on the model (4.57's original_inv_freq IS inv_freq)

            def place(key, value, _module=module, _placed=placed):
                if id(value) not in _placed:
                    like = _module._buffers.get(key)
                    if like is None:
                        like = next(iter(_module._buffers.values()), None)
                    target = {"device": like.device, "dtype": like.dtype} if like is not None else {}
                    if like is not None and not value.is_floating_point():
                        target.pop("dtype")
                    _placed[id(value)] = value.to(**target)
                return _placed[id(value)]

            for key in [k for k in module._buffers if k in module._non_persistent_buffers_set and k not in buffers]:
                del module._buffers[key]
                module._non_persistent_buffers_set.discard(key)
            for key, value in buffers.items():
                module.register_buffer(key, place(key, value), persistent=False)
            for key, value in attributes.items():
                module.__dict__[key] = place(key, value) if isinstance(value, torch.Tensor) else value
            stale = [k for k, v in vars(module).items() if isinstance(v, torch.Tensor) and k not in attributes]
            for key in stale:  # caches a forward left (5.x longrope's long_inv_freq)
                del module.__dict__[key]


def _same(a, b) -> bool:
    """True when two attribute values are equal (tensors by value, dicts item by item, stateless
    modules by class); False when they cannot be compared."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, torch.nn.Module) and isinstance(b, torch.nn.Module):
        # transformers 5.25 keeps a fresh parameterless module per kernel function in each attention
        # module's plain dict ``_kernel_funcs``: a function, the same for every setting.
        return type(a) is type(b) and _stateless(a) and _stateless(b)
    try:
        return bool(a == b)
    except Exception:
        return False


def _stateless(module) -> bool:
    """True when a module holds no parameters and no buffers."""
    return next(module.parameters(), None) is None and next(module.buffers(), None) is None

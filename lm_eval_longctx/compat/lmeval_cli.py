"""lm-eval 0.4.13's command line: one line and exit 2 for our errors, and its ``run`` command reused.

``patch_cli`` wraps ``HarnessCLI`` (what ``lm_eval`` runs) so that our errors (LongCtxError), faults
of served runs and the lm-eval argument mistakes users commonly make print one line with the fix
instead of a traceback. ``lm-eval-longctx sweep`` reuses ``lm_eval run``'s own parser, checks and
command (``lm_eval_run_parser``, ``run_config``, ``run_lm_eval``). ``fail`` closes tqdm 4.x bars
(``tqdm._instances``) and quiets the stdlib's ``asyncio`` logger first.
"""

from __future__ import annotations

import logging
import sys

WRITTEN_FOR = {"lm_eval": "0.4.13", "tqdm": "4.x"}



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


def failed_json_option(message: str, argv: list[str]) -> tuple[str, str] | None:
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
        from lm_eval_longctx import arg_errors

        twice = arg_errors.given_twice(sys.argv[1:])
        if twice:
            fail(twice)
        try:
            return original_parse(self)
        except ValueError as exc:
            failed = failed_json_option(str(exc), sys.argv)
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


# lm-eval 0.4.13 ``lm_eval run``, reused by ``lm-eval-longctx sweep``.


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

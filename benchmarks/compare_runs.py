"""Do two sets of lm-eval output folders hold the same results? For each ``rope_*`` folder under
A, the folder of the same name under B: every task's metrics and every sample's filtered answer.

    python benchmarks/compare_runs.py SEPARATE_DIR SWEEP_DIR
"""

import json
import sys
from pathlib import Path


def newest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.rglob(pattern))
    return found[-1] if found else None


def answers(folder: Path) -> dict:
    out = {}
    for path in folder.rglob("samples_*.jsonl"):
        task = path.name.removeprefix("samples_").rsplit("_", 1)[0]
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            out[(task, sample["doc_id"])] = sample["filtered_resps"]
    return out


def main(a: str, b: str) -> int:
    bad = 0
    for left in sorted(Path(a).glob("rope_*")):
        right = Path(b) / left.name
        ra, rb = newest(left, "results_*.json"), newest(right, "results_*.json")
        if not ra or not rb:
            print(f"{left.name}: results missing ({ra}, {rb})")
            bad += 1
            continue
        ma, mb = json.loads(ra.read_text())["results"], json.loads(rb.read_text())["results"]
        sa, sb = answers(left), answers(right)
        same_answers = sum(sa[k] == sb.get(k) for k in sa)
        equal = ma == mb and same_answers == len(sa) == len(sb)
        bad += not equal
        print(f"{left.name}: metrics {'equal' if ma == mb else 'DIFFER'}; answers equal {same_answers} of {len(sa)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

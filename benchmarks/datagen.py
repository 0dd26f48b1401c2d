"""Prompt generation speed on CPU: ours against the reference builder, RULER and one tokenizer pass.

For each length, times (median over different samples) our key/value and pass-key generators,
a re-implementation of the reference's quadratic builder, lm-eval's RULER ``niah_multikey_3``
sample generator, and one tokenizer pass over our prompts: the floor any exact-length builder
pays to verify its prompt. Then times the ``longctx_kv`` dataset function twice against a fresh cache folder.

    python benchmarks/datagen.py [--lengths 4096 16384 32768] [--repeats 5] [--ruler-samples 10] [--tokenizer DIR]

The RULER column needs ``pip install "lm_eval[ruler]"`` (wonderwords, nltk); without it the
column reads n/a.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
import uuid

from lm_eval_longctx.embedded import default_model_dir, gguf_path
from lm_eval_longctx.catalog import TASKS
from lm_eval_longctx.haystack import kv_record
from lm_eval_longctx.passkey import passkey_record
from lm_eval_longctx.spec import GridSpec
from lm_eval_longctx.tokens import PromptCounter

ANSWER_LEN = 256  # the reference leaves this many tokens for the answer


def median_seconds(fn, inputs: list) -> tuple[float, list]:
    """Return the median wall time of ``fn(x)`` over ``inputs``, and the results."""
    times, results = [], []
    for x in inputs:
        start = time.perf_counter()
        results.append(fn(x))
        times.append(time.perf_counter() - start)
    return statistics.median(times), results


def tokenizer_args(folder: str | None) -> dict:
    """Return ``from_pretrained`` arguments: --tokenizer, else the exported SmolLM2, else its GGUF."""
    if folder:
        return {"pretrained": folder}
    if default_model_dir().is_dir():
        return {"pretrained": str(default_model_dir())}
    gguf = gguf_path()
    return {"pretrained": str(gguf.parent), "gguf_file": gguf.name}


def reference_build(tokenizer, target: int, depth: float = 0.5) -> str:
    """Return a prompt built the reference's way (a re-implementation, for timing only).

    Same algorithm as h2oGPT's UUID key/value long-context test (create_long_prompt_with_secret):
    append one random ``'key' = 'value'`` line at a time to a growing string and re-tokenize the
    whole string after every line, until the text before the secret reaches ``depth x target``
    tokens and the text after it ``target - secret_pos - 256``. Quadratic in ``target``.
    """

    def count(text: str) -> int:
        return len(tokenizer(text).input_ids)

    def line() -> str:
        return f"'{str(uuid.uuid4())[:8]}' = '{str(uuid.uuid4())[:4]}'\n"

    secret_key, secret_value = str(uuid.uuid4())[:8], str(uuid.uuid4())[:4]
    secret_pos = int(depth * target)
    before = "## UUID key/value pairs to remember:\n\n"
    while count(before) < secret_pos:
        before += line()
    after = ""
    while count(after) < target - secret_pos - ANSWER_LEN:
        after += line()
    return f"{before}'{secret_key}' = '{secret_value}'\n{after}\n\nWhat is the value of the key '{secret_key}'?"


def ruler_generator(tokenizer):
    """Return ``f(length, seed, num_samples)``: lm-eval's niah_multikey_3 samples, or None without RULER deps."""
    try:
        from lm_eval.tasks.ruler.niah_utils import TEMPLATE
        from lm_eval.tasks.ruler.prepare_niah import generate_samples, get_haystack
    except ImportError as exc:
        print(f"RULER column skipped: {exc}")
        return None

    def generate(length: int, seed: int, num_samples: int) -> list[dict]:
        random.seed(seed)  # RULER draws from the global random module
        # Exactly what niah_utils.niah_multikey_3 passes, except num_samples (500 there).
        return generate_samples(
            get_haystack(type_haystack="needle"),
            max_seq_length=length,
            template=TEMPLATE,
            type_haystack="needle",
            type_needle_k="uuids",
            type_needle_v="uuids",
            num_samples=num_samples,
            TOKENIZER=tokenizer,
        )

    return generate


def measure_length(length: int, repeats: int, counter: PromptCounter, ruler, ruler_samples: int) -> dict:
    """Return seconds per prompt of every method at ``length`` (and RULER's one-off sizing)."""
    tokenizer = counter.tokenizer
    spec = GridSpec(max_seq_lengths=(length,), depths=(0.5,), num_samples=1)
    samples = list(range(repeats))
    row = {"length": length}
    row["kv"], records = median_seconds(lambda s: kv_record(TASKS["longctx_kv"], spec, counter, length, 0.5, s), samples)
    row["passkey"], _ = median_seconds(lambda s: passkey_record(TASKS["longctx_passkey"], spec, counter, length, 0.5, s), samples)
    prompts = [r.prompt for r in records]
    assert all(r.actual_tokens == length for r in records)
    row["tok_pass"], _ = median_seconds(lambda p: tokenizer(p).input_ids, prompts)
    row["rust_pass"], _ = median_seconds(lambda p: tokenizer.backend_tokenizer.encode(p), prompts)
    ref_repeats = max(1, min(repeats, 3 if length <= 8192 else 2 if length <= 16384 else 1))
    row["reference"], refs = median_seconds(lambda _: reference_build(tokenizer, length), range(ref_repeats))
    row["reference_tokens"] = statistics.median(len(tokenizer(p).input_ids) for p in refs)
    row["reference_repeats"] = ref_repeats
    if ruler is not None:
        # One call sizes the haystack (re-tokenizing a growing text) and then builds samples;
        # the per-sample cost is the difference between a call for k samples and for one.
        row["ruler_first"], _ = median_seconds(lambda s: ruler(length, s, 1), range(min(repeats, 3)))
        many, built = median_seconds(lambda s: ruler(length, s, ruler_samples), [100])
        row["ruler"] = (many - row["ruler_first"]) / (ruler_samples - 1)
        row["ruler_tokens"] = statistics.median(b["length"] - 128 for b in built[0])  # minus tokens_to_generate
    return row


def cached_rerun(tok_args: dict, lengths: list[int]) -> tuple[float, float, int]:
    """Return seconds of the ``longctx_kv`` dataset building the grid into a fresh cache, then reading it back."""
    from lm_eval_longctx.lmeval_task import dataset
    from lm_eval_longctx.tokens import TokenizerSource, load_tokenizer

    load_tokenizer(TokenizerSource(tok_args["pretrained"], tok_args.get("gguf_file")))  # not timed
    grid = dict(tok_args, max_seq_lengths=lengths, depths=[0, 0.5, 1], num_samples=2)
    with tempfile.TemporaryDirectory() as folder:
        os.environ["LM_EVAL_LONGCTX_CACHE"] = folder
        try:
            first, built = median_seconds(lambda _: dataset(longctx_task="longctx_kv", **grid), [0])
            again, _ = median_seconds(lambda _: dataset(longctx_task="longctx_kv", **grid), [0])
        finally:
            del os.environ["LM_EVAL_LONGCTX_CACHE"]
    return first, again, len(built[0]["test"])


def speeds(row: dict) -> dict:
    """Return tokens per second of each method: tokens of the prompt built / seconds per prompt."""
    n = row["length"]
    out = {"kv": n / row["kv"], "passkey": n / row["passkey"], "tok_pass": n / row["tok_pass"]}
    out["rust_pass"] = n / row["rust_pass"]
    out["reference"] = row["reference_tokens"] / row["reference"]  # it stops short of n
    out["ruler"] = row["ruler_tokens"] / row["ruler"] if "ruler" in row else None  # so does RULER
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 32768])
    parser.add_argument("--repeats", type=int, default=5, help="samples per length for ours and the tokenizer pass")
    parser.add_argument("--ruler-samples", type=int, default=10, help="samples in RULER's timed multi-sample call")
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the exported SmolLM2-135M-Instruct)")
    args = parser.parse_args()

    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    tok_args = tokenizer_args(args.tokenizer)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(tok_args["pretrained"], gguf_file=tok_args.get("gguf_file"))
    load_seconds = time.perf_counter() - start
    counter = PromptCounter(tokenizer)
    ruler = ruler_generator(tokenizer)
    print(
        f"{platform.machine()}, nproc {os.cpu_count()}, Python {platform.python_version()}, "
        f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}; tokenizer {tok_args} "
        f"loaded in {load_seconds:.1f} s; load average at start {os.getloadavg()}"
    )

    rows = []
    for length in args.lengths:
        rows.append(measure_length(length, args.repeats, counter, ruler, args.ruler_samples))
        print(f"  measured {length}: " + ", ".join(f"{k}={v:.4g}" for k, v in rows[-1].items()), flush=True)

    def cell(value: float | None, form: str) -> str:
        return "n/a" if value is None else format(value, form)

    print()
    print("tok/s = tokens of the prompt built / seconds per prompt (ours: exactly the length; reference, RULER: less)")
    print("| length | ours kv tok/s | ours passkey tok/s | reference tok/s | RULER mk3 tok/s | tokenizer-pass tok/s "
          "| Rust encode tok/s | ours / tokenizer-pass | ours / reference | ours / RULER |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        v = speeds(r)
        versus = {k: None if v[k] is None else v["kv"] / v[k] for k in ("tok_pass", "reference", "ruler")}
        rates = [cell(v[k], ",.0f") for k in ("kv", "passkey", "reference", "ruler", "tok_pass", "rust_pass")]
        ratios = [cell(versus[k], ".2f") for k in ("tok_pass", "reference", "ruler")]
        print(f"| {r['length']} | " + " | ".join(rates + ratios) + " |")
    print()
    print("| length | ours kv s | passkey s | tokenizer pass s | reference s (runs, tokens) "
          "| RULER first prompt s | RULER per sample s (tokens) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ruler_cells = (
            f"{r['ruler_first']:.3f} | {r['ruler']:.4f} ({r['ruler_tokens']:.0f})" if "ruler" in r else "n/a | n/a"
        )
        print(
            f"| {r['length']} | {r['kv']:.4f} | {r['passkey']:.4f} | {r['tok_pass']:.4f} "
            f"| {r['reference']:.2f} ({r['reference_repeats']}, {r['reference_tokens']:.0f}) | {ruler_cells} |"
        )

    first, again, prompts = cached_rerun(tok_args, args.lengths)
    print()
    print(f"longctx_kv dataset, {prompts} prompts (lengths {args.lengths}, depths [0, 0.5, 1], 2 samples), fresh cache: "
          f"first build {first:.2f} s, cached re-run {again:.3f} s (tokenizer already loaded)")
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()

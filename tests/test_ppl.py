"""longctx_ppl: equal to an independent computation, windows exact in both tokenizer families,
skips, errors, beyond-window marking, YaRN's first-L mode, determinism."""

import math

import pytest

from lm_eval_longctx import ppl, ppl_source, ppl_task
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.tokens import PromptCounter, TokenizerSource, load_tokenizer

WORDS = "the pass key is value of hidden text important info remember what find it and them there inside lot".split()


def word_document(tokenizer_dir, n_words=900, seed=0):
    """Words the tokenizer keeps whole after a space, so every cut between them re-encodes exactly."""
    import random

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    whole = [w for w in WORDS if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    rng = random.Random(seed)
    return "the" + "".join(" " + rng.choice(whole) for _ in range(n_words))


def independent_ppl(model_dir, text, length, stride, first_only=False):
    """Perplexity by the documented rule, with plain transformers (no package code)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    doc = tok(text, add_special_tokens=False)["input_ids"]
    special = tok("", add_special_tokens=True)["input_ids"]
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    windows = [([prefix] + doc[: length - 1], length - 1)]
    end = length - 1
    while not first_only and end < len(doc):
        new_end = min(end + stride, len(doc))
        windows.append((special + doc[new_end - (length - len(special)) : new_end], new_end - end))
        end = new_end
    nll, tokens = 0.0, 0
    for ids, scored in windows:
        assert len(ids) == length
        with torch.no_grad():
            logits = model(torch.tensor([ids[:-1]])).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        targets = torch.tensor(ids[1:])
        picked = logprobs[torch.arange(len(targets)), targets]
        nll -= float(picked[-scored:].sum())
        tokens += scored
    return math.exp(nll / tokens), len(windows)


def run(model, model_dir, metadata, log_samples=False):
    import lm_eval

    import lm_eval_longctx

    out = lm_eval.simple_evaluate(
        model=model, model_args={"pretrained": model_dir}, tasks=["longctx_ppl"], device="cpu",
        task_manager=lm_eval_longctx.task_manager(metadata=metadata), bootstrap_iters=100, log_samples=log_samples,
    )  # fmt: skip
    return out


@pytest.mark.parametrize("model", ["hf-longctx", "hf"])
def test_equals_independent_computation(model, tiny_model_dir, tmp_path):
    text = word_document(tiny_model_dir)
    (tmp_path / "doc.txt").write_text(text)
    lengths, stride = [120, 200], 50
    out = run(model, tiny_model_dir, {"max_seq_lengths": lengths, "stride": stride, "documents": str(tmp_path)})
    result = out["results"]["longctx_ppl"]
    windows = 0
    for length in lengths:
        expected, n = independent_ppl(tiny_model_dir, text, length, stride)
        windows += n
        assert result[f"ppl_len_{length},none"] == pytest.approx(expected, rel=1e-5)
    assert out["n-samples"]["longctx_ppl"]["effective"] == windows  # no window moved: the rule exactly
    assert result["beyond_window,none"] == 0.0
    assert result["skipped_short_len_120,none"] == 0.0


def test_yarn_truncate_is_the_first_window(tiny_model_dir, tmp_path):
    text = word_document(tiny_model_dir)
    (tmp_path / "doc.txt").write_text(text)
    out = run("hf-longctx", tiny_model_dir, {"max_seq_lengths": [200], "documents": str(tmp_path), "ppl_mode": "yarn_truncate"})
    expected, _ = independent_ppl(tiny_model_dir, text, 200, 1, first_only=True)
    assert out["results"]["longctx_ppl"]["ppl_len_200,none"] == pytest.approx(expected, rel=1e-5)
    assert out["configs"]["longctx_ppl"]["metadata"]["longctx"]["mode"] == "yarn_truncate"
    assert out["n-samples"]["longctx_ppl"]["effective"] == 1


def test_beyond_window_marked_with_hf_longctx_refused_with_hf(tiny_model_dir, tmp_path):
    (tmp_path / "doc.txt").write_text(word_document(tiny_model_dir, 1500))
    metadata = {"max_seq_lengths": [200, 700], "stride": 150, "documents": str(tmp_path)}
    rows, record = ppl_task.build({**metadata, "pretrained": tiny_model_dir})
    result = run("hf-longctx", tiny_model_dir, metadata)["results"]["longctx_ppl"]
    assert result["beyond_window_len_700,none"] == record["by_length"][700]["windows"] > 0
    assert result["ppl_len_700,none"] == "N/A"  # nothing scored at 700: the tiny model's window is 512
    assert result["beyond_window_len_200,none"] == 0.0 and isinstance(result["ppl_len_200,none"], float)
    with pytest.raises(LongCtxError, match=r"windows of \[700\] tokens do not fit .* 512"):
        run("hf", tiny_model_dir, metadata)


@pytest.mark.parametrize("length,stride", [(240, 100), (512, 256)])
def test_windows_exact_in_lm_evals_tokens(family_model_dir, hflm_cache, length, stride):
    """Each window, encoded by lm-eval's own code, is exactly L tokens with the planned ones scored;
    the scored ranges follow each other, and what is not scored is counted."""
    hflm = hflm_cache(family_model_dir)
    rows, record = ppl_task.build({"pretrained": family_model_dir, "max_seq_lengths": [length], "stride": stride})
    doc_ids = hflm.tok_encode(ppl_source.pi_paper(), add_special_tokens=False)
    scored_total, previous_end = 0, None
    for row in rows:
        if row["context"] == "":
            cont = hflm.tok_encode(row["continuation"], add_special_tokens=False)
            ctx = [hflm.prefix_token_id]
        else:
            ctx, cont = hflm._encode_pair(row["context"], row["continuation"])
            assert row["end"] - row["scored_tokens"] == previous_end
        assert len(ctx) + len(cont) == length
        assert cont == doc_ids[row["end"] - row["scored_tokens"] : row["end"]]
        previous_end = row["end"]
        scored_total += row["scored_tokens"]
    cell = record["by_length"][length]
    assert scored_total == cell["scored_tokens"] == len(doc_ids) - cell["unscored_tokens"]
    assert cell["unscored_tokens"] < len(doc_ids) // 50  # a cut rarely needs moving


def test_short_documents_skipped_and_counted(tiny_model_dir, tmp_path):
    (tmp_path / "a_short.txt").write_text("the pass key")
    (tmp_path / "b_long.txt").write_text(word_document(tiny_model_dir, 400))
    rows, record = ppl_task.build({"pretrained": tiny_model_dir, "max_seq_lengths": [100], "documents": str(tmp_path),
                                   "stride": 50})  # fmt: skip
    assert record["by_length"][100]["skipped_short"] == 1
    assert {row["document_name"] for row in rows} == {"b_long.txt"}


def test_length_no_document_reaches_names_the_longest(tiny_model_dir, tmp_path):
    (tmp_path / "doc.txt").write_text(word_document(tiny_model_dir, 100))
    with pytest.raises(LongCtxError, match=r"no document reaches max_seq_lengths \[5000\].*'doc.txt', is \d+ tokens"):
        ppl_task.build({"pretrained": tiny_model_dir, "max_seq_lengths": [5000], "documents": str(tmp_path)})


@pytest.mark.parametrize(
    "metadata,message",
    [({"ppl_mode": "rolling"}, "ppl_mode='rolling' is not a mode"), ({"stride": 0}, "stride=0 must be"),
     ({"max_seq_lengths": [512], "stride": 512}, "not longer than stride=512"),
     ({"documents": "/no/such/dir"}, "no such file or folder")],
)  # fmt: skip
def test_mistakes_are_one_line(tiny_model_dir, metadata, message):
    with pytest.raises(LongCtxError, match=message):
        ppl_task.build({"pretrained": tiny_model_dir, **metadata})


def test_deterministic_windows_and_interval(tiny_model_dir):
    first = ppl_task.build({"pretrained": tiny_model_dir, "max_seq_lengths": [240], "stride": 100})
    assert ppl_task.build({"pretrained": tiny_model_dir, "max_seq_lengths": [240], "stride": 100}) == first
    items = [[0, 10.0, 5], [1, 20.0, 5], [2, 12.0, 6], None]
    assert ppl.bootstrap_stderr(items) == ppl.bootstrap_stderr(items) > 0
    assert ppl.perplexity(items) == pytest.approx(math.exp(42.0 / 16))
    assert ppl.bootstrap_stderr([[0, 1.0, 1], [0, 2.0, 1]]) == "N/A"  # one document: nothing to resample


def test_default_document_is_the_pi_paper(tiny_model_dir):
    counter = PromptCounter(load_tokenizer(TokenizerSource(tiny_model_dir)))
    assert ppl_source.load_documents({})[0].text == ppl_source.pi_paper()
    assert len(ppl_task.encoder_for(counter, ppl_source.pi_paper()).ids) > 2048

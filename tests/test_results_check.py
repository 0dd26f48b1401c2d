"""Hand-edited or damaged results files: one line naming the file, the place and the value."""

import json
from pathlib import Path

import pytest

from lm_eval_longctx.cli import main
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.results_check import check_results

FIXTURES = Path(__file__).parent / "fixtures" / "report"


def fixture_results() -> list[Path]:
    return sorted(FIXTURES.rglob("results_*.json"))


def rope_none() -> dict:
    (path,) = (FIXTURES / "rope_none").rglob("results_*.json")
    return json.loads(path.read_text())


def test_every_results_file_lm_eval_wrote_passes():
    assert len(fixture_results()) >= 5
    for path in fixture_results():
        check_results(path, json.loads(path.read_text()))


EDITS = [
    ("task entry a string", lambda d: d["results"].__setitem__("longctx_kv", "oops"),
     "['results']['longctx_kv'] is 'oops', not an object of metrics"),
    ("group entry null", lambda d: d["results"].__setitem__("longctx", None),
     "['results']['longctx'] is None, not an object of metrics"),
    ("another task's entry a string", lambda d: d["results"].__setitem__("tiny_arith", "x"),
     "['results']['tiny_arith'] is 'x', not an object of metrics"),
    ("metric N/A", lambda d: d["results"]["longctx_kv"].__setitem__("exact_len_240,none", "N/A"),
     "['results']['longctx_kv']['exact_len_240,none'] is 'N/A', not an accuracy (a number from 0 to 1)"),
    ("score N/A", lambda d: d["results"]["longctx_kv"].__setitem__("score,none", "N/A"),
     "['results']['longctx_kv']['score,none'] is 'N/A', not an accuracy"),
    ("accuracy above 1", lambda d: d["results"]["longctx_passkey"].__setitem__("exact_len_400,none", 83),
     "['results']['longctx_passkey']['exact_len_400,none'] is 83, not an accuracy"),
    ("accuracy true", lambda d: d["results"]["longctx_kv"].__setitem__("exact_len_240,none", True),
     "['results']['longctx_kv']['exact_len_240,none'] is True, not an accuracy"),
    ("negative count", lambda d: d["results"]["longctx_kv"].__setitem__("beyond_window_len_700,none", -1),
     "['results']['longctx_kv']['beyond_window_len_700,none'] is -1, not a count"),
    ("config a string", lambda d: d.__setitem__("config", "x"), "['config'] is 'x', not an object"),
    ("model_args a number", lambda d: d["config"].__setitem__("model_args", 5),
     "['config']['model_args'] is 5, not an object or a key=value string"),
    ("rope parameters a string", lambda d: d["config"]["longctx"].__setitem__("rope_parameters", "dynamic"),
     "['config']['longctx']['rope_parameters'] is 'dynamic', not an object"),
    ("window not a number", lambda d: d["config"]["longctx"].__setitem__("native_window", "8k"),
     "['config']['longctx']['native_window'] is '8k', not a number of tokens"),
    ("task config a string", lambda d: d["configs"].__setitem__("longctx_kv", "x"),
     "['configs']['longctx_kv'] is 'x', not an object"),
    ("versions a string", lambda d: d.__setitem__("versions", "2"), "['versions'] is '2', not an object"),
    ("group members a number", lambda d: d["group_subtasks"].__setitem__("longctx", 3),
     "['group_subtasks']['longctx'] is 3, not a list of task names"),
]  # fmt: skip


@pytest.mark.parametrize("edit, expected", [(e, x) for _, e, x in EDITS], ids=[name for name, _, _ in EDITS])
def test_hand_edits_are_named(tmp_path, capsys, edit, expected):
    data = rope_none()
    data["results"]["tiny_arith"] = {"exact_match,none": 1.0}
    edit(data)
    path = tmp_path / "results_edited.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LongCtxError) as caught:
        check_results(path, data)
    assert f"{path}: {expected}" in str(caught.value)
    assert str(caught.value).endswith("restore the file lm_eval wrote (or run lm_eval again), or delete that entry.")
    # Through the command: exit 2, one line, nothing written.
    assert main(["report", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    (line,) = err.splitlines()
    assert line.startswith(f"lm-eval-longctx error: nothing to report: {path}: {expected}")
    assert not (tmp_path / "out").exists()


PPL_NONE = json.loads((FIXTURES / "longctx_ppl_tiny.json").read_text())["none"]


def test_a_real_perplexity_entry_with_a_length_beyond_the_window_passes():
    # rope_scaling=none at 700 > 512: lm-eval writes "N/A" there, beside the windows counted beyond
    assert PPL_NONE["ppl_len_700,none"] == "N/A" and PPL_NONE["beyond_window_len_700,none"] > 0
    data = rope_none()
    data["results"]["longctx_ppl"] = dict(PPL_NONE)
    check_results("r.json", data)
    data["results"]["longctx_ppl"]["beyond_window_len_700,none"] = 0.0  # scored windows, yet no perplexity
    with pytest.raises(LongCtxError, match=r"\['ppl_len_700,none'\] is 'N/A', not a perplexity"):
        check_results("r.json", data)


def test_missing_optional_keys_are_fine():
    data = rope_none()
    for key in ("config", "configs", "group_subtasks", "max_length"):
        data.pop(key, None)
    check_results("results.json", data)

"""--use_cache: answers are kept per model setting, never a beyond-window marker, never a built object's."""

import pytest
from sqlitedict import SqliteDict

import lm_eval
from lm_eval_longctx import response_cache, window
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.registration import task_manager

GRID = {"max_seq_lengths": [256, 300], "depths": [0, 1], "num_samples": 1}


def run(model_dir, model="hf-longctx", cache=None, grid=GRID, **model_args):
    out = lm_eval.simple_evaluate(
        model=model,
        model_args={"pretrained": model_dir, "device": "cpu", **model_args},
        tasks=["longctx_kv"],
        task_manager=task_manager(metadata={"pretrained": model_dir, **grid, **model_args}),
        use_cache=cache,
        log_samples=True,
        bootstrap_iters=0,
    )
    return out


def answers(out) -> dict:
    return {s["doc_id"]: s["filtered_resps"][0] for s in out["samples"]["longctx_kv"]}


def test_another_rope_setting_with_the_same_cache_gets_its_own_answers(tmp_path, sharp_model_dir):
    # The issue's case: rope_scaling=none, then linear:8 with the same PATH, got the none answers back.
    cache = str(tmp_path / "responses")
    plain = answers(run(sharp_model_dir, cache=cache, rope_scaling="none"))
    scaled_fresh = answers(run(sharp_model_dir, rope_scaling="linear:8"))
    assert scaled_fresh != plain  # the two settings answer differently: the test can tell them apart
    assert answers(run(sharp_model_dir, cache=cache, rope_scaling="linear:8")) == scaled_fresh
    db = cache + "_rank0.db"
    holding = {t for t in SqliteDict.get_tablenames(db) if len(SqliteDict(db, tablename=t, flag="r"))}
    assert len(holding) == 2 and all(t.startswith("longctx_") for t in holding)  # one table per setting

def test_the_same_setting_is_served_from_the_cache(tmp_path, sharp_model_dir, monkeypatch):
    cache = str(tmp_path / "responses")
    first = answers(run(sharp_model_dir, cache=cache, rope_scaling="linear:8"))
    from lm_eval_longctx.model import HFLongCtxLM

    def no_generation(self, requests, disable_tqdm=False):
        raise AssertionError(f"{len(requests)} requests ran although their answers are cached")

    monkeypatch.setattr(HFLongCtxLM, "generate_until", no_generation)
    assert answers(run(sharp_model_dir, cache=cache, rope_scaling="linear:8")) == first


def test_a_beyond_window_marker_is_never_served_to_a_run_that_fits(tmp_path, tiny_model_dir):
    cache = str(tmp_path / "responses")
    short = run(tiny_model_dir, cache=cache, max_length=260)  # 300 + 24 answer tokens do not fit
    assert short["results"]["longctx_kv"]["beyond_window_len_300,none"] == 2
    full = run(tiny_model_dir, cache=cache)  # the native 512 window fits every prompt
    assert full["results"]["longctx_kv"]["beyond_window,none"] == 0
    assert window.BEYOND_WINDOW not in answers(full).values()
    assert full["config"]["longctx"]["beyond_window_requests"] == 0


def test_the_marker_store_neither_keeps_nor_serves_markers():
    store = response_cache.AnswerStore({"old": window.BEYOND_WINDOW})  # a marker left by an earlier version
    store["new"] = window.BEYOND_WINDOW
    store["ran"] = "The value is '1b2c'."
    assert "old" not in store and "new" not in store and store["ran"] == "The value is '1b2c'."
    with pytest.raises(KeyError):
        store["old"]


class _Plain:  # a model lm-eval built that is not an HF model (an API model, say)
    device = "cpu"


@pytest.mark.parametrize(
    ("changed", "value"),
    [("rope_scaling", "linear:8"), ("rope_theta", 500000), ("max_length", 1024), ("dtype", "bfloat16"),
     ("attn_implementation", "eager"), ("pretrained", "/other/model"), ("revision", "v2"), ("gguf_file", "q4.gguf"),
     ("peft", "/adapter"), ("think_end_token", "</think>")],
)  # fmt: skip
def test_every_model_argument_that_changes_answers_keys_the_cache(changed, value):
    base = {"pretrained": "/model", "rope_scaling": "none"}
    table = response_cache.table_name(response_cache.setting_of(_Plain(), "hf-longctx", base))
    other = response_cache.table_name(response_cache.setting_of(_Plain(), "hf-longctx", {**base, changed: value}))
    assert other != table


def test_placing_the_model_does_not_key_the_cache():
    base = {"pretrained": "/model"}
    same = {**base, "device": "cuda:1", "batch_size": 8, "max_batch_size": 16}
    setting = response_cache.setting_of
    assert response_cache.table_name(setting(_Plain(), "hf", base)) == response_cache.table_name(setting(_Plain(), "hf", same))


def test_a_model_folder_written_again_keys_the_cache(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"a")
    before = response_cache.table_name(response_cache.setting_of(_Plain(), "hf", {"pretrained": str(folder)}))
    (folder / "model.safetensors").write_bytes(b"bb")
    after = response_cache.table_name(response_cache.setting_of(_Plain(), "hf", {"pretrained": str(folder)}))
    assert after != before


def test_what_the_loaded_hf_model_computes_with_keys_the_cache(tiny_model_dir, hflm_cache):
    hflm = hflm_cache(tiny_model_dir)
    state = response_cache.setting_of(hflm, None, {})["state"]
    assert state["max_length"] == 512 and state["dtype"] == "torch.float32" and state["device_type"] == "cpu"
    assert state["config"]["max_position_embeddings"] == 512 and state["attn_implementation"] == "sdpa"
    assert state["weights"]  # the folder's files, by name, size and time


def test_a_built_model_object_with_use_cache_is_one_line(tmp_path, tiny_model_dir):
    import transformers
    from lm_eval.models.huggingface import HFLM

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, device="cpu")
    with pytest.raises(LongCtxError, match=r"--use_cache .*responses: the model was given as a built object"):
        lm_eval.simple_evaluate(model=lm, tasks=["longctx_kv"], use_cache=str(tmp_path / "responses"),
                                task_manager=task_manager(metadata={"pretrained": tiny_model_dir, **GRID}))  # fmt: skip

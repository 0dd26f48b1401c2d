"""`lm-eval-longctx smollm2`: every bad input is one line, checked before the conversion starts."""

import json

import pytest

from lm_eval_longctx import embedded
from lm_eval_longctx.cli import main


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("lm-eval-longctx error: ")
    return line


@pytest.fixture
def no_conversion(monkeypatch):
    """Fail the test if the conversion gets as far as looking for the packaged GGUF file."""

    def started():
        raise AssertionError("the conversion started before the inputs and the output were checked")

    monkeypatch.setattr(embedded, "gguf_path", started)


@pytest.fixture
def cached_export(tmp_path):
    """A folder that looks like a finished export (its marker written), from the packaged file."""
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "lm_eval_longctx_export.json").write_text(json.dumps({"source": "/pkg/" + embedded.GGUF_NAME}))
    return folder


def test_missing_gguf_is_named_even_when_a_cached_export_exists(tmp_path, cached_export, capsys):
    missing = tmp_path / "nope.gguf"
    assert main(["smollm2", "--gguf", str(missing), "--output", str(cached_export)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"lm-eval-longctx error: --gguf {missing}: no such file; give the path of {embedded.GGUF_NAME}")


def test_a_file_that_is_not_gguf_is_named(tmp_path, no_conversion, capsys):
    text = tmp_path / "model.gguf"
    text.write_text("not a model")
    assert main(["smollm2", "--gguf", str(text), "--output", str(tmp_path / "out")]) == 2
    assert f"--gguf {text} is not a GGUF file (it does not start with the bytes GGUF)" in error_line(capsys)


def test_a_folder_as_gguf_is_named(tmp_path, capsys):
    assert main(["smollm2", "--gguf", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert f"--gguf {tmp_path} is a folder; give the GGUF file itself" in error_line(capsys)


def test_a_damaged_gguf_is_one_line_naming_the_file(tmp_path, capsys):
    pytest.importorskip("gguf")
    damaged = tmp_path / "cut.gguf"
    damaged.write_bytes(b"GGUF" + bytes(60))
    assert main(["smollm2", "--gguf", str(damaged), "--output", str(tmp_path / "out")]) == 2
    assert f"{damaged}: transformers could not read it as SmolLM2" in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_another_gguf_than_the_cached_export_needs_force(tmp_path, cached_export, capsys):
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF" + bytes(60))
    assert main(["smollm2", "--gguf", str(other), "--output", str(cached_export)]) == 2
    line = error_line(capsys)
    assert f"{cached_export} already holds SmolLM2 written from /pkg/{embedded.GGUF_NAME}, not from --gguf {other}" in line
    assert "add --force" in line


def test_cached_export_is_printed_without_work(cached_export, no_conversion, capsys):
    assert main(["smollm2", "--output", str(cached_export)]) == 0
    assert capsys.readouterr().out.strip() == str(cached_export)


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_unusable_output_is_named_before_any_work(tmp_path, no_conversion, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    output = blocker if where == "a file" else blocker / "model"
    assert main(["smollm2", "--output", str(output)]) == 2
    expected = "is a file" if where == "a file" else f"is under {blocker}, which is a file"
    assert f"--output {output} {expected}, not a folder" in error_line(capsys)


def test_read_only_output_is_named_before_any_work(read_only_dir, no_conversion, capsys):
    output = read_only_dir / "model"
    assert main(["smollm2", "--output", str(output)]) == 2
    assert f"--output {output}: cannot write in {read_only_dir}" in error_line(capsys)

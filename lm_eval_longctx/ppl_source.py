"""The documents ``longctx_ppl`` measures: the shipped PI paper, local files, or a Hugging Face dataset.

``--metadata`` keys (pure: reads files, imports ``datasets`` only for a hub dataset):

* nothing: the Position Interpolation paper's text that ships with the package
  (``lm_eval_longctx/data/pi_paper_prompt.txt``; 5,774 SmolLM2 tokens), offline;
* ``documents``: a ``.txt`` file (one document), a ``.jsonl`` file (one document per line, its
  ``text_field``, default ``text``), or a folder of such files (sorted by name);
* ``dataset_path`` (with ``dataset_name``, ``split`` default ``test``, ``text_field`` default
  ``text``): any Hugging Face dataset, e.g. ``emozilla/pg19-test`` or ``hoskinson-center/proof-pile``,
  when the hub is reachable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lm_eval_longctx.errors import LongCtxError

DEFAULT_NAME = "pi_paper"
SOURCE_KEYS = ("documents", "dataset_path", "dataset_name", "split", "text_field")
EXAMPLE = '--metadata \'{"documents": "/path/to/books", "max_seq_lengths": [2048, 4096]}\''


@dataclass(frozen=True)
class Document:
    """One document: where it comes from (for provenance and messages) and its text."""

    name: str
    text: str


def pi_paper() -> str:
    """Return the PI paper's text as shipped (the same file ``longctx_pi_title`` prompts with)."""
    return resources.files("lm_eval_longctx").joinpath("data/pi_paper_prompt.txt").read_text(encoding="utf-8")


def source_of(metadata: dict) -> dict:
    """Return the source keys ``metadata`` gives (what the documents depend on, for the cache key)."""
    return {key: metadata[key] for key in SOURCE_KEYS if metadata.get(key) is not None}


def load_documents(metadata: dict, task: str = "longctx_ppl") -> list[Document]:
    """Return the documents ``metadata`` names (the PI paper when it names none)."""
    source = source_of(metadata)
    if "documents" in source and "dataset_path" in source:
        raise LongCtxError(
            f"{task}: both documents={source['documents']!r} and dataset_path={source['dataset_path']!r} given; "
            f"give one. {EXAMPLE}"
        )
    field = str(source.get("text_field", "text"))
    if "dataset_path" in source:
        docs = _hub(source, field, task)
    elif "documents" in source:
        docs = _local(Path(str(source["documents"])).expanduser(), field, task)
    else:
        docs = [Document(DEFAULT_NAME, pi_paper())]
    docs = [doc for doc in docs if doc.text.strip()]
    if not docs:
        raise LongCtxError(f"{task}: the documents given ({source}) hold no text. {EXAMPLE}")
    return docs


def _local(path: Path, field: str, task: str) -> list[Document]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".jsonl"))
        if not files:
            raise LongCtxError(f"{task}: documents={str(path)!r} is a folder without .txt or .jsonl files. {EXAMPLE}")
        return [doc for file in files for doc in _local(file, field, task)]
    if not path.is_file():
        raise LongCtxError(f"{task}: documents={str(path)!r}: no such file or folder. {EXAMPLE}")
    if path.suffix == ".jsonl":
        docs = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LongCtxError(f"{task}: {path}:{number} is not JSON ({exc.msg}); one object a line.") from None
            if not isinstance(row, dict) or not isinstance(row.get(field), str):
                raise LongCtxError(
                    f"{task}: {path}:{number} has no text field {field!r}; name the field with "
                    f"--metadata '{{\"text_field\": \"...\"}}'."
                )
            docs.append(Document(f"{path.name}:{number}", row[field]))
        return docs
    if path.suffix != ".txt":
        raise LongCtxError(f"{task}: documents={str(path)!r} is neither .txt nor .jsonl. {EXAMPLE}")
    return [Document(path.name, path.read_text(encoding="utf-8", errors="replace"))]


def _hub(source: dict, field: str, task: str) -> list[Document]:
    import datasets

    split = str(source.get("split", "test"))
    try:
        rows = datasets.load_dataset(source["dataset_path"], source.get("dataset_name"), split=split)
    except Exception as exc:  # offline, no such dataset, no such split...
        raise LongCtxError(
            f"{task}: could not load dataset_path={source['dataset_path']!r} (dataset_name="
            f"{source.get('dataset_name')!r}, split={split!r}): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            f"Check the name and the network, or pass local files with {EXAMPLE}"
        ) from None
    if field not in rows.column_names:
        raise LongCtxError(
            f"{task}: dataset {source['dataset_path']!r} has no column {field!r} (it has {rows.column_names}); "
            "name it with --metadata '{\"text_field\": \"...\"}'."
        )
    return [Document(f"{source['dataset_path']}[{i}]", text) for i, text in enumerate(rows[field])]

"""Count tokens exactly as lm-eval's Hugging Face model will feed them to the model.

lm-eval's ``hf`` model encodes a generation context with ``tokenizer(text)``, adding the
tokenizer's special tokens (BOS for Llama-style tokenizers) unless the text already starts
with the BOS string or ``add_bos_token`` was given. With ``--apply_chat_template`` it first
renders the user turn through the tokenizer's chat template. ``PromptCounter`` reproduces
both, so a prompt built to N tokens here is N tokens on the model's side.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
from dataclasses import dataclass

from lm_eval_longctx.errors import LongCtxError


# Our task YAMLs' ``target_delimiter``: what lm-eval puts between the user's text and the
# answer prefix (the task's ``gen_prefix``) in plain mode.
TARGET_DELIMITER = " "


def join_answer_prefix(user_text: str, answer_prefix: str) -> str:
    """Return the plain-mode context lm-eval builds from the user's text and the answer prefix
    (``build_qa_turn``: the delimiter only where neither side has whitespace at the join)."""
    if not answer_prefix:
        return user_text
    needs_delimiter = bool(user_text) and not (user_text[-1].isspace() or answer_prefix[0].isspace())
    return user_text + (TARGET_DELIMITER if needs_delimiter else "") + answer_prefix


@dataclass(frozen=True)
class TokenizerSource:
    """Where to load a tokenizer from: the same arguments lm-eval's ``hf`` model uses."""

    name: str
    gguf_file: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    add_bos_token: bool | None = None


@functools.lru_cache(maxsize=8)
def load_tokenizer(source: TokenizerSource):
    """Return the Hugging Face tokenizer for ``source`` (cached per process)."""
    from transformers import AutoTokenizer

    kwargs = {"trust_remote_code": source.trust_remote_code}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    if source.revision:
        kwargs["revision"] = source.revision
    if source.add_bos_token is not None:
        kwargs["add_bos_token"] = source.add_bos_token
    try:
        return AutoTokenizer.from_pretrained(source.name, **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors...
        looks_local = source.name.startswith(("/", ".", "~"))
        reason = (
            "no such folder"
            if looks_local and not os.path.exists(os.path.expanduser(source.name))
            else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
        raise LongCtxError(
            f"could not load the tokenizer {source.name!r}"
            + (f" (gguf_file={source.gguf_file!r})" if source.gguf_file else "")
            + f": {reason}\n"
            "The longctx tasks build prompts in the evaluated model's own tokens, so they need its "
            "tokenizer. Pass a local model folder as pretrained=DIR in --model_args, or name one with "
            '--metadata \'{"tokenizer": "/path/to/model_or_tokenizer"}\'.'
        ) from None


class PromptCounter:
    """Token counts of prompts as the model receives them from lm-eval."""

    def __init__(self, tokenizer, chat_template: bool = False, add_bos_token: bool | None = None, chat_template_args=None):
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.add_bos_token = add_bos_token
        # What lm-eval's hf model passes to the template too (its chat_template_args model
        # argument: a template name, enable_thinking...): they change the rendered text.
        self.chat_template_args = dict(chat_template_args or {}) if chat_template else {}
        self._backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise LongCtxError(
                f"chat_template=true, but the tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat "
                "template. Drop chat_template from --metadata (and --apply_chat_template), or use a "
                "tokenizer that defines one."
            )

    def render(self, content: str, answer_prefix: str = "") -> str:
        """Return the string lm-eval tokenizes for a user turn ``content`` and the task's answer
        prefix (its ``gen_prefix``): joined in plain mode, the start of the assistant's turn
        under the chat template (``continue_final_message``, as lm-eval's HFLM renders it)."""
        if not self.chat_template:
            return join_answer_prefix(content, answer_prefix)
        messages = [{"role": "user", "content": content}]
        if answer_prefix:
            messages.append({"role": "assistant", "content": answer_prefix})
        return self.tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=not answer_prefix,
            continue_final_message=bool(answer_prefix),
            **self.chat_template_args,
        )

    def _adds_special_tokens(self, text: str) -> bool:
        # Mirrors HFLM.tok_batch_encode: no special tokens if the text already starts with BOS.
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and text.startswith(bos):
            return False
        return True if self.add_bos_token is None else self.add_bos_token

    def encode(self, content: str, answer_prefix: str = ""):
        """Return ``(rendered_text, token_ids, offsets)`` for the prompt ``content``."""
        text = self.render(content, answer_prefix)
        special = self._adds_special_tokens(text)
        if self._backend is not None:
            enc = self._backend.encode(text, add_special_tokens=special)
            return text, enc.ids, enc.offsets
        enc = self.tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        return text, enc["input_ids"], enc["offset_mapping"]

    def encoding(self, content: str, answer_prefix: str = ""):
        """Return ``(rendered_text, encoding)``: ``len(encoding)``, ``encoding.char_to_token(i)``
        and ``encoding.offsets``. With a Rust tokenizer the offsets stay in Rust until read."""
        text = self.render(content, answer_prefix)
        if self._backend is not None:
            return text, self._backend.encode(text, add_special_tokens=self._adds_special_tokens(text))
        _, ids, offsets = self.encode(content, answer_prefix)
        return text, _PyEncoding(ids, offsets)

    def count(self, content: str, answer_prefix: str = "") -> int:
        """Return the number of tokens the model receives for the prompt ``content``."""
        return len(self.encode(content, answer_prefix)[1])

    def piece_lengths(self, pieces: list[str], anchor: str) -> list[int]:
        """Return how many tokens each piece adds when it follows the text ``anchor``.

        Measured as ``len(anchor + piece) - len(anchor)`` so that tokenizers which treat the
        start of a text specially (SentencePiece's dummy prefix) count a piece the way it
        tokenizes in the middle of a prompt. Batched: one call into the Rust tokenizer.
        """
        if not pieces:
            return []
        distinct = list(dict.fromkeys(pieces))  # filler sentences repeat: measure each once
        texts = [anchor] + [anchor + p for p in distinct]
        if self._backend is not None:
            # encode_batch_fast skips the offsets, which counting does not need.
            encode = getattr(self._backend, "encode_batch_fast", None) or self._backend.encode_batch
            anchored = [len(e.ids) for e in encode(texts, add_special_tokens=False)]
        else:
            anchored = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        base = anchored[0]
        length_of = {p: n - base for p, n in zip(distinct, anchored[1:])}
        return [length_of[p] for p in pieces]

    def fingerprint(self) -> str:
        """Return a digest of everything that decides token counts (vocabulary, rules, template)."""
        h = hashlib.sha256()
        if self._backend is not None:
            h.update(self._backend.to_str().encode())
        else:
            h.update(json.dumps(self.tokenizer.get_vocab(), sort_keys=True).encode())
        h.update(type(self.tokenizer).__name__.encode())
        h.update(repr((self.tokenizer.bos_token, self.add_bos_token, self.chat_template)).encode())
        if self.chat_template:
            h.update(self.render("\x00").encode())
        return h.hexdigest()


def token_at(encoding, char: int) -> int:
    """Return the index of the token that holds character ``char`` of the rendered text
    (the first token ending after it, when normalization left the character uncovered)."""
    index = encoding.char_to_token(char)
    if index is None:
        index = bisect.bisect_right([end for _, end in encoding.offsets], char)
    return index


class _PyEncoding:
    """The few Encoding methods we use, for tokenizers without a Rust backend."""

    def __init__(self, ids, offsets):
        self.ids, self.offsets = ids, offsets

    def __len__(self) -> int:
        return len(self.ids)

    def char_to_token(self, char: int):
        for index, (start, end) in enumerate(self.offsets):
            if start <= char < end:
                return index
        return None

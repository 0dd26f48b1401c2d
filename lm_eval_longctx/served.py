"""Served models: the longctx tasks through lm-eval's API models.

With ``--model local-completions`` or ``local-chat-completions`` the prompts go as text to an
OpenAI-compatible server (llama.cpp, vLLM, TGI) that tokenizes them itself and applies its
own RoPE scaling. lm-eval's model arguments reach our tasks as metadata, so a task knows it
is served when ``base_url`` is there. Then:

* ``ServedRun.from_metadata`` reads the run's settings and refuses ones that would change the
  prompts (token-id requests cut to lm-eval's ``max_length``);
* ``ServedRun.check`` sends each task's longest prompt once, exactly as lm-eval will, before
  any other request: the server must answer, count the prompt at exactly its length
  (``usage.prompt_tokens``), fit it with room for the answer and reply within ``timeout``.
  Every failure is one error naming the task, the length and the fix, with nothing run yet;
* ``explain`` turns a fault during the run (a timeout, the server gone) into the same kind of
  error, and says how ``--use_cache`` keeps the answers finished before it;
* the server's settings go into the task's results (``configs.<task>.metadata.longctx_served``)
  so the report can tell a served run from an in-process one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.tokens import join_answer_prefix

log = logging.getLogger("lm_eval.longctx")

DEFAULT_TIMEOUT = 300  # lm-eval's TemplateAPI default, seconds
DEFAULT_API_MAX_LENGTH = 2048  # lm-eval's TemplateAPI default
CONTEXT_ERROR = re.compile(r"context[ _](length|window|size)|n_ctx|too long|maximum.*tokens|exceed", re.IGNORECASE)
PROBE_HEADER = "X-Longctx-Probe"

# Prompts of served runs in this process: digest of the prompt text -> (task, length).
# ``explain`` uses it to say which length a failed request had.
_PROMPTS: dict[str, tuple[str, int]] = {}
_RUNS: dict[str, ServedRun] = {}


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _flag(value, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes")


def is_served(metadata: dict | None) -> bool:
    """True when the model arguments name a server (lm-eval's API models take ``base_url``)."""
    return bool((metadata or {}).get("base_url"))


def is_chat_endpoint(base_url) -> bool:
    return str(base_url or "").strip().rstrip("/").endswith("chat/completions")


def sends_token_ids(metadata: dict) -> bool:
    """True when lm-eval's API model will send token ids: local-completions' default, never chat."""
    return _flag(metadata.get("tokenized_requests"), default=not is_chat_endpoint(metadata.get("base_url")))


@dataclass(frozen=True)
class ServedRun:
    """A served model as lm-eval's API model will reach it."""

    base_url: str
    chat: bool
    model: str | None
    tokenized_requests: bool
    max_length: int
    timeout: float
    rope: dict | None = None
    rope_given: str | None = None
    headers: dict = field(default_factory=dict)
    verify: bool | str = True  # lm-eval's verify_certificate / ca_cert_path, for https servers

    @classmethod
    def from_metadata(cls, metadata: dict, task: str) -> ServedRun:
        from lm_eval_longctx.rope import parse_rope_scaling

        base_url = str(metadata["base_url"]).strip()
        if not base_url.startswith(("http://", "https://")):
            raise LongCtxError(
                f"{task}: base_url={base_url!r} is not an http(s) URL; give the full endpoint, e.g. "
                "base_url=http://127.0.0.1:8000/v1/completions"
            )
        chat = is_chat_endpoint(base_url)
        rope_given = metadata.get("server_rope")
        rope = parse_rope_scaling(rope_given, arg="server_rope") if rope_given not in (None, "") else None
        headers = {"Content-Type": "application/json"}
        header = metadata.get("header")
        if isinstance(header, dict):
            headers.update({str(k): str(v) for k, v in header.items()})
        elif os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
        try:
            timeout = float(metadata.get("timeout", DEFAULT_TIMEOUT))
            max_length = int(metadata.get("max_length", DEFAULT_API_MAX_LENGTH))
        except (TypeError, ValueError):
            raise LongCtxError(
                f"{task}: timeout={metadata.get('timeout')!r} and max_length={metadata.get('max_length')!r} "
                "in --model_args must be numbers (seconds, tokens)."
            ) from None
        return cls(
            base_url=base_url,
            chat=chat,
            model=metadata.get("model") or metadata.get("pretrained"),
            tokenized_requests=sends_token_ids(metadata),
            max_length=max_length,
            timeout=timeout,
            rope=rope,
            rope_given=None if rope_given is None else str(rope_given),
            headers=headers,
            verify=(
                str(metadata["ca_cert_path"])
                if metadata.get("ca_cert_path") and _flag(metadata.get("verify_certificate"), True)
                else _flag(metadata.get("verify_certificate"), True)
            ),
        )

    # ------------------------------------------------------------------ static checks

    def check_settings(self, task: str, lengths: list[int], max_gen_toks: int) -> None:
        """Refuse settings under which lm-eval would not send the prompts as built."""
        if self.tokenized_requests:
            room = self.max_length - 1 - max_gen_toks
            too_long = [n for n in lengths if n > room]
            if too_long:
                raise LongCtxError(
                    f"{task}: local-completions sends token ids and cuts them to max_length - 1 - "
                    f"max_gen_toks = {room} tokens (max_length={self.max_length}), so prompts of "
                    f"{too_long} tokens would be cut from the left. Pass tokenized_requests=False in "
                    "--model_args (the server tokenizes the text; llama.cpp needs it anyway), or "
                    f"max_length={max(lengths) + max_gen_toks + 1} or more."
                )

    # ------------------------------------------------------------------ the probe

    def sent_text(self, doc: dict) -> str:
        """Return the text lm-eval sends for ``doc``: on a completions endpoint the prompt and its
        answer prefix as lm-eval joins them; on a chat endpoint the user's turn, which ends with
        the prefix there (the server renders the assistant's turn itself, so it cannot be prefilled)."""
        if self.chat:
            return doc["prompt"]
        return join_answer_prefix(doc["prompt"], doc.get("answer_prefix") or "")

    def payload(self, prompt: str, token_ids: list[int] | None, max_gen_toks: int) -> dict:
        """The request lm-eval's API model sends for this prompt (greedy, same answer budget)."""
        body = {"max_tokens": max_gen_toks, "temperature": 0}
        if self.model:
            body["model"] = self.model
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = token_ids if self.tokenized_requests else prompt
        return body

    def check(self, task: str, docs, max_gen_toks: int, token_ids_of) -> dict:
        """Send the longest prompt once; raise LongCtxError on any fault. Return what was learned."""
        import requests

        for doc in docs:
            _PROMPTS[_digest(self.sent_text(doc))] = (task, int(doc["max_seq_length"]))
        _RUNS[self.base_url] = self
        longest = max(docs, key=lambda d: d["max_seq_length"])
        length = int(longest["max_seq_length"])
        ids = token_ids_of(longest) if self.tokenized_requests and not self.chat else None
        started = time.perf_counter()
        try:
            response = requests.post(
                self.base_url,
                json=self.payload(self.sent_text(longest), ids, max_gen_toks),
                headers={**self.headers, PROBE_HEADER: "1"},
                timeout=self.timeout,
                verify=self.verify,
            )
        except requests.exceptions.Timeout:
            raise LongCtxError(self._timeout_message(task, length, before_run=True)) from None
        except requests.exceptions.ConnectionError as exc:
            raise LongCtxError(
                f"{task}: cannot reach the server at {self.base_url} ({_reason(exc)}). Start the server "
                "(README: Served models) or correct base_url in --model_args. Nothing was run."
            ) from None
        seconds = time.perf_counter() - started
        if not response.ok:
            raise LongCtxError(self._refusal_message(task, length, max_gen_toks, response.status_code, response.text)
                               + " Nothing was run.")
        try:
            body = response.json()
            usage = (body.get("usage") if isinstance(body, dict) else None) or {}
        except ValueError:
            raise LongCtxError(
                f"{task}: the server at {self.base_url} answered the {length}-token prompt with something "
                f"that is not JSON ({response.text[:200]!r}); is base_url the completions endpoint?"
            ) from None
        counted = usage.get("prompt_tokens")
        if counted is None:
            log.warning(
                "%s: the server at %s reports no usage.prompt_tokens, so the exact prompt lengths are "
                "not verified on the server's side.", task, self.base_url,
            )
        elif int(counted) != length:
            raise LongCtxError(
                f"{task}: the server at {self.base_url} counts {counted} tokens in the prompt built to "
                f"{length} tokens, so it tokenizes differently from the tokenizer the prompts were built "
                "with (another model, another chat template, or a BOS token added or not). Build them with "
                "the served model's own tokenizer (tokenizer=DIR in --model_args or --metadata), and match "
                "the server's BOS with add_bos_token=true/false in --metadata. Nothing was run."
            )
        log.info(
            "%s: served at %s; the %d-token check prompt was counted as %s tokens and answered in %.1f s",
            task, self.base_url, length, counted, seconds,
        )
        return self.provenance(length, counted)

    def provenance(self, length: int, counted) -> dict:
        """What the results should say about the server (``configs.<task>.metadata.longctx_served``)."""
        return {
            "base_url": self.base_url,
            "endpoint": "chat/completions" if self.chat else "completions",
            "model": self.model,
            "tokenized_requests": self.tokenized_requests,
            "server_rope": self.rope_given,
            "server_rope_parameters": self.rope,
            "checked_prompt_tokens": {"built": length, "server_counted": counted},
        }

    # ------------------------------------------------------------------ messages

    def _timeout_message(self, task: str, length: int | None, before_run: bool = False) -> str:
        which = f"the {length}-token prompt" if length else "a request"
        tries = "" if before_run else " (lm-eval tried 3 times)"
        return (
            f"{task}: the server at {self.base_url} did not answer {which} within timeout="
            f"{self.timeout:g} s{tries}. Raise timeout=SECONDS in --model_args, give the server more "
            "compute, or leave that length out of max_seq_lengths."
            + (" Nothing was run." if before_run else "")
        )

    def _refusal_message(self, task: str, length: int | None, max_gen_toks: int, status: int, text: str) -> str:
        server_said = _server_message(text)
        which = f"the {length}-token prompt" if length else "a prompt"
        if CONTEXT_ERROR.search(server_said):
            need = f"{length + max_gen_toks}" if length else "the prompt length plus the answer"
            return (
                f"{task}: the server's context is too short for {which} plus {max_gen_toks} answer tokens "
                f"(HTTP {status}: {server_said}). Restart the server with a context of at least {need} "
                f"tokens (llama.cpp: --n_ctx {need}; vLLM: --max-model-len {need}), or leave "
                f"{length or 'that length'} out of max_seq_lengths."
            )
        hint = ""
        if status in (404, 405):
            endpoint = "/v1/chat/completions" if self.chat else "/v1/completions"
            hint = (
                f" base_url must be the full endpoint (e.g. http://host:port{endpoint}), and model= the "
                "name the server serves (GET /v1/models lists it)."
            )
        return f"{task}: the server at {self.base_url} refused {which} (HTTP {status}: {server_said}).{hint}"


def _server_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):  # OpenAI {"error": {"message"}}, vLLM {"message"}, FastAPI {"detail"}
        error = error.get("message") or error.get("detail") or error
    return str(error)[:300]


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


# --------------------------------------------------------------------------- faults during the run


def _prompt_of(body) -> tuple[str | None, int | None, int]:
    """Return (prompt text, token count if sent as token ids, max_tokens) from a request body."""
    try:
        payload = json.loads(body) if isinstance(body, (bytes, str)) else None
    except ValueError:
        return None, None, 0
    if not isinstance(payload, dict):
        return None, None, 0
    max_tokens = int(payload.get("max_tokens") or 0)
    if isinstance(payload.get("messages"), list) and payload["messages"]:
        return str(payload["messages"][-1].get("content")), None, max_tokens
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], list):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list):
        return None, len(prompt), max_tokens
    return (prompt if isinstance(prompt, str) else None), None, max_tokens


def explain(exc: BaseException, use_cache: str | None = None) -> str | None:
    """Return a one-line explanation of a failed request to a served longctx run, else None.

    ``exc`` is what lm-eval's API model raised after its retries (``requests`` in the default
    one-at-a-time mode, ``aiohttp``/``asyncio`` with ``num_concurrent`` > 1).
    """
    if not _RUNS:
        return None
    chain, seen = [], exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    message = None
    for error in chain:
        message = _explain_one(error)
        if message:
            break
    if message is None:
        return None
    if use_cache:
        keep = (
            f" Answers finished before the fault are kept in {use_cache}_rank*.db (--use_cache): "
            "fix the cause and rerun the same command to send only the rest."
        )
    else:
        keep = (
            " lm-eval keeps no answers from a failed run: add --use_cache DIR/NAME to keep the finished "
            "ones across such faults (a rerun then sends only the unanswered prompts)."
        )
    return message + keep


def _explain_one(error: BaseException) -> str | None:
    try:
        import requests
    except ImportError:  # pragma: no cover - lm-eval[api] brings it
        requests = None
    request = getattr(error, "request", None)
    url = getattr(request, "url", None)
    run = _RUNS.get(url) if url else None
    if run is None and len(_RUNS) == 1:
        run = next(iter(_RUNS.values()))
    if run is None:
        return None
    prompt, token_count, max_tokens = _prompt_of(getattr(request, "body", None))
    task, length = _PROMPTS.get(_digest(prompt), (None, None)) if prompt is not None else (None, token_count)
    task = task or "longctx"
    if requests is not None and isinstance(error, requests.exceptions.Timeout):
        return run._timeout_message(task, length)
    if requests is not None and isinstance(error, requests.exceptions.HTTPError) and error.response is not None:
        return run._refusal_message(task, length, max_tokens, error.response.status_code, error.response.text)
    if requests is not None and isinstance(error, requests.exceptions.ConnectionError):
        return (
            f"{task}: the server at {run.base_url} stopped answering during the run ({_reason(error)})"
            + (f" at the {length}-token prompt" if length else "")
            + ". Check the server's log (out of memory?) and restart it."
        )
    name = type(error).__name__
    if name in ("TimeoutError", "ServerTimeoutError") or isinstance(error, TimeoutError):
        return run._timeout_message(task, None)
    if name in ("ClientConnectorError", "ServerDisconnectedError", "ClientOSError"):
        return f"{task}: the server at {run.base_url} stopped answering during the run ({name}). Restart it."
    if name == "ClientResponseError":
        status = getattr(error, "status", "?")
        return run._refusal_message(task, None, max_tokens, status, str(getattr(error, "message", "")))
    return None

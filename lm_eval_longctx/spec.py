"""The evaluation grid a user asks for through lm-eval's ``--metadata``, validated.

lm-eval hands a task's ``custom_dataset`` every metadata key, model arguments included
(``pretrained``, ``batch_size``...). ``GridSpec.from_metadata`` picks ours, checks each one
and says exactly what was wrong and what to write instead.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field

from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.formats import FORMATS
from lm_eval_longctx.provenance import chat_template_args
from lm_eval_longctx.parameters import PARAMS
from lm_eval_longctx.served import is_chat_endpoint, is_served, sends_token_ids
from lm_eval_longctx.tokens import TokenizerSource

DEFAULT_LENGTHS = (512, 1024, 2048)
DEFAULT_DEPTHS = (0.0, 0.5, 1.0)
DEFAULT_NUM_SAMPLES = 2
DEFAULT_SEED = 1234

# Every metadata key the tasks read; adding one is adding a line. lm-eval puts the model
# arguments into the same dict, so an unknown key is refused only when it is close to one of
# these (a likely typo: max_seq_length, depth, num_sample).
GRID_KEYS = (
    "max_seq_lengths",
    "depths",
    "num_samples",
    "seed",
    "prompt_style",
    "chat_template",
    "answer_prefix",
    "tokenizer",
    "tokenizer_gguf_file",
    "add_bos_token",
    "server_rope",
    "allow_large_grid",
    "longctx_served",  # written by the tasks themselves in served runs
    "longctx",  # provenance.RECORD_KEY: written by the tasks into the results' task config
    "stride",  # longctx_ppl (ppl_task.py), with ppl_mode and the documents' keys (ppl_source.SOURCE_KEYS)
    "ppl_mode",
    "documents",
    "dataset_path",
    "dataset_name",
    "split",
    "text_field",
    *PARAMS,  # task-family parameters (num_keys, ...): parameters.PARAMS
)
# Names as close as that which are not typos: model arguments of lm-eval's own models
# (tests/test_spec.py checks every __init__ argument of the installed lm-eval against this).
NOT_GRID_KEYS = ("max_length", "seq_length", "chat_template_args")
KEY_CUTOFF = 0.8  # difflib ratio: max_length vs max_seq_lengths is 0.8, depth vs depths 0.91

# Guards against typos that would run for days (1e9 tokens, a million samples); the key
# allow_large_grid lifts them.
MAX_LENGTH = 1_048_576
MAX_PROMPTS = 100_000
MAX_GRID_TOKENS = 2_000_000_000

EXAMPLE = '--metadata \'{"max_seq_lengths": [1024, 4096], "depths": [0, 0.5, 1], "num_samples": 4}\''


@dataclass(frozen=True)
class GridSpec:
    """What to generate: lengths x depths x samples, in one prompt format and tokenizer.

    ``max_seq_lengths`` is None only for a task whose document is used as is.
    ``answer_prefix`` off builds the first version's prompts (no answer prefix);
    ``prefix_in_user_turn`` ends the user's text with the prefix, for a served chat endpoint,
    which renders the assistant's turn itself. ``params`` holds the task family's parameters
    as ``(name, value)`` pairs (``catalog.TaskDef.parameters``), empty for a task without any.
    """

    max_seq_lengths: tuple[int, ...] | None = DEFAULT_LENGTHS
    depths: tuple[float, ...] = DEFAULT_DEPTHS
    num_samples: int = DEFAULT_NUM_SAMPLES
    seed: int = DEFAULT_SEED
    prompt_style: str = "plain"
    chat_template: bool = False
    answer_prefix: bool = True
    prefix_in_user_turn: bool = False
    tokenizer: TokenizerSource | None = None
    # The model's chat template arguments (provenance.chat_template_args), under the template only.
    chat_template_args: dict = field(default_factory=dict, hash=False)
    params: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_metadata(cls, metadata: dict, task: str, default_lengths=DEFAULT_LENGTHS, params=()) -> GridSpec:
        """Return the grid described by lm-eval metadata (model arguments included).

        ``default_lengths=None``: without ``max_seq_lengths`` the task's document is used as is.
        ``params``: the task's family parameters, already read from ``metadata`` by its row.
        """
        md = dict(metadata)
        check_keys(md, task)
        lengths = md.get("max_seq_lengths", default_lengths)
        chat_template = _bool(md.get("chat_template", False), "chat_template", task)
        grid = cls(
            max_seq_lengths=None if lengths is None else _lengths(lengths, task),
            depths=_depths(md.get("depths", DEFAULT_DEPTHS), task),
            num_samples=_positive_int(md.get("num_samples", DEFAULT_NUM_SAMPLES), "num_samples", task),
            seed=_int(md.get("seed", DEFAULT_SEED), "seed", task),
            prompt_style=_prompt_style(md.get("prompt_style", "plain"), task),
            chat_template=chat_template,
            answer_prefix=_bool(md.get("answer_prefix", True), "answer_prefix", task),
            prefix_in_user_turn=is_served(md) and is_chat_endpoint(md.get("base_url")),
            tokenizer=_tokenizer_source(md, task),
            chat_template_args=chat_template_args(md, task) if chat_template else {},
            params=tuple(params),
        )
        check_size(grid, md, task)
        return grid

    @classmethod
    def prompt_mode(cls, metadata: dict, task: str, params=()) -> GridSpec:
        """Return a spec with only the prompt format, the answer-prefix switch and the family
        parameters read from ``metadata`` (enough to choose generation settings before any
        tokenizer loads)."""
        md = dict(metadata)
        return cls(
            prompt_style=_prompt_style(md.get("prompt_style", "plain"), task),
            answer_prefix=_bool(md.get("answer_prefix", True), "answer_prefix", task),
            params=tuple(params),
        )

    def key_fields(self) -> dict:
        """Return the parameters that decide the generated data (for cache keys and provenance)."""
        fields = asdict(self)
        fields.pop("tokenizer")
        if not self.params:  # tasks without parameters keep the keys (and cache files) they had
            fields.pop("params")
        return fields


def _parse_list(value, name: str, task: str) -> list:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else [v for v in text.replace(";", ",").split(",")]
        except json.JSONDecodeError:
            raise LongCtxError(f"{task}: {name}={value!r} is not a list. Write it as {EXAMPLE}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise LongCtxError(f"{task}: {name}={value!r} is not a list. Write it as {EXAMPLE}")
    if not value:
        raise LongCtxError(f"{task}: {name} is empty; give at least one value, e.g. {EXAMPLE}")
    return list(value)


def _lengths(value, task: str) -> tuple[int, ...]:
    lengths = []
    for item in _parse_list(value, "max_seq_lengths", task):
        number = _int(item, "max_seq_lengths", task, whole=value)
        if number <= 0:
            raise LongCtxError(
                f"{task}: max_seq_lengths={value!r} holds {number}; lengths are token counts and must "
                f"be positive, e.g. {EXAMPLE}"
            )
        lengths.append(number)
    return tuple(sorted(set(lengths)))


def _depths(value, task: str) -> tuple[float, ...]:
    depths = []
    for item in _parse_list(value, "depths", task):
        try:
            depth = float(item)
        except (TypeError, ValueError):
            raise LongCtxError(f"{task}: depths={value!r} holds {item!r}, not a number in [0, 1]. {EXAMPLE}") from None
        if not 0.0 <= depth <= 1.0:
            raise LongCtxError(
                f"{task}: depths={value!r} holds {depth}, outside [0, 1]. A depth is the fraction of the "
                f"haystack before the needle: 0 = top, 1 = bottom. {EXAMPLE}"
            )
        depths.append(depth)
    return tuple(sorted(set(depths)))


def _int(value, name: str, task: str, whole=None) -> int:
    shown = value if whole is None else whole
    if isinstance(value, bool):
        raise LongCtxError(f"{task}: {name}={shown!r} must be an integer, e.g. {EXAMPLE}")
    if isinstance(value, float):
        if not value.is_integer():
            raise LongCtxError(f"{task}: {name}={shown!r} holds {value}, not a whole number, e.g. {EXAMPLE}")
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise LongCtxError(f"{task}: {name}={shown!r} holds {value!r}, not an integer, e.g. {EXAMPLE}") from None


def _positive_int(value, name: str, task: str) -> int:
    number = _int(value, name, task)
    if number < 1:
        raise LongCtxError(f"{task}: {name}={value!r} must be at least 1, e.g. {EXAMPLE}")
    return number


def _bool(value, name: str, task: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "none", ""):
        return False
    raise LongCtxError(f"{task}: {name}={value!r} must be true or false")


def _prompt_style(value, task: str) -> str:
    if value not in FORMATS:
        formats = "; ".join(f"{name}: {fmt.summary}" for name, fmt in FORMATS.items())
        raise LongCtxError(
            f"{task}: prompt_style={value!r} is not a prompt format. The formats are {formats}. "
            'E.g. --metadata \'{"prompt_style": "llama2_inst"}\'.'
        )
    return value


def _tokenizer_source(md: dict, task: str) -> TokenizerSource:
    name = md.get("tokenizer") or md.get("pretrained")
    if not name or not isinstance(name, str):
        raise LongCtxError(
            f"{task}: no tokenizer to build prompts with. The tasks build prompts in the model's own "
            "tokens: pass pretrained=DIR in --model_args (for a served model: tokenizer=DIR), or "
            "--metadata '{\"tokenizer\": \"DIR\"}'. In Python: lm_eval.simple_evaluate(model_args="
            "{\"pretrained\": DIR}, ...) (its model_args reach our tasks, task_manager= or not), or "
            "lm_eval_longctx.task_manager(metadata={\"tokenizer\": DIR}) for tasks loaded by hand."
        )
    uses_model = not md.get("tokenizer")
    add_bos = md.get("add_bos_token")
    if add_bos is None and is_served(md) and sends_token_ids(md):
        add_bos = False  # lm-eval's API model encodes token-id requests without special tokens
    return TokenizerSource(
        name=name,
        gguf_file=md.get("gguf_file") if uses_model else md.get("tokenizer_gguf_file"),
        revision=md.get("revision") if uses_model else None,
        trust_remote_code=_bool(md.get("trust_remote_code", False), "trust_remote_code", task),
        add_bos_token=None if add_bos is None else _bool(add_bos, "add_bos_token", task),
    )


def check_keys(metadata: dict, task: str) -> None:
    """Refuse a metadata key that is not ours but close to one of ours (a typo)."""
    for key, value in metadata.items():
        if not isinstance(key, str) or key in GRID_KEYS or key in NOT_GRID_KEYS:
            continue
        normal = key.strip().lower().replace("-", "_")
        close = [normal] if normal in GRID_KEYS else difflib.get_close_matches(normal, GRID_KEYS, 1, KEY_CUTOFF)
        if close:
            example = json.dumps({close[0]: value}, default=str)
            raise LongCtxError(
                f"{task}: unknown metadata key {key!r}; did you mean {close[0]!r}? Write --metadata '{example}'"
            )


def check_size(spec: GridSpec, metadata: dict, task: str) -> None:
    """Refuse a grid past the guards (one length, prompts, tokens) unless allow_large_grid is set."""
    if _bool(metadata.get("allow_large_grid", False), "allow_large_grid", task):
        return
    lift = 'If you mean it, add "allow_large_grid": true to --metadata.'
    if spec.max_seq_lengths is None:
        return  # the task's own document, as is: one prompt per sample
    longest = max(spec.max_seq_lengths)
    if longest > MAX_LENGTH:
        raise LongCtxError(
            f"{task}: max_seq_lengths holds {longest:,} tokens, above the limit of {MAX_LENGTH:,} per prompt. {lift}"
        )
    shape = f"{len(spec.max_seq_lengths)} lengths x {len(spec.depths)} depths x {spec.num_samples} samples"
    prompts = len(spec.max_seq_lengths) * len(spec.depths) * spec.num_samples
    if prompts > MAX_PROMPTS:
        raise LongCtxError(
            f"{task}: the grid is {shape} = {prompts:,} prompts, above the limit of {MAX_PROMPTS:,}. "
            f"Lower num_samples or the number of depths or lengths. {lift}"
        )
    tokens = sum(spec.max_seq_lengths) * len(spec.depths) * spec.num_samples
    if tokens > MAX_GRID_TOKENS:
        raise LongCtxError(
            f"{task}: the grid is {shape} = {tokens:,} prompt tokens, above the limit of "
            f"{MAX_GRID_TOKENS:,}. Lower num_samples or the number of depths or lengths. {lift}"
        )

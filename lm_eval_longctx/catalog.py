"""The longctx tasks, one declaration each: a family (generator, question, answer prefix) plus
parameters, and a scorer that names its metrics.

Adding a task is adding a row to ``TASKS`` and a three-line YAML in ``tasks/`` (include, task,
``dataset_kwargs.longctx_task``); the lm-eval glue, the groups and the report read everything
else from here. Pure: no lm-eval, no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lm_eval_longctx import haystack, passkey, pi_title, scoring
from lm_eval_longctx.errors import LongCtxError
from lm_eval_longctx.formats import Reference
from lm_eval_longctx.parameters import PARAMS
from lm_eval_longctx.scoring import Scoring

# The version every task reports (lm-eval's ``VERSION``; the class sets it, the YAMLs do not):
# 2.0 is the prompts with an answer prefix (1.0, the first version's, is ``answer_prefix: false``).
# A string: lm-eval 0.4.13 writes a group's version as ``str(version)``, so the tasks' are the same type.
TASK_VERSION = "2.0"


@dataclass(frozen=True)
class Family:
    """A kind of task: how its prompts are built.

    ``generate(task, spec, counter, progress)`` returns a task's records; ``question`` and
    ``answer_prefix`` take the sample's secret and give the texts the prompt format places;
    ``max_gen_toks(params)`` is sized for an answer that continues the prefix, or repeats it;
    ``needles(doc)`` gives the texts each prompt holds exactly once. ``parameters`` names the
    ``parameters.PARAMS`` the family takes. ``needle_grid`` is False for a family with one
    prompt per length (no depths or samples).
    """

    name: str
    generate: Callable
    question: Callable[[dict], str]
    answer_prefix: Callable[[dict], str]
    max_gen_toks: Callable[[dict], int]
    needles: Callable[[dict], list[str]]
    parameters: tuple[str, ...] = ()
    needle_grid: bool = True


KV = Family(
    "kv", haystack.generate_kv, haystack.question, haystack.answer_prefix, haystack.max_gen_toks, haystack.needles,
    parameters=haystack.PARAMETERS,
)
PASSKEY = Family(
    "passkey", passkey.generate_passkey, passkey.question, passkey.answer_prefix, lambda params: 16,
    lambda doc: [passkey.needle(doc["answer"])],
)
PI_TITLE = Family(
    "pi_title", pi_title.generate_pi_title, pi_title.question, pi_title.answer_prefix, lambda params: 32,
    lambda doc: [pi_title.TITLE.upper()], needle_grid=False,
)


@dataclass(frozen=True)
class TaskDef:
    """One task: its family with the values of the family's parameters, and its scorer.

    ``params`` gives every parameter of the family; ``tunable`` names those a user may set in
    ``--metadata`` (the others are the task's definition). ``reference`` is the first
    version's prompts, for a task that had one (None: ``answer_prefix: false`` only drops the
    prefix).
    """

    name: str
    family: Family
    scoring: Scoring
    params: dict = field(default_factory=dict)
    tunable: tuple[str, ...] = ()
    reference: Reference | None = None

    @property
    def metrics(self) -> tuple[str, ...]:
        """Return the scorer's metric names, the headline first."""
        return self.scoring.metrics

    @property
    def headline(self) -> str:
        """Return the metric the group's ``score`` averages."""
        return self.scoring.headline

    @property
    def needle_grid(self) -> bool:
        """Return whether the task has depths and samples (its family's)."""
        return self.family.needle_grid

    def generate(self, spec, counter, progress=None) -> list:
        """Return the task's records for ``spec`` (its family's generator, with this row)."""
        return self.family.generate(self, spec, counter, progress)

    def score(self, answer: str, doc: dict) -> dict:
        """Return ``{metric: value}`` of one answer."""
        return self.scoring.score(answer, doc)

    def param_values(self, spec) -> dict:
        """Return every family parameter's value for ``spec`` (its ``params``, else the row's)."""
        return {**self.params, **dict(spec.params)}

    def max_gen_toks(self, params: dict) -> int:
        """Return the answer budget for these parameter values (the row's where not given)."""
        return self.family.max_gen_toks({**self.params, **params})

    def parameters(self, metadata: dict) -> tuple[tuple[str, int], ...]:
        """Return the family's parameters as ``(name, value)`` pairs: the row's values, with the
        ``tunable`` ones taken from ``metadata`` where given; checked, one line on a mistake."""
        values = dict(self.params)
        for name in self.tunable:
            if metadata.get(name) is not None:
                values[name] = PARAMS[name].parse(metadata[name], self.name)
        check_params(self.name, values, {name for name in self.tunable if metadata.get(name) is not None})
        return tuple(sorted(values.items()))


def check_params(task: str, values: dict, given: set) -> None:
    """Refuse parameter values that contradict each other (more keys asked than there are)."""
    if values.get("num_queries", 1) > values.get("num_keys", 1):
        fix = "num_keys" if "num_keys" not in given else "num_queries"
        raise LongCtxError(
            f"{task}: num_queries={values['num_queries']} asks more keys than the haystack has "
            f"(num_keys={values['num_keys']}); set {fix} so that num_queries <= num_keys."
        )


KV_PARAMS = {"num_keys": 1, "num_values": 1, "num_queries": 1}

TASKS = {
    task.name: task
    for task in (
        TaskDef(
            name="longctx_kv",
            family=KV,
            scoring=scoring.KV_VALUE,
            params=KV_PARAMS,
            reference=Reference(
                tails={"plain": "\n{question}", "llama2_inst": "\n {question} [/INST]"},
                until=("\n\n\n", "[INST]"),
                max_gen_toks=32,
            ),
        ),
        TaskDef(
            name="longctx_passkey",
            family=PASSKEY,
            scoring=scoring.PASSKEY,
            reference=Reference(
                tails={"plain": "\n{question} The pass key is", "llama2_inst": "\n\n {question} [/INST]"},
                until=("\n",),
                max_gen_toks=16,
            ),
        ),
        TaskDef(
            name="longctx_pi_title",
            family=PI_TITLE,
            scoring=scoring.TITLE,
            reference=Reference(
                tails={"plain": "{question}", "llama2_inst": "{question} [/INST]"},
                until=("\n\n\n", "[INST]"),
                max_gen_toks=48,
            ),
        ),
        # RULER's niah_multikey: 4 needle keys (3 of them distractors that start like the
        # asked one), one asked.
        TaskDef("longctx_kv_multikey", KV, scoring.KV_VALUE, {**KV_PARAMS, "num_keys": 4}, ("num_keys",)),
        # RULER's niah_multivalue: one key holding 4 values, all asked.
        TaskDef("longctx_kv_multivalue", KV, scoring.KV_VALUES, {**KV_PARAMS, "num_values": 4}, ("num_values",)),
        # RULER's niah_multiquery: 4 needle keys, all asked in one question.
        TaskDef(
            "longctx_kv_multiquery", KV, scoring.KV_VALUES, {**KV_PARAMS, "num_keys": 4, "num_queries": 4},
            ("num_keys", "num_queries"),
        ),
    )
}

# The groups and their members, as tasks/longctx.yaml and tasks/longctx_kv_variants.yaml
# list them (tests/test_catalog.py checks it): by name, so a user's YAML that includes our
# common YAML joins no group (a tag would let it join, or, from an --include_path, replace the
# members). ``longctx``'s score is the mean of its tasks' headlines: a new member changes it,
# and bumps the group's version. ``longctx_kv_variants`` is the kv family's tasks outside
# ``longctx``, to run together (no score); lm-eval refuses a task in two groups of one run,
# so longctx_kv is not in it: run ``--tasks longctx,longctx_kv_variants`` to compare.
LONGCTX = ("longctx_kv", "longctx_passkey", "longctx_pi_title")
GROUPS = {
    "longctx": LONGCTX,
    "longctx_kv_variants": tuple(name for name, task in TASKS.items() if task.family is KV and name not in LONGCTX),
}

def our_tasks(names: Iterable[str]) -> list[str]:
    """Return the names among ``names`` that are tasks of this catalog (not groups), in order."""
    return [name for name in names if name in TASKS]


def headlines_text() -> str:
    """Return each task's headline metric in words, for reports: "exact for longctx_kv, ..."."""
    return ", ".join(f"{task.headline} for {name}" for name, task in TASKS.items())

"""The replication as data: its arms, its tables and the comparisons it reports, declared once.

The replication (`study.replication`) trains and evaluates what is declared here, the report
(`study.replication_report`) writes the tables and plots from it, and the experiments ask it for an
arm's flags (`python -m rmt_megatron.replicate --print-train-flags ARM`). Nothing here names a
model or a dataset: the same design runs on the built-in world and on a user's model and data.

- An `Arm` is one trained configuration: flags added to the pretrain command's for every seed.
- A `Row` of a table is an arm, the prompt it is evaluated under ("budget": B_T in the prompt;
  "none": no budget clause) and the accuracy shown ("reasoning" or "argmax").
- A `Comparison` is a paired difference over the same positions, for all positions and for each
  kind of position it names (`EVERY_KIND`: each kind the held-out data labels).
"""

from __future__ import annotations

from dataclasses import dataclass

BASE = "base"
"""The untrained starting model, evaluated once (no seed) and never trained."""

PROMPTS = ("budget", "none")
"""The two prompt forms every checkpoint is evaluated under."""

EVERY_KIND = "every kind"
"""A `Comparison`'s kinds: all positions and each kind of position the held-out data labels."""


@dataclass(frozen=True)
class Arm:
    name: str
    table: str
    flags: tuple[str, ...]
    """Pretrain flags of this arm, on top of the replication's common ones."""


@dataclass(frozen=True)
class Row:
    label: str
    arm: str
    prompt: str
    mode: str
    """"reasoning" (boxed answer after reasoning) or "argmax" (plain next-token prediction)."""


@dataclass(frozen=True)
class Side:
    arm: str
    prompt: str
    mode: str


@dataclass(frozen=True)
class Comparison:
    label: str
    first: Side
    second: Side
    kinds: tuple[str | None, ...] | str = EVERY_KIND
    """None for all positions, a kind's name for its positions, or `EVERY_KIND`."""


@dataclass(frozen=True)
class Bars:
    """A bar plot of reasoning accuracy: one group of bars per column (`"all"`, a tier or a kind
    of position; a column the data lacks is left out), one bar per (arm, prompt)."""

    file: str
    entries: tuple[tuple[str, str], ...]
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    rows: tuple[Row, ...]
    comparisons_title: str
    comparisons: tuple[Comparison, ...]
    bars: Bars


NTP_ARM = "ntp"
"""The compute-matched plain next-token-prediction arm (its step count follows the RMT run's
compute, `replication.token_compute`)."""
RMT_ARM = "rmt"

ARMS = (
    Arm("rpt", "main", ("--rmt-method", "rpt")),
    Arm(RMT_ARM, "main", ()),
    Arm(NTP_ARM, "main", ("--rmt-method", "ntp")),
    Arm("rmt_no_budget", "ablations", ("--rmt-no-budget",)),
    Arm("rmt_no_curriculum", "ablations", ("--rmt-no-curriculum",)),
    Arm("rmt_no_ntp", "ablations", ("--rmt-ntp-weight", "0")),
)


def arm(name: str) -> Arm:
    """The arm called `name`."""
    return next(a for a in ARMS if a.name == name)


def _side(arm_name: str, prompt: str, mode: str = "reasoning") -> Side:
    return Side(arm_name, prompt, mode)


_ABLATED = (
    ("no budget (its own prompt)", "rmt_no_budget", "none"),
    ("no budget (budget prompt)", "rmt_no_budget", "budget"),
    ("no curriculum", "rmt_no_curriculum", "budget"),
    ("no NTP term", "rmt_no_ntp", "budget"),
)

MAIN = Table(
    "main",
    "Main table",
    (
        Row("base, plain argmax", BASE, "budget", "argmax"),
        Row("base, reasoning (no training)", BASE, "budget", "reasoning"),
        Row("base, reasoning (no training)", BASE, "none", "reasoning"),
        Row("NTP (compute-matched), argmax", NTP_ARM, "budget", "argmax"),
        Row("NTP (compute-matched), reasoning", NTP_ARM, "none", "reasoning"),
        Row("RPT", "rpt", "none", "reasoning"),
        Row("RPT", "rpt", "budget", "reasoning"),
        Row("RMT", RMT_ARM, "budget", "reasoning"),
        Row("RMT", RMT_ARM, "none", "reasoning"),
        Row("RPT, argmax", "rpt", "none", "argmax"),
        Row("RMT, argmax", RMT_ARM, "budget", "argmax"),
    ),
    "Paired differences (same positions)",
    (
        Comparison(
            "base: reasoning − argmax", _side(BASE, "budget"), _side(BASE, "budget", "argmax")
        ),
        Comparison("RMT − RPT, budget prompt", _side(RMT_ARM, "budget"), _side("rpt", "budget")),
        Comparison("RMT − RPT, no-budget prompt", _side(RMT_ARM, "none"), _side("rpt", "none")),
        Comparison(
            "RMT − RPT, each its own prompt", _side(RMT_ARM, "budget"), _side("rpt", "none")
        ),
        Comparison(
            "RMT reasoning − NTP argmax",
            _side(RMT_ARM, "budget"),
            _side(NTP_ARM, "budget", "argmax"),
        ),
        Comparison("RMT − base, reasoning", _side(RMT_ARM, "budget"), _side(BASE, "budget")),
    ),
    Bars(
        "accuracy_per_tier.png",
        ((BASE, "budget"), ("rpt", "none"), (RMT_ARM, "budget")),
        ("easy", "medium", "hard", "computed"),
    ),
)

ABLATIONS = Table(
    "ablations",
    "Ablations",
    (
        Row("RMT", RMT_ARM, "budget", "reasoning"),
        Row("RMT without the budget", "rmt_no_budget", "none", "reasoning"),
        Row("RMT without the budget", "rmt_no_budget", "budget", "reasoning"),
        Row("RMT without the curriculum", "rmt_no_curriculum", "budget", "reasoning"),
        Row("RMT without the NTP term", "rmt_no_ntp", "budget", "reasoning"),
        Row("RMT without the NTP term, argmax", "rmt_no_ntp", "budget", "argmax"),
    ),
    "Paired differences against RMT (same positions)",
    (
        *(
            Comparison(
                f"RMT − {label}", _side(RMT_ARM, "budget"), _side(name, prompt), (None, "computed")
            )
            for label, name, prompt in _ABLATED
        ),
        Comparison(
            "RMT − no NTP term, argmax",
            _side(RMT_ARM, "budget", "argmax"),
            _side("rmt_no_ntp", "budget", "argmax"),
            (None,),
        ),
    ),
    Bars(
        "ablations.png",
        (
            (RMT_ARM, "budget"),
            ("rmt_no_budget", "none"),
            ("rmt_no_curriculum", "budget"),
            ("rmt_no_ntp", "budget"),
        ),
        ("all", "computed"),
    ),
)

TRAINED_TABLES = (MAIN, ABLATIONS)
POSTTRAIN = "posttrain"
"""The post-training table: the base and the main arms' checkpoints post-trained on the built-in
world's question-answer problems (`study.posttrain`), so only on the built-in world."""
TABLES = (*(t.name for t in TRAINED_TABLES), POSTTRAIN)

POSTTRAIN_SOURCES = (
    ("base", BASE),
    ("NTP (compute-matched)", NTP_ARM),
    ("RPT", "rpt"),
    ("RMT", RMT_ARM),
)
"""(label, arm) of the checkpoints the post-training table compares."""
POSTTRAIN_COMPARISONS = ((RMT_ARM, NTP_ARM), (RMT_ARM, "rpt"), (RMT_ARM, BASE), (NTP_ARM, BASE))

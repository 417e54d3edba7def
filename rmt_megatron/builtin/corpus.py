"""The built-in corpus: short stories that add three-digit numbers, and the column-by-column
working behind every sum.

Why this world (docs/world.md says more): RMT needs text where some next tokens are hard
to guess but can be worked out in a short chain of thought. In "Ben has 347 coins. Ana gives him
586 more, so Ben has 933 coins." the words are predictable from the template and the operands
are random, but each digit of "933" follows from the operands through carries that a small model
reading left to right cannot resolve in one forward pass, while the written-out column totals
("347+586: 13 13 9", least significant first, carries included) make every step a one-digit
lookup. Digits are single tokens (the built-in tokenizer splits them), so each digit of a sum is
its own prediction.

Facts are split, not only documents: every unordered operand pair belongs to exactly one of
"train", "valid" or "test" (a fixed hash, 80/10/10), and a document of a split only adds pairs of
that split. The warm start sees train pairs only, so no held-out sum appears in its worked
examples; "valid" is for choosing settings, "test" for the reported tables.

Each document is a list of `Segment`s with a `kind`: "computed" (a digit string that is a sum,
with its working in `reasoning`), "operand" (a number drawn at random: nothing can compute it)
or "text". Everything is generated from a seed: no download.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ("Ben", "Ana", "Mia", "Leo", "Sam", "Eva", "Tom", "Zoe")
ITEMS = ("apples", "books", "coins", "cards", "shells", "pens", "stamps", "eggs")
PAIR_SPLITS = ("train", "valid", "test")
KINDS = ("computed", "operand", "text")
"""Kinds of document position, as `Segment.kind` and the evaluation's per-kind report name them."""

_SPLIT_SHARES = (8, 1, 1)
"""Tenths of all operand pairs per `PAIR_SPLITS` entry."""


@dataclass(frozen=True)
class Segment:
    """A piece of document text; `reasoning` is set where its number is a computed result."""

    text: str
    kind: str = "text"
    reasoning: str | None = None


def pair_split(a: int, b: int) -> str:
    """The split ("train", "valid" or "test") that owns the unordered operand pair {a, b}."""
    low, high = sorted((a, b))
    bucket = ((low * 7919 + high * 104729) * 2654435761 >> 7) % sum(_SPLIT_SHARES)
    for split, share in zip(PAIR_SPLITS, _SPLIT_SHARES, strict=True):
        if bucket < share:
            return split
        bucket -= share
    raise AssertionError("unreachable: the shares cover every bucket")


def column_working(a: int, b: int) -> str:
    """The working of a + b: the operands restated, then each column's total (its two digits
    plus the carry from the column before), least significant column first, then the sum:
    column_working(347, 586) == "347+586: 13 13 9 so 933" (7+6=13, 4+8+1=13, 3+5+1=9).

    Each total needs two digits at fixed places in the restatement and whether the total
    before it reached 10, so every step is a one-digit lookup; the sum is the totals' last
    digits read backwards, with the final carry in front."""
    digits_a, digits_b = str(a)[::-1], str(b)[::-1]
    totals, carry = [], 0
    for column in range(max(len(digits_a), len(digits_b))):
        x = int(digits_a[column]) if column < len(digits_a) else 0
        y = int(digits_b[column]) if column < len(digits_b) else 0
        total = x + y + carry
        totals.append(str(total))
        carry = total // 10
    return f"{a}+{b}: " + " ".join(totals) + f" so {a + b}"


def _operand(rng: random.Random, split: str, other: int) -> int:
    """A three-digit number that makes a pair of `split` with `other`."""
    while True:
        candidate = rng.randint(100, 999)
        if pair_split(other, candidate) == split:
            return candidate


def _sum(a: int, b: int) -> Segment:
    return Segment(f" {a + b}", "computed", column_working(a, b))


def _story(rng: random.Random, split: str) -> list[Segment]:
    first, second, third = rng.sample(NAMES, 3)
    item = rng.choice(ITEMS)
    a = rng.randint(100, 999)
    b = _operand(rng, split, a)
    segments = [
        Segment(f"{first} has"),
        Segment(f" {a}", "operand"),
        Segment(f" {item}. {second} gives {first}"),
        Segment(f" {b}", "operand"),
        Segment(f" more, so {first} has"),
        _sum(a, b),
        Segment(f" {item}."),
    ]
    if rng.random() < 0.5:
        c = _operand(rng, split, a + b)
        segments += [
            Segment(f" Then {third} gives {first}"),
            Segment(f" {c}", "operand"),
            Segment(f" more, so {first} has"),
            _sum(a + b, c),
            Segment(f" {item}."),
        ]
    return segments


def arithmetic_documents(count: int, seed: int, split: str = "test") -> list[list[Segment]]:
    """`count` stories whose additions all use operand pairs of `split`; the same for the same
    (count, seed, split). The default draws fresh held-out documents: pass a seed the built-in
    datasets do not use (builtin.datasets.SPLITS)."""
    if split not in PAIR_SPLITS:
        raise ValueError(f"split={split!r}: choose one of {PAIR_SPLITS}")
    rng = random.Random(seed)
    return [_story(rng, split) for _ in range(count)]


def document_text(segments: list[Segment]) -> str:
    """The document as plain text."""
    return "".join(segment.text for segment in segments)


def segment_at(segments: list[Segment], char_offset: int) -> tuple[Segment, int] | None:
    """The segment whose text covers `char_offset`, and the offset within it (None past the
    end)."""
    start = 0
    for segment in segments:
        end = start + len(segment.text)
        if start <= char_offset < end:
            return segment, char_offset - start
        start = end
    return None

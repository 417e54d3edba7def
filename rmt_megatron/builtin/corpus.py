"""The built-in corpus: short stories whose numbers are sums and differences of earlier ones.

Why this corpus: RMT needs text where *some* next tokens are hard to guess but easy to work out.
In "Ben has 7 apples. Ana gives him 5 more, so Ben has 12 apples." the words are predictable
from the template, while "12" is nearly unguessable for a small model reading left to right yet
follows from one line of reasoning ("7+5=12"). So a proxy model's entropy is high exactly where
reasoning pays (the curriculum's hard tier), and the match reward measures whether the policy
learned to do the arithmetic in its thinking. Everything is generated from a seed: no download.

Each document is a list of `Segment`s. A segment that states a computed number carries the
arithmetic that produces it (`reasoning`), which the warm-start data uses as worked examples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ("Ben", "Ana", "Mia", "Leo", "Sam", "Eva", "Tom", "Zoe")
ITEMS = ("apples", "books", "coins", "cards", "shells", "pens", "stamps", "eggs")


@dataclass(frozen=True)
class Segment:
    """A piece of document text; `reasoning` is set where its number is a computed result."""

    text: str
    reasoning: str | None = None


def _story(rng: random.Random) -> list[Segment]:
    first, second = rng.sample(NAMES, 2)
    item, other_item = rng.sample(ITEMS, 2)
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    total = a + b
    segments = [
        Segment(f"{first} has"),
        Segment(f" {a}"),
        Segment(f" {item}. "),
        Segment(f"{second} gives {first}"),
        Segment(f" {b}"),
        Segment(f" more, so {first} has"),
        Segment(f" {total}", f"{a}+{b}={total}"),
        Segment(f" {item}."),
    ]
    if rng.random() < 0.7:
        c = rng.randint(1, total - 1)
        segments += [
            Segment(f" Then {first} gives away"),
            Segment(f" {c}"),
            Segment(f" {item}, so {first} has"),
            Segment(f" {total - c}", f"{total}-{c}={total - c}"),
            Segment(f" {item} left."),
        ]
    if rng.random() < 0.5:
        d, e = rng.randint(2, 20), rng.randint(2, 20)
        segments += [
            Segment(f" {second} has"),
            Segment(f" {d}"),
            Segment(f" {other_item}"),
            Segment(" and buys"),
            Segment(f" {e}"),
            Segment(" more, so"),
            Segment(f" {second} has"),
            Segment(f" {d + e}", f"{d}+{e}={d + e}"),
            Segment(f" {other_item}."),
        ]
    return segments


def arithmetic_documents(count: int, seed: int) -> list[list[Segment]]:
    """`count` stories, the same for the same seed."""
    rng = random.Random(seed)
    return [_story(rng) for _ in range(count)]


def document_text(segments: list[Segment]) -> str:
    """The document as plain text."""
    return "".join(segment.text for segment in segments)


def reasoning_at(segments: list[Segment], char_offset: int) -> str | None:
    """The arithmetic behind the number whose text covers `char_offset`, if it is computed."""
    start = 0
    for segment in segments:
        end = start + len(segment.text)
        if start <= char_offset < end:
            return segment.reasoning
        start = end
    return None

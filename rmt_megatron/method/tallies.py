"""Running sums with counts, and the one rule for their mean: Σ / count, NaN when nothing was
counted (a metric of an empty set is undefined, not 0)."""

from __future__ import annotations

import math
from collections.abc import Iterable


def mean_or_nan(total: float, count: float) -> float:
    """`total / count`, or NaN when `count` is 0."""
    return float(total / count) if count else math.nan


def mean_of(values: Iterable[float]) -> float:
    """The mean of `values`, NaN when there are none."""
    values = list(values)
    return mean_or_nan(sum(values), len(values))


class Tally:
    """Named running sums with counts (e.g. a step's rewards per tier)."""

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = {}

    def add(self, name: str, total: float, count: float = 1.0) -> None:
        entry = self._values.setdefault(name, [0.0, 0.0])
        entry[0] += total
        entry[1] += count

    def sums_and_counts(self, names: Iterable[str]) -> list[list[float]]:
        """`[[Σ, count], ...]` for `names` in order ([0, 0] for a name never added)."""
        return [list(self._values.get(name, [0.0, 0.0])) for name in names]

    def means(self, names: Iterable[str]) -> dict[str, float]:
        """`mean_or_nan` of each name."""
        names = list(names)
        return {
            name: mean_or_nan(total, count)
            for name, (total, count) in zip(names, self.sums_and_counts(names), strict=True)
        }


def paired_difference(first: Iterable[float], second: Iterable[float]) -> dict[str, float]:
    """Mean of `first - second` over paired values and its standard error (sample std / √n):
    {"mean", "se", "n"}; NaN where undefined (no pairs; one pair for the SE)."""
    differences = [a - b for a, b in zip(first, second, strict=True)]
    n = len(differences)
    mean = mean_or_nan(sum(differences), n)
    if n < 2:
        return {"mean": mean, "se": math.nan, "n": n}
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1)
    return {"mean": mean, "se": math.sqrt(variance / n), "n": n}

"""How a table cell shows a measure over seeds, one rule for every table of the replication."""

from __future__ import annotations

import math

import numpy as np


def mean_std(values: list[float], spec: str = ".3f") -> str:
    """ "mean ± std" over seeds (sample std), the value alone for one, "–" for none; a missing
    value (None or NaN: a seed without that measure) is left out."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return "–"
    if len(kept) == 1:
        return format(kept[0], spec)
    return f"{format(np.mean(kept), spec)} ± {format(np.std(kept, ddof=1), spec)}"

"""Where every benchmark puts its measurements: one CSV per benchmark under
benchmarks/results/ (or the folder `BENCHMARK_RESULTS` names: `gpu_check.sh --dry` keeps its
trial figures out of the repository), written whole (a temporary file, then a rename) and
printed."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from rmt_megatron.files import atomic_write

RESULTS = Path(os.environ.get("BENCHMARK_RESULTS", Path(__file__).resolve().parent / "results"))


def write_results(name: str, rows: list[dict], fields: list[str] | None = None) -> Path:
    """`rows` as `RESULTS/name` with the columns `fields` (default: the first row's keys), also
    printed; returns the path."""
    output = io.StringIO()
    writer = csv.DictWriter(output, fieldnames=fields or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    atomic_write(path, output.getvalue())
    print(output.getvalue() + f"written to {path}")
    return path

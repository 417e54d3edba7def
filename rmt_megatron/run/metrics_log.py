"""A run's per-step metrics log, `<save>/metrics.jsonl`: one JSON object a step,
`{"step": s, "<metric>": value, ...}` with s = 1..train_iters in order and a non-finite value
written as null. The trainer's main rank writes it; the replication's tables read it."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rmt_megatron.errors import TrainingError
from rmt_megatron.files import atomic_write

FILE_NAME = "metrics.jsonl"


def _log_path(directory: Path | str) -> Path:
    return Path(directory) / FILE_NAME


def read_metrics(directory: Path | str) -> list[dict]:
    """The rows of `directory`'s log ([] without one). A last line that is not JSON was torn by
    a crash while it was written and is dropped: its step came after the run's last checkpoint,
    as a step's row is written before that step's checkpoint. A bad line before the last raises
    `TrainingError`."""
    path = _log_path(directory)
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise TrainingError(
                f"{path} line {number} is not JSON ({line[:40]!r}): the file is damaged; "
                "remove that line"
            ) from None
    return rows


def keep_metrics_up_to(directory: Path | str, step: int) -> None:
    """Rewrite `directory`'s log (if any) with its rows up to `step` (none for step 0), so that a
    run restarting at `step` appends its own rows after them."""
    if _log_path(directory).is_file():
        kept = [row for row in read_metrics(directory) if row["step"] <= step]
        atomic_write(_log_path(directory), "".join(json.dumps(row) + "\n" for row in kept))


def append_metrics(directory: Path | str, step: int, metrics: dict[str, float]) -> None:
    """Append `step`'s row to `directory`'s log."""
    row = {"step": step, **{k: v if math.isfinite(v) else None for k, v in metrics.items()}}
    Path(directory).mkdir(parents=True, exist_ok=True)
    with _log_path(directory).open("a") as stream:
        stream.write(json.dumps(row) + "\n")

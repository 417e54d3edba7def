"""The per-step metrics log: rows kept across a restart, a crash's torn line, a damaged file."""

import math

import pytest

from rmt_megatron.errors import TrainingError
from rmt_megatron.run.metrics_log import FILE_NAME, append_metrics, keep_metrics_up_to, read_metrics


def test_a_restart_keeps_the_rows_up_to_its_step_and_appends_after_them(tmp_path):
    for step in (1, 2, 3):
        append_metrics(tmp_path, step, {"loss": step / 2, "budget": math.nan})
    keep_metrics_up_to(tmp_path, 2)
    append_metrics(tmp_path, 3, {"loss": 9.0, "budget": 40.0})
    assert read_metrics(tmp_path) == [
        {"step": 1, "loss": 0.5, "budget": None},
        {"step": 2, "loss": 1.0, "budget": None},
        {"step": 3, "loss": 9.0, "budget": 40.0},
    ]
    keep_metrics_up_to(tmp_path, 0)
    assert read_metrics(tmp_path) == []
    keep_metrics_up_to(tmp_path / "no_run", 5)  # nothing to keep: no file is made
    assert not (tmp_path / "no_run").exists()


def test_a_torn_last_line_is_dropped_and_a_damaged_earlier_one_is_named(tmp_path):
    path = tmp_path / FILE_NAME
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert read_metrics(tmp_path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(TrainingError, match=r"metrics.jsonl line 2 is not JSON"):
        read_metrics(tmp_path)

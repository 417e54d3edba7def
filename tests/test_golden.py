"""Golden numbers: the tiny preset's first three steps and an evaluation, compared with the
stored `tests/golden/tiny_cpu_first_steps.json` (see `tests/golden_run.py`, which also says how to
regenerate it). Every other end-to-end test compares one run with another; this one catches a
change that moves both sides alike (rewards, advantages, loss weighting, budget, sampling)."""

import json
import math

import pytest
from golden_run import GOLDEN, golden_argv, golden_numbers, write_data
from ranks import run_ranks

REL = 1e-5
"""Float tolerance: the pinned torch on another x86 CPU may order a reduction differently."""


def _assert_close(got, want, where: str) -> None:
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for key in want:
            _assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for index, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{where}[{index}]")
    elif isinstance(want, float) and not math.isnan(want):
        assert got == pytest.approx(want, rel=REL, abs=1e-7), where
    elif isinstance(want, float):
        assert math.isnan(got), where
    else:
        assert got == want, where


def test_the_tiny_preset_reproduces_its_golden_numbers(tmp_path):
    got = run_ranks(1, golden_numbers, golden_argv(write_data(tmp_path)))[0]
    want = json.loads(GOLDEN.read_text())
    _assert_close(json.loads(json.dumps(got)), want, "golden")

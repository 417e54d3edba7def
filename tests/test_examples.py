"""The examples run and print what their docstrings promise."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_rmt_step_walkthrough_runs():
    result = subprocess.run([sys.executable, str(EXAMPLES / "rmt_step_walkthrough.py")],
                            capture_output=True, text=True, check=True)
    out = result.stdout
    assert "budget B_t = 420 tokens" in out  # spec §3 table at t/T = 0.4
    assert "ℓ= 420 match=1 r_len=1.00 r=1.00" in out
    assert "ℓ=1260 match=1 r_len=0.00 r=0.80" in out
    assert "dual loss L = " in out

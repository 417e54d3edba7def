"""The trainer on this machine: a run stopped halfway and resumed logs bitwise what it logs
straight through.

    python benchmarks/resume_check.py OUT_DIR [pretrain_rmt.py flags, e.g. --bf16]

Runs `pretrain_rmt.py --train-iters 4` three times: straight to step 4, then to step 2 with
`--exit-interval 2`, then resumed from that checkpoint to step 4. Each writes its metrics log
(`metrics.jsonl` in its --save directory); every logged quantity of steps 1-4 except timings must
be equal as written (JSON floats, so bit for bit). Prints the compared rows and exits 1 on a
difference or a failed run. On a GPU the run takes the distributed optimizer (the default
there) and Transformer Engine's layers where TE is installed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from rmt_megatron.run.metrics_log import read_metrics

TIMINGS = ("seconds", "time", "tokens_per_s", "elapsed")
"""Substrings of the logged keys that measure time, which no two runs share."""


def run(save: Path, flags: list[str], *extra: str) -> None:
    command = [sys.executable, "pretrain_rmt.py", "--train-iters", "4", "--save", str(save)]
    print("$", " ".join([*command, *flags, *extra]), flush=True)
    subprocess.run([*command, *flags, *extra], check=True, timeout=600)


def compared(directory: Path) -> list[dict]:
    return [
        {key: value for key, value in row.items() if not any(t in key for t in TIMINGS)}
        for row in read_metrics(directory)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args, flags = parser.parse_known_args()
    straight, halves = args.out / "straight", args.out / "resumed"
    try:
        run(straight, flags)
        run(halves, flags, "--exit-interval", "2")
        run(halves, flags, "--load", str(halves))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        print(f"resume check: a run failed: {error}")
        return 1
    want, got = compared(straight), compared(halves)
    for row in got:
        print(row)
    if [row["step"] for row in got] != [1, 2, 3, 4] or got != want:
        print("resume check: FAILED, the resumed run logged other numbers than the straight one")
        return 1
    print("resume check: steps 1-4 equal bitwise, straight and resumed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The comparison of `more_seeds_valid.sh`: RMT − RPT reasoning accuracy under the B = 40 prompt
on the same 400 validation positions, for seeds 1-5, paired over positions (± SE) with each
seed's difference and its SE over seeds.

    python experiments/more_seeds_valid.py runs/budget_floor
"""

import json
import sys
from pathlib import Path

from paired_lines import print_paired

SEEDS = (1, 2, 3, 4, 5)


def main(out: Path) -> None:
    def load(arm: str) -> list[dict]:
        return [json.loads((out / f"eval_{arm}_seed{s}_p40.json").read_text()) for s in SEEDS]

    rmt, rpt = load("rmt"), load("rpt")
    for name, reports in (("RMT", rmt), ("RPT", rpt)):
        lengths = ", ".join(f"{r['mean_reasoning_length']:.1f}" for r in reports)
        print(f"{name}: mean reasoning length per seed {lengths}")
    print_paired("RMT − RPT, prompt 40", rmt, rpt)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

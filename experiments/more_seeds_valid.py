"""The comparison of `more_seeds_valid.sh`: RMT − RPT reasoning accuracy under the B = 40 prompt
on the same 400 validation positions, for seeds 1-5, paired over positions (± SE) with each
seed's difference and its SE over seeds.

    python experiments/more_seeds_valid.py runs/budget_floor
"""

import sys
from pathlib import Path

from paired_lines import load_reports, print_paired

SEEDS = (1, 2, 3, 4, 5)


def main(out: Path) -> None:
    rmt = load_reports(out, "rmt_seed{s}_p40", SEEDS)
    rpt = load_reports(out, "rpt_seed{s}_p40", SEEDS)
    for name, reports in (("RMT", rmt), ("RPT", rpt)):
        lengths = ", ".join(f"{r['mean_reasoning_length']:.1f}" for r in reports)
        print(f"{name}: mean reasoning length per seed {lengths}")
    print_paired("RMT − RPT, prompt 40", rmt, rpt)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

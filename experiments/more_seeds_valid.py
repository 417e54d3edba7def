"""The comparison of `more_seeds_valid.sh`: RMT − RPT reasoning accuracy under the B = B_T prompt
on the same 400 validation positions, for seeds 1-5, paired over positions (± SE) with each
seed's difference and its SE over seeds.

    python experiments/more_seeds_valid.py runs/budget_floor 40
"""

import sys
from pathlib import Path

from paired_lines import load_reports, print_paired

SEEDS = (1, 2, 3, 4, 5)


def main(out: Path, final_budget: int) -> None:
    rmt = load_reports(out, f"rmt_seed{{s}}_p{final_budget}", SEEDS)
    rpt = load_reports(out, f"rpt_seed{{s}}_p{final_budget}", SEEDS)
    for name, reports in (("RMT", rmt), ("RPT", rpt)):
        lengths = ", ".join(f"{r['mean_reasoning_length']:.1f}" for r in reports)
        print(f"{name}: mean reasoning length per seed {lengths}")
    print_paired(f"RMT − RPT, prompt {final_budget}", rmt, rpt)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))

"""The comparison of `budget_floor_valid.sh FLOOR`: reasoning accuracy on the same 400
validation positions, RMT trained with B_T = FLOOR against RPT (both under the B = FLOOR
prompt), and the replication's RMT (B_T = 40) against RPT under the B = 40 prompt. Differences
are paired over positions (± SE over positions) with each seed's difference beside them (± SE
over seeds).

    python experiments/budget_floor_valid.py runs/budget_floor 48
"""

import sys
from pathlib import Path

from paired_lines import load_reports, print_arm_table, print_paired

SEEDS = (1, 2, 3)


def main(out: Path, floor: int) -> None:
    rmt, rpt = f"RMT B_T={floor}, prompt {floor}", f"RPT, prompt {floor}"
    arms = {
        rmt: load_reports(out, f"rmt_b{floor}_seed{{s}}_p{floor}", SEEDS),
        rpt: load_reports(out, f"rpt_seed{{s}}_p{floor}", SEEDS),
        "RMT B_T=40, prompt 40": load_reports(out, "rmt_seed{s}_p40", SEEDS),
        "RPT, prompt 40": load_reports(out, "rpt_seed{s}_p40", SEEDS),
    }
    print_arm_table(arms)
    pairs = (
        (rmt, rpt),
        ("RMT B_T=40, prompt 40", "RPT, prompt 40"),
        (rmt, "RMT B_T=40, prompt 40"),
    )
    for first, second in pairs:
        print_paired(f"{first} − {second}", arms[first], arms[second])


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))

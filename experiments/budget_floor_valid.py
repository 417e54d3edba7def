"""The comparison of `budget_floor_valid.sh FLOOR`: reasoning accuracy on the same 400
validation positions, RMT trained with B_T = FLOOR against RPT (both under the B = FLOOR
prompt), and the replication's RMT (its B_T, 40) against RPT under that prompt. Differences
are paired over positions (± SE over positions) with each seed's difference beside them (± SE
over seeds).

    python experiments/budget_floor_valid.py runs/budget_floor 48 40
"""

import sys
from pathlib import Path

from paired_lines import load_reports, print_arm_table, print_paired

SEEDS = (1, 2, 3)


def main(out: Path, floor: int, final_budget: int) -> None:
    rmt, rpt = f"RMT B_T={floor}, prompt {floor}", f"RPT, prompt {floor}"
    replicated = f"RMT B_T={final_budget}, prompt {final_budget}"
    replicated_rpt = f"RPT, prompt {final_budget}"
    arms = {
        rmt: load_reports(out, f"rmt_b{floor}_seed{{s}}_p{floor}", SEEDS),
        rpt: load_reports(out, f"rpt_seed{{s}}_p{floor}", SEEDS),
        replicated: load_reports(out, f"rmt_seed{{s}}_p{final_budget}", SEEDS),
        replicated_rpt: load_reports(out, f"rpt_seed{{s}}_p{final_budget}", SEEDS),
    }
    print_arm_table(arms)
    pairs = ((rmt, rpt), (replicated, replicated_rpt), (rmt, replicated))
    for first, second in pairs:
        print_paired(f"{first} − {second}", arms[first], arms[second])


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))

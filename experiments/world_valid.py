"""The comparison of `world_valid.sh`: on the same 400 validation positions, the base model's
reasoning against its argmax per kind of position, then RMT and RPT (seeds given) under the
B = B_T prompt and under no budget clause, with paired differences (± SE over positions) and
each seed's difference (± SE over seeds).

    python experiments/world_valid.py runs/world_valid B_T SEED...
"""

import json
import sys
from pathlib import Path

from bases_valid import print_base
from paired_lines import load_reports, print_arm_table, print_paired


def main(out: Path, final_budget: int, seeds: tuple[int, ...]) -> None:
    for prompt in (str(final_budget), "none"):
        print_base(
            f"base, prompt {prompt}", json.loads((out / f"eval_base_p{prompt}.json").read_text())
        )
    print()
    arms = {
        f"{arm.upper()}, prompt {prompt}": load_reports(out, f"{arm}_seed{{s}}_p{prompt}", seeds)
        for arm in ("rmt", "rpt")
        for prompt in (str(final_budget), "none")
    }
    print_arm_table(arms)
    rmt, rpt = f"RMT, prompt {final_budget}", f"RPT, prompt {final_budget}"
    for first, second in (
        (rmt, rpt),
        (rmt, "RPT, prompt none"),
        ("RMT, prompt none", "RPT, prompt none"),
    ):
        print_paired(f"{first} − {second}", arms[first], arms[second])


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), tuple(int(s) for s in sys.argv[3:]))

"""The comparison of `budget_floor_valid.sh`: reasoning accuracy on the same 400 validation
positions, RMT trained with B_T = 48 against RPT (both under the B = 48 prompt), and the
replication's RMT (B_T = 40) against RPT under the B = 40 prompt. Differences are paired over
positions (± SE over positions) with each seed's difference beside them (± SE over seeds).

    python experiments/budget_floor_valid.py runs/budget_floor
"""

import json
import sys
from pathlib import Path

import numpy as np
from paired_lines import print_paired

SEEDS = (1, 2, 3)


def main(out: Path) -> None:
    def load(name: str) -> list[dict]:
        return [json.loads((out / f"eval_{name.format(s=s)}.json").read_text()) for s in SEEDS]

    arms = {
        "RMT B_T=48, prompt 48": load("rmt_b48_seed{s}_p48"),
        "RPT, prompt 48": load("rpt_seed{s}_p48"),
        "RMT B_T=40, prompt 40": load("rmt_seed{s}_p40"),
        "RPT, prompt 40": load("rpt_seed{s}_p40"),
    }
    positions = {
        tuple((o["document"], o["position"]) for o in report["outcomes"])
        for reports in arms.values()
        for report in reports
    }
    if len(positions) != 1:
        raise SystemExit("the evaluations are not on the same positions")
    print("| arm | all positions (per seed) | sum digits (per seed) | length (per seed) |")
    print("|---|---|---|---|")
    for name, reports in arms.items():
        cells = []
        for kind in (None, "computed"):
            values = [
                np.mean(
                    [o["reasoning_accuracy"] for o in r["outcomes"] if kind in (None, o["kind"])]
                )
                for r in reports
            ]
            cells.append(f"{np.mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})")
        lengths = ", ".join(f"{r['mean_reasoning_length']:.1f}" for r in reports)
        print(f"| {name} | {cells[0]} | {cells[1]} | {lengths} |")
    print()
    pairs = (
        ("RMT B_T=48, prompt 48", "RPT, prompt 48"),
        ("RMT B_T=40, prompt 40", "RPT, prompt 40"),
        ("RMT B_T=48, prompt 48", "RMT B_T=40, prompt 40"),
    )
    for first, second in pairs:
        print_paired(f"{first} − {second}", arms[first], arms[second])


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""The comparison of `world_valid.sh`: on the same 400 validation positions under the B = 40
prompt, the base's reasoning against its own argmax (per kind of position), and RMT − RPT
reasoning accuracy, paired over positions (± SE) with each seed's difference.

    python experiments/world_valid.py runs/world_valid
"""

import json
import sys
from pathlib import Path

import numpy as np
from paired_lines import load_reports, print_arm_table, print_paired

SEEDS = (1, 2, 3)


def print_base(report: dict) -> None:
    """The base's reasoning − argmax per kind, paired over the same positions (± SE)."""
    print(f"base: mean reasoning length {report['mean_reasoning_length']:.1f}")
    for kind in (None, "computed", "operand", "text"):
        chosen = [o for o in report["outcomes"] if kind in (None, o["kind"])]
        diff = np.array([o["reasoning_accuracy"] - o["ntp_accuracy"] for o in chosen])
        reasoning = np.mean([o["reasoning_accuracy"] for o in chosen])
        argmax = np.mean([o["ntp_accuracy"] for o in chosen])
        se = diff.std(ddof=1) / np.sqrt(len(diff))
        print(
            f"  {kind or 'all'} (n={len(chosen)}): reasoning {reasoning:.3f}, argmax "
            f"{argmax:.3f}, difference {diff.mean():+.3f} ± {se:.3f}"
        )
    print()


def main(out: Path) -> None:
    print_base(json.loads((out / "eval_base_p40.json").read_text()))
    arms = {
        "RMT, prompt 40": load_reports(out, "rmt_seed{s}_p40", SEEDS),
        "RPT, prompt 40": load_reports(out, "rpt_seed{s}_p40", SEEDS),
    }
    print_arm_table(arms)
    print_paired("RMT − RPT, prompt 40", arms["RMT, prompt 40"], arms["RPT, prompt 40"])


if __name__ == "__main__":
    main(Path(sys.argv[1]))

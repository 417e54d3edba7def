"""Candidate base models on the same 400 validation positions under the B = 40 prompt: per kind
of position, reasoning accuracy against the same model's argmax (paired difference ± SE over
positions) and the share of reasoning rollouts with no boxed answer (`valid_format` 0: a
rollout that loops until the length limit never boxes one). Reads what `bases_valid.sh` wrote:

    python experiments/bases_valid.py runs/bases_valid NAME...
"""

import json
import sys
from pathlib import Path

import numpy as np

KINDS = (None, "computed", "operand", "text")


def print_base(name: str, report: dict) -> None:
    """One line per kind of position for the base `name`."""
    print(f"{name}: mean reasoning length {report['mean_reasoning_length']:.1f}")
    for kind in KINDS:
        chosen = [o for o in report["outcomes"] if kind in (None, o["kind"])]
        diff = np.array([o["reasoning_accuracy"] - o["ntp_accuracy"] for o in chosen])
        reasoning = np.mean([o["reasoning_accuracy"] for o in chosen])
        argmax = np.mean([o["ntp_accuracy"] for o in chosen])
        unboxed = np.mean([not o["valid_format"] for o in chosen])
        se = diff.std(ddof=1) / np.sqrt(len(diff))
        print(
            f"  {kind or 'all'} (n={len(chosen)}): reasoning {reasoning:.3f}, argmax "
            f"{argmax:.3f}, difference {diff.mean():+.3f} ± {se:.3f}, no answer {unboxed:.2f}"
        )


def main(out: Path, names: list[str]) -> None:
    reports = {name: json.loads((out / f"eval_{name}.json").read_text()) for name in names}
    positions = {
        tuple((o["document"], o["position"]) for o in r["outcomes"]) for r in reports.values()
    }
    if len(positions) != 1:
        raise SystemExit("the evaluations are not on the same positions")
    for name, report in reports.items():
        print_base(name, report)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])

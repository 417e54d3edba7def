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
from paired_lines import require_same_positions


def print_base(name: str, report: dict) -> None:
    """One line for all positions, then one per kind of position, for the base `name`: the
    evaluation report's own per-kind means and paired difference."""
    outcomes = report["outcomes"]
    rows = {
        "all": {
            "positions": len(outcomes),
            **{
                key: np.mean([o[key] for o in outcomes])
                for key in ("reasoning_accuracy", "ntp_accuracy", "valid_format")
            },
            "reasoning_minus_argmax": report["reasoning_minus_argmax"],
        },
        **report["kinds"],
    }
    print(f"{name}: mean reasoning length {report['mean_reasoning_length']:.1f}")
    for kind, row in rows.items():
        diff = row["reasoning_minus_argmax"]
        print(
            f"  {kind} (n={row['positions']}): reasoning {row['reasoning_accuracy']:.3f}, argmax "
            f"{row['ntp_accuracy']:.3f}, difference {diff['mean']:+.3f} ± {diff['se']:.3f}, "
            f"no answer {1 - row['valid_format']:.2f}"
        )


def main(out: Path, names: list[str]) -> None:
    reports = [json.loads((out / f"eval_{name}.json").read_text()) for name in names]
    require_same_positions(reports)
    for name, report in zip(names, reports, strict=True):
        print_base(name, report)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])

"""The comparison of `more_seeds_valid.sh`: RMT − RPT reasoning accuracy under the B = 40 prompt
on the same 400 validation positions, for seeds 1-5, paired over positions (± SE) with each
seed's difference and its SE over seeds.

    python experiments/more_seeds_valid.py runs/budget_floor
"""

import json
import sys
from pathlib import Path

import numpy as np

from rmt_megatron.run.replication_report import _seed_means, paired

SEEDS = (1, 2, 3, 4, 5)
REASONING = ("reasoning_accuracy", "reasoning_accuracy")


def main(out: Path) -> None:
    def load(arm: str) -> list[dict]:
        return [json.loads((out / f"eval_{arm}_seed{s}_p40.json").read_text()) for s in SEEDS]

    rmt, rpt = load("rmt"), load("rpt")
    for name, reports in (("RMT", rmt), ("RPT", rpt)):
        lengths = ", ".join(f"{r['mean_reasoning_length']:.1f}" for r in reports)
        print(f"{name}: mean reasoning length per seed {lengths}")
    for kind in (None, "computed"):
        mean, se, n = paired(rmt, rpt, REASONING, kind)
        a, b = _seed_means(rmt, rpt, REASONING, kind)
        per_seed = np.array(a) - np.array(b)
        print(
            f"RMT − RPT, prompt 40, {kind or 'all'} (n={n}): {mean:+.3f} ± {se:.3f}; per seed "
            f"{', '.join(f'{d:+.3f}' for d in per_seed)} "
            f"(± {per_seed.std(ddof=1) / np.sqrt(len(per_seed)):.3f} over seeds)"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))

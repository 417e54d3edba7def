"""Where RMT's and RPT's training parts: per quarter of training, each arm's mean over seeds of
the match reward on the medium tier (on the training split under the base model, 97% of its
positions are sum digits), the mean reasoning length, the share of hard-tier prompts and the
truncation rate, from the runs' `metrics.jsonl`; then the medium-tier reward and the length of
the last quarter per seed.

    python experiments/training_paths.py runs/replicate/runs [more run directories ...]
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

MEASURES = ("match_reward/medium", "reasoning_length", "tier_share/hard", "truncated")
QUARTERS = ((1, 25), (26, 50), (51, 75), (76, 100))


def quarter_means(metrics: list[dict], measure: str) -> list[float]:
    """The mean of `measure` over the logged steps of each quarter (steps without it skipped)."""
    means = []
    for first, last in QUARTERS:
        values = [
            m[measure] for m in metrics if first <= m["step"] <= last and m.get(measure) is not None
        ]
        means.append(float(np.mean(values)) if values else float("nan"))
    return means


def main(directories: list[Path]) -> None:
    runs: dict[str, dict[int, list[dict]]] = defaultdict(dict)
    for parent in directories:
        for run in sorted(parent.glob("*_seed*")):
            if (run / "metrics.jsonl").is_file() and not run.name.startswith("ntp"):
                arm, seed = run.name.rsplit("_seed", 1)
                runs[arm][int(seed)] = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    for measure in MEASURES:
        print(f"{measure}, mean over seeds per quarter of training (steps 1-25 ... 76-100):")
        for arm, seeds in runs.items():
            table = np.array([quarter_means(m, measure) for m in seeds.values()])
            print(
                f"  {arm:18s} ({len(seeds)} seeds) " + " ".join(f"{v:7.3f}" for v in table.mean(0))
            )
    print("last quarter per seed: medium-tier match reward / reasoning length")
    for arm, seeds in runs.items():
        last = {seed: [quarter_means(m, x)[-1] for x in MEASURES[:2]] for seed, m in seeds.items()}
        cells = [f"{seed}: {reward:.3f} / {length:.1f}" for seed, (reward, length) in last.items()]
        print(f"  {arm:18s} " + ", ".join(cells))


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])

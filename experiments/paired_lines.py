"""What the validation experiments print: a table of arms (reasoning accuracy per seed, on all
positions and on sum digits, and length), and paired differences of reasoning accuracy over the
same positions (± SE over positions) with each seed's difference and its SE over seeds."""

import json
from pathlib import Path

import numpy as np

from rmt_megatron.study.replication_report import _seed_means, paired

REASONING = ("reasoning_accuracy", "reasoning_accuracy")


def load_reports(out: Path, name: str, seeds: tuple[int, ...]) -> list[dict]:
    """The evaluation reports `out`/eval_`name`.json, `name` formatted with each seed `s`."""
    return [json.loads((out / f"eval_{name.format(s=s)}.json").read_text()) for s in seeds]


def require_same_positions(reports: list[dict]) -> None:
    """Exits unless every evaluation report in `reports` was made on the same positions."""
    positions = {tuple((o["document"], o["position"]) for o in r["outcomes"]) for r in reports}
    if len(positions) != 1:
        raise SystemExit("the evaluations are not on the same positions")


def print_arm_table(arms: dict[str, list[dict]]) -> None:
    """A markdown row per arm (its reports, one per seed): reasoning accuracy on all positions
    and on sum digits, and mean reasoning length, each per seed. Exits if the arms were not
    evaluated on the same positions."""
    require_same_positions([report for reports in arms.values() for report in reports])
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


def print_paired(label: str, first: list[dict], second: list[dict]) -> None:
    """One line per kind of position (all, then sum digits) for `first` − `second`, both lists
    of evaluation reports, one per seed in the same seed order."""
    for kind in (None, "computed"):
        mean, se, n = paired(first, second, REASONING, kind)
        a, b = _seed_means(first, second, REASONING, kind)
        per_seed = np.array(a) - np.array(b)
        print(
            f"{label}, {kind or 'all'} (n={n}): {mean:+.3f} ± {se:.3f}; per seed "
            f"{', '.join(f'{d:+.3f}' for d in per_seed)} "
            f"(± {per_seed.std(ddof=1) / np.sqrt(len(per_seed)):.3f} over seeds)"
        )

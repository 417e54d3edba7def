"""The post-training table of the replication, from the `study.posttrain` reports.

For each source checkpoint (the base, and the NTP, RPT and RMT runs of each seed; the base is
post-trained with each seed too), the held-out answer accuracy before post-training, after the
SFT phase and after GRPO, mean ± std over seeds; then paired differences between sources on the
same problems: the mean over problems of the seed-averaged difference ± its SE over problems, the
per-seed differences (same post-training seed on both sides) and their mean ± SE over seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rmt_megatron.method.tallies import paired_difference
from rmt_megatron.study.design import POSTTRAIN_COMPARISONS, POSTTRAIN_SOURCES
from rmt_megatron.study.table_cells import mean_std

PHASES = ("before", "after_sft", "after_grpo")


def posttrain_path(work_dir: Path, source: str, seed: int) -> Path:
    """Where the replication keeps the post-training report of `source` with `seed`."""
    return work_dir / "posttrain" / f"{source}_seed{seed}.json"


def rows(reports: dict[tuple[str, int], dict]) -> list[dict]:
    """results.csv rows: arm = source, measure = posttrain/<phase>, value = accuracy."""
    return [
        dict(
            arm=source,
            seed=seed,
            prompt="",
            measure=f"posttrain/{phase}",
            value=r[phase]["accuracy"],
        )
        for (source, seed), r in sorted(reports.items())
        for phase in PHASES
    ]


def lines(reports: dict[tuple[str, int], dict], seeds: tuple[int, ...]) -> list[str]:
    """The markdown section: the table, then the paired differences."""
    if not reports:
        return []
    settings = next(iter(reports.values()))["settings"]
    out = [
        "",
        "## Post-training",
        "",
        f'Question-answer problems ("What is a + b?", the whole sum boxed), a format no '
        f"mid-training run saw: {settings['sft_iters']} SFT steps of {settings['sft_batch']} "
        f"worked solutions, then {settings['grpo_iters']} GRPO steps of "
        f"{settings['prompts_per_step']} problems × {settings['group_size']} samples, from "
        f"each checkpoint with the same settings and seeds; accuracy on "
        f"{settings['eval_problems']} {settings['eval_split']} problems (greedy).",
        "",
        "| source | before | after SFT | after GRPO | GRPO reward, last 10 steps | "
        "response tokens after GRPO |",
        "|---|---|---|---|---|---|",
    ]
    for label, source in POSTTRAIN_SOURCES:
        mine = [reports[source, s] for s in seeds if (source, s) in reports]
        if not mine:
            continue
        cells = [mean_std([r[phase]["accuracy"] for r in mine]) for phase in PHASES]
        reward = mean_std(
            [
                float(np.mean([s["reward"] for s in r["grpo_steps"][-10:]]))
                for r in mine
                if r["grpo_steps"]
            ]
        )
        length = mean_std([r["after_grpo"]["mean_response_length"] for r in mine], ".1f")
        out.append(f"| {label} | " + " | ".join(cells) + f" | {reward} | {length} |")
    out += [
        "",
        "| comparison | phase | difference ± SE (problems) | problems | per seed | "
        "mean ± SE (seeds) |",
        "|---|---|---|---|---|---|",
    ]
    for first, second in POSTTRAIN_COMPARISONS:
        common = [s for s in seeds if (first, s) in reports and (second, s) in reports]
        if not common:
            continue
        for phase in ("after_sft", "after_grpo"):
            a = [np.array(reports[first, s][phase]["outcomes"], dtype=float) for s in common]
            b = [np.array(reports[second, s][phase]["outcomes"], dtype=float) for s in common]
            problems = paired_difference(np.mean(a, axis=0).tolist(), np.mean(b, axis=0).tolist())
            per_seed = [float(x.mean() - y.mean()) for x, y in zip(a, b, strict=True)]
            over = paired_difference([float(x.mean()) for x in a], [float(y.mean()) for y in b])
            over_text = f"{over['mean']:+.3f} ± {over['se']:.3f}" if len(common) > 1 else "–"
            out.append(
                f"| {first} − {second} | {phase.replace('_', ' ')} | "
                f"{problems['mean']:+.3f} ± {problems['se']:.3f} | {problems['n']} | "
                f"{' '.join(f'{d:+.3f}' for d in per_seed)} | {over_text} |"
            )
    return out


def plot(plt, reports: dict[tuple[str, int], dict], seeds: tuple[int, ...], path: Path) -> None:
    """Bars: accuracy per phase for each source, mean over seeds with their std."""
    present = [
        (label, s) for label, s in POSTTRAIN_SOURCES if any((s, k) in reports for k in seeds)
    ]
    if not present:
        return
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(present)
    for index, (label, source) in enumerate(present):
        values = [
            [reports[source, k][p]["accuracy"] for k in seeds if (source, k) in reports]
            for p in PHASES
        ]
        means = [float(np.mean(v)) for v in values]
        errors = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
        axis.bar(np.arange(len(PHASES)) + index * width, means, width, yerr=errors, label=label)
    axis.set_xticks(np.arange(len(PHASES)) + 0.4 - width / 2, [p.replace("_", " ") for p in PHASES])
    axis.set_ylabel("held-out answer accuracy")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

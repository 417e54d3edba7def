"""The replication's tables and plots, from its evaluation reports and run logs.

Writes into `settings.output_dir`:
- `results.csv`: one row per (arm, seed, prompt, measure), every number the tables show;
- `tables.md`: the main table and the ablations (mean ± std over seeds), then paired
  comparisons: the mean over positions of the seed-averaged difference of two arms on the same
  positions, ± its standard error over positions (n = positions); then the post-training table
  (`study.posttrain_report`);
- `*.png` plots where matplotlib is installed (`pip install matplotlib`): validation accuracy vs
  step, reasoning length vs step with B_t, accuracy per tier, ablation bars, post-training
  bars;
- the header of `tables.md` records the command, machine, commit and time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rmt_megatron.files import atomic_write
from rmt_megatron.method.tallies import paired_difference
from rmt_megatron.run.metrics_log import read_metrics
from rmt_megatron.study import posttrain_report

TIERS = ("easy", "medium", "hard")
MODES = {"reasoning": "reasoning_accuracy", "argmax": "ntp_accuracy"}
"""How a table names an accuracy -> the evaluation report's key."""


def run_dir(work_dir: Path, arm: str, seed: int) -> Path:
    """Where the replication trains `arm` with `seed`."""
    return work_dir / "runs" / f"{arm}_seed{seed}"


def eval_path(work_dir: Path, arm: str, seed: int | None, prompt: str) -> Path:
    """Where the replication keeps the test evaluation of `arm`/`seed` under `prompt`."""
    name = arm if seed is None else f"{arm}_seed{seed}"
    return work_dir / "evals" / f"{name}_{prompt}.json"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _position_values(report: dict, measure: str, kind: str | None = None) -> np.ndarray:
    return np.array(
        [o[measure] for o in report["outcomes"] if kind is None or o["kind"] == kind], dtype=float
    )


def _cells(report: dict) -> dict[str, float]:
    """The table's numbers of one evaluation report."""
    cells = {
        "all/reasoning": float(_position_values(report, "reasoning_accuracy").mean()),
        "all/argmax": float(_position_values(report, "ntp_accuracy").mean()),
        "length": report["mean_reasoning_length"],
    }
    for tier in TIERS:
        split = report["splits"][tier]
        cells[f"{tier}/reasoning"] = split["reasoning_accuracy"]
        cells[f"{tier}/argmax"] = split["ntp_accuracy"]
    for kind, row in report.get("kinds", {}).items():
        cells[f"{kind}/reasoning"] = row["reasoning_accuracy"]
        cells[f"{kind}/argmax"] = row["ntp_accuracy"]
    return cells


def _mean_std(values: list[float], spec: str = ".3f") -> str:
    """ "mean ± std" over seeds (sample std), the value alone for one, "–" for none."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return format(values[0], spec)
    return f"{format(np.mean(values), spec)} ± {format(np.std(values, ddof=1), spec)}"


def paired(first: list[dict], second: list[dict], measures: tuple[str, str], kind=None):
    """Mean and SE over positions of (seed-mean of `first`'s measure) − (seed-mean of
    `second`'s), both over the same positions. The SE is over positions only: seed-to-seed
    variation of a method shows in the per-seed differences beside it (`_seed_means`)."""
    a = np.mean([_position_values(r, measures[0], kind) for r in first], axis=0)
    b = np.mean([_position_values(r, measures[1], kind) for r in second], axis=0)
    result = paired_difference(a.tolist(), b.tolist())
    return result["mean"], result["se"], result["n"]


class Collected:
    """Every evaluation report and run log of the replication, by arm, seed and prompt."""

    def __init__(self, settings, arms, base: str, prompts) -> None:
        self.settings, self.prompts = settings, prompts
        self.arms = [a for a in arms if a.table in settings.tables]
        self.base = {p: _load(eval_path(settings.work_dir, base, None, p)) for p in prompts}
        self.reports: dict[tuple[str, int, str], dict] = {}
        self.metrics: dict[tuple[str, int], list[dict]] = {}
        self.curves: dict[tuple[str, int], list[dict]] = {}
        self.wall: dict[tuple[str, int], float] = {}
        for arm in self.arms:
            for seed in settings.seeds:
                directory = run_dir(settings.work_dir, arm.name, seed)
                self.metrics[arm.name, seed] = read_metrics(directory)
                self.curves[arm.name, seed] = [
                    json.loads(p.read_text()) for p in sorted((directory / "eval").glob("iter_*"))
                ]
                wall = _load(directory / "wall_time.json")
                self.wall[arm.name, seed] = wall["seconds"] if wall else math.nan
                for prompt in prompts:
                    report = _load(eval_path(settings.work_dir, arm.name, seed, prompt))
                    if report is not None:
                        self.reports[arm.name, seed, prompt] = report
        self.posttrain: dict[tuple[str, int], dict] = {}
        if "posttrain" in settings.tables:
            for _, source in posttrain_report.SOURCES:
                for seed in settings.seeds:
                    path = posttrain_report.posttrain_path(settings.work_dir, source, seed)
                    report = _load(path)
                    if report is not None:
                        self.posttrain[source, seed] = report

    def reports_of(self, arm: str, prompt: str) -> list[dict]:
        """The evaluations of `arm` under `prompt`, one per seed that has one (the base: one)."""
        if arm == "base":
            return [self.base[prompt]] if self.base[prompt] is not None else []
        return [
            self.reports[arm, s, prompt]
            for s in self.settings.seeds
            if (arm, s, prompt) in self.reports
        ]


def _rows(collected: Collected) -> list[dict]:
    """Long-form rows: arm, seed, prompt, measure, value."""
    rows = []
    for prompt, report in collected.base.items():
        if report is not None:
            for measure, value in _cells(report).items():
                rows.append(dict(arm="base", seed="", prompt=prompt, measure=measure, value=value))
    for (arm, seed, prompt), report in sorted(collected.reports.items()):
        for measure, value in _cells(report).items():
            rows.append(dict(arm=arm, seed=seed, prompt=prompt, measure=measure, value=value))
    for (arm, seed), metrics in sorted(collected.metrics.items()):
        run_measures = {
            "rollout_tokens": sum(m["rollout_tokens"] for m in metrics),
            "trained_tokens": sum(m["loss_tokens"] for m in metrics),
            "steps": len(metrics),
            "wall_seconds": collected.wall[arm, seed],
        }
        for measure, value in run_measures.items():
            rows.append(dict(arm=arm, seed=seed, prompt="", measure=measure, value=value))
    return rows + posttrain_report.rows(collected.posttrain)


COLUMNS = ("all", *TIERS, "computed", "operand", "text")
"""The accuracy columns of a table: all positions, the entropy tiers, the corpus's kinds."""


def _table(collected: Collected, entries: list[tuple[str, str, str, str]]) -> list[str]:
    """Markdown rows for (label, arm, prompt, "reasoning"|"argmax") entries."""
    header = "| method | prompt | " + " | ".join(COLUMNS)
    header += " | length | rollout tokens | wall s |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 5)]
    for label, arm, prompt, mode in entries:
        reports = collected.reports_of(arm, prompt)
        if not reports:
            continue
        cells = [_cells(r) for r in reports]
        values = [_mean_std([c.get(f"{key}/{mode}", math.nan) for c in cells]) for key in COLUMNS]
        length = _mean_std([c["length"] for c in cells], ".1f") if mode == "reasoning" else "–"
        runs = [(arm, s) for s in collected.settings.seeds if (arm, s) in collected.metrics]
        tokens = _mean_std(
            [sum(m["rollout_tokens"] for m in collected.metrics[r]) for r in runs], ".0f"
        )
        wall = _mean_std([collected.wall[r] for r in runs], ".0f")
        shown = "–" if mode == "argmax" else prompt
        lines.append(
            f"| {label} | {shown} | " + " | ".join(values) + f" | {length} | "
            f"{tokens if runs else '0'} | {wall if runs else '–'} |"
        )
    return lines


def _paired_lines(collected: Collected, comparisons) -> list[str]:
    lines = [
        "| comparison | kind | difference ± SE (positions) | positions | per seed | "
        "mean ± SE (seeds) |",
        "|---|---|---|---|---|---|",
    ]
    for label, (arm_a, prompt_a, mode_a), (arm_b, prompt_b, mode_b), kinds in comparisons:
        first = collected.reports_of(arm_a, prompt_a)
        second = collected.reports_of(arm_b, prompt_b)
        if not first or not second:
            continue
        measures = (MODES[mode_a], MODES[mode_b])
        for kind in kinds:
            mean, se, n = paired(first, second, measures, kind)
            a, b = _seed_means(first, second, measures, kind)
            per_seed = [x - y for x, y in zip(a, b, strict=True)]
            seeds = paired_difference(a, b)
            over_seeds = f"{seeds['mean']:+.3f} ± {seeds['se']:.3f}" if len(per_seed) > 1 else "–"
            lines.append(
                f"| {label} | {kind or 'all'} | {mean:+.3f} ± {se:.3f} | {n} | "
                f"{' '.join(f'{d:+.3f}' for d in per_seed)} | {over_seeds} |"
            )
    return lines


def _seed_means(first: list[dict], second: list[dict], measures, kind):
    """Each seed's mean of `first`'s and of `second`'s measure, paired seed by seed (an unseeded
    side, the base, pairs with each seed of the other)."""
    if len(first) == 1:
        first = first * len(second)
    elif len(second) == 1:
        second = second * len(first)
    return (
        [float(_position_values(r, measures[0], kind).mean()) for r in first],
        [float(_position_values(r, measures[1], kind).mean()) for r in second],
    )


def _header(settings) -> list[str]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    import torch

    return [
        "# Replication tables",
        "",
        f"- command: `python -m rmt_megatron.replicate {' '.join(sys.argv[1:])}`".rstrip(),
        f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads in the "
        f"report process, runs with {settings.threads} (`{platform.platform()}`), torch "
        f"{torch.__version__}",
        f"- commit: {commit or 'unknown'}; written "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- seeds {list(settings.seeds)}, {settings.train_iters} steps, "
        f"{settings.eval_positions} test positions (eval seed 0, difficulty from the shipped "
        f"base model), prompt 'budget' = B_T = {settings.final_budget} in the prompt",
        "",
        "Cells: accuracy, mean ± std over seeds; 'all' is the mean over all positions, the "
        "tiers are RPT's nested entropy splits, the kinds are the corpus's.",
        "",
    ]


def write_report(settings, arms, base: str, prompts) -> None:
    collected = Collected(settings, arms, base, prompts)
    output = settings.output_dir
    output.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["arm", "seed", "prompt", "measure", "value"])
    writer.writeheader()
    writer.writerows(_rows(collected))
    atomic_write(output / "results.csv", buffer.getvalue())
    lines = _header(settings)
    if "main" in settings.tables:
        lines += ["## Main table", ""]
        lines += _table(
            collected,
            [
                ("base, plain argmax", "base", "budget", "argmax"),
                ("base, reasoning (no training)", "base", "budget", "reasoning"),
                ("base, reasoning (no training)", "base", "none", "reasoning"),
                ("NTP (compute-matched), argmax", "ntp", "budget", "argmax"),
                ("NTP (compute-matched), reasoning", "ntp", "none", "reasoning"),
                ("RPT", "rpt", "none", "reasoning"),
                ("RPT", "rpt", "budget", "reasoning"),
                ("RMT", "rmt", "budget", "reasoning"),
                ("RMT", "rmt", "none", "reasoning"),
                ("RPT, argmax", "rpt", "none", "argmax"),
                ("RMT, argmax", "rmt", "budget", "argmax"),
            ],
        )
        lines += ["", "### Paired differences (same positions)", ""]
        every = (None, "computed", "operand", "text")
        lines += _paired_lines(
            collected,
            [
                (
                    "base: reasoning − argmax",
                    ("base", "budget", "reasoning"),
                    ("base", "budget", "argmax"),
                    every,
                ),
                (
                    "RMT − RPT, budget prompt",
                    ("rmt", "budget", "reasoning"),
                    ("rpt", "budget", "reasoning"),
                    every,
                ),
                (
                    "RMT − RPT, no-budget prompt",
                    ("rmt", "none", "reasoning"),
                    ("rpt", "none", "reasoning"),
                    every,
                ),
                (
                    "RMT − RPT, each its own prompt",
                    ("rmt", "budget", "reasoning"),
                    ("rpt", "none", "reasoning"),
                    every,
                ),
                (
                    "RMT reasoning − NTP argmax",
                    ("rmt", "budget", "reasoning"),
                    ("ntp", "budget", "argmax"),
                    every,
                ),
                (
                    "RMT − base, reasoning",
                    ("rmt", "budget", "reasoning"),
                    ("base", "budget", "reasoning"),
                    every,
                ),
            ],
        )
    if "ablations" in settings.tables:
        lines += ["", "## Ablations", ""]
        lines += _table(
            collected,
            [
                ("RMT", "rmt", "budget", "reasoning"),
                ("RMT without the budget", "rmt_no_budget", "none", "reasoning"),
                ("RMT without the budget", "rmt_no_budget", "budget", "reasoning"),
                ("RMT without the curriculum", "rmt_no_curriculum", "budget", "reasoning"),
                ("RMT without the NTP term", "rmt_no_ntp", "budget", "reasoning"),
                ("RMT without the NTP term, argmax", "rmt_no_ntp", "budget", "argmax"),
            ],
        )
        lines += ["", "### Paired differences against RMT (same positions)", ""]
        lines += _paired_lines(
            collected,
            [
                (
                    f"RMT − {name}",
                    ("rmt", "budget", "reasoning"),
                    (arm, prompt, "reasoning"),
                    (None, "computed"),
                )
                for name, arm, prompt in (
                    ("no budget (its own prompt)", "rmt_no_budget", "none"),
                    ("no budget (budget prompt)", "rmt_no_budget", "budget"),
                    ("no curriculum", "rmt_no_curriculum", "budget"),
                    ("no NTP term", "rmt_no_ntp", "budget"),
                )
            ]
            + [
                (
                    "RMT − no NTP term, argmax",
                    ("rmt", "budget", "argmax"),
                    ("rmt_no_ntp", "budget", "argmax"),
                    (None,),
                ),
            ],
        )
    lines += posttrain_report.lines(collected.posttrain, settings.seeds)
    atomic_write(output / "tables.md", "\n".join(lines) + "\n")
    _plots(collected, output)
    print(f"tables: {output / 'tables.md'}", flush=True)


def _plots(collected: Collected, output: Path) -> None:
    """The plots, where matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)", flush=True)
        return
    arms = [a.name for a in collected.arms]
    if arms:  # a post-training-only replication has no training curves of its own
        _curve_plots(plt, collected, arms, output)
    tables = collected.settings.tables
    if "main" in tables:
        _bars(
            plt,
            collected,
            output / "accuracy_per_tier.png",
            [("base", "budget"), ("rpt", "none"), ("rmt", "budget")],
            (*TIERS, "computed"),
        )
    if "ablations" in tables:
        _bars(
            plt,
            collected,
            output / "ablations.png",
            [
                ("rmt", "budget"),
                ("rmt_no_budget", "none"),
                ("rmt_no_curriculum", "budget"),
                ("rmt_no_ntp", "budget"),
            ],
            ("all", "computed"),
        )
    if "posttrain" in tables:
        posttrain_report.plot(
            plt, collected.posttrain, collected.settings.seeds, output / "posttrain.png"
        )


def _curve_plots(plt, collected: Collected, arms: list[str], output: Path) -> None:
    """Validation accuracy vs step, and training reasoning length vs step with B_t."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for arm in arms:
        curves = [collected.curves[arm, s] for s in collected.settings.seeds]
        curves = [c for c in curves if c]
        if not curves:
            continue
        steps = [r["step"] for r in curves[0]]
        key = "ntp_accuracy" if arm == "ntp" else "reasoning_accuracy"
        values = np.mean([[r["average"][key] for r in c[: len(steps)]] for c in curves], axis=0)
        axis.plot(
            steps, values, marker="o", label=f"{arm} ({'argmax' if arm == 'ntp' else 'reasoning'})"
        )
    axis.set_xlabel("step")
    axis.set_ylabel("validation accuracy (mean of tiers)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(output / "accuracy_vs_step.png", dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    for arm in arms:
        if arm == "ntp":
            continue
        runs = [collected.metrics[arm, s] for s in collected.settings.seeds]
        runs = [r for r in runs if r]
        if not runs:
            continue
        steps = [m["step"] for m in runs[0]]
        lengths = np.nanmean(
            [[m.get("reasoning_length") or math.nan for m in r[: len(steps)]] for r in runs], axis=0
        )
        axis.plot(steps, lengths, label=arm)
        budgets = [m.get("budget") for m in runs[0]]
        if arm == "rmt" and any(b is not None for b in budgets):
            axis.plot(steps, budgets, linestyle="--", color="black", label="B_t")
    axis.set_xlabel("step")
    axis.set_ylabel("training reasoning length (tokens)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(output / "length_vs_step.png", dpi=120)
    plt.close(figure)


def _bars(plt, collected: Collected, path: Path, entries, columns) -> None:
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(entries)
    drawn = False
    for index, (arm, prompt) in enumerate(entries):
        reports = collected.reports_of(arm, prompt)
        if not reports:
            continue
        cells = [_cells(r) for r in reports]
        means = [np.nanmean([c.get(f"{k}/reasoning", math.nan) for c in cells]) for k in columns]
        errors = [
            np.nanstd([c.get(f"{k}/reasoning", math.nan) for c in cells], ddof=1)
            if len(cells) > 1
            else 0.0
            for k in columns
        ]
        positions = np.arange(len(columns)) + index * width
        axis.bar(positions, means, width, yerr=errors, label=f"{arm} ({prompt} prompt)")
        drawn = True
    if not drawn:
        plt.close(figure)
        return
    axis.set_xticks(np.arange(len(columns)) + 0.4 - width / 2, columns)
    axis.set_ylabel("test reasoning accuracy")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

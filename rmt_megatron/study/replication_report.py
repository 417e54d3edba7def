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

from rmt_megatron.config.sections import TIER_NAMES
from rmt_megatron.files import atomic_write
from rmt_megatron.method.tallies import paired_difference
from rmt_megatron.run.evaluation import read_eval_reports
from rmt_megatron.run.metrics_log import read_metrics
from rmt_megatron.study import posttrain_report
from rmt_megatron.study.design import (
    ARMS,
    BASE,
    EVERY_KIND,
    NTP_ARM,
    POSTTRAIN,
    POSTTRAIN_SOURCES,
    PROMPTS,
    RMT_ARM,
    TRAINED_TABLES,
    Bars,
    Comparison,
    Row,
)
from rmt_megatron.study.table_cells import mean_std

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
    for tier in TIER_NAMES:
        split = report["splits"][tier]
        cells[f"{tier}/reasoning"] = split["reasoning_accuracy"]
        cells[f"{tier}/argmax"] = split["ntp_accuracy"]
    for kind, row in report.get("kinds", {}).items():
        cells[f"{kind}/reasoning"] = row["reasoning_accuracy"]
        cells[f"{kind}/argmax"] = row["ntp_accuracy"]
    return cells


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

    def __init__(self, settings) -> None:
        self.settings, prompts = settings, PROMPTS
        self.arms = [a for a in ARMS if a.table in settings.tables]
        self.base = {p: _load(eval_path(settings.work_dir, BASE, None, p)) for p in prompts}
        self.reports: dict[tuple[str, int, str], dict] = {}
        self.metrics: dict[tuple[str, int], list[dict]] = {}
        self.curves: dict[tuple[str, int], list[dict]] = {}
        self.wall: dict[tuple[str, int], float] = {}
        for arm in self.arms:
            for seed in settings.seeds:
                directory = run_dir(settings.work_dir, arm.name, seed)
                self.metrics[arm.name, seed] = read_metrics(directory)
                self.curves[arm.name, seed] = read_eval_reports(directory)
                wall = _load(directory / "wall_time.json")
                self.wall[arm.name, seed] = wall["seconds"] if wall else math.nan
                for prompt in prompts:
                    report = _load(eval_path(settings.work_dir, arm.name, seed, prompt))
                    if report is not None:
                        self.reports[arm.name, seed, prompt] = report
        self.posttrain: dict[tuple[str, int], dict] = {}
        if POSTTRAIN in settings.tables:
            for _, source in POSTTRAIN_SOURCES:
                for seed in settings.seeds:
                    path = posttrain_report.posttrain_path(settings.work_dir, source, seed)
                    report = _load(path)
                    if report is not None:
                        self.posttrain[source, seed] = report

    @property
    def kinds(self) -> list[str]:
        """The kinds of position the held-out data labels (none for data without a kinds file),
        as the evaluation reports name them."""
        every = [*self.base.values(), *self.reports.values()]
        return sorted({kind for r in every if r is not None for kind in r.get("kinds", {})})

    @property
    def columns(self) -> tuple[str, ...]:
        """The accuracy columns of a table: all positions, the entropy tiers, the data's kinds."""
        return ("all", *TIER_NAMES, *self.kinds)

    def reports_of(self, arm: str, prompt: str) -> list[dict]:
        """The evaluations of `arm` under `prompt`, one per seed that has one (the base: one)."""
        if arm == BASE:
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


def _table(collected: Collected, rows: tuple[Row, ...]) -> list[str]:
    """Markdown rows of a table's `rows`."""
    columns = collected.columns
    header = "| method | prompt | " + " | ".join(columns)
    header += " | length | rollout tokens | wall s |"
    lines = [header, "|" + "---|" * (len(columns) + 5)]
    for label, arm, prompt, mode in ((r.label, r.arm, r.prompt, r.mode) for r in rows):
        reports = collected.reports_of(arm, prompt)
        if not reports:
            continue
        cells = [_cells(r) for r in reports]
        values = [mean_std([c.get(f"{key}/{mode}", math.nan) for c in cells]) for key in columns]
        length = mean_std([c["length"] for c in cells], ".1f") if mode == "reasoning" else "–"
        runs = [(arm, s) for s in collected.settings.seeds if (arm, s) in collected.metrics]
        tokens = mean_std(
            [sum(m["rollout_tokens"] for m in collected.metrics[r]) for r in runs], ".0f"
        )
        wall = mean_std([collected.wall[r] for r in runs], ".0f")
        shown = "–" if mode == "argmax" else prompt
        lines.append(
            f"| {label} | {shown} | " + " | ".join(values) + f" | {length} | "
            f"{tokens if runs else '0'} | {wall if runs else '–'} |"
        )
    return lines


def _paired_lines(collected: Collected, comparisons: tuple[Comparison, ...]) -> list[str]:
    """Markdown rows of a table's paired `comparisons`, for all positions and each kind each
    names that the data has."""
    lines = [
        "| comparison | kind | difference ± SE (positions) | positions | per seed | "
        "mean ± SE (seeds) |",
        "|---|---|---|---|---|---|",
    ]
    for comparison in comparisons:
        label, one, other = comparison.label, comparison.first, comparison.second
        first = collected.reports_of(one.arm, one.prompt)
        second = collected.reports_of(other.arm, other.prompt)
        if not first or not second:
            continue
        measures = (MODES[one.mode], MODES[other.mode])
        named = comparison.kinds
        kinds = (None, *collected.kinds) if named == EVERY_KIND else named
        for kind in (k for k in kinds if k is None or k in collected.kinds):
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

    world = (
        "the built-in world; difficulty from the shipped base model"
        if settings.builtin
        else f"base model {settings.base_checkpoint}, test data {settings.test_data_path}; "
        "difficulty from the base model"
    )
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
        f"{settings.eval_positions} test positions (eval seed 0), prompt 'budget' = B_T = "
        f"{settings.final_budget} in the prompt",
        f"- model and data: {world}",
        "",
        "Cells: accuracy, mean ± std over seeds; 'all' is the mean over all positions, the "
        "tiers are RPT's nested entropy splits, the kinds are the corpus's.",
        "",
    ]


def write_report(settings) -> None:
    """results.csv, tables.md and the plots of the replication `settings` ran, into its output
    directory, from the evaluations and run logs in its work directory."""
    collected = Collected(settings)
    output = settings.output_dir
    output.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["arm", "seed", "prompt", "measure", "value"])
    writer.writeheader()
    writer.writerows(_rows(collected))
    atomic_write(output / "results.csv", buffer.getvalue())
    lines = _header(settings)
    for table in TRAINED_TABLES:
        if table.name in settings.tables:
            lines += [f"## {table.title}", ""]
            lines += _table(collected, table.rows)
            lines += ["", f"### {table.comparisons_title}", ""]
            lines += _paired_lines(collected, table.comparisons)
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
    for table in TRAINED_TABLES:
        if table.name in tables:
            _bars(plt, collected, output / table.bars.file, table.bars)
    if POSTTRAIN in tables:
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
        key = "ntp_accuracy" if arm == NTP_ARM else "reasoning_accuracy"
        values = np.mean([[r["average"][key] for r in c[: len(steps)]] for c in curves], axis=0)
        axis.plot(
            steps,
            values,
            marker="o",
            label=f"{arm} ({'argmax' if arm == NTP_ARM else 'reasoning'})",
        )
    axis.set_xlabel("step")
    axis.set_ylabel("validation accuracy (mean of tiers)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(output / "accuracy_vs_step.png", dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    for arm in arms:
        if arm == NTP_ARM:
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
        if arm == RMT_ARM and any(b is not None for b in budgets):
            axis.plot(steps, budgets, linestyle="--", color="black", label="B_t")
    axis.set_xlabel("step")
    axis.set_ylabel("training reasoning length (tokens)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(output / "length_vs_step.png", dpi=120)
    plt.close(figure)


def _bars(plt, collected: Collected, path: Path, bars: Bars) -> None:
    entries = bars.entries
    columns = [c for c in bars.columns if c in collected.columns]
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

"""Step metrics: reduction over data-parallel ranks, TensorBoard scalars, the console line, and
the `StepLog` that sends each step's metrics to all three places."""

from __future__ import annotations

import math
import os

import torch

from rmt_megatron.config.sections import TIER_NAMES
from rmt_megatron.mcore import parallel
from rmt_megatron.method.tallies import Tally, mean_or_nan
from rmt_megatron.run.metrics_log import append_metrics, keep_metrics_up_to


def replica_means(tally: Tally, names: list[str]) -> dict[str, float]:
    """`tally`'s means over all data-parallel replicas (collective: every replica passes the same
    names; a name without any count gives NaN)."""
    packed = torch.tensor(tally.sums_and_counts(names), dtype=torch.float64)
    parallel.data_parallel_all_reduce(packed)
    return {
        name: mean_or_nan(total, count)
        for name, (total, count) in zip(names, packed.tolist(), strict=True)
    }


class MetricsWriter:
    """TensorBoard scalars on the writing rank; a no-op elsewhere or without a directory."""

    def __init__(self, directory: str | None, enabled: bool) -> None:
        self._writer = None
        if directory and enabled:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(directory, exist_ok=True)
            self._writer = SummaryWriter(directory)

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        if self._writer is None:
            return
        for name, value in values.items():
            if value is not None and math.isfinite(value):
                self._writer.add_scalar(f"{prefix}/{name}", value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def progress_line(step: int, total: int, m: dict[str, float]) -> str:
    """One console line summarising a step."""

    def fmt(name: str, spec: str = ".3f") -> str:
        value = m.get(name, math.nan)
        return "-" if value is None or not math.isfinite(value) else format(value, spec)

    tiers = " ".join(f"{name} {fmt(f'match_reward/{name}', '.2f')}" for name in TIER_NAMES)
    return (
        f"step {step}/{total} | B_t {fmt('budget', '.0f')} | match {fmt('match_reward')} "
        f"({tiers}) | len {fmt('reasoning_length', '.1f')} "
        f"| >2B {fmt('over_twice_budget', '.2f')} | L_RL {fmt('loss_rl')} "
        f"L_NTP {fmt('loss_ntp')} | gnorm {fmt('grad_norm')} | "
        f"{fmt('step_time', '.2f')} s | rollout {fmt('rollout_tokens_per_s', '.0f')} tok/s"
    )


class StepLog:
    """Where each step's metrics go: TensorBoard (`writer`), the run's `metrics.jsonl` (the main
    rank of a run with --save; `run.metrics_log`) and, at step 1 and every `log_interval` steps,
    the console line."""

    def __init__(self, save: str | None, log_interval: int, total: int, writer) -> None:
        self.log_interval, self.total, self.writer = log_interval, total, writer
        self._save = save if save and parallel.is_main_rank() else None

    def restart(self, kept_steps: int) -> None:
        """Make the metrics log hold this run's rows up to `kept_steps`: a run resuming its own
        --save keeps the rows up to its checkpoint's step (it redoes the later ones); any other
        run starts the log anew (`run.resume` allows it only where no checkpoint was saved, so
        the rows left there belong to no checkpoint)."""
        if self._save:
            keep_metrics_up_to(self._save, kept_steps)

    def record(self, step: int, metrics: dict[str, float]) -> None:
        """Log step `step` (1-based, done)."""
        self.writer.scalars(step, metrics, "train")
        if self._save:
            append_metrics(self._save, step, metrics)
        if step % self.log_interval == 0 or step == 1:
            parallel.print_main(progress_line(step, self.total, metrics))

"""Step metrics: reduction over data-parallel ranks, TensorBoard scalars, the console line."""

from __future__ import annotations

import math
import os

import torch

from rmt_megatron.mcore import parallel
from rmt_megatron.method.tallies import Tally, mean_or_nan


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

    return (
        f"step {step}/{total} | B_t {fmt('budget', '.0f')} | match {fmt('match_reward')} "
        f"(easy {fmt('match_reward/easy', '.2f')} medium {fmt('match_reward/medium', '.2f')}"
        f" hard {fmt('match_reward/hard', '.2f')}) | len {fmt('reasoning_length', '.1f')} "
        f"| >2B {fmt('over_twice_budget', '.2f')} | L_RL {fmt('loss_rl')} "
        f"L_NTP {fmt('loss_ntp')} | gnorm {fmt('grad_norm')} | "
        f"{fmt('step_time', '.2f')} s | rollout {fmt('rollout_tokens_per_s', '.0f')} tok/s"
    )

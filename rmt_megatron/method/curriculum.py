"""Curriculum adaptive sampling.

Difficulty tiers from per-position entropy H (proxy model, nats), thresholds θ = (θ_e, θ_m, θ_h):

    tier = -1 (NTP only)  if H < θ_e
           0 easy         if θ_e <= H < θ_m
           1 medium       if θ_m <= H < θ_h
           2 hard         if H >= θ_h

Tier probabilities move piecewise-linearly from p_{t1} to p_{t2} between t_1 and t_2:

    p_t = p_{t1}                              t < t_1
        = (1 - s) p_{t1} + s p_{t2}           t_1 <= t < t_2,  s = (t - t_1) / (t_2 - t_1)
        = p_{t2}                              t >= t_2

`CurriculumSampler` draws each RL slot in two stages (tier ~ Categorical(p_t), then a position
uniformly from that tier), without replacement within an epoch; see its docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rmt_megatron.config.sections import TIER_NAMES, CurriculumConfig

NTP_ONLY = -1
"""Tier id of positions that are never drawn for RL."""


def assign_tiers(
    entropy: np.ndarray | torch.Tensor,
    thresholds: Sequence[float],
    eligible: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """Tier id per position: `entropy: [N]` (nats) -> int8 `[N]` in {-1, 0, 1, 2}.

    `eligible: [N]` bool, optional: False forces -1 (e.g. too little context, special target);
    ineligible positions may be unscored (NaN), eligible ones may not."""
    entropy = np.asarray(
        entropy.detach().cpu() if torch.is_tensor(entropy) else entropy, dtype=np.float64
    )
    if entropy.ndim != 1:
        raise ValueError(f"entropy must be a flat [N] array, got shape {entropy.shape}")
    if eligible is None:
        eligible = np.ones(entropy.shape, dtype=bool)
    eligible = np.asarray(eligible.cpu() if torch.is_tensor(eligible) else eligible, dtype=bool)
    if eligible.shape != entropy.shape:
        raise ValueError(f"eligible has shape {eligible.shape}, entropy {entropy.shape}")
    unscored = np.isnan(entropy) & eligible
    if unscored.any():
        raise ValueError(
            f"entropy is NaN at eligible position {int(np.flatnonzero(unscored)[0])}"
            "; rescore the dataset"
        )
    tiers = (
        np.searchsorted(
            np.asarray(thresholds, dtype=np.float64), np.nan_to_num(entropy), side="right"
        )
        - 1
    ).astype(np.int8)
    tiers[~eligible] = NTP_ONLY
    return tiers


def tier_probabilities(
    step: int, total_steps: int, config: CurriculumConfig
) -> tuple[float, float, float]:
    """p_t = (p_easy, p_medium, p_hard) at `step` of `total_steps`."""
    t1 = config.transition_start * total_steps
    t2 = config.transition_end * total_steps
    if step < t1:
        return config.start_probs
    if step >= t2:
        return config.end_probs
    s = (step - t1) / (t2 - t1)
    easy, medium, hard = (
        (1 - s) * a + s * b for a, b in zip(config.start_probs, config.end_probs, strict=True)
    )
    return easy, medium, hard


class CurriculumSampler:
    """Two-stage sampler of RL positions over fixed tier pools.

    `tiers: [N]` int (from `assign_tiers`) names each candidate position's tier; `sample` returns
    indices into it. Within an epoch no position is drawn twice: each tier is walked in a random
    order (fixed by seed, epoch and tier). For every slot, p_t is renormalised over the tiers that
    still have positions left this epoch; if p_t gives those tiers no mass, the slot is drawn
    uniformly from all positions left. When every tier is used up a new epoch starts (a batch may
    straddle two epochs). `probs=None` draws uniformly from all positions left (no curriculum).
    The sampler's whole state is `state_dict()`; equal seeds and states give equal draws."""

    def __init__(self, tiers: np.ndarray, seed: int) -> None:
        tiers = np.asarray(tiers)
        self.pools = [np.flatnonzero(tiers == k) for k in range(len(TIER_NAMES))]
        if not any(len(pool) for pool in self.pools):
            raise ValueError(
                "no position is eligible for RL: every entropy is below the lowest "
                "tier threshold (lower curriculum.tier_thresholds or check the "
                "difficulty scores)"
            )
        self.seed = seed
        self.epoch = 0
        self.cursors = [0] * len(self.pools)
        self.rng = np.random.default_rng(seed)
        self._orders = self._epoch_orders()

    @property
    def pool_sizes(self) -> list[int]:
        return [len(pool) for pool in self.pools]

    @property
    def left_this_epoch(self) -> list[int]:
        """Positions of each tier not yet drawn in this epoch."""
        return [len(pool) - c for pool, c in zip(self.pools, self.cursors, strict=True)]

    def _epoch_orders(self) -> list[np.ndarray]:
        return [
            pool[np.random.default_rng([self.seed, self.epoch, k]).permutation(len(pool))]
            for k, pool in enumerate(self.pools)
        ]

    def sample(self, count: int, probs: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
        """Draw `count` positions. Returns (indices int64 `[count]`, tiers int8 `[count]`)."""
        if probs is not None and len(probs) != len(self.pools):
            raise ValueError(f"probs must have {len(self.pools)} entries, got {len(probs)}")
        indices = np.empty(count, dtype=np.int64)
        drawn_tiers = np.empty(count, dtype=np.int8)
        for slot in range(count):
            tier = self._draw_tier(probs)
            indices[slot] = self._orders[tier][self.cursors[tier]]
            drawn_tiers[slot] = tier
            self.cursors[tier] += 1
        return indices, drawn_tiers

    def _draw_tier(self, probs: Sequence[float] | None) -> int:
        remaining = np.array(
            [len(pool) - c for pool, c in zip(self.pools, self.cursors, strict=True)],
            dtype=np.float64,
        )
        if not remaining.any():
            self.epoch += 1
            self.cursors = [0] * len(self.pools)
            self._orders = self._epoch_orders()
            remaining = np.array(self.pool_sizes, dtype=np.float64)
        weights = remaining.copy()
        if probs is not None:
            masked = np.asarray(probs, dtype=np.float64) * (remaining > 0)
            if masked.sum() > 0:
                weights = masked
        return int(self.rng.choice(len(weights), p=weights / weights.sum()))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same sequence of draws (picklable, JSON-able)."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "cursors": list(self.cursors),
            "pool_sizes": self.pool_sizes,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; the pools must be the ones it was saved with."""
        if list(state["pool_sizes"]) != self.pool_sizes:
            raise ValueError(
                f"curriculum state was saved for tier pools of sizes "
                f"{list(state['pool_sizes'])}, but these pools have sizes "
                f"{self.pool_sizes}: the dataset or its difficulty scores changed"
            )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.cursors = [int(c) for c in state["cursors"]]
        self.rng.bit_generator.state = state["rng"]
        self._orders = self._epoch_orders()

"""Dynamic token budget and the rewards built on it.

    B_t     = max(B_min, floor(B_0 * γ^((t/T)^k)))                   k = 1 by default
    r_len   = r_max * ℓ / B          for 0 <= ℓ <= B
            = r_max * (2B - ℓ) / B   for B < ℓ <= 2B
            = 0                      for ℓ > 2B
    r       = (1 - w) * r_match + w * r_len

ℓ is the reasoning length in tokens (see `rmt_megatron.method.rewards.reasoning_length`).
Nothing can earn a length reward past 2·B_t, which is why rollouts may stop there
(`rollout_token_cap`).
"""

from __future__ import annotations

import math

from rmt_megatron.config.sections import BudgetConfig, RewardConfig


def budget_at(step: int, total_steps: int, config: BudgetConfig) -> int:
    """B_t at training step `step` of `total_steps` (steps past the end keep B_T)."""
    if total_steps < 1 or step < 0:
        raise ValueError(
            f"budget_at needs step >= 0 and total_steps >= 1, "
            f"got step={step}, total_steps={total_steps}"
        )
    progress = min(step / total_steps, 1.0)
    # The tiny epsilon keeps exact products such as 800 * 0.2 = 160 from flooring to 159.
    raw = config.initial * config.decay ** (progress**config.exponent_power)
    return max(config.minimum, math.floor(raw * (1 + 1e-12)))


def final_budget(config: BudgetConfig) -> int:
    """B_T, the budget a run ends with (and evaluates with): B_t at t = T for any T."""
    return budget_at(1, 1, config)


def budget_or_none(step: int, total_steps: int, config: BudgetConfig) -> int | None:
    """B_t at `step` of `total_steps`, or None when the dynamic budget is off (no budget in the
    prompt, no length reward): the one place that rule lives."""
    return budget_at(step, total_steps, config) if config.enabled else None


def length_reward(length: int, budget: int, max_reward: float = 1.0) -> float:
    """Triangular r_len(ℓ; B): 0 at ℓ = 0, `max_reward` at ℓ = B, 0 at ℓ >= 2B."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1 token, got {budget}")
    if length < 0:
        raise ValueError(f"reasoning length must be >= 0, got {length}")
    if length <= budget:
        return max_reward * length / budget
    if length <= 2 * budget:
        return max_reward * (2 * budget - length) / budget
    return 0.0


def combined_reward(match: float, length: float, config: RewardConfig) -> float:
    """r = (1 - w) * r_match + w * r_len, with w = `config.length_weight`."""
    w = config.length_weight
    return (1.0 - w) * match + w * length


def rollout_token_cap(budget: int, max_response_length: int, answer_allowance: int) -> int:
    """Tokens worth generating for one rollout: reasoning past 2·B earns no length reward, so
    stop at 2·B plus `answer_allowance` tokens for `</think>` and the boxed answer, and never past
    `max_response_length`."""
    return min(max_response_length, 2 * budget + answer_allowance)

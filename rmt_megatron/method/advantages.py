"""Group-relative advantages (GRPO; docs/method.md, "GRPO advantages").

    A_i = (r_i - mean_j r_j) / (std_j r_j + δ)        over the G rollouts of one prompt

`std` is the sample standard deviation (Bessel-corrected, as GRPO implementations commonly use).
A group whose rewards are all equal has no signal: its advantages are exactly 0.

Layout: rewards `[P, G]` (P prompts, G rollouts each) -> advantages `[P, G]`.
"""

from __future__ import annotations

import torch


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalise `rewards: [P, G]` within each row; constant rows give 0. Returns fp32 `[P, G]`."""
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [prompts, group_size >= 2], got {tuple(rewards.shape)}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf; check the reward function's inputs")
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    advantages = centred / (rewards.std(dim=1, keepdim=True) + eps)
    return torch.where(
        informative_groups(rewards)[:, None], advantages, torch.zeros_like(advantages)
    )


def informative_groups(rewards: torch.Tensor) -> torch.Tensor:
    """`[P]` bool: True where a group's rewards are not all equal (dynamic sampling keeps
    only these)."""
    return rewards.amax(dim=1) > rewards.amin(dim=1)

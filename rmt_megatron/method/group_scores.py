"""One step's rollout groups -> rewards, GRPO advantages, which groups to keep, and statistics.

Input layout, prompt-major: P prompts with G responses each, response i answering prompt i // G.
Each response is given as its tokens' bytes, each prompt by the true continuation's bytes from
the predicted position on (its first entry is the next token) and its curriculum tier. Output:
rewards and advantages `[P, G]` fp32 and `keep: [P]` bool (all True unless zero-variance groups
are filtered). The statistics go into a `Tally` under `STEP_STATS` names (means over responses,
or over prompts for `tier_share/*` and `kept_groups`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rmt_megatron.config.sections import TIER_NAMES, RMTConfig
from rmt_megatron.method.advantages import grpo_advantages, informative_groups
from rmt_megatron.method.rewards import score_rollout
from rmt_megatron.method.tallies import Tally

STEP_STATS = (
    [
        "match_reward",
        "length_reward",
        "reasoning_length",
        "valid_format",
        "over_twice_budget",
        "truncated",
        "response_length",
        "kept_groups",
    ]
    + [f"match_reward/{t}" for t in TIER_NAMES]
    + [f"tier_share/{t}" for t in TIER_NAMES]
)
"""Statistics a step reports (`score_groups` fills all but none of the NTP side)."""


@dataclass(frozen=True)
class GroupScores:
    rewards: torch.Tensor
    """`[P, G]` fp32 total rewards."""
    advantages: torch.Tensor
    """`[P, G]` fp32 GRPO advantages (0 for a group whose rewards are all equal)."""
    keep: torch.Tensor
    """`[P]` bool: the groups that go into the loss."""


def score_groups(
    responses: Sequence[Sequence[bytes]],
    finished: Sequence[bool],
    continuations: Sequence[Sequence[bytes]],
    tiers: Sequence[int],
    budget: int | None,
    config: RMTConfig,
    stats: Tally,
) -> GroupScores:
    """Score every response, normalise within groups, and record the step's statistics.

    responses: P·G responses as token bytes; finished: whether each stopped on its own (False:
    cut at the length cap); continuations, tiers: one per prompt; budget: B_t, or None when the
    budget is off."""
    prompts = len(continuations)
    if prompts == 0 or len(responses) % prompts or len(responses) != len(finished):
        raise ValueError(
            f"{len(responses)} responses ({len(finished)} finished flags) do not "
            f"make equal groups for {prompts} prompts"
        )
    group = len(responses) // prompts
    rewards = torch.zeros(prompts, group)
    for index, (response, done) in enumerate(zip(responses, finished, strict=True)):
        prompt = index // group
        score = score_rollout(response, continuations[prompt], budget, config.reward)
        rewards[prompt, index % group] = score.total
        stats.add("match_reward", score.match)
        stats.add(f"match_reward/{TIER_NAMES[tiers[prompt]]}", score.match)
        stats.add("length_reward", score.length)
        stats.add("reasoning_length", score.reasoning_tokens)
        stats.add("valid_format", float(score.valid_format))
        stats.add(
            "over_twice_budget", float(budget is not None and score.reasoning_tokens > 2 * budget)
        )
        stats.add("truncated", float(not done))
        stats.add("response_length", len(response))
    for k, name in enumerate(TIER_NAMES):
        stats.add(f"tier_share/{name}", float(sum(t == k for t in tiers)), len(tiers))
    advantages = grpo_advantages(rewards, config.loss.advantage_eps)
    keep = (
        informative_groups(rewards)
        if config.loss.filter_zero_variance_groups
        else torch.ones(prompts, dtype=torch.bool)
    )
    stats.add("kept_groups", float(keep.sum()), prompts)
    return GroupScores(rewards, advantages, keep)

"""One RMT step's arithmetic, without a model: run `python examples/rmt_step_walkthrough.py`.

It takes a tiny document with made-up per-position entropies, draws RL positions with the
curriculum, scores hand-written rollouts (rewards and GRPO advantages), and evaluates the dual
loss on random logits with `dual_loss`, the token-mean form of the per-token losses
(`masked_token_losses`) that the trainer's Megatron forward step sums with token weights.
"""

from __future__ import annotations

import numpy as np
import torch

from rmt_megatron.config.sections import TIER_NAMES, RMTConfig
from rmt_megatron.kernels import token_logprob_entropy_reference
from rmt_megatron.method.advantages import grpo_advantages
from rmt_megatron.method.budget import budget_at
from rmt_megatron.method.curriculum import CurriculumSampler, assign_tiers, tier_probabilities
from rmt_megatron.method.dual_loss import TokenRoles, dual_loss
from rmt_megatron.method.rewards import score_rollout

DOCUMENT = [b"The", b" sum", b" of", b" 17", b" and", b" 25", b" is", b" 42", b"."]
ENTROPY = np.array([3.1, 2.2, 0.1, 1.7, 0.2, 1.8, 0.6, 1.2, 0.3])


def main() -> None:
    config = RMTConfig()
    step, total = 400, 1000
    budget = budget_at(step, total, config.budget)
    probs = tier_probabilities(step, total, config.curriculum)
    print(
        f"step {step}/{total}: budget B_t = {budget} tokens, "
        f"p_t = {dict(zip(TIER_NAMES, (round(p, 3) for p in probs), strict=True))}"
    )

    tiers = assign_tiers(ENTROPY, config.curriculum.tier_thresholds)
    sampler = CurriculumSampler(tiers, seed=0)
    positions, drawn = sampler.sample(2, probs)
    for pos, tier in zip(positions, drawn, strict=True):
        context = b"".join(DOCUMENT[:pos]).decode()
        print(
            f"  RL position {pos} ({TIER_NAMES[tier]}): context {context!r} -> "
            f"next {DOCUMENT[pos].decode()!r}"
        )

    # Four rollouts for the position whose answer is " 42": right and on budget, right but
    # rambling past 2·B_t, wrong, and no </think> at all.
    reasoning = [b" x"] * budget
    rollouts = [
        [b"<think>", *reasoning, b"</think>", b"\\boxed{", b" 42", b"}"],
        [b"<think>", *reasoning * 3, b"</think>", b"\\boxed{", b" 42", b"}"],
        [b"<think>", *reasoning[: budget // 2], b"</think>", b"\\boxed{", b" 41", b"}"],
        [b"<think>", *reasoning, b"\\boxed{", b" 42", b"}"],
    ]
    scores = [score_rollout(r, DOCUMENT[7:], budget, config.reward) for r in rollouts]
    rewards = torch.tensor([[s.total for s in scores]])
    advantages = grpo_advantages(rewards, config.loss.advantage_eps)[0]
    for s, a in zip(scores, advantages, strict=True):
        print(
            f"  rollout: ℓ={s.reasoning_tokens:4d} match={s.match:.0f} r_len={s.length:.2f} "
            f"r={s.total:.2f} A={a:+.3f}"
        )

    # Dual loss over a packed batch: 4 rollout tokens (RL) and 5 document tokens (NTP).
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 32, generator=generator, requires_grad=True)
    labels = torch.randint(0, 32, (9,), generator=generator)
    logprob, entropy = token_logprob_entropy_reference(logits, labels)
    rl_mask = torch.arange(9) < 4
    terms = dual_loss(
        logprob,
        TokenRoles(
            rl_mask=rl_mask, ntp_mask=~rl_mask, advantages=torch.cat([advantages, torch.zeros(5)])
        ),
        config.loss,
    )
    terms.loss.backward()
    print(
        f"  dual loss L = {terms.loss.item():.4f} (L_RL = {terms.rl.item():.4f}, "
        f"L_NTP = {terms.ntp.item():.4f}, mean entropy {entropy.mean().item():.3f} nats), "
        f"grad norm {logits.grad.norm().item():.4f}"
    )


if __name__ == "__main__":
    main()

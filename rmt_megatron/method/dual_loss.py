"""The dual RMT objective: GRPO on rollout tokens plus NTP on document tokens.

All inputs are flat per-token tensors `[N]` (Megatron's `[s, b]` flattened; rollout tokens and
document tokens may share one packed batch). Per token n:

    ρ_n      = exp(logprob_n - old_logprob_n)              (1 on-policy: old = logprob.detach())
    s_n      = -min(ρ_n A_n, clip(ρ_n, 1 - ε, 1 + ε) A_n)  clipped surrogate
    k_n      = exp(r_n) - r_n - 1,  r_n = ref_logprob_n - logprob_n     (k3 estimator of KL)
    L_RL     = Σ_{n ∈ RL}  (s_n + β k_n - c H_n) / |RL|    token-mean over rollout tokens
    L_NTP    = Σ_{n ∈ NTP} (-logprob_n) / |NTP|            token-mean over document tokens
    L        = w_RL · L_RL + λ · L_NTP

RL = response tokens of all rollouts (A_n is its rollout's advantage); NTP = document positions
that were not drawn for RL (the per-document mask). The two sets must not overlap. An empty set
contributes 0. On-policy (ρ = 1) the surrogate's value is -mean(A), and its gradient is that of
the paper's -(1/G) Σ A log π: ∂L/∂logprob_n = -A_n/|RL| on RL tokens and -λ/|NTP| on
NTP tokens, so the gradient reaching the logits is one coefficient per token times
(one_hot - softmax).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from rmt_megatron.config.sections import LossConfig


@dataclass(frozen=True)
class DualLossTerms:
    """The scalar loss and its detached parts, for logging."""

    loss: torch.Tensor
    """w_RL · L_RL + λ · L_NTP (differentiable, fp32 scalar)."""
    rl: torch.Tensor
    """L_RL, detached."""
    ntp: torch.Tensor
    """L_NTP, detached."""
    kl: torch.Tensor
    """Token-mean k3 KL over RL tokens, detached (0 without ref_logprob)."""
    clip_fraction: torch.Tensor
    """Share of RL tokens whose ratio was clipped, detached."""
    rl_tokens: int
    ntp_tokens: int


def rl_token_losses(
    logprob: torch.Tensor,
    advantages: torch.Tensor,
    config: LossConfig,
    old_logprob: torch.Tensor | None = None,
    ref_logprob: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token RL loss s_n + β k_n - c H_n, the k3 KL k_n (detached) and whether ρ_n was
    clipped; all `[N]`, for every token (the caller masks). Shapes as in `dual_loss`."""
    if config.kl_beta > 0 and ref_logprob is None:
        raise ValueError("loss.kl_beta > 0 needs ref_logprob (the reference policy's log-probs)")
    if config.entropy_coeff > 0 and entropy is None:
        raise ValueError("loss.entropy_coeff > 0 needs the per-token entropy")
    logprob = logprob.float()
    old = logprob.detach() if old_logprob is None else old_logprob.float()
    ratio = torch.exp(logprob - old)
    adv = advantages.float()
    clipped_ratio = ratio.clamp(1 - config.clip_eps, 1 + config.clip_eps)
    per_token = -torch.minimum(ratio * adv, clipped_ratio * adv)
    kl = torch.zeros_like(logprob)
    if ref_logprob is not None:
        log_ratio_ref = ref_logprob.float() - logprob
        kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1
        per_token = per_token + config.kl_beta * kl
    if config.entropy_coeff > 0 and entropy is not None:
        per_token = per_token - config.entropy_coeff * entropy.float()
    return per_token, kl.detach(), ratio.detach() != clipped_ratio.detach()


@dataclass(frozen=True)
class TokenRoles:
    """What each token is in the objective; every tensor has the shape of `logprob` (flat `[N]`
    in `dual_loss`, `[b, s]` in the Megatron forward step)."""

    rl_mask: torch.Tensor
    """bool: response tokens of a rollout (RL tokens)."""
    ntp_mask: torch.Tensor
    """bool: document tokens not drawn for RL (NTP tokens); disjoint from `rl_mask`."""
    advantages: torch.Tensor
    """A of the rollout each RL token belongs to (ignored elsewhere)."""
    old_logprob: torch.Tensor | None = None
    """Behaviour-policy log-probs (None: on-policy, ratio 1)."""
    ref_logprob: torch.Tensor | None = None
    """Reference-policy log-probs, required when config.kl_beta > 0."""


def masked_token_losses(
    logprob: torch.Tensor,
    roles: TokenRoles,
    config: LossConfig,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(RL loss, NTP loss, k3 KL, clipped) per token, each of `logprob`'s shape: the RL loss
    s_n + β k_n - c H_n on RL tokens and 0 elsewhere, -logprob_n on NTP tokens and 0 elsewhere.
    `dual_loss` takes their token means; the Megatron forward step sums them with per-token
    weights (`method.packing.token_weights`), which is the same objective."""
    per_token, kl, was_clipped = rl_token_losses(
        logprob, roles.advantages, config, roles.old_logprob, roles.ref_logprob, entropy
    )
    rl_loss = torch.where(roles.rl_mask, per_token, 0.0)
    ntp_loss = torch.where(roles.ntp_mask, -logprob.float(), 0.0)
    return rl_loss, ntp_loss, torch.where(roles.rl_mask, kl, 0.0), was_clipped & roles.rl_mask


def dual_loss(
    logprob: torch.Tensor,
    roles: TokenRoles,
    config: LossConfig,
    entropy: torch.Tensor | None = None,
) -> DualLossTerms:
    """L = w_RL · L_RL + λ · L_NTP over flat `[N]` tensors.

    logprob: log π_θ of each token (differentiable); roles: see `TokenRoles`; entropy: per-token
    entropy, required when config.entropy_coeff > 0."""
    n = logprob.shape
    for name, tensor in (
        *((field, getattr(roles, field)) for field in TokenRoles.__dataclass_fields__),
        ("entropy", entropy),
    ):
        if tensor is not None and tensor.shape != n:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, logprob has {tuple(n)}: "
                "every per-token input must be flat [N]"
            )
    roles = replace(roles, rl_mask=roles.rl_mask.bool(), ntp_mask=roles.ntp_mask.bool())
    rl_mask, ntp_mask = roles.rl_mask, roles.ntp_mask
    if (rl_mask & ntp_mask).any():
        raise ValueError(
            "rl_mask and ntp_mask overlap: a token is either an RL token or an NTP token"
        )
    rl_loss, ntp_loss, kl, was_clipped = masked_token_losses(logprob, roles, config, entropy)
    n_rl, n_ntp = int(rl_mask.sum()), int(ntp_mask.sum())
    rl = rl_loss.sum() / max(n_rl, 1)
    ntp = ntp_loss.sum() / max(n_ntp, 1)
    return DualLossTerms(
        loss=config.rl_weight * rl + config.ntp_weight * ntp,
        rl=rl.detach(),
        ntp=ntp.detach(),
        kl=kl.sum() / max(n_rl, 1),
        clip_fraction=was_clipped.float().sum() / max(n_rl, 1),
        rl_tokens=n_rl,
        ntp_tokens=n_ntp,
    )

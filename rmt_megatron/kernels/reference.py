"""Unfused torch reference for per-token log-probability and entropy.

For one row of logits `x` (one token position) at temperature τ, with z = x / τ:

    log Z      = logsumexp(z)
    logprob    = z[label] - log Z                    (0 where label == ignore_index)
    entropy H  = log Z - Σ_v p_v z_v,   p = softmax(z)

Layout: `logits: [N, V]` (N token positions, flattened from Megatron's `[s, b, V]`), `labels: [N]`
-> `(logprob [N], entropy [N])`, both fp32 whatever the logits' dtype. Differentiable with respect
to `logits` through both outputs. It computes in float64 and materialises the `[N, V]` softmax:
slow and large, which the fused backends avoid, but accurate to fp32 on any logits (fp32's own
log-softmax loses 1e-6–1e-2 of the entropy on logits of size 10–30), so it is the ground truth.
"""

from __future__ import annotations

import torch


def token_logprob_entropy_reference(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(logprob [N], entropy [N])` of `labels: [N]` under `softmax(logits / temperature)`."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits [N, V] and labels [N], got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    ignored = labels == ignore_index
    if ((labels < 0) | (labels >= logits.shape[1]))[~ignored].any():
        raise ValueError(
            f"labels outside [0, {logits.shape[1]}) that are not ignore_index="
            f"{ignore_index}: tokenizer and model vocabularies disagree?"
        )
    z = logits.double() / temperature
    log_probs = torch.log_softmax(z, dim=-1)
    safe_labels = labels.masked_fill(ignored, 0).long()
    logprob = log_probs.gather(1, safe_labels[:, None]).squeeze(1).masked_fill(ignored, 0.0)
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
    return logprob.float(), entropy.float()


def topk_entropy_reference(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Entropy of the top-k distribution renormalised over those k tokens (RPT's difficulty
    score; docs/method.md, "Difficulty"): p̂ = softmax(top_k(z)), H = -Σ p̂ log p̂.
    `logits: [N, V]` -> `[N]` fp32."""
    if k < 2 or k > logits.shape[-1]:
        raise ValueError(f"k must be in [2, V={logits.shape[-1]}], got {k}")
    top = logits.float().topk(k, dim=-1).values
    log_p = torch.log_softmax(top, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)

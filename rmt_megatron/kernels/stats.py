"""The per-token statistics every backend computes, and how they combine across TP ranks.

For one token with logits x over (this rank's slice of) the vocabulary and temperature τ,
z = x / τ. A rank's *partial* statistics over its columns are

    m = max_v z_v,   s = Σ_v exp(z_v - m),   w = Σ_v exp(z_v - m)·(z_v - m),   t = z_y (or 0)

w is taken relative to the peak so that no large number enters a sum: with logits of size 10–30,
Σ exp(z - m)·z and log Z are both large and their difference H loses most of fp32's digits. The
global statistics follow from one all-reduce MAX (of m) and one packed all-reduce SUM of the parts
moved to the global peak M (`to_peak`: s·e^(m-M), (w + (m-M)·s)·e^(m-M), t):

    log Z = M + log S,   H = log S - W / S,   E_p[z] = M + W / S,   logprob = t - log Z.

Backward (no collective): with upstream gradients g_lp and g_H per token and p_v = exp(z_v - log Z)

    ∂L/∂x_v = (1/τ) · [ g_lp · (1[v = y] - p_v) - g_H · p_v · (z_v - E_p[z]) ].

Layout: per-token tensors are `[N]` fp32. Ignored tokens (label == ignore_index) have logprob 0
and get no gradient through it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist


class PartialStats(NamedTuple):
    """One rank's statistics over its vocabulary columns, all `[N]` fp32 (m, s, w, t above)."""

    peak: torch.Tensor
    sum_exp: torch.Tensor
    sum_exp_shift: torch.Tensor
    target: torch.Tensor


def to_peak(stats: PartialStats, peak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, w) of `stats` moved to the larger `peak` M: s·e^(m-M) and (w + (m-M)·s)·e^(m-M); an
    empty part (s = 0, m = -inf) stays (0, 0)."""
    shift = stats.peak - peak
    scale = torch.exp(shift)
    moved = torch.where(
        stats.sum_exp > 0, (stats.sum_exp_shift + shift * stats.sum_exp) * scale, 0.0
    )
    return stats.sum_exp * scale, moved


class TokenStats(NamedTuple):
    """Global per-token statistics, all `[N]` fp32."""

    logprob: torch.Tensor
    entropy: torch.Tensor
    log_z: torch.Tensor
    mean_z: torch.Tensor


class GradInputs(NamedTuple):
    """What the backward needs per token, all `[N]`: the label within this rank's slice (-1 when
    outside it), log Z and E_p[z] from the forward, and the upstream gradients g_lp and g_H."""

    local_label: torch.Tensor
    log_z: torch.Tensor
    mean_z: torch.Tensor
    g_lp: torch.Tensor
    g_h: torch.Tensor

    def rows(self, block: slice) -> GradInputs:
        """The same inputs for the token rows `block`."""
        return GradInputs(*(values[block] for values in self))

    def shifted(self, start: int) -> GradInputs:
        """The same inputs for the vocabulary columns from `start` on (labels re-based)."""
        return self._replace(local_label=self.local_label - start)


def merge(parts: list[PartialStats]) -> PartialStats:
    """Partial statistics over disjoint column sets (tiles of one rank's slice) -> over their
    union: the same rescaling as `combine`, without a collective."""
    if len(parts) == 1:
        return parts[0]
    peak = torch.stack([p.peak for p in parts]).amax(dim=0)
    moved = [to_peak(p, peak) for p in parts]
    return PartialStats(
        peak,
        torch.stack([s for s, _ in moved]).sum(dim=0),
        torch.stack([w for _, w in moved]).sum(dim=0),
        torch.stack([p.target for p in parts]).sum(dim=0),
    )


def combine(partial: PartialStats, ignored: torch.Tensor, tp_group=None) -> TokenStats:
    """Global statistics from this rank's partial ones (see module docstring)."""
    peak = partial.peak.clone()
    if tp_world_size(tp_group) > 1:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=tp_group)
    packed = torch.stack([*to_peak(partial, peak), partial.target])
    if tp_world_size(tp_group) > 1:
        dist.all_reduce(packed, group=tp_group)
    sum_exp, sum_exp_shift, target = packed
    log_sum = torch.log(sum_exp)
    mean_shift = sum_exp_shift / sum_exp
    log_z = peak + log_sum
    logprob = torch.where(ignored, torch.zeros_like(target), target - log_z)
    return TokenStats(logprob, log_sum - mean_shift, log_z, peak + mean_shift)


def grad_coefficients(
    grad_logprob: torch.Tensor | None,
    grad_entropy: torch.Tensor | None,
    ignored: torch.Tensor,
    n: int,
    device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(g_lp, g_H) as fp32 `[N]`, zeros for missing upstream gradients and g_lp = 0 where the
    label is ignored."""
    zeros = torch.zeros(n, dtype=torch.float32, device=device)
    g_lp = zeros if grad_logprob is None else grad_logprob.float()
    g_h = zeros if grad_entropy is None else grad_entropy.float()
    return torch.where(ignored, zeros, g_lp), g_h


def local_labels(
    labels: torch.Tensor, vocab_start: int, vocab_local: int, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(label index within this rank's slice or -1, ignored mask) for `labels: [N]`."""
    ignored = labels == ignore_index
    shifted = labels.long() - vocab_start
    inside = (~ignored) & (shifted >= 0) & (shifted < vocab_local)
    return torch.where(inside, shifted, torch.full_like(shifted, -1)), ignored


def vocab_start(vocab_local: int, tp_group=None) -> int:
    """First global vocabulary index of this rank's slice (Megatron's contiguous split)."""
    return vocab_local * (dist.get_rank(tp_group) if tp_world_size(tp_group) > 1 else 0)


def tp_world_size(group) -> int:
    return dist.get_world_size(group) if group is not None and dist.is_initialized() else 1

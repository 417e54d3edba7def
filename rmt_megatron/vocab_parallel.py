"""Token entropies from vocabulary-parallel logits (each TP rank holds `V/TP` columns), in torch.

    full-vocab:  H = log Z - Σ_v p_v z_v,   log Z = m + log Σ_v exp(z_v - m),  m = max_v z_v
    top-k:       H = -Σ_{k} p̂_k log p̂_k,  p̂ = softmax over the k largest logits (RPT, spec §1.4)

Full-vocab: one all-reduce MAX for m, one all-reduce SUM of the packed (Σ exp(z-m), Σ exp(z-m)·z).
Top-k: each rank's k largest logits are all-gathered and the global k largest kept. Layout:
`logits: [N, V_local]` -> `[N]` fp32. No gradient (these score difficulty and feed logs). With
`group=None` (or a group of one) they reduce to the single-rank formulas.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _world(group) -> int:
    return dist.get_world_size(group) if group is not None and dist.is_initialized() else 1


@torch.no_grad()
def vocab_parallel_entropy(logits: torch.Tensor, group=None) -> torch.Tensor:
    """Full-vocabulary entropy per row of vocab-sharded `logits: [N, V_local]`."""
    z = logits.float()
    peak = z.max(dim=-1).values
    if _world(group) > 1:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
    weights = torch.exp(z - peak[:, None])
    packed = torch.stack([weights.sum(-1), (weights * z).sum(-1)])
    if _world(group) > 1:
        dist.all_reduce(packed, group=group)
    total, weighted = packed
    return peak + torch.log(total) - weighted / total


@torch.no_grad()
def vocab_parallel_topk_entropy(logits: torch.Tensor, k: int, group=None) -> torch.Tensor:
    """Entropy of the renormalised top-k distribution per row of `logits: [N, V_local]`."""
    local = logits.float().topk(min(k, logits.shape[-1]), dim=-1).values
    if _world(group) > 1:
        gathered = [torch.empty_like(local) for _ in range(_world(group))]
        dist.all_gather(gathered, local.contiguous(), group=group)
        local = torch.cat(gathered, dim=-1)
    if local.shape[-1] < k:
        raise ValueError(f"top-k entropy needs k={k} <= vocabulary size {local.shape[-1]}")
    log_p = torch.log_softmax(local.topk(k, dim=-1).values, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)

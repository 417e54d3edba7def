"""Top-k entropy from vocabulary-parallel logits (each TP rank holds `V/TP` columns), in torch.

    H = -Σ_{k} p̂_k log p̂_k,  p̂ = softmax over the k largest logits

(RPT's difficulty score; docs/method.md, "Difficulty").

Each rank's k largest logits are all-gathered and the global k largest kept. Layout:
`logits: [N, V_local]` -> `[N]` fp32, no gradient (it scores difficulty). With `group=None` (or a
group of one) it is the single-rank formula. The full-vocabulary entropy is
`rmt_megatron.kernels.token_logprob_entropy`; the formula itself is
`reference.topk_entropy_reference`, applied to the gathered candidates.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from rmt_megatron.kernels.reference import topk_entropy_reference
from rmt_megatron.kernels.stats import tp_world_size


@torch.no_grad()
def vocab_parallel_topk_entropy(logits: torch.Tensor, k: int, group=None) -> torch.Tensor:
    """Entropy of the renormalised top-k distribution per row of `logits: [N, V_local]`."""
    local = logits.float().topk(min(k, logits.shape[-1]), dim=-1).values
    if tp_world_size(group) > 1:
        gathered = [torch.empty_like(local) for _ in range(tp_world_size(group))]
        dist.all_gather(gathered, local.contiguous(), group=group)
        local = torch.cat(gathered, dim=-1)
    if local.shape[-1] < k:
        raise ValueError(f"top-k entropy needs k={k} <= vocabulary size {local.shape[-1]}")
    return topk_entropy_reference(local, k)  # the global top k are among the gathered ones

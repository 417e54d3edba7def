"""Seeded temperature / top-p sampling from vocab-parallel logits, without gathering them.

Each tensor-parallel rank holds `logits: [b, V/TP]`, columns [start, start + V/TP) of the padded
vocabulary (megatron-core's output layer with `parallel_output=True`, no runtime gather); ids at
or past the tokenizer's `vocab_size` are Megatron's padding and are never drawn.

The draw is the exponential race. With x = logits / T, weights w_i = exp(x_i - max_j x_j) and
independent E_i ~ Exp(1),

    argmax_i  w_i · keep_i / E_i      is distributed as   w·keep / Σ_j w_j·keep_j,

the softmax at temperature T restricted to the top-p set. torch.multinomial draws a single sample
this same way (an `exponential_` fill of the probabilities' shape, then the argmax of p / E), so
with the same generator state the tokens are the ones `multinomial(softmax(x), 1)` draws.

The noise is one `[b, V]` fill over the whole padded vocabulary from the caller's generator,
seeded alike on every TP rank; each rank reads its own columns, so the entry (row, id) meets the
same E_i whatever the layout and the token is the one the gathered logits give. What crosses the
TP group per decoding step is O(b·TP) numbers: the row maxima (all-reduce MAX), one (score, id)
pair per row and rank for the argmax and, with top-p, the row sums and the nucleus's candidates,
instead of b·V logits gathered to every rank. The noise itself is drawn on each rank
(b·V exponentials, no communication).

Top-p: order the vocabulary by (w descending, id ascending) and keep id i iff the mass before it
is below p·Σ_j w_j (so the most likely token is always kept, and ties at the edge are kept or
dropped together). The nucleus is found from each rank's k largest weights, gathered (k·TP per
row). That is exact once every rank that held back tokens has its smallest candidate strictly
below the smallest kept weight (nothing held back can rank inside the nucleus); otherwise k grows
fourfold, up to the whole shard. Sums run in float64, so the layout's summation order moves the
edge only for a token whose preceding mass equals p·Σw to about 1e-16.

Temperature 0 is greedy: the largest logit, the lowest id on a tie.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from rmt_megatron.mcore import parallel

FIRST_CANDIDATES = 256
"""Candidates per rank and row in the first round of the top-p search."""


def sample(
    logits: torch.Tensor,
    *,
    vocab_start: int,
    vocab_size: int,
    temperature: float,
    top_p: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """`logits: [b, V/TP]` (this rank's vocabulary columns from `vocab_start`) -> `[b]` token
    ids, the same on every TP rank (a collective over the TP group when TP > 1)."""
    ids = torch.arange(vocab_start, vocab_start + logits.shape[1], device=logits.device)
    real = ids < vocab_size
    if temperature == 0:
        return _global_argmax(logits.float().masked_fill(~real, float("-inf")), ids)
    x = (logits.float() / temperature).masked_fill(~real, float("-inf"))
    row_max = parallel.tensor_parallel_all_reduce(x.max(dim=-1).values, dist.ReduceOp.MAX)
    weights = torch.exp(x - row_max[:, None])
    if top_p < 1.0:
        floor_weight, floor_id = _nucleus_floor(weights, ids, top_p)
        inside = (weights > floor_weight[:, None]) | (
            (weights == floor_weight[:, None]) & (ids[None] <= floor_id[:, None])
        )
        weights = weights * inside
    full = logits.shape[1] * parallel.tensor_parallel_size()
    noise = torch.empty(logits.shape[0], full, device=logits.device).exponential_(
        generator=generator
    )
    return _global_argmax(weights / noise[:, vocab_start : vocab_start + logits.shape[1]], ids)


def _global_argmax(scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """`[b]`: the id of each row's largest score over all TP ranks' columns; on a tie the lowest
    id, as `argmax` over the gathered row picks it."""
    best, where = scores.max(dim=-1)
    best_id = ids[where]
    if parallel.tensor_parallel_size() == 1:
        return best_id
    scores_all = torch.stack(parallel.tensor_parallel_all_gather(best))  # [TP, b]
    ids_all = torch.stack(parallel.tensor_parallel_all_gather(best_id))
    top = scores_all.max(dim=0).values
    return ids_all.masked_fill(scores_all != top, torch.iinfo(ids_all.dtype).max).min(dim=0).values


def _nucleus_floor(
    weights: torch.Tensor, ids: torch.Tensor, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`([b], [b])`: the weight and id of each row's last token inside the top-p nucleus."""
    threshold = top_p * parallel.tensor_parallel_all_reduce(weights.double().sum(dim=-1))
    shard = weights.shape[1]
    count = min(FIRST_CANDIDATES, shard)
    while True:
        values, where = weights.topk(count, dim=-1)  # [b, count], largest first
        values_all = torch.cat(parallel.tensor_parallel_all_gather(values), dim=1)
        ids_all = torch.cat(parallel.tensor_parallel_all_gather(ids[where]), dim=1)
        by_id = ids_all.argsort(dim=-1)
        values_all, ids_all = values_all.gather(1, by_id), ids_all.gather(1, by_id)
        order = values_all.argsort(dim=-1, descending=True, stable=True)
        ranked = values_all.gather(1, order).double()
        before = torch.cumsum(ranked, dim=-1).roll(1, dims=-1)
        before[:, 0] = 0.0  # the mass ranked strictly before each candidate
        last = (before < threshold[:, None]).sum(dim=-1, keepdim=True) - 1
        floor_weight = values_all.gather(1, order.gather(1, last)).squeeze(1)
        floor_id = ids_all.gather(1, order.gather(1, last)).squeeze(1)
        if count == shard:
            return floor_weight, floor_id
        smallest = torch.stack(parallel.tensor_parallel_all_gather(values[:, -1]))  # [TP, b]
        if bool((smallest < floor_weight[None]).all()):
            return floor_weight, floor_id
        count = min(4 * count, shard)

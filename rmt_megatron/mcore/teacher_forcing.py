"""Teacher-forced forward passes that reduce each micro-batch's logits to a statistic.

`forward_statistics(model, micro_batches, statistic)` runs megatron-core's schedule forward-only
(so pipeline stages pass activations the usual way) and applies `statistic(logits, batch)` to each
micro-batch's vocab-parallel logits `[b, s, V_local]` on the last stage. A micro-batch is a dict
with `tokens` and `position_ids`, both `[b, s]`. Statistics: `entropy_statistic` (difficulty
scoring) and `argmax_statistic` (plain next-token prediction).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

from rmt_megatron.kernels import token_logprob_entropy
from rmt_megatron.kernels.topk_entropy import vocab_parallel_topk_entropy
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.device import to_compute_device
from rmt_megatron.mcore.forward_step import causal_mask

Statistic = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def _collect(statistic: Statistic, batch, output, non_loss_data=True):
    return statistic(output, batch)


def _forward_logits(statistic: Statistic, data_iterator, model):
    batch = to_compute_device(next(data_iterator))
    tokens = batch["tokens"]
    logits = model(tokens, batch["position_ids"], causal_mask(tokens.shape[1], tokens.device))
    return logits, partial(_collect, statistic, batch)


@torch.no_grad()
def forward_statistics(
    model, micro_batches: list[dict[str, torch.Tensor]], statistic: Statistic
) -> list[torch.Tensor] | None:
    """`statistic(logits [b, s, V_local], batch)` for each micro-batch, moved to the host, on the
    last pipeline stage (None on the others). `model` is a GPTModel stage (or its DDP wrapper)."""
    was_training = model.training
    model.eval()
    try:
        outputs = get_forward_backward_func()(
            forward_step_func=partial(_forward_logits, statistic),
            data_iterator=iter(micro_batches),
            model=[model],
            num_microbatches=len(micro_batches),
            seq_length=micro_batches[0]["tokens"].shape[1],
            micro_batch_size=micro_batches[0]["tokens"].shape[0],
            forward_only=True,
            collect_non_loss_data=True,
        )
    finally:
        model.train(was_training)
    return [output.cpu() for output in outputs] if parallel.is_last_stage() else None


def entropy_statistic(top_k: int) -> Statistic:
    """Per-token entropy `[b, s]` of vocab-parallel logits (top-k renormalised, or full if 0)."""
    group = parallel.tensor_parallel_group()

    def statistic(logits: torch.Tensor, batch) -> torch.Tensor:
        flat = logits.reshape(-1, logits.shape[-1])
        if top_k:
            values = vocab_parallel_topk_entropy(flat, top_k, group)
        else:
            unlabelled = torch.full(flat.shape[:1], -100, dtype=torch.long, device=flat.device)
            values = token_logprob_entropy(flat, unlabelled, tp_group=group)[1]
        return values.reshape(logits.shape[:2])

    return statistic


def argmax_statistic(vocab_size: int) -> Statistic:
    """Teacher-forced argmax `[b, s]` over the real vocabulary (TP shards gathered first; the
    padded rows past `vocab_size` never win)."""

    def statistic(logits: torch.Tensor, batch) -> torch.Tensor:
        full = gather_from_tensor_model_parallel_region(logits)
        return full[..., :vocab_size].argmax(dim=-1)

    return statistic

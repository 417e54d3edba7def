"""Chunked pure-torch backend for the logits op: the math of `stats.py` one vocabulary chunk at a
time.

From logits `[N, V_local]`: one online pass over V chunks gives the partial statistics; backward
recomputes p chunk by chunk and writes the gradient (into `out`, which may be the logits
themselves). fp32 temporaries are `[N, chunk]`, never the whole `[N, V]` (which matters for
bf16/fp16 logits).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rmt_megatron.kernels.stats import GradInputs, PartialStats, to_peak

DEFAULT_V_CHUNK = 4096


def _spans(total: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, chunk):
        yield start, min(start + chunk, total)


class _OnlineStats:
    """Running (m, s, w, t) of `stats.PartialStats` over vocabulary chunks."""

    def __init__(self, n: int, device) -> None:
        self.stats = PartialStats(
            torch.full((n,), float("-inf"), device=device),
            *(torch.zeros(n, device=device) for _ in range(3)),
        )

    def update(self, z: torch.Tensor, start: int, local_label: torch.Tensor) -> None:
        """Fold in `z: [n, c]` (a fp32 temporary, already divided by τ, overwritten) for columns
        [start, start + c)."""
        inside = (local_label >= start) & (local_label < start + z.shape[1])
        column = (local_label - start).clamp(0, z.shape[1] - 1)
        target = torch.where(inside, z.gather(1, column[:, None]).squeeze(1), self.stats.target)
        peak = torch.maximum(self.stats.peak, z.max(dim=-1).values)
        sum_exp, sum_exp_shift = to_peak(self.stats, peak)
        shift = z.sub_(peak[:, None])
        e = shift.exp()
        sum_exp = sum_exp + e.sum(dim=-1)
        # a plain (pairwise) sum: einsum's dot product accumulates 10x less accurately here
        sum_exp_shift = sum_exp_shift + e.mul_(shift).sum(dim=-1)
        self.stats = PartialStats(peak, sum_exp, sum_exp_shift, target)

    def result(self) -> PartialStats:
        return self.stats


def _grad_z(z: torch.Tensor, start: int, inputs: GradInputs) -> torch.Tensor:
    """∂L/∂z for one chunk `z: [n, c]` starting at column `start` (a temporary: overwritten with
    the result): g_lp·(onehot - p) - g_H·p·(z - E_p[z])."""
    local_label, log_z, mean_z, g_lp, g_h = inputs
    p = torch.sub(z, log_z[:, None]).exp_()
    coefficient = z.sub_(mean_z[:, None]).mul_(g_h[:, None]).add_(g_lp[:, None])
    grad = p.mul_(coefficient).neg_()
    inside = (local_label >= start) & (local_label < start + z.shape[1])
    rows = torch.nonzero(inside).squeeze(1)
    grad[rows, local_label[rows] - start] += g_lp[rows]
    return grad


@torch.no_grad()
def logits_partial_stats(
    logits: torch.Tensor, local_label: torch.Tensor, temperature: float, v_chunk: int | None = None
) -> PartialStats:
    stats = _OnlineStats(logits.shape[0], logits.device)
    for start, end in _spans(logits.shape[1], v_chunk or DEFAULT_V_CHUNK):
        stats.update(logits[:, start:end].float() / temperature, start, local_label)
    return stats.result()


@torch.no_grad()
def logits_grad(
    logits: torch.Tensor,
    inputs: GradInputs,
    temperature: float,
    out: torch.Tensor | None = None,
    v_chunk: int | None = None,
) -> torch.Tensor:
    grad = torch.empty_like(logits) if out is None else out
    for start, end in _spans(logits.shape[1], v_chunk or DEFAULT_V_CHUNK):
        z = logits[:, start:end].float() / temperature
        grad[:, start:end] = _grad_z(z, start, inputs).div_(temperature)
    return grad

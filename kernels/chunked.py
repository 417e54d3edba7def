"""Chunked pure-torch backend: the math of `stats.py` one vocabulary (and token) chunk at a time.

From logits `[N, V_local]`: one online pass over V chunks gives the partial statistics; backward
recomputes p chunk by chunk and writes the gradient. fp32 temporaries are `[N, chunk]`, never the
whole `[N, V]` (which matters for bf16/fp16 logits).

From a hidden state and the output layer (`hidden: [N, H]`, `weight: [V_local, H]`): logits are
formed one `[n_chunk, v_chunk]` tile at a time, in the forward for the statistics and again in the
backward, which accumulates `grad_hidden = Σ dz·W` and `grad_weight = Σ dzᵀ·h` per tile. Only
per-token statistics `[N]` are kept between the two, so the `[N, V]` logits never exist.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rmt_megatron.kernels.stats import PartialStats

DEFAULT_V_CHUNK = 4096
DEFAULT_N_CHUNK = 1024


def _spans(total: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, chunk):
        yield start, min(start + chunk, total)


class _OnlineStats:
    """Running (m, s, w, t) of `stats.PartialStats` over vocabulary chunks."""

    def __init__(self, n: int, device) -> None:
        self.peak = torch.full((n,), float("-inf"), device=device)
        self.sum_exp = torch.zeros(n, device=device)
        self.sum_exp_z = torch.zeros(n, device=device)
        self.target = torch.zeros(n, device=device)

    def update(self, z: torch.Tensor, start: int, local_label: torch.Tensor) -> None:
        """Fold in `z: [n, c]` (fp32, already divided by τ) for columns [start, start + c)."""
        new_peak = torch.maximum(self.peak, z.max(dim=-1).values)
        rescale = torch.exp(self.peak - new_peak)
        e = torch.exp(z - new_peak[:, None])
        self.sum_exp = self.sum_exp * rescale + e.sum(dim=-1)
        self.sum_exp_z = self.sum_exp_z * rescale + (e * z).sum(dim=-1)
        self.peak = new_peak
        inside = (local_label >= start) & (local_label < start + z.shape[1])
        column = (local_label - start).clamp(0, z.shape[1] - 1)
        picked = z.gather(1, column[:, None]).squeeze(1)
        self.target = torch.where(inside, picked, self.target)

    def result(self) -> PartialStats:
        return PartialStats(self.peak, self.sum_exp, self.sum_exp_z, self.target)


def _grad_z(z: torch.Tensor, start: int, local_label: torch.Tensor, log_z: torch.Tensor,
            mean_z: torch.Tensor, g_lp: torch.Tensor, g_h: torch.Tensor) -> torch.Tensor:
    """∂L/∂z for one chunk `z: [n, c]`: g_lp·(onehot - p) - g_H·p·(z - E_p[z])."""
    p = torch.exp(z - log_z[:, None])
    grad = -p * (g_lp[:, None] + g_h[:, None] * (z - mean_z[:, None]))
    inside = (local_label >= start) & (local_label < start + z.shape[1])
    rows = torch.nonzero(inside).squeeze(1)
    grad[rows, local_label[rows] - start] += g_lp[rows]
    return grad


@torch.no_grad()
def logits_partial_stats(logits: torch.Tensor, local_label: torch.Tensor, temperature: float,
                         v_chunk: int = DEFAULT_V_CHUNK) -> PartialStats:
    stats = _OnlineStats(logits.shape[0], logits.device)
    for start, end in _spans(logits.shape[1], v_chunk):
        stats.update(logits[:, start:end].float() / temperature, start, local_label)
    return stats.result()


@torch.no_grad()
def logits_grad(logits: torch.Tensor, local_label: torch.Tensor, log_z: torch.Tensor,
                mean_z: torch.Tensor, g_lp: torch.Tensor, g_h: torch.Tensor,
                temperature: float, v_chunk: int = DEFAULT_V_CHUNK) -> torch.Tensor:
    grad = torch.empty_like(logits)
    for start, end in _spans(logits.shape[1], v_chunk):
        z = logits[:, start:end].float() / temperature
        grad[:, start:end] = (_grad_z(z, start, local_label, log_z, mean_z, g_lp, g_h)
                              / temperature).to(logits.dtype)
    return grad


@torch.no_grad()
def linear_partial_stats(hidden: torch.Tensor, weight: torch.Tensor, local_label: torch.Tensor,
                         temperature: float, n_chunk: int = DEFAULT_N_CHUNK,
                         v_chunk: int = DEFAULT_V_CHUNK) -> PartialStats:
    parts = []
    for n0, n1 in _spans(hidden.shape[0], n_chunk):
        stats = _OnlineStats(n1 - n0, hidden.device)
        for v0, v1 in _spans(weight.shape[0], v_chunk):
            z = (hidden[n0:n1] @ weight[v0:v1].T).float() / temperature
            stats.update(z, v0, local_label[n0:n1])
        parts.append(stats.result())
    return PartialStats(*(torch.cat(values) for values in zip(*parts, strict=True)))


@torch.no_grad()
def linear_grads(hidden: torch.Tensor, weight: torch.Tensor, local_label: torch.Tensor,
                 log_z: torch.Tensor, mean_z: torch.Tensor, g_lp: torch.Tensor,
                 g_h: torch.Tensor, temperature: float, n_chunk: int = DEFAULT_N_CHUNK,
                 v_chunk: int = DEFAULT_V_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
    for n0, n1 in _spans(hidden.shape[0], n_chunk):
        h = hidden[n0:n1]
        for v0, v1 in _spans(weight.shape[0], v_chunk):
            w = weight[v0:v1]
            z = (h @ w.T).float() / temperature
            dz = (_grad_z(z, v0, local_label[n0:n1], log_z[n0:n1], mean_z[n0:n1],
                          g_lp[n0:n1], g_h[n0:n1]) / temperature).to(hidden.dtype)
            grad_hidden[n0:n1] += (dz @ w).float()
            grad_weight[v0:v1] += (dz.T @ h).float()
    return grad_hidden.to(hidden.dtype), grad_weight.to(weight.dtype)

"""The linear ops' tiling: logits from a hidden state and the output layer, a block of tokens at a
time, so the `[N, V]` logits never exist.

`hidden: [N, H]`, `weight: [V_local, H]`. For each block of `rows` tokens the forward forms
`z = h_blk · Wᵀ` (`[rows, V_local]`, the inputs' dtype; a cuBLAS/BLAS matmul) and hands it to a
logits backend (`chunked` or `triton_logits`) for the partial statistics of `stats.py`. The
backward forms each block again, lets the backend overwrite it with ∂L/∂z, and accumulates

    grad_hidden[blk] = ∂L/∂z · W,      grad_weight += (∂L/∂z)ᵀ · h_blk.

Only per-token statistics `[N]` are kept between forward and backward. The block is sized so that
one `[rows, V_local]` block takes about `block_bytes` (device default: `BLOCK_BYTES`).
"""

from __future__ import annotations

from types import ModuleType

import torch

from rmt_megatron.kernels.stats import PartialStats

BLOCK_BYTES = {"cuda": 512 * 2**20, "cpu": 16 * 2**20}
"""Default size of one block of logits: large on a GPU (a long matmul keeps the tensor cores
busy; the extra-memory target there is 1 GiB), small on a CPU (cache and peak memory)."""


def block_rows(hidden: torch.Tensor, weight: torch.Tensor, block_bytes: int | None = None) -> int:
    """Tokens per block for `[rows, V_local]` logits of about `block_bytes`."""
    budget = block_bytes or BLOCK_BYTES.get(hidden.device.type, BLOCK_BYTES["cpu"])
    return max(1, min(hidden.shape[0], budget // (weight.shape[0] * hidden.element_size())))


@torch.no_grad()
def linear_partial_stats(hidden: torch.Tensor, weight: torch.Tensor, local_label: torch.Tensor,
                         temperature: float, impl: ModuleType,
                         block_bytes: int | None = None) -> PartialStats:
    rows = block_rows(hidden, weight, block_bytes)
    parts = [impl.logits_partial_stats(hidden[n0:n0 + rows] @ weight.T,
                                       local_label[n0:n0 + rows], temperature)
             for n0 in range(0, hidden.shape[0], rows)]
    return PartialStats(*(torch.cat(values) for values in zip(*parts, strict=True)))


@torch.no_grad()
def linear_grads(hidden: torch.Tensor, weight: torch.Tensor, local_label: torch.Tensor,
                 log_z: torch.Tensor, mean_z: torch.Tensor, g_lp: torch.Tensor,
                 g_h: torch.Tensor, temperature: float, impl: ModuleType,
                 block_bytes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    rows = block_rows(hidden, weight, block_bytes)
    grad_hidden = torch.empty_like(hidden)
    grad_weight = torch.zeros_like(weight)
    for n0 in range(0, hidden.shape[0], rows):
        block = slice(n0, n0 + rows)
        h = hidden[block]
        dz = h @ weight.T
        impl.logits_grad(dz, local_label[block], log_z[block], mean_z[block], g_lp[block],
                         g_h[block], temperature, out=dz)
        torch.mm(dz, weight, out=grad_hidden[block])
        grad_weight.addmm_(dz.T, h)
    return grad_hidden, grad_weight

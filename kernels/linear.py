"""The linear ops' tiling: logits from a hidden state and the output layer, one tile at a time,
so the `[N, V]` logits never exist.

`hidden: [N, H]`, `weight: [V_local, H]`. The forward forms each tile `z = h_blk · W_colᵀ`
(`[rows, cols]`, the inputs' dtype; a cuBLAS/BLAS matmul), hands it to a logits backend
(`chunked` or `triton_logits`) for the tile's partial statistics (`stats.PartialStats`) and
merges the tiles of a row block with `stats.merge`. The backward forms each tile again, lets the
backend overwrite it with ∂L/∂z, and accumulates

    grad_hidden[blk] += ∂L/∂z · W_col,      grad_weight[col] += (∂L/∂z)ᵀ · h_blk.

Only per-token statistics `[N]` are kept between forward and backward. Tile shapes per device
(`tile_shape`): on a GPU a tile spans the whole vocabulary slice and about `TILE_BYTES` (long
matmuls keep the tensor cores busy; one Triton program sweeps a row); on a CPU 4096 columns and
about 16 MiB (cache-sized, and the CPU target is a small peak). grad_weight accumulates in the
weight's dtype (each product is summed in fp32 by the BLAS).
"""

from __future__ import annotations

from types import ModuleType

import torch

from rmt_megatron.kernels.stats import PartialStats, merge

TILE_BYTES = {"cuda": 512 * 2**20, "cpu": 16 * 2**20}
"""Bytes of one tile of logits, by device type."""

TILE_COLS = {"cuda": None, "cpu": 4096}
"""Vocabulary columns of one tile, by device type (None: the whole slice)."""


def tile_shape(hidden: torch.Tensor, weight: torch.Tensor) -> tuple[int, int]:
    """(rows, cols) of one tile for this device."""
    device = hidden.device.type if hidden.device.type in TILE_BYTES else "cpu"
    cols = min(weight.shape[0], TILE_COLS[device] or weight.shape[0])
    rows = TILE_BYTES[device] // (cols * hidden.element_size())
    return max(1, min(hidden.shape[0], rows)), cols


def _tiles(total: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


@torch.no_grad()
def linear_partial_stats(hidden: torch.Tensor, weight: torch.Tensor, local_label: torch.Tensor,
                         temperature: float, impl: ModuleType) -> PartialStats:
    rows, cols = tile_shape(hidden, weight)
    blocks = []
    for blk in _tiles(hidden.shape[0], rows):
        h = hidden[blk]
        blocks.append(merge([
            impl.logits_partial_stats(h @ weight[col].T,
                                      local_label[blk] - col.start, temperature)
            for col in _tiles(weight.shape[0], cols)]))
    return PartialStats(*(torch.cat(values) for values in zip(*blocks, strict=True)))


@torch.no_grad()
def linear_grads(hidden: torch.Tensor, weight: torch.Tensor, local_label: torch.Tensor,
                 log_z: torch.Tensor, mean_z: torch.Tensor, g_lp: torch.Tensor,
                 g_h: torch.Tensor, temperature: float,
                 impl: ModuleType) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = tile_shape(hidden, weight)
    grad_hidden = torch.zeros_like(hidden)
    grad_weight = torch.zeros_like(weight)
    for blk in _tiles(hidden.shape[0], rows):
        h = hidden[blk]
        for col in _tiles(weight.shape[0], cols):
            w = weight[col]
            dz = h @ w.T
            impl.logits_grad(dz, local_label[blk] - col.start, log_z[blk], mean_z[blk],
                             g_lp[blk], g_h[blk], temperature, out=dz)
            grad_hidden[blk].addmm_(dz, w)
            grad_weight[col].addmm_(dz.T, h)
    return grad_hidden, grad_weight

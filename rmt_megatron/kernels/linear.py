"""The linear ops' tiling: logits from a hidden state and the output layer, one tile at a time,
so the `[N, V]` logits never exist.

`hidden: [N, H]`, `weight: [V_local, H]`. The forward forms each tile `z = h_blk · W_colᵀ`
(`[rows, cols]`, the inputs' dtype; a cuBLAS/BLAS matmul), hands it to a logits backend
(`chunked` or `triton_logits`) for the tile's partial statistics (`stats.PartialStats`) and
merges the tiles of a row block with `stats.merge`. The backward forms each tile again, lets the
backend overwrite it with ∂L/∂z, and accumulates

    grad_hidden[blk] += ∂L/∂z · W_col,      grad_weight[col] += (∂L/∂z)ᵀ · h_blk.

Only per-token statistics `[N]` are kept between forward and backward. When the objective is
known in the forward (`linear_objective_grads`), each row block's tiles are kept until its
gradient coefficients are known, so the backward's recomputation is saved. Tile shapes per device
(`tile_shape`): on a GPU a tile spans the whole vocabulary slice and about `TILE_BYTES` (long
matmuls keep the tensor cores busy; one Triton program sweeps a row); on a CPU 4096 columns and
about 16 MiB (cache-sized, and the CPU target is a small peak). grad_weight accumulates in the
weight's dtype (each product is summed in fp32 by the BLAS).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch

from rmt_megatron.kernels.stats import GradInputs, PartialStats, TokenStats, combine, merge

TILE_BYTES = {"cuda": 512 * 2**20, "cpu": 16 * 2**20}
"""Bytes of one tile of logits, by device type."""

TILE_COLS = {"cuda": None, "cpu": 4096}
"""Vocabulary columns of one tile, by device type (None: the whole slice)."""


def tile_shape(
    hidden: torch.Tensor, weight: torch.Tensor, whole_block: bool = False
) -> tuple[int, int]:
    """(rows, cols) of one tile for this device; with `whole_block` the rows are sized so that
    a block's tiles together (`[rows, V_local]`) take about TILE_BYTES."""
    device = hidden.device.type if hidden.device.type in TILE_BYTES else "cpu"
    cols = min(weight.shape[0], TILE_COLS[device] or weight.shape[0])
    width = weight.shape[0] if whole_block else cols
    rows = TILE_BYTES[device] // (width * hidden.element_size())
    return max(1, min(hidden.shape[0], rows)), cols


def _tiles(total: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


def _block_stats(tiles, label: torch.Tensor, temperature: float, impl: ModuleType) -> PartialStats:
    """This rank's statistics of one row block from its `(col, z)` tiles; `label` is the
    block's local labels."""
    return merge([impl.logits_partial_stats(z, label - col.start, temperature) for col, z in tiles])


def _add_block_grads(
    tiles,
    h: torch.Tensor,
    weight: torch.Tensor,
    inputs: GradInputs,
    temperature: float,
    impl: ModuleType,
    grads: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Overwrite each `(col, z)` tile of a row block with ∂L/∂z and accumulate its products
    into `grads` = (the block's grad_hidden rows, grad_weight); `inputs` are the block's."""
    grad_hidden_block, grad_weight = grads
    for col, dz in tiles:
        impl.logits_grad(dz, inputs.shifted(col.start), temperature, out=dz)
        grad_hidden_block.addmm_(dz, weight[col])
        grad_weight[col].addmm_(dz.T, h)


@torch.no_grad()
def linear_partial_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    local_label: torch.Tensor,
    temperature: float,
    impl: ModuleType,
) -> PartialStats:
    rows, cols = tile_shape(hidden, weight)
    blocks = []
    for blk in _tiles(hidden.shape[0], rows):
        h = hidden[blk]
        tiles = ((col, h @ weight[col].T) for col in _tiles(weight.shape[0], cols))
        blocks.append(_block_stats(tiles, local_label[blk], temperature, impl))
    return PartialStats(*(torch.cat(values) for values in zip(*blocks, strict=True)))


@torch.no_grad()
def linear_grads(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    inputs: GradInputs,
    temperature: float,
    impl: ModuleType,
) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = tile_shape(hidden, weight)
    grad_hidden = torch.zeros_like(hidden)
    grad_weight = torch.zeros_like(weight)
    for blk in _tiles(hidden.shape[0], rows):
        h = hidden[blk]
        tiles = ((col, h @ weight[col].T) for col in _tiles(weight.shape[0], cols))
        _add_block_grads(
            tiles, h, weight, inputs.rows(blk), temperature, impl, (grad_hidden[blk], grad_weight)
        )
    return grad_hidden, grad_weight


@torch.no_grad()
def linear_objective_grads(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    local_label: torch.Tensor,
    ignored: torch.Tensor,
    temperature: float,
    impl: ModuleType,
    block_coefficients: Callable[[slice, TokenStats], tuple[torch.Tensor, torch.Tensor]],
    tp_group=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_hidden, grad_weight) of a per-token objective in one pass: each row block's tiles
    are formed once, kept while the block's statistics are combined (over TP ranks too) and
    `block_coefficients(block, stats)` gives its (g_lp, g_H), then overwritten with ∂L/∂z and
    multiplied out. Three matmuls in all instead of four; a block's tiles (`[rows, V_local]`)
    are alive at once, so blocks are sized by `tile_shape(..., whole_block=True)`."""
    rows, cols = tile_shape(hidden, weight, whole_block=True)
    grad_hidden = torch.zeros_like(hidden)
    grad_weight = torch.zeros_like(weight)
    for blk in _tiles(hidden.shape[0], rows):
        h = hidden[blk]
        tiles = [(col, h @ weight[col].T) for col in _tiles(weight.shape[0], cols)]
        stats = combine(
            _block_stats(tiles, local_label[blk], temperature, impl), ignored[blk], tp_group
        )
        inputs = GradInputs(
            local_label[blk], stats.log_z, stats.mean_z, *block_coefficients(blk, stats)
        )
        _add_block_grads(
            tiles, h, weight, inputs, temperature, impl, (grad_hidden[blk], grad_weight)
        )
    return grad_hidden, grad_weight

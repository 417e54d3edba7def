"""Triton backend for the logits op: one program per token row, one sweep over the vocabulary.

`partial_stats` computes this rank's (m, s, w, t) of `stats.PartialStats` with an online
max/sum over `BLOCK`-wide column tiles; `grad` recomputes p tile by tile and writes
∂L/∂x = (1/τ)·[g_lp·(onehot - p) - g_H·p·(z - E_p[z])] (into `out`, which may be the logits
themselves: each element is read before it is written). Same signatures as the chunked torch
functions they replace. On CPU they run only under `TRITON_INTERPRET=1` (set before triton is
imported), which is how the tests check them; their speed is measured on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rmt_megatron.kernels.stats import GradInputs, PartialStats

BLOCK = 1024


@triton.jit
def _stats_kernel(
    logits_ptr,
    label_ptr,
    peak_ptr,
    sum_ptr,
    sum_z_ptr,
    target_ptr,
    row_stride,
    vocab,
    inv_temperature,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    label = tl.load(label_ptr + row)
    peak = -float("inf")
    total = 0.0
    total_z = 0.0
    target = 0.0
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        inside = cols < vocab
        z = (
            tl.load(logits_ptr + row * row_stride + cols, mask=inside, other=-float("inf")).to(
                tl.float32
            )
            * inv_temperature
        )
        new_peak = tl.maximum(peak, tl.max(z, axis=0))
        shift = tl.where(inside, z - new_peak, 0.0)
        e = tl.where(inside, tl.exp(shift), 0.0)
        moved = peak - new_peak
        rescale = tl.exp(moved)
        # w is kept relative to the running peak (stats.py): move it before adding this block
        total_z = (total_z + tl.where(total > 0, moved, 0.0) * total) * rescale
        total = total * rescale + tl.sum(e, axis=0)
        total_z += tl.sum(e * shift, axis=0)
        target += tl.sum(tl.where(cols == label, z, 0.0), axis=0)
        peak = new_peak
    tl.store(peak_ptr + row, peak)
    tl.store(sum_ptr + row, total)
    tl.store(sum_z_ptr + row, total_z)
    tl.store(target_ptr + row, target)


@triton.jit
def _grad_kernel(
    logits_ptr,
    grad_ptr,
    label_ptr,
    log_z_ptr,
    mean_z_ptr,
    g_lp_ptr,
    g_h_ptr,
    row_stride,
    vocab,
    inv_temperature,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    label = tl.load(label_ptr + row)
    log_z = tl.load(log_z_ptr + row)
    mean_z = tl.load(mean_z_ptr + row)
    g_lp = tl.load(g_lp_ptr + row)
    g_h = tl.load(g_h_ptr + row)
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        inside = cols < vocab
        z = (
            tl.load(logits_ptr + row * row_stride + cols, mask=inside, other=0.0).to(tl.float32)
            * inv_temperature
        )
        p = tl.exp(z - log_z)
        grad = -p * (g_lp + g_h * (z - mean_z)) + tl.where(cols == label, g_lp, 0.0)
        tl.store(
            grad_ptr + row * row_stride + cols,
            (grad * inv_temperature).to(grad_ptr.dtype.element_ty),
            mask=inside,
        )


def _block(vocab: int) -> int:
    return min(BLOCK, triton.next_power_of_2(vocab))


def logits_partial_stats(
    logits: torch.Tensor, local_label: torch.Tensor, temperature: float
) -> PartialStats:
    logits = logits.contiguous()
    n, vocab = logits.shape
    out = [torch.empty(n, dtype=torch.float32, device=logits.device) for _ in range(4)]
    _stats_kernel[(n,)](
        logits,
        local_label.contiguous(),
        *out,
        logits.stride(0),
        vocab,
        1.0 / temperature,
        BLOCK=_block(vocab),
    )
    return PartialStats(*out)


def logits_grad(
    logits: torch.Tensor, inputs: GradInputs, temperature: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    logits = logits.contiguous()
    grad = torch.empty_like(logits) if out is None else out
    n, vocab = logits.shape
    _grad_kernel[(n,)](
        logits,
        grad,
        *(values.contiguous() for values in inputs),
        logits.stride(0),
        vocab,
        1.0 / temperature,
        BLOCK=_block(vocab),
    )
    return grad

"""Where this rank computes: its CUDA device (set from LOCAL_RANK at start-up), or the CPU on a
machine without one.

Batches are built on the host (packing, evaluation and difficulty windows, the rollout engine's
bookkeeping) and moved to the compute device where they meet the model, as Megatron-LM's
`get_batch` does: in the forward-step functions and in the rollout engine's forward. Results
that go back to host code (statistics, sampled tokens) are moved back there.
"""

from __future__ import annotations

import torch

from rmt_megatron.mcore.cpu import cpu_only


def compute_device() -> torch.device:
    """This rank's device: `cuda:<current>` with a GPU, else the CPU."""
    return torch.device("cpu") if cpu_only() else torch.device("cuda", torch.cuda.current_device())


def to_compute_device(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`batch` with every tensor on `compute_device()` (the same dict's tensors on a CPU run)."""
    device = compute_device()
    return {
        name: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for name, value in batch.items()
    }


MEMORY_RESERVE = 0.10
"""Share of a GPU's memory kept free for what neither the memory plan nor the rollout budget
counts (CUDA context, NCCL buffers, allocator fragmentation, logits): a rank fits when its peak is
within the rest."""


def free_memory_room() -> int | None:
    """Bytes this rank can still allocate within (1 − MEMORY_RESERVE) of its GPU's memory, over
    what torch holds now; None on a CPU (no limit is imposed there)."""
    if cpu_only():
        return None
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return max(0, int((1 - MEMORY_RESERVE) * total) - torch.cuda.memory_allocated())

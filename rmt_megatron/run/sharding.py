"""How work is split over data-parallel replicas: round robin, replica r takes items r, r + D,
r + 2D, ... of D replicas. One rule for the step's RL positions, the difficulty-scoring windows
and the evaluation positions."""

from __future__ import annotations


def replica_share(count: int, rank: int, size: int) -> range:
    """The indices in `range(count)` that replica `rank` of `size` works on."""
    if not 0 <= rank < size:
        raise ValueError(f"replica {rank} is not one of {size}")
    return range(rank, count, size)

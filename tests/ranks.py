"""Run a function on N ranks forked from the test process, as torchrun would launch them.

Forking skips megatron-core's multi-second import per rank. Each child gets torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), one CPU thread, and sends
back its return value (or its traceback). The parent never initialises torch.distributed itself.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import traceback
from collections.abc import Callable
from typing import Any

from rmt_megatron.mcore.parallel import free_port


def _child(rank: int, world_size: int, port: int, queue, fn: Callable, args: tuple) -> None:
    import torch

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        # Plain pickle: torch's queue reducer shares tensors by fd, which dies with the child.
        queue.put((rank, True, pickle.dumps(fn(*args))))
    except BaseException:  # report every failure, SystemExit included, to the parent
        queue.put((rank, False, traceback.format_exc()))


def run_ranks(world_size: int, fn: Callable, *args: Any, timeout: float = 300) -> list[Any]:
    """`[fn(*args) on rank 0, ..., rank world_size-1]`; raises if any rank fails."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        raise RuntimeError(
            "torch.distributed is initialised in the test process itself: a "
            "test ran training in-process; fork its ranks with run_ranks"
        )
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    port = free_port()
    processes = [
        context.Process(target=_child, args=(rank, world_size, port, queue, fn, args))
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    results: dict[int, Any] = {}
    try:
        for _ in processes:
            rank, ok, value = queue.get(timeout=timeout)
            if not ok:
                raise RuntimeError(f"rank {rank} failed:\n{value}")
            results[rank] = pickle.loads(value)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
    return [results[rank] for rank in range(world_size)]

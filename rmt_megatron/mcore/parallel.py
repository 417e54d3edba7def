"""Process groups: torch.distributed from torchrun's environment, then Megatron's parallel state.

The rest of the package asks this module, never `megatron.core.parallel_state`, for ranks, groups
and the few collectives it needs (rank 0, barriers, TP gathers, DP sums and gathers).

One process per device. `torchrun` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
a plain `python pretrain_rmt.py` runs as a world of one. NCCL on GPUs, gloo on CPU. Ranks split
into tensor-parallel × pipeline-parallel × data-parallel groups (DP = world / (TP·PP)). Seeds
follow Megatron-LM: seed + 100·pp_rank for the global generators, plus megatron's model-parallel
RNG tracker (its CPU stand-in without a GPU).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import socket
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

from rmt_megatron.config.sections import ParallelConfig
from rmt_megatron.errors import ConfigError, TrainingError
from rmt_megatron.mcore.cpu import (
    apply_cpu_patches,
    cpu_model_parallel_seed,
    cpu_only,
    device_mode,
    set_cpu_threads,
)
from rmt_megatron.mcore.device import compute_device


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a one-process group's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def initialize(config: ParallelConfig, seed: int, timeout_minutes: float = 10.0) -> None:
    """Start torch.distributed (if needed) and Megatron's model-parallel groups, then seed. A
    collective that waits longer than `timeout_minutes` for a stopped or dead rank fails on the
    ranks that wait (Megatron-LM's --distributed-timeout-minutes), so the job ends instead of
    hanging."""
    timeout = datetime.timedelta(minutes=timeout_minutes)
    apply_cpu_patches()
    if cpu_only():
        set_cpu_threads()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    model_parallel = config.tensor_model_parallel_size * config.pipeline_model_parallel_size
    if world_size % model_parallel:
        raise ConfigError(
            f"world size {world_size} is not divisible by tensor_model_parallel_size × "
            f"pipeline_model_parallel_size = {model_parallel}: launch a multiple of "
            f"{model_parallel} processes (torchrun --nproc_per_node)"
        )
    if not dist.is_initialized():
        init_method = None  # torchrun's environment
        if world_size == 1 and "MASTER_PORT" not in os.environ:
            # a private rendezvous, left out of os.environ so that processes started later
            # (e.g. a torchrun from this one) do not inherit a port that is in use
            init_method = f"tcp://127.0.0.1:{free_port()}"
        device = None
        if not cpu_only():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group(
            "gloo" if cpu_only() else "nccl",
            init_method=init_method,
            rank=int(os.environ.get("RANK", "0")),
            world_size=world_size,
            timeout=timeout,
            device_id=device,
        )
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=config.tensor_model_parallel_size,
        pipeline_model_parallel_size=config.pipeline_model_parallel_size,
        distributed_timeout_minutes=timeout_minutes,  # a timedelta there: minutes may be fractional
    )
    set_seed(seed)


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch as Megatron-LM does (offset per pipeline stage)."""
    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    np.random.seed(stage_seed)
    torch.manual_seed(stage_seed)
    if cpu_only():
        cpu_model_parallel_seed(
            stage_seed,
            parallel_state.get_tensor_model_parallel_rank(),
            parallel_state.get_expert_model_parallel_rank(),
            parallel_state.get_expert_tensor_parallel_rank(),
        )
    else:
        model_parallel_cuda_manual_seed(stage_seed)


def world_rank() -> int:
    """This process's rank in the world; before and after the process group exists, torchrun's
    RANK says (0 for a plain `python` run)."""
    if dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_rank() -> bool:
    """Rank 0 of the world: the one that prints and writes shared files."""
    return world_rank() == 0


def print_main(message: str) -> None:
    """Print `message` on the main rank only (flushed: ranks' lines arrive as they happen)."""
    if is_main_rank():
        print(message, flush=True)


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if dist.is_initialized():
        dist.barrier()


def _all_reduce(tensor: torch.Tensor, op=dist.ReduceOp.SUM, group=None) -> torch.Tensor:
    """`tensor` reduced in place over `group`, wherever it lives (moved to the collective's
    device and back)."""
    work = tensor.to(compute_device())  # NCCL reduces CUDA tensors, gloo CPU ones
    dist.all_reduce(work, op=op, group=group)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def everywhere(ok: bool) -> bool:
    """True when `ok` holds on every rank of the world (a collective; `ok` itself without a
    process group)."""
    if not dist.is_initialized():
        return ok
    return bool(_all_reduce(torch.tensor([1.0 if ok else 0.0]), op=dist.ReduceOp.MIN).item() == 1)


def all_finite(tensors) -> bool:
    """Whether every tensor of `tensors` on every rank is finite (a collective). One check per
    device, not one host synchronisation per tensor."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_device.setdefault(tensor.device, []).append(torch.isfinite(tensor).all())
    return everywhere(all(bool(torch.stack(flags).all()) for flags in by_device.values()))


def _gather_objects(value, size: int, group=None) -> list:
    """Every member's `value` (any picklable object) of a group of `size`, in rank order."""
    if size == 1:
        return [value]
    gathered = [None] * size
    dist.all_gather_object(gathered, value, group=group)
    return gathered


def all_gather_object(value) -> list:
    """Every rank's `value` (any picklable object), in world-rank order."""
    return _gather_objects(value, dist.get_world_size() if dist.is_initialized() else 1)


def model_parallel_min(value: int) -> int:
    """The smallest `value` over this rank's model-parallel group (its TP × PP ranks, which run
    the same rollouts in lockstep); `value` itself without one."""
    if not dist.is_initialized() or not parallel_state.model_parallel_is_initialized():
        return value
    smallest = torch.tensor([value], dtype=torch.long)
    group = parallel_state.get_model_parallel_group()
    return int(_all_reduce(smallest, op=dist.ReduceOp.MIN, group=group).item())


def tensor_parallel_group():
    """This rank's tensor-parallel group (vocab-parallel ops take it as `tp_group`)."""
    return parallel_state.get_tensor_model_parallel_group()


def tensor_parallel_rank() -> int:
    """This rank's index in its tensor-parallel group (0 where no model-parallel groups exist)."""
    if not parallel_state.model_parallel_is_initialized():
        return 0
    return parallel_state.get_tensor_model_parallel_rank()


def tensor_parallel_size() -> int:
    """Ranks in this rank's tensor-parallel group (1 where no model-parallel groups exist)."""
    if not parallel_state.model_parallel_is_initialized():
        return 1
    return parallel_state.get_tensor_model_parallel_world_size()


def tensor_parallel_all_reduce(tensor: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """`tensor` reduced (summed by default) in place over the tensor-parallel ranks (unchanged
    without TP); the tensor must live on the collective's device (a gradient in a backward pass
    does)."""
    if tensor_parallel_size() > 1:
        dist.all_reduce(tensor, op=op, group=tensor_parallel_group())
    return tensor


def tensor_parallel_all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor-parallel rank's `tensor`, in rank order (one piece without TP)."""
    size = tensor_parallel_size()
    if size == 1:
        return [tensor]
    pieces = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(pieces, tensor.contiguous(), group=tensor_parallel_group())
    return pieces


def pipeline_stage() -> int:
    """This rank's pipeline stage, from 0."""
    return parallel_state.get_pipeline_model_parallel_rank()


def is_first_stage() -> bool:
    return parallel_state.is_pipeline_first_stage()


def is_last_stage() -> bool:
    return parallel_state.is_pipeline_last_stage()


def broadcast_from_last_stage(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` as the last pipeline stage holds it, on every stage (in place; unchanged
    without PP)."""
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        dist.broadcast(
            tensor,
            src=parallel_state.get_pipeline_model_parallel_last_rank(),
            group=parallel_state.get_pipeline_model_parallel_group(),
        )
    return tensor


def receive_from_previous_stage(tensor: torch.Tensor) -> torch.Tensor:
    """Fill `tensor` with what the previous pipeline stage sends (`send_to_next_stage`)."""
    dist.recv(tensor, src=parallel_state.get_pipeline_model_parallel_prev_rank())
    return tensor


def send_to_next_stage(tensor: torch.Tensor) -> None:
    """Send `tensor` to the next pipeline stage (blocking)."""
    dist.send(tensor.contiguous(), dst=parallel_state.get_pipeline_model_parallel_next_rank())


def pipeline_all_gather_object(value) -> list:
    """Every pipeline stage's `value` (any picklable object), in stage order."""
    return _gather_objects(
        value,
        parallel_state.get_pipeline_model_parallel_world_size(),
        parallel_state.get_pipeline_model_parallel_group(),
    )


def data_parallel_rank_and_size() -> tuple[int, int]:
    """(this replica's index, the number of data-parallel replicas); (0, 1) before the groups
    exist."""
    if not parallel_state.model_parallel_is_initialized():
        return 0, 1
    return (parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size())


def data_parallel_all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed in place over the data-parallel replicas, and returned."""
    if data_parallel_rank_and_size()[1] > 1:
        _all_reduce(tensor, group=parallel_state.get_data_parallel_group())
    return tensor


def data_parallel_all_gather_object(value) -> list:
    """Every data-parallel replica's `value` (any picklable object), in replica order."""
    size = data_parallel_rank_and_size()[1]
    return _gather_objects(
        value, size, parallel_state.get_data_parallel_group() if size > 1 else None
    )


def share_from_last_stage(value):
    """The last pipeline stage's `value` (any picklable object), on every stage of the group."""
    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(
        box,
        src=parallel_state.get_pipeline_model_parallel_last_rank(),
        group=parallel_state.get_pipeline_model_parallel_group(),
    )
    return box[0]


COMMUNICATION_FAILURES = (
    "gloo",
    "nccl",
    "connection reset",
    "connection closed",
    "broken pipe",
    "timed out",
)
"""Words in a collective's error that mean the other side stopped answering."""


def lost_rank_error(error: RuntimeError, timeout_minutes: float) -> TrainingError | None:
    """The message for a collective that failed because another rank stopped, crashed or was
    killed (its connection broke, or the wait passed the collective timeout); None for any other
    error."""
    text = str(error).strip()
    if not isinstance(error, dist.DistError) and not any(
        word in text.lower() for word in COMMUNICATION_FAILURES
    ):
        return None
    first = text.splitlines()[0] if text else type(error).__name__
    return TrainingError(
        f"lost contact with another rank ({first[:200]}): a rank or node stopped, crashed or "
        f"was killed, or a collective waited past --distributed-timeout-minutes "
        f"{timeout_minutes:g}. This rank stops too; see the other ranks' logs for the cause, "
        "then resume from the last checkpoint with --load"
    )


def shutdown() -> None:
    """Tear down the parallel state and the process group."""
    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(
    config: ParallelConfig, seed: int, timeout_minutes: float = 10.0
) -> Iterator[None]:
    """The one way a command runs megatron-core code: `initialize` the groups and seed, run the
    body in `cpu.device_mode()` (a no-op on a GPU), and `shutdown` in `finally`, whatever the
    body raised. A collective that failed because another rank was lost leaves as the
    one-line `TrainingError` of `lost_rank_error` instead of torch's traceback."""
    initialize(config, seed, timeout_minutes)
    try:
        with device_mode():
            yield
    except RuntimeError as error:  # torch's distributed errors are RuntimeErrors too
        lost = lost_rank_error(error, timeout_minutes)
        if lost is None:
            raise
        raise lost from None
    finally:
        shutdown()

"""Every workaround that lets megatron-core 0.16 run on a machine without a GPU, in one place.

megatron-core assumes CUDA in a handful of spots (see docs/megatron-core-on-cpu.md):

1. tensors created with `device="cuda"` or `device=torch.cuda.current_device()` (schedules'
   token counter, optimizer scalars, clip-grad buffers, the default causal mask, TP and p2p
   buffers), and `tensor.cuda()` moves (tied embeddings under PP, optimizer state loading);
2. `param.grad.type() == "torch.cuda.FloatTensor"` checks (grad clipping, fp16/bf16 optimizer);
3. `torch.cuda.synchronize()` around p2p communication, and the current stream that
   megatron-core 0.19's gradient sync waits on;
4. the model-parallel RNG tracker, which stores and swaps CUDA generator states.

`device_mode()` covers 1 and 2 while megatron code runs: a `TorchFunctionMode` that rewrites CUDA
devices to CPU, makes `.cuda()` a no-op and reports CPU float tensors under their CUDA type names.
`apply_cpu_patches()` covers 3 and the `current_device()` lookups. `cpu_model_parallel_seed()`
covers 4 with a tracker that forks the CPU generator instead, seeded exactly as megatron seeds
its CUDA states. All of it is applied only when no GPU is present (`cpu_only()`); on a GPU the
functions return without touching anything.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from megatron.core.tensor_parallel import random as mp_random
from torch.overrides import TorchFunctionMode

_CPU_TYPE_TO_CUDA = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}


def cpu_only() -> bool:
    """True when megatron-core must run on the CPU (no usable CUDA device)."""
    return not torch.cuda.is_available()


def set_cpu_threads() -> int:
    """Give this process at most its share of the CPU cores for torch's intra-op threads;
    return the count it uses.

    The share is OMP_NUM_THREADS when set, otherwise the cores this process may run on divided
    by the ranks started on this machine (LOCAL_WORLD_SIZE), at least 1; a process that already
    uses fewer threads keeps them. Several ranks that each
    take every core slow a CPU run many times over (measured 20–40× on 2 cores), which is also
    what happens when another job shares the machine: give such jobs OMP_NUM_THREADS=1 each."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = max(1, int(os.environ["OMP_NUM_THREADS"]))
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (cores or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if threads < torch.get_num_threads():
        # only ever lower: raising the count in a forked process (a test's rank, a worker)
        # makes OpenMP start a new thread team there, which can deadlock after a fork
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def uses_transformer_engine() -> bool:
    """Whether the model is built from Transformer Engine's layers: on a GPU where TE imports."""
    import importlib.util

    return not cpu_only() and importlib.util.find_spec("transformer_engine") is not None


def built_with_transformer_engine(model: torch.nn.Module) -> bool:
    """Whether `model` holds Transformer Engine's layers (megatron-core's TE extension), however
    it was built: ours by `uses_transformer_engine`, Megatron-LM's by `--transformer-impl`."""
    return any(
        type(module).__module__.startswith("megatron.core.extensions.transformer_engine")
        for module in model.modules()
    )


def backends_line() -> str:
    """One line saying where megatron-core runs, which layers it builds and which optional fused
    backends it lacks (its own import warnings about them are silenced in `rmt_megatron.mcore`)."""
    import importlib.util

    missing = [
        name
        for module, name in (("transformer_engine", "Transformer Engine"), ("apex", "apex"))
        if importlib.util.find_spec(module) is None
    ]
    where = "CPU (gloo)" if cpu_only() else f"{torch.cuda.device_count()} GPU(s) (NCCL)"
    layers = "Transformer Engine layers" if uses_transformer_engine() else "local layers"
    lacking = f", without {' or '.join(missing)}" if missing else ""
    threads = f", {torch.get_num_threads()} torch threads per rank" if cpu_only() else ""
    return f"megatron-core on {where}: {layers}{lacking}{threads}"


def _is_cuda(device: object) -> bool:
    return device is not None and torch.device(device).type == "cuda"


class _CudaAsCpuMode(TorchFunctionMode):
    """Run megatron's CUDA-flavoured tensor code on CPU tensors."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return _CPU_TYPE_TO_CUDA.get(name, name)
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def device_mode() -> contextlib.AbstractContextManager:
    """Context in which megatron-core code runs on CPU; a no-op context on a GPU machine."""
    return _CudaAsCpuMode() if cpu_only() else contextlib.nullcontext()


class _CpuStream:
    """What megatron-core asks of a CUDA stream, on the CPU where every op runs in order: waits
    and synchronisations have nothing to wait for."""

    def wait_event(self, event) -> None:
        pass

    def wait_stream(self, stream) -> None:
        pass

    def synchronize(self) -> None:
        pass


_CPU_STREAM = _CpuStream()


def apply_cpu_patches() -> None:
    """Patch `torch.cuda.current_device`, `torch.cuda.synchronize`, the stream lookups
    (`current_stream`, `default_stream`: megatron-core 0.19's gradient sync waits on the current
    stream) and megatron's CUDA generator save/restore (activation recomputation) for CPU runs
    (idempotent; nothing happens on a GPU machine)."""
    if not cpu_only():
        return
    torch.cuda.current_device = lambda: torch.device("cpu")
    torch.cuda.synchronize = lambda *args, **kwargs: None
    torch.cuda.current_stream = lambda *args, **kwargs: _CPU_STREAM
    torch.cuda.default_stream = lambda *args, **kwargs: _CPU_STREAM
    # activation recomputation saves the CUDA generator beside the CPU one and the tracker's
    # states (which on CPU are CPU generator states) and restores them for the recompute
    mp_random._get_cuda_rng_state = lambda *args, **kwargs: torch.empty(0, dtype=torch.uint8)
    mp_random._set_cuda_rng_state = lambda *args, **kwargs: None


def cpu_model_parallel_seed(seed: int, tp_rank: int, ep_rank: int, etp_rank: int) -> None:
    """CPU stand-in for megatron's `model_parallel_cuda_manual_seed(seed)`, given this rank's
    tensor-, expert- and expert-tensor-parallel ranks (`parallel.set_seed` asks for them).

    Seeds the global generator with `seed` and registers the data-parallel, model-parallel
    (seed + 2718 + tp_rank) and expert (seed + 1024 + 100·ep_rank + etp_rank) states in a tracker
    whose `fork()` swaps the CPU generator's state, as megatron's does for the CUDA one."""
    torch.manual_seed(seed)
    tracker = CpuRNGStatesTracker()
    tracker.add(mp_random._DATA_PARALLEL_RNG_TRACKER_NAME, seed)
    tracker.add(mp_random._MODEL_PARALLEL_RNG_TRACKER_NAME, seed + 2718 + tp_rank)
    tracker.add(mp_random._EXPERT_PARALLEL_RNG_TRACKER_NAME, seed + 1024 + 100 * ep_rank + etp_rank)
    mp_random._CUDA_RNG_STATE_TRACKER = tracker
    mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True


class CpuRNGStatesTracker(mp_random.CudaRNGStatesTracker):
    """Named generator states like megatron's tracker, kept for the CPU generator."""

    def add(self, name: str, seed: int) -> None:
        if seed in self.seeds_ or name in self.states_:
            raise ValueError(f"RNG state {name!r} or seed {seed} already registered")
        self._is_initialized = True
        self.seeds_.add(seed)
        self.states_[name] = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def fork(self, name: str = mp_random._MODEL_PARALLEL_RNG_TRACKER_NAME) -> Iterator[None]:
        if name not in self.states_:
            raise KeyError(f"RNG state {name!r} was never added")
        outer = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(outer)


@contextlib.contextmanager
def megatron_training_on_cpu() -> Iterator[None]:
    """While active, Megatron-LM's `megatron.training.pretrain()` runs without a GPU; a no-op
    context on a GPU machine.

    - `pretrain()` asserts CUDA, and on a machine with no CUDA device it neither builds the
      model-parallel groups nor seeds the model-parallel RNG tracker. So its
      `initialize_megatron` first runs `parallel.initialize` (gloo, the groups of the parsed
      arguments' TP/PP, the CPU tracker seeded as Megatron seeds the CUDA one), then Megatron's
      own with `allow_no_cuda`, which finds both done;
    - the argument checks ask the GPU's architecture (answered: the oldest, 0);
    - the model's DDP wrapping runs on a side stream, and the rerun state machine saves the
      CUDA generator beside the CPU one: stand-ins that do nothing on CPU;
    - the body runs in `device_mode()`.

    Enter it before `parse_and_validate_args`."""
    if not cpu_only():
        yield
        return
    from megatron.training import arguments, get_args, initialize, training

    from rmt_megatron.config.sections import ParallelConfig
    from rmt_megatron.mcore import parallel

    megatron_initialize = training.initialize_megatron

    def initialize_on_cpu(**kwargs):
        args = get_args()
        layout = ParallelConfig(
            tensor_model_parallel_size=args.tensor_model_parallel_size,
            pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        )
        parallel.initialize(layout, args.seed, args.distributed_timeout_minutes)
        return initialize.initialize_megatron(allow_no_cuda=True, **kwargs)

    cuda_stand_ins = {
        "Stream": lambda *args, **kwargs: _CPU_STREAM,
        "stream": lambda stream: contextlib.nullcontext(),
        # the rerun state machine saves and restores the CUDA generator beside the CPU one
        "get_rng_state": lambda *args, **kwargs: torch.empty(0, dtype=torch.uint8),
        "set_rng_state": lambda *args, **kwargs: None,
    }
    replaced = {name: getattr(torch.cuda, name) for name in cuda_stand_ins}
    device_arch_version = arguments.get_device_arch_version
    arguments.get_device_arch_version = lambda: 0  # no GPU: argument checks take the oldest
    training.initialize_megatron = initialize_on_cpu
    for name, stand_in in cuda_stand_ins.items():
        setattr(torch.cuda, name, stand_in)
    try:
        with device_mode():
            yield
    finally:
        training.initialize_megatron = megatron_initialize
        arguments.get_device_arch_version = device_arch_version
        for name, original in replaced.items():
            setattr(torch.cuda, name, original)

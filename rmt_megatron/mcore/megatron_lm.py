"""What RMT reads of Megatron-LM's own training loop (`megatron.training`, shipped with
megatron-core from 0.17 on): its parsed arguments, its micro-batches per step, the bare model
inside its wrappers. The one place the package touches `megatron.training` at run time."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
from collections.abc import Iterator

import torch
from megatron.core.num_microbatches_calculator import get_num_microbatches
from megatron.core.utils import unwrap_model

from rmt_megatron.mcore.cpu import megatron_training_on_cpu


def megatron_lm_args() -> argparse.Namespace | None:
    """Megatron-LM's parsed arguments, or None outside a Megatron-LM run (megatron.training
    absent, as in megatron-core 0.16, or its arguments not parsed)."""
    try:
        from megatron.training import get_args

        return get_args()
    except (ImportError, AssertionError):
        return None


def microbatches_per_step() -> int:
    """How many times Megatron-LM's schedule calls `forward_step` in one step."""
    return get_num_microbatches()


def bare_model(model) -> torch.nn.Module:
    """The GPTModel inside Megatron-LM's DDP and Float16Module wrappers."""
    return unwrap_model(model)


@contextlib.contextmanager
def megatron_lm_environment() -> Iterator[None]:
    """Where `megatron.training.pretrain()` runs inside this context, it runs from the pip wheel
    and on a machine without a GPU:

    - `pretrain()` compiles megatron-core's dataset helpers with `make` in the installed package,
      and exits when that fails; the wheel ships them compiled but without the Makefile, so
      where the compiled module is present the compile step is skipped;
    - without a GPU, `cpu.megatron_training_on_cpu()`.

    With Megatron-LM's source tree on a GPU machine it changes nothing."""
    from megatron.core.datasets import utils as dataset_utils

    compile_helpers = dataset_utils.compile_helpers
    if importlib.util.find_spec("megatron.core.datasets.helpers_cpp") is not None:
        dataset_utils.compile_helpers = lambda: None
    try:
        with megatron_training_on_cpu():
            yield
    finally:
        dataset_utils.compile_helpers = compile_helpers

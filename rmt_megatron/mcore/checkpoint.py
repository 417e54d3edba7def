"""Checkpoints in Megatron-LM's layout, written atomically, loadable under another TP/PP layout.

    SAVE/latest_checkpointed_iteration.txt      the newest complete step
    SAVE/iter_0000042/                          megatron-core distributed checkpoint:
        model + optimizer shards (torch_dist), common.pt, metadata.json
        rmt_state.json                          step, config, LR schedule, curriculum state
        rng/rank_00000.pt ...                   each rank's RNG states

A step is first written to `iter_XXXXXXX.tmp/` by all ranks; rank 0 renames it to its final name
and only then rewrites the tracker file (itself through a temporary file and a rename). A crash at
any point leaves the previous checkpoint intact and named by the tracker. Model and optimizer are
saved through `sharded_state_dict`, so a checkpoint reloads under a different tensor- or
pipeline-parallel layout as long as the padded vocabulary is the same.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from megatron.core import dist_checkpointing
from torch.distributed.checkpoint.api import CheckpointException

from rmt_megatron.errors import CheckpointError
from rmt_megatron.files import atomic_write
from rmt_megatron.mcore.checkpoint_metadata import check_metadata
from rmt_megatron.mcore.checkpoint_writer import install_write_results_queue
from rmt_megatron.mcore.parallel import all_finite, barrier, is_main_rank, world_rank

TRACKER = "latest_checkpointed_iteration.txt"
STATE_FILE = "rmt_state.json"


def step_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"iter_{step:07d}"


def latest_step(root: str | os.PathLike) -> int | None:
    """The step named by the tracker file, or None when `root` holds no checkpoint."""
    tracker = Path(root) / TRACKER
    if not tracker.is_file():
        return None
    text = tracker.read_text().strip()
    if not text.isdigit():
        raise CheckpointError(f"{tracker} should hold a step number, found {text!r}")
    return int(text)


OPTIMIZER_SHARDING = {"distrib_optim_sharding_type": "dp_reshardable"}
"""How megatron-core's distributed optimizer (GPU runs) writes its state: its own buffers, one
sharded tensor each (Megatron-LM's default), which reload under another data-parallel size only;
the model weights still reload under any TP/PP layout. megatron-core 0.16 cannot write its default
type (fully_sharded_model_space: "flattened_range is not supported"), and its fully_reshardable
type fails to load over torch's AdamW (the per-parameter state lacks Adam's step). The plain
optimizer of CPU runs ignores it."""


def save_checkpoint(
    root: str | os.PathLike, step: int, model, optimizer=None, state: dict[str, Any] | None = None
) -> Path:
    """Save `model` (a GPTModel stage), optionally `optimizer`, and the JSON-able `state` as
    step `step` under `root`; collective over all ranks. Returns the final directory. A model
    holding a non-finite weight on any rank is never written (`CheckpointError`)."""
    if not all_finite(model.parameters()):
        raise CheckpointError(
            f"not saving step {step} to {root}: the model holds non-finite weights"
        )
    final = step_dir(root, step)
    temporary = final.with_name(final.name + ".tmp")
    if is_main_rank():
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    barrier()
    model_state = model.sharded_state_dict()
    # Megatron-LM's own loader (megatron.training --load) reads the step, the format version
    # and the learning-rate schedule from the common state (the schedule is also in `state`,
    # where our resume reads it); the model's and optimizer's keys are the ones it writes itself
    sharded = {"model": model_state, "iteration": step, "checkpoint_version": 3.0}
    if state is not None and "scheduler" in state:
        sharded["opt_param_scheduler"] = state["scheduler"]
    if optimizer is not None:
        sharded["optimizer"] = optimizer.sharded_state_dict(
            model_state, metadata=OPTIMIZER_SHARDING
        )
    install_write_results_queue()  # its helper process must not outlive a killed run
    dist_checkpointing.save(sharded, str(temporary))
    (temporary / "rng").mkdir(exist_ok=True)
    torch.save(_rng_states(), temporary / "rng" / f"rank_{world_rank():05d}.pt")
    barrier()
    if is_main_rank():
        atomic_write(temporary / STATE_FILE, json.dumps(state or {}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        temporary.replace(final)
        set_latest(root, step)
    barrier()
    return final


def _give_fresh_optimizer_state(optimizer) -> None:
    """Give a distributed optimizer that has not stepped yet its state tensors, so that it can
    describe them for loading. megatron-core 0.16's distributed optimizer over torch's AdamW (no
    apex or Transformer Engine) reads a step count from that state, and a fresh one has none. One
    step of zero gradients at learning rate and weight decay 0 creates the tensors and changes no
    weight; the load then overwrites every value it made."""
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        if not hasattr(inner, "_init_optimizer_states_with_dummy_values") or inner.optimizer.state:
            continue
        groups = inner.optimizer.param_groups
        settings = [(group["lr"], group["weight_decay"]) for group in groups]
        for group in groups:
            group["lr"], group["weight_decay"] = 0.0, 0.0
        inner._init_optimizer_states_with_dummy_values()
        for group, (lr, weight_decay) in zip(groups, settings, strict=True):
            group["lr"], group["weight_decay"] = lr, weight_decay


def _unshare_step_counts(optimizer) -> None:
    """Give every parameter its own Adam step count again. megatron-core 0.16's distributed
    optimizer, loading into torch's AdamW, leaves one `step` tensor shared by all parameters, so
    that each step would advance it once per parameter and the bias correction would go wrong."""
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        for state in getattr(inner.optimizer, "state", {}).values():
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].clone()


def _rng_states() -> dict[str, Any]:
    """This process's python, numpy and torch generator states as tensors, lists and numbers
    only, so that loading them needs no unpickling of arbitrary objects (weights_only)."""
    version, words, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(words, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def _restore_rng_states(path: Path) -> None:
    """Restore what `_rng_states` saved. The file is read with weights_only=True: a file that
    holds anything else (e.g. an object planted in a checkpoint) is refused, never unpickled."""
    try:
        states = torch.load(path, weights_only=True)
        version, words, gauss = states["python"]
        name, keys, position, has_gauss, cached = states["numpy"]
        random.setstate((version, tuple(int(w) for w in words), gauss))
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        torch.set_rng_state(states["torch"])
    except Exception as error:  # torch.load, a missing key or a wrong type: all mean one thing
        raise CheckpointError(
            f"{path} is not an RNG-state file this version writes ({type(error).__name__}): "
            "it was written by another version or altered; remove the rng/ directory to resume "
            "without restoring the random state"
        ) from None


def set_latest(root: str | os.PathLike, step: int | None) -> None:
    """Name `step` as the newest checkpoint under `root` (None: name none, so that --load finds
    no checkpoint there); the iter_* directories are left as they are."""
    tracker = Path(root) / TRACKER
    if step is None:
        tracker.unlink(missing_ok=True)
    else:
        atomic_write(tracker, str(step))


def read_state(root: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
    """The JSON state saved with step `step` (default: the tracker's), without loading weights."""
    step = latest_step(root) if step is None else step
    path = step_dir(root, step) / STATE_FILE if step is not None else None
    if path is None or not path.is_file():
        raise CheckpointError(f"{root} holds no complete checkpoint ({STATE_FILE} not found)")
    return _read_json(path)


def _read_json(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON state; a damaged file is named."""
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path} is damaged ({error}): load an earlier iter_* directory"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no JSON object: load an earlier iter_* directory")
    return state


@dataclass
class LoadedCheckpoint:
    step: int
    state: dict[str, Any]


def load_checkpoint(
    root: str | os.PathLike,
    model,
    optimizer=None,
    step: int | None = None,
    restore_rng: bool = True,
    require_state: bool = True,
) -> LoadedCheckpoint:
    """Load step `step` (default: the tracker's) into `model` and, if given, `optimizer`.
    The step's `.metadata` is vetted first (`checkpoint_metadata.check_metadata`). RNG states
    are restored when this rank's file exists and `restore_rng`. Without `require_state`, a
    checkpoint with no `rmt_state.json` (e.g. written by Megatron-LM, same layout) loads its
    model weights with an empty state."""
    step = latest_step(root) if step is None else step
    if step is None:
        raise CheckpointError(f"{root} holds no checkpoint ({TRACKER} is missing): check --load")
    directory = step_dir(root, step)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is missing although {TRACKER} names step {step}")
    if require_state and not (directory / STATE_FILE).is_file():
        raise CheckpointError(f"{directory} is incomplete ({STATE_FILE} not found)")
    check_metadata(directory)  # before torch unpickles it
    model_state = model.sharded_state_dict()
    sharded = {"model": model_state}
    if optimizer is not None:
        _give_fresh_optimizer_state(optimizer)
        sharded["optimizer"] = optimizer.sharded_state_dict(
            model_state, is_loading=True, metadata=OPTIMIZER_SHARDING
        )
    try:
        loaded = dist_checkpointing.load(sharded, str(directory))
    # dist_checkpointing raises many kinds, and torch's CheckpointException is a BaseException
    except (Exception, CheckpointException) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        if "shape mismatch" in reason or "Missing key" in reason:
            raise CheckpointError(
                f"{directory} holds a model of another shape than the flags build ({reason}): "
                "give the model flags it was trained with (--num-layers, --hidden-size, ...)"
            ) from None
        raise CheckpointError(
            f"could not load {directory} ({reason}): the checkpoint is incomplete or damaged; "
            "load an earlier iter_* directory or the checkpoint it was copied from"
        ) from None
    model.load_state_dict(loaded["model"])
    if not all_finite(model.parameters()):
        raise CheckpointError(
            f"{directory} holds non-finite weights: it cannot be trained from; load an earlier "
            "checkpoint (an iter_* directory under the same --save)"
        )
    if optimizer is not None:
        with torch.no_grad():  # the distributed optimizer copies into parameter views in place
            optimizer.load_state_dict(loaded["optimizer"])
        _unshare_step_counts(optimizer)
    rng_file = directory / "rng" / f"rank_{world_rank():05d}.pt"
    if restore_rng and rng_file.is_file():
        _restore_rng_states(rng_file)
    state_file = directory / STATE_FILE
    return LoadedCheckpoint(step, _read_json(state_file) if state_file.is_file() else {})

"""Checkpoints of our own runs read back without their run: the config a checkpoint records, its
model at TP = PP = 1 (distributed checkpoints reshard on load, so one process reads any layout),
and the prompt form it was trained with. The evaluation command and post-training use them; a
resuming run reads its own checkpoint through `run.resume`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rmt_megatron.config.sections import RMTConfig
from rmt_megatron.errors import ConfigError
from rmt_megatron.mcore.checkpoint import TRACKER, latest_step, load_checkpoint, read_state
from rmt_megatron.mcore.gpt_model import build_gpt_model
from rmt_megatron.method.budget import final_budget


def prompt_budget_of(state: dict, config: RMTConfig) -> int | None:
    """The budget in the prompt a checkpoint was trained with: its recorded `prompt_budget`,
    else (older checkpoints) B_T of its config, or None with the budget off."""
    if "prompt_budget" in state:
        return state["prompt_budget"]
    return final_budget(config.budget) if config.budget.enabled else None


def own_checkpoint_state(load: Path, step: int | None = None) -> tuple[int, dict, RMTConfig]:
    """(step, saved state, the config it records at TP = PP = 1) of a checkpoint of ours at
    `step` (default: the latest); distributed checkpoints reshard on load, so one process reads
    any layout."""
    step = latest_step(load) if step is None else step
    if step is None:
        raise ConfigError(f"--load {load} holds no checkpoint ({TRACKER} not found)")
    state = read_state(load, step)
    if "config" not in state:
        raise ConfigError(f"{load} records no config in its state: it was not written by us")
    recorded = RMTConfig.from_dict(state["config"])
    model = replace(recorded.model, tensor_model_parallel_size=1, pipeline_model_parallel_size=1)
    return step, state, replace(recorded, model=model)


def load_own_checkpoint(path: Path, vocab_size: int, step: int | None = None):
    """The model of a checkpoint of ours, built from the config it records at TP = PP = 1, in
    eval mode."""
    _, _, recorded = own_checkpoint_state(path, step)
    model = build_gpt_model(recorded.model, vocab_size, initialize=False)
    load_checkpoint(path, model, step=step, restore_rng=False, require_state=False)
    return model.eval()

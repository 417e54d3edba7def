"""Checkpoints read back without the run that wrote them: the config a checkpoint of ours records,
its model at TP = PP = 1 or another layout (distributed checkpoints reshard on load, so one process
reads any layout), the prompt form it was trained with, and a fixed model (proxy or base) from a
checkpoint of ours or an imported one. The evaluation command, post-training and the replication
use them; a resuming run reads its own checkpoint through `run.resume`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rmt_megatron.config.sections import ModelConfig, ParallelConfig, RMTConfig
from rmt_megatron.errors import ConfigError
from rmt_megatron.mcore.checkpoint import TRACKER, latest_step, load_checkpoint, read_state
from rmt_megatron.mcore.gpt_model import build_gpt_model
from rmt_megatron.method.budget import budget_or_none
from rmt_megatron.method.tokenizer import Tokenizer
from rmt_megatron.model_io.checkpoints import load_proxy


def prompt_budget_of(state: dict, config: RMTConfig) -> int | None:
    """The budget in the prompt a checkpoint was trained with: its recorded `prompt_budget`,
    else (older checkpoints) B_T of its config, or None with the budget off."""
    if "prompt_budget" in state:
        return state["prompt_budget"]
    return budget_or_none(1, 1, config.budget)


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


def load_own_checkpoint(
    path: Path, vocab_size: int, step: int | None = None, layout: ParallelConfig | None = None
):
    """The model of a checkpoint of ours, built from the config it records, in eval mode: at
    TP = PP = 1, or in `layout` (this rank's stage of it; the checkpoint reshards on load). Its
    embedding rows: the recorded model's vocab_size, else the recorded `vocab_size` of its
    state, else `vocab_size` (the tokenizer's)."""
    _, state, recorded = own_checkpoint_state(path, step)
    vocab_size = recorded.model.vocab_size or state.get("vocab_size") or vocab_size
    model_config = recorded.model
    if layout is not None:
        model_config = replace(
            model_config,
            tensor_model_parallel_size=layout.tensor_model_parallel_size,
            pipeline_model_parallel_size=layout.pipeline_model_parallel_size,
        )
    model = build_gpt_model(model_config, vocab_size, initialize=False)
    load_checkpoint(path, model, step=step, restore_rng=False, require_state=False)
    return model.eval()


def load_fixed_model(
    path: str | Path, run_model: ModelConfig, tokenizer: Tokenizer, step: int | None = None
):
    """A model that is used as it is (a difficulty proxy, or a base model evaluated before any
    training) as this rank's stage in the run's layout, in eval mode: a checkpoint of ours (it has
    a tracker file; built from the config it records) or a Hugging Face directory / GGUF file
    (`checkpoints.load_proxy`). `step` picks a step of ours (default: the latest)."""
    if (Path(path) / TRACKER).is_file():
        return load_own_checkpoint(Path(path), tokenizer.vocab_size, step, layout=run_model)
    return load_proxy(path, run_model, tokenizer)

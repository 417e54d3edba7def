"""Where a run starts, decided once before anything is built: the resume plan.

    plan_resume(config) -> ResumePlan(config, load, step, state, continues_save)

- `--load DIR` holding a checkpoint resumes it: `step` is its step and `state` its saved
  `rmt_state.json`. A `--load` without a checkpoint is an error, except where it is also `--save`
  (resume-if-present: the usual command of a job that may be preempted and restarted).
- The model's shape must be the checkpoint's (the TP/PP layout may change). The schedule
  (`SCHEDULE_FIELDS`) is checked as Megatron-LM checks its OptimizerParamScheduler: a flag that
  changes it is refused unless `--override-opt_param-scheduler` (the flags win) or
  `--use-checkpoint-opt_param-scheduler` (the checkpoint's values replace the flags'); an
  evaluation-only run (`--skip-train`) takes the checkpoint's values (its final budget B_T).
- A new run into a `--save` that holds another run's checkpoint is refused: its steps, metrics and
  evaluations would mix with the new run's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rmt_megatron.config.sections import SCHEDULE_FIELDS, RMTConfig, model_shape
from rmt_megatron.errors import CheckpointError, ConfigError
from rmt_megatron.mcore.checkpoint import TRACKER, latest_step, read_state


@dataclass(frozen=True)
class ResumePlan:
    config: RMTConfig
    """The run's config, checked against the checkpoint it resumes (schedule fields possibly
    taken from it)."""
    load: Path | None
    """The checkpoint directory resumed, or None for a run that starts from its starting
    weights."""
    step: int
    """The step training continues from (0 for a new run)."""
    state: dict[str, Any] | None
    """The resumed checkpoint's saved state (step, config, scheduler, sampler, ...)."""
    continues_save: bool
    """Whether the run resumes its own --save: its metrics rows up to `step` are kept."""


def same_directory(a: str | Path | None, b: str | Path | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def plan_resume(config: RMTConfig) -> ResumePlan:
    """The plan for `config` (module docstring), or a one-line error that says what to change."""
    train = config.train
    load = _checkpoint_to_resume(config)
    check_save_directory(config)
    if load is None:
        return ResumePlan(config, None, 0, None, False)
    step = latest_step(load)
    assert step is not None  # _checkpoint_to_resume returns only a directory with a tracker
    state = read_state(load, step)
    return ResumePlan(
        _checked_against(config, state["config"]),
        load,
        step,
        state,
        same_directory(train.load, train.save),
    )


def _checkpoint_to_resume(config: RMTConfig) -> Path | None:
    load, save = config.train.load, config.train.save
    if load is None:
        return None
    if latest_step(load) is not None:
        return Path(load)
    if same_directory(load, save):
        return None
    raise CheckpointError(
        f"--load {load} holds no checkpoint ({TRACKER} not found): give the directory a run "
        "saved to with --save, or drop --load to start from the pretrained weights"
    )


def check_save_directory(config: RMTConfig) -> None:
    """Refuse to train a new run into a --save directory that holds another run's checkpoint:
    its tracker, step directories, metrics and evaluations would mix with the new run's, and a
    later --load would resume whichever saved last. Resuming that run (--load naming the same
    directory) continues it; an evaluation-only run (--skip-train) saves no checkpoint."""
    train = config.train
    if train.skip_train or train.save is None or same_directory(train.load, train.save):
        return
    step = latest_step(train.save)
    if step is not None:
        raise CheckpointError(
            f"--save {train.save} already holds a run (saved at step {step}): resume it with "
            f"--load {train.save}, give another --save, or remove that directory to start over"
        )


def _checked_against(config: RMTConfig, saved: dict[str, Any]) -> RMTConfig:
    """`config` checked against the config `saved` of the checkpoint it resumes."""
    train = config.train
    saved_shape, shape = model_shape(saved["model"]), model_shape(config.to_dict()["model"])
    if saved_shape != shape:
        changed = sorted(k for k in saved_shape if saved_shape[k] != shape.get(k))
        raise ConfigError(
            f"{train.load} was trained with another model ({', '.join(changed)} differ); "
            "resume with the same model flags (the TP/PP layout may change)"
        )
    changed = {
        k: (saved["train"][k], getattr(train, k))
        for k in SCHEDULE_FIELDS
        if k in saved["train"] and saved["train"][k] != getattr(train, k)
    }
    if not changed or train.override_opt_param_scheduler:
        return config
    if train.use_checkpoint_opt_param_scheduler or train.skip_train:  # evaluation: as trained
        return replace(config, train=replace(train, **{k: v for k, (v, _) in changed.items()}))
    listed = ", ".join(
        f"{k}: checkpoint {old!r}, flags {new!r}" for k, (old, new) in changed.items()
    )
    raise ConfigError(
        f"--load {train.load} was trained with another schedule ({listed}): give the "
        "checkpoint's values, or --override-opt_param-scheduler to use the flags', or "
        "--use-checkpoint-opt_param-scheduler to keep the checkpoint's"
    )

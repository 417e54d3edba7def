"""Model, optimizer and one optimizer step, the megatron-core way.

`build_training` wraps this rank's `GPTModel` stage in megatron-core's `DistributedDataParallel`,
builds `get_megatron_optimizer` (Adam with decoupled weight decay, gradient clipping; the
distributed optimizer on GPU) and `OptimizerParamScheduler` (linear warm-up, then constant).
`train_step` runs `get_forward_backward_func()` over a list of micro-batches with per-token loss
normalisation (`calculate_per_token_loss`) and `finalize_model_grads`, checks that the losses and
gradients are finite on every rank (as Megatron-LM's --check-for-nan-in-loss-and-grad does), and
only then steps the optimizer and the scheduler: a non-finite step changes no weight. Under fp16
the loss scaler owns overflow: an overflowing step is skipped and reported as skipped. Call both
inside `cpu.device_mode()`; after writing weights into the model from outside (a pretrained or
imported checkpoint) call `TrainingState.weights_loaded()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from megatron.core.distributed import (
    DistributedDataParallel,
    DistributedDataParallelConfig,
    finalize_model_grads,
)
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.pipeline_parallel import get_forward_backward_func

from rmt_megatron.config.sections import ModelConfig, TrainConfig
from rmt_megatron.mcore.cpu import cpu_only
from rmt_megatron.mcore.gpt_model import DTYPES, build_gpt_model
from rmt_megatron.mcore.parallel import all_finite
from rmt_megatron.method.tallies import mean_or_nan


@dataclass
class TrainingState:
    """This rank's model chunk (DDP-wrapped), optimizer and LR scheduler."""

    model: DistributedDataParallel
    optimizer: Any
    scheduler: OptimizerParamScheduler

    @property
    def module(self):
        """The unwrapped `GPTModel` (for rollouts and checkpoints)."""
        return self.model.module

    def expect_saved_lr(self, lr: float) -> None:
        """Give the parameter groups the learning rate of the run whose optimizer state is about
        to be loaded. megatron-core 0.19 pairs saved and current groups by their settings,
        max_lr and min_lr among them, so a resume that overrides the learning rate
        (--override-opt_param-scheduler) would find no saved group; `resume_schedule` then
        applies the flags' schedule to the loaded groups."""
        for group in self.optimizer.param_groups:
            group["max_lr"], group["min_lr"] = lr, lr

    def resume_schedule(self, scheduler_state: dict) -> None:
        """Continue the saved learning-rate schedule. With override_opt_param_scheduler the
        scheduler keeps the flags' values, and so must the optimizer's parameter groups: they
        carry their own max_lr/min_lr, restored from the checkpoint with the optimizer state."""
        self.scheduler.load_state_dict(scheduler_state)
        if self.scheduler.override_opt_param_scheduler:
            for group in self.optimizer.param_groups:
                group["max_lr"], group["min_lr"] = self.scheduler.max_lr, self.scheduler.min_lr
            self.scheduler.step(increment=0)

    def set_constant_lr(self, lr: float) -> None:
        """From now on, a constant learning rate `lr` (a phase of another kind of training,
        e.g. post-training's SFT then GRPO, on the same optimizer)."""
        self.scheduler.max_lr = self.scheduler.min_lr = lr
        for group in self.optimizer.param_groups:
            group["max_lr"], group["min_lr"] = lr, lr
        self.scheduler.step(increment=0)

    def weights_loaded(self) -> None:
        """Make the optimizer start from the weights now in the model: the mixed-precision
        optimizers keep fp32 master copies made when they were built, which the first step would
        otherwise copy back over loaded weights (Megatron-LM does the same after a load without
        optimizer state)."""
        self.optimizer.reload_model_params()


@dataclass
class StepOutput:
    """What one optimizer step reports (the loss sums are this rank's, before any reduce)."""

    reports: dict[str, torch.Tensor]
    """Per report key, [Σ loss, token count] summed over micro-batches (last stage only)."""
    grad_norm: float
    """The gradient norm (NaN when the step was not applied)."""
    updated: bool
    """Whether the optimizer changed the weights."""
    finite: bool
    """Whether the losses and (outside fp16) the gradients were finite on every rank; when not,
    nothing was applied."""


def build_training(
    model_config: ModelConfig,
    train_config: TrainConfig,
    vocab_size: int,
    initialize: bool = True,
    distributed_optimizer: bool | None = None,
) -> TrainingState:
    """Model stage, DDP wrapper, Megatron optimizer and scheduler for this rank (`initialize`:
    see `build_gpt_model`). The optimizer is megatron-core's distributed one (state sharded over
    data-parallel ranks) on GPUs, the plain one on CPU, where gloo has no reduce-scatter;
    `distributed_optimizer` overrides that choice."""
    if distributed_optimizer is None:
        distributed_optimizer = not cpu_only()
    model = build_gpt_model(model_config, vocab_size, initialize)
    config = model.config
    config.calculate_per_token_loss = True
    config.finalize_model_grads_func = finalize_model_grads
    ddp = DistributedDataParallel(
        config=config,
        ddp_config=DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, use_distributed_optimizer=distributed_optimizer
        ),
        module=model,
    )
    config.no_sync_func = ddp.no_sync
    bf16 = model_config.params_dtype == "bfloat16"
    fp16 = model_config.params_dtype == "float16"
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=train_config.lr,
            min_lr=train_config.lr,
            weight_decay=train_config.weight_decay,
            adam_beta1=train_config.adam_beta1,
            adam_beta2=train_config.adam_beta2,
            adam_eps=train_config.adam_eps,
            clip_grad=train_config.clip_grad,
            bf16=bf16,
            fp16=fp16,
            params_dtype=DTYPES[model_config.params_dtype],
            initial_loss_scale=train_config.initial_loss_scale,
            use_distributed_optimizer=distributed_optimizer,
        ),
        [ddp],
    )
    if fp16:
        config.grad_scale_func = optimizer.scale_loss
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if train_config.lr_warmup_iters else train_config.lr,
        max_lr=train_config.lr,
        min_lr=train_config.lr,
        lr_warmup_steps=train_config.lr_warmup_iters,
        lr_decay_steps=train_config.train_iters,
        lr_decay_style="constant",
        start_wd=train_config.weight_decay,
        end_wd=train_config.weight_decay,
        wd_incr_steps=train_config.train_iters,
        wd_incr_style="constant",
        # the run checked the flags against a resumed checkpoint (run.trainer); here the flags'
        # values stand unless the user asked for them to override the checkpoint's
        use_checkpoint_opt_param_scheduler=not train_config.override_opt_param_scheduler,
        override_opt_param_scheduler=train_config.override_opt_param_scheduler,
    )
    return TrainingState(ddp, optimizer, scheduler)


def train_step(
    state: TrainingState,
    forward_step,
    micro_batches: list[dict[str, torch.Tensor]],
    seq_length: int,
) -> StepOutput:
    """One optimizer step over `micro_batches` (all of one shape `[b, seq_length]`)."""
    state.model.zero_grad_buffer()
    state.optimizer.zero_grad()
    reports_per_batch = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter(micro_batches),
        model=[state.model],
        num_microbatches=len(micro_batches),
        seq_length=seq_length,
        micro_batch_size=micro_batches[0]["tokens"].shape[0],
        forward_only=False,
    )
    reports = _sum_reports(reports_per_batch)
    checked = [value[0:1] for value in reports.values()]
    if not state.model.module.config.fp16:  # under fp16 the loss scaler owns overflow
        checked += [p.main_grad for p in state.model.module.parameters() if p.requires_grad]
    if not all_finite(checked):
        return StepOutput(reports, math.nan, updated=False, finite=False)
    updated, grad_norm, _ = state.optimizer.step()
    if updated:
        state.scheduler.step(increment=1)
    return StepOutput(
        reports, math.nan if grad_norm is None else float(grad_norm), bool(updated), finite=True
    )


def _sum_reports(reports_per_batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    totals: dict[str, torch.Tensor] = {}
    for report in reports_per_batch:
        for key, value in report.items():
            totals[key] = totals.get(key, torch.zeros(2)) + value.detach().float().cpu()
    return totals


def report_mean(totals: dict[str, torch.Tensor], key: str) -> float:
    """Σ loss / token count of one report key (NaN when it had no tokens)."""
    if key not in totals:
        return math.nan
    return mean_or_nan(float(totals[key][0]), float(totals[key][1]))

"""The RMT mid-training run: setup, then the step loop.

`run_training` plans where the run starts (`resume.plan_resume`: a new run or a checkpoint to
resume, checked against the flags) and runs it inside this rank's process group. `Run` resolves
the data (the built-in corpus and base model, or the user's datasets, tokenizer and checkpoint),
builds the model, optimizer and scheduler, loads the weights the plan names, scores difficulty
(a fixed proxy, else the starting policy; `difficulty.DifficultyScorer`) and samples the held-out
positions. Each step, `StepBatchBuilder` prepares the rollouts and micro-batches (docs/method.md,
"One step") and `train_step` runs megatron-core's schedule and the optimizer. Three components
own their cadence: `StepLog` (console, TensorBoard, metrics.jsonl), `Checkpointer` (every
`save_interval` steps and at the end) and `Evaluator` (before training, every `eval_interval`
steps and at the end).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rmt_megatron.builtin.datasets import prepare_builtin_data
from rmt_megatron.config.sections import TIER_NAMES, RMTConfig
from rmt_megatron.errors import ConfigError
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.checkpoint import load_checkpoint
from rmt_megatron.mcore.cpu import uses_transformer_engine
from rmt_megatron.mcore.forward_step import make_forward_step, require_maskable, require_supported
from rmt_megatron.mcore.indexed_dataset import documents_of, load_indexed_dataset
from rmt_megatron.mcore.optimizer import build_training, train_step
from rmt_megatron.mcore.rollout_engines import build_rollout_engine, require_runnable
from rmt_megatron.method.group_scores import STEP_STATS
from rmt_megatron.method.tallies import mean_or_nan
from rmt_megatron.method.tokenizer import Tokenizer
from rmt_megatron.model_io.checkpoints import (
    load_imported_weights,
    load_tokenizer,
    with_imported_model,
)
from rmt_megatron.model_io.preprocess import check_tokenizer
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer
from rmt_megatron.run.checkpointer import Checkpointer
from rmt_megatron.run.difficulty import DifficultyScorer, file_signature
from rmt_megatron.run.evaluation import held_out_positions
from rmt_megatron.run.evaluator import Evaluator
from rmt_megatron.run.metrics import MetricsWriter, StepLog, replica_means
from rmt_megatron.run.resume import ResumePlan, plan_resume
from rmt_megatron.run.step_builder import StepBatchBuilder


def _rows(micro_batches: list[dict[str, torch.Tensor]]) -> int:
    """Rows of the step's micro-batches, padding rows included: times seq_length, the positions
    the step's forward passes run over (the `input_tokens` metric, against `loss_tokens`)."""
    return sum(batch["tokens"].shape[0] for batch in micro_batches)


@dataclass
class RunData:
    tokenizer: Tokenizer
    train_prefix: Path
    valid_prefix: Path
    pretrained: Path | None


def resolve_data(config: RMTConfig) -> RunData:
    """The built-in corpus and base model, or the user's datasets, tokenizer and checkpoint."""
    data = config.data
    if data.train_data_path is None:
        if parallel.is_main_rank():
            prepare_builtin_data(data.builtin_data_dir)
        parallel.barrier()
        builtin = prepare_builtin_data(data.builtin_data_dir)
        pretrained = (
            Path(data.pretrained_checkpoint)
            if data.pretrained_checkpoint
            else builtin.base_checkpoint
        )
        return RunData(
            SentencePieceTokenizer(builtin.tokenizer_model),
            builtin.train_prefix,
            builtin.valid_prefix,
            pretrained,
        )
    tokenizer = load_tokenizer(data.tokenizer_model or data.imported_checkpoint)
    return RunData(
        tokenizer,
        Path(data.train_data_path),
        Path(data.valid_data_path),
        Path(data.pretrained_checkpoint) if data.pretrained_checkpoint else None,
    )


def starting_weights(config: RMTConfig, data: RunData, plan: ResumePlan):
    """What this run's policy started from, as a signature of its files: the difficulty proxy
    when no other is named. A resumed run keeps the one its checkpoint recorded, so it draws
    from the same difficulty scores."""
    if plan.state is not None and "starting_weights" in plan.state:
        return plan.state["starting_weights"]
    if config.data.imported_checkpoint:
        return file_signature(config.data.imported_checkpoint)
    if data.pretrained is not None:
        return file_signature(data.pretrained)
    return {"random_init": {"seed": config.train.seed, **config.to_dict()["model"]}}


class Run:
    """One training run on this rank (construct inside `parallel.process_group`)."""

    def __init__(self, plan: ResumePlan) -> None:
        config = self.config = plan.config
        self.plan = plan
        self.data = resolve_data(config)
        tokenizer = self.data.tokenizer
        if config.model.vocab_size is not None and tokenizer.vocab_size > config.model.vocab_size:
            raise ConfigError(
                f"model.vocab_size={config.model.vocab_size} but the tokenizer "
                f"{tokenizer.path} has {tokenizer.vocab_size} tokens: use the "
                "tokenizer the model was trained with (a model may have more "
                "rows than its tokenizer, never fewer)"
            )
        for prefix in (self.data.train_prefix, self.data.valid_prefix):
            check_tokenizer(prefix, tokenizer)
        self.train_docs = documents_of(
            load_indexed_dataset(self.data.train_prefix, tokenizer.vocab_size)
        )
        valid_docs = documents_of(
            load_indexed_dataset(self.data.valid_prefix, tokenizer.vocab_size)
        )
        imports_weights = bool(config.data.imported_checkpoint) and plan.load is None
        self.state = build_training(
            config.model,
            config.train,
            config.model.vocab_size or tokenizer.vocab_size,
            initialize=not imports_weights,
        )
        self.forward_step = make_forward_step(config.loss)
        self._load_weights()
        self.starting_weights = starting_weights(config, self.data, plan)
        scorer = DifficultyScorer(  # lives while the datasets are scored: the proxy is freed then
            config,
            tokenizer,
            config.curriculum.proxy_checkpoint,
            policy=self.state.module,
            policy_signature=self.starting_weights,
        )
        scores_train = config.loss.rl_weight > 0 and not config.train.skip_train
        score = (
            scorer.pool_scores(self.data.train_prefix, config.train.save) if scores_train else None
        )
        self.engine = build_rollout_engine(
            self.state.module, tokenizer, config.model, config.rollout
        )
        self.builder = StepBatchBuilder(
            config,
            self.engine,
            tokenizer,
            self.train_docs,
            score,
            *parallel.data_parallel_rank_and_size(),
        )
        if scores_train:
            assert self.builder.pool is not None
            parallel.print_main(
                "RL positions per tier: "
                + ", ".join(
                    f"{name} {size}"
                    for name, size in zip(TIER_NAMES, self.builder.pool.tier_sizes, strict=True)
                )
            )
        train = config.train
        writer = MetricsWriter(train.tensorboard_dir, parallel.is_main_rank())
        self.log = StepLog(train.save, train.log_interval, train.train_iters, writer)
        self.checkpointer = Checkpointer(train.save, train.save_interval)
        positions = held_out_positions(
            self.data.valid_prefix,
            valid_docs,
            scorer.pool_scores(self.data.valid_prefix, None),  # scored now, by the start
            tokenizer,
            config,
            config.data.eval_positions,
            config.data.eval_seed,
        )
        self.evaluator = Evaluator(
            config,
            self.state.module,
            self.engine,
            tokenizer,
            valid_docs,
            positions,
            self.builder.budget(train.train_iters),
            writer,
        )
        if plan.state is not None and not train.skip_train:
            self.state.resume_schedule(plan.state["scheduler"])
            self.builder.load_state_dict(plan.state["sampler"])

    def _load_weights(self) -> None:
        """The weights the plan starts from: the checkpoint it resumes (model, optimizer, RNG),
        else --hf/--gguf-checkpoint, else the pretrained checkpoint (model only)."""
        plan, data = self.plan, self.config.data
        if plan.load is not None:  # the model's shape was checked by the plan
            assert plan.state is not None
            self.state.expect_saved_lr(plan.state["config"]["train"]["lr"])
            load_checkpoint(plan.load, self.state.module, self.state.optimizer, step=plan.step)
            parallel.print_main(f"resumed from {plan.load} at step {plan.step}")
        elif data.imported_checkpoint:
            load_imported_weights(self.state.module, self.config.model, data.imported_checkpoint)
            self.state.weights_loaded()
            parallel.print_main(f"starting from {data.imported_checkpoint}")
        elif self.data.pretrained is not None:
            load_checkpoint(
                self.data.pretrained, self.state.module, restore_rng=False, require_state=False
            )
            self.state.weights_loaded()
            parallel.print_main(f"starting from {self.data.pretrained}")

    # ---- one step ----------------------------------------------------------------------------

    def step(self, step: int) -> dict[str, float]:
        started = time.time()
        batches = self.builder.build(step)
        train_started = time.time()
        output = train_step(
            self.state, self.forward_step, batches.micro_batches, batches.seq_length
        )
        train_seconds = time.time() - train_started
        metrics = replica_means(batches.stats, STEP_STATS)
        metrics.update(self._share_losses(output.reports))
        metrics.update(
            {
                "budget": math.nan if batches.budget is None else batches.budget,
                "grad_norm": output.grad_norm,
                "finite": float(output.finite),
                "skipped": float(not output.updated),
                "lr": self.state.optimizer.param_groups[0]["lr"],
                "step_time": time.time() - started,
                "rollout_tokens_per_s": (
                    batches.rollout_tokens / batches.rollout_seconds
                    if batches.rollout_seconds
                    else math.nan
                ),
                "train_tokens_per_s": batches.loss_tokens / max(train_seconds, 1e-9),
                "loss_tokens": batches.loss_tokens,
                "input_tokens": float(
                    parallel.data_parallel_all_reduce(
                        torch.tensor(float(batches.seq_length * _rows(batches.micro_batches)))
                    )
                ),
                "rollout_tokens": float(
                    parallel.data_parallel_all_reduce(torch.tensor(float(batches.rollout_tokens)))
                ),
            }
        )
        if batches.probs is not None:
            metrics.update({f"p_t/{n}": p for n, p in zip(TIER_NAMES, batches.probs, strict=True)})
        return metrics

    def _share_losses(self, reports) -> dict[str, float]:
        """Per-token means of the forward step's reports (`loss_rl`, `loss_ntp`: sums over
        their tokens; `rl_token_entropy`: over the RL tokens), from the last pipeline stage,
        known on every stage."""
        names = ("loss_rl", "loss_ntp", "rl_token_entropy")
        values = parallel.share_from_last_stage(
            [float(reports.get(key, torch.zeros(2))[i]) for key in names for i in (0, 1)]
        )
        sums = dict(zip(names, values[0::2], strict=True))
        counts = dict(zip(names, values[1::2], strict=True))
        return {name: mean_or_nan(sums[name], counts[name]) for name in names}

    # ---- checkpoints and the loop -----------------------------------------------------------

    def save(self, step: int) -> None:
        self.checkpointer.write(
            step,
            self.state.module,
            self.state.optimizer,
            {
                "step": step,
                "config": self.config.to_dict(),
                "scheduler": self.state.scheduler.state_dict(),
                "starting_weights": self.starting_weights,
                "sampler": self.builder.state_dict(),
                "prompt_budget": self.evaluator.budget,
            },
        )

    def train(self) -> dict:
        """Train from the plan's step to train_iters, or until exit_interval.

        Returns {"evaluations": [eval reports], "metrics": [per-step metrics], "exited_at": step
        or None}. A checkpoint is written at the end and at an exit."""
        train, start = self.config.train, self.plan.step
        if train.skip_train:
            return {"evaluations": [self.evaluator.run(start)], "metrics": [], "exited_at": None}
        self.log.restart(start if self.plan.continues_save else 0)
        evaluations = [self.evaluator.run(0)] if start == 0 else []
        history, exited_at = [], None
        for step in range(start + 1, train.train_iters + 1):  # the step about to be done, 1-based
            metrics = self.step(step - 1)
            self.checkpointer.refuse_nonfinite(step, metrics)
            history.append(metrics)
            self.log.record(step, metrics)
            if step == train.train_iters:
                break
            if train.exit_interval and step % train.exit_interval == 0:
                exited_at = step
                parallel.print_main(f"exiting at step {step} (--exit-interval); resume with --load")
                break
            if self.checkpointer.due(step):
                self.save(step)
            if self.evaluator.due(step):
                evaluations.append(self.evaluator.run(step))
        last = exited_at or train.train_iters
        if start < last:
            self.save(last)
        if exited_at is None:
            evaluations.append(self.evaluator.run(train.train_iters))
        self.log.writer.close()
        return {"evaluations": evaluations, "metrics": history, "exited_at": exited_at}


def check_runnable(config: RMTConfig) -> None:
    """Refuse, before anything is loaded or built, settings this machine or the step cannot run
    (`ConfigError`, one line)."""
    require_supported(config.loss)
    require_maskable(config.loss, uses_transformer_engine())
    require_runnable(config.rollout)


def run_training(config: RMTConfig) -> dict:
    """Check the config (`check_runnable`), plan where the run starts, and train inside this
    rank's process group; returns the run's evaluations and metrics (`Run.train`)."""
    check_runnable(config)
    plan = plan_resume(with_imported_model(config))
    train = plan.config.train
    with parallel.process_group(plan.config.model, train.seed, train.distributed_timeout_minutes):
        return Run(plan).train()

"""The RMT mid-training run: setup, the step loop, evaluation and checkpoints.

Setup resolves the data (the built-in corpus and base model, or the user's datasets, tokenizer and
checkpoint), builds the model, optimizer and scheduler, resumes from `--load` or starts from the
pretrained weights, and scores difficulty with the starting policy as proxy. Each step,
`StepBatchBuilder` prepares the rollouts and micro-batches (docs/method.md, "One step") and
`train_step` runs megatron-core's schedule and the optimizer. Metrics go to the console and to
TensorBoard; checkpoints are written every `save_interval` steps and at the end; the held-out
evaluation runs before training, every `eval_interval` steps and at the end.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from rmt_megatron.builtin.datasets import prepare_builtin_data
from rmt_megatron.config.sections import SCHEDULE_FIELDS, TIER_NAMES, RMTConfig, model_shape
from rmt_megatron.errors import CheckpointError, ConfigError, TrainingError
from rmt_megatron.files import atomic_write
from rmt_megatron.mcore import parallel
from rmt_megatron.mcore.checkpoint import (
    TRACKER,
    latest_step,
    load_checkpoint,
    read_state,
    save_checkpoint,
    set_latest,
    step_dir,
)
from rmt_megatron.mcore.forward_step import make_forward_step, require_supported
from rmt_megatron.mcore.generation import RolloutEngine
from rmt_megatron.mcore.indexed_dataset import documents_of, load_indexed_dataset
from rmt_megatron.mcore.optimizer import build_training, train_step
from rmt_megatron.method.group_scores import STEP_STATS
from rmt_megatron.method.tallies import mean_or_nan
from rmt_megatron.method.tokenizer import Tokenizer
from rmt_megatron.model_io.checkpoints import (
    load_imported_weights,
    load_proxy,
    load_tokenizer,
    with_imported_model,
)
from rmt_megatron.model_io.position_kinds import load_position_kinds
from rmt_megatron.model_io.preprocess import check_tokenizer
from rmt_megatron.model_io.tokenizers import SentencePieceTokenizer
from rmt_megatron.run.difficulty import cached_difficulty, file_signature, proxy_label
from rmt_megatron.run.evaluation import evaluate, sample_eval_positions
from rmt_megatron.run.metrics import MetricsWriter, progress_line, replica_means
from rmt_megatron.run.metrics_log import append_metrics, keep_metrics_up_to
from rmt_megatron.run.step_builder import StepBatchBuilder, eligible_positions


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


def checked_against_resume(config: RMTConfig) -> RMTConfig:
    """`config`, checked against the checkpoint it resumes (if any) before anything is built.
    The model's shape must be the checkpoint's (the TP/PP layout may change). The schedule is
    checked as Megatron-LM checks its OptimizerParamScheduler: a flag that changes the
    learning-rate schedule or the run length is refused unless --override-opt_param-scheduler
    (the flags win) or --use-checkpoint-opt_param-scheduler (the checkpoint's values replace the
    flags'). An evaluation-only run (--skip-train) takes the checkpoint's values (its final
    budget B_T)."""
    train = config.train
    if train.load is None or latest_step(train.load) is None:
        return config
    state = read_state(train.load)["config"]
    saved_shape, shape = model_shape(state["model"]), model_shape(config.to_dict()["model"])
    if saved_shape != shape:
        changed = sorted(k for k in saved_shape if saved_shape[k] != shape.get(k))
        raise ConfigError(
            f"{train.load} was trained with another model ({', '.join(changed)} differ); "
            "resume with the same model flags (the TP/PP layout may change)"
        )
    saved = state["train"]
    changed = {
        k: (saved[k], getattr(train, k))
        for k in SCHEDULE_FIELDS
        if k in saved and saved[k] != getattr(train, k)
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


def _same_directory(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def check_save_directory(config: RMTConfig) -> None:
    """Refuse to train a new run into a --save directory that holds another run's checkpoint:
    its tracker, step directories, metrics and evaluations would mix with the new run's, and a
    later --load would resume whichever saved last. Resuming that run (--load naming the same
    directory) continues it; an evaluation-only run (--skip-train) saves no checkpoint."""
    train = config.train
    if train.skip_train or train.save is None or _same_directory(train.load, train.save):
        return
    step = latest_step(train.save)
    if step is not None:
        raise CheckpointError(
            f"--save {train.save} already holds a run (saved at step {step}): resume it with "
            f"--load {train.save}, give another --save, or remove that directory to start over"
        )


class Run:
    """One training run on this rank (construct inside `parallel.process_group`)."""

    def __init__(self, config: RMTConfig) -> None:
        self.config = config
        self.rl = config.loss.rl_weight > 0
        self.resumes = self._resumes()
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
        self.valid_docs = documents_of(
            load_indexed_dataset(self.data.valid_prefix, tokenizer.vocab_size)
        )
        self.state = build_training(
            config.model,
            config.train,
            config.model.vocab_size or tokenizer.vocab_size,
            initialize=not self._starts_from_import(),
        )
        self.forward_step = make_forward_step(config.loss)
        self.start_step = self._load_weights()
        self.starting_weights = self._starting_weights()
        self._proxy = None  # the difficulty proxy, loaded once while the datasets are scored
        scores_train = self.rl and not config.train.skip_train  # eval-only runs need none
        train_entropy = (
            self._difficulty(self.data.train_prefix, self.train_docs) if scores_train else None
        )
        self.engine = RolloutEngine.for_model(self.state.module, tokenizer, config.model)
        self.builder = StepBatchBuilder(
            config,
            self.engine,
            tokenizer,
            self.train_docs,
            train_entropy,
            *parallel.data_parallel_rank_and_size(),
        )
        if scores_train:
            self._log(
                "RL positions per tier: "
                + ", ".join(
                    f"{name} {int((self.builder.tiers == k).sum())}"
                    for k, name in enumerate(TIER_NAMES)
                )
            )
        self.eval_positions = sample_eval_positions(
            self.valid_docs,
            self._difficulty(self.data.valid_prefix, self.valid_docs),
            eligible_positions(self.valid_docs, tokenizer, config.curriculum.min_context),
            config.curriculum.tier_thresholds[0],
            config.data.eval_positions,
            config.data.eval_seed,
            load_position_kinds(self.data.valid_prefix, sum(len(d) for d in self.valid_docs)),
        )
        self._proxy = None  # scoring is done: free it
        self.writer = MetricsWriter(config.train.tensorboard_dir, parallel.is_main_rank())
        self.saved_steps: list[int] = []
        """Steps this run saved, oldest first."""
        if self.resume_state is not None and not config.train.skip_train:
            self.state.resume_schedule(self.resume_state["scheduler"])
            self.builder.load_state_dict(self.resume_state["sampler"])

    # ---- setup -------------------------------------------------------------------------------

    def _resumes(self) -> bool:
        """Whether --load names a checkpoint to resume from. A --load without one is an error,
        except where it is also --save: resume-if-present, the usual pattern of a job that may
        be preempted and restarted with the same command."""
        load, save = self.config.train.load, self.config.train.save
        if load is None:
            return False
        if latest_step(load) is not None:
            return True
        if _same_directory(load, save):
            return False
        raise CheckpointError(
            f"--load {load} holds no checkpoint ({TRACKER} not found): give the "
            "directory a run saved to with --save, or drop --load to start "
            "from the pretrained weights"
        )

    def _starts_from_import(self) -> bool:
        """True when every weight will come from --hf/--gguf-checkpoint (no resume)."""
        return bool(self.config.data.imported_checkpoint) and not self.resumes

    def _load_weights(self) -> int:
        """Resume from --load if it holds a checkpoint, else start from the pretrained one."""
        self.resume_state = None
        load = self.config.train.load
        if self.resumes:  # the model's shape was checked by checked_against_resume
            loaded = load_checkpoint(load, self.state.module, self.state.optimizer)
            self.resume_state = loaded.state
            self._log(f"resumed from {load} at step {loaded.step}")
            return loaded.step
        imported = self.config.data.imported_checkpoint
        if imported:
            load_imported_weights(self.state.module, self.config.model, imported)
            self.state.weights_loaded()
            self._log(f"starting from {imported}")
        elif self.data.pretrained is not None:
            load_checkpoint(
                self.data.pretrained, self.state.module, restore_rng=False, require_state=False
            )
            self.state.weights_loaded()
            self._log(f"starting from {self.data.pretrained}")
        return 0

    def _difficulty(self, prefix: Path, documents: list[np.ndarray]) -> np.ndarray:
        """Proxy-model entropies (--rmt-proxy-checkpoint, else the starting policy), cached next
        to the data (`difficulty.cached_difficulty`)."""
        proxy_path = self.config.curriculum.proxy_checkpoint

        def load_model():
            if proxy_path and self._proxy is None:
                self._proxy = load_proxy(proxy_path, self.config.model, self.data.tokenizer)
            return self.state.module if self._proxy is None else self._proxy

        return cached_difficulty(
            prefix,
            documents,
            proxy_label(proxy_path) if proxy_path else "policy",
            file_signature(proxy_path) if proxy_path else self.starting_weights,
            load_model,
            self.data.tokenizer,
            self.config,
        )

    def _starting_weights(self):
        """What this run's policy started from, as a signature of its files: the difficulty
        proxy when no other is named. A resumed run keeps the one its checkpoint recorded, so it
        draws from the same difficulty scores."""
        if self.resume_state is not None and "starting_weights" in self.resume_state:
            return self.resume_state["starting_weights"]
        if self.config.data.imported_checkpoint:
            return file_signature(self.config.data.imported_checkpoint)
        if self.data.pretrained is not None:
            return file_signature(self.data.pretrained)
        return {"random_init": {"seed": self.config.train.seed, **self.config.to_dict()["model"]}}

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
                "rollout_tokens": float(
                    parallel.data_parallel_all_reduce(torch.tensor(float(batches.rollout_tokens)))
                ),
            }
        )
        if batches.probs is not None:
            metrics.update({f"p_t/{n}": p for n, p in zip(TIER_NAMES, batches.probs, strict=True)})
        return metrics

    def _share_losses(self, reports) -> dict[str, float]:
        """Loss sums and token counts from the last pipeline stage, known on every stage."""
        values = parallel.share_from_last_stage(
            [
                float(reports.get(key, torch.zeros(2))[i])
                for key in ("rl loss", "ntp loss", "rl entropy")
                for i in (0, 1)
            ]
        )
        rl_sum, rl_count, ntp_sum, ntp_count, entropy_sum, _ = values
        return {
            "loss_rl": mean_or_nan(rl_sum, rl_count),
            "loss_ntp": mean_or_nan(ntp_sum, ntp_count),
            "rl_token_entropy": mean_or_nan(entropy_sum, rl_count),
        }

    def _check_finite(self, step: int, metrics: dict[str, float]) -> None:
        """Stop when step `step` (1-based) had non-finite losses or gradients. The step was not
        applied; but the weights that produced it are those of step - 1, so a checkpoint of step
        - 1 is no good either: the tracker is moved back to the checkpoint before it (or removed
        when there is none), so that --load resumes from weights that trained finitely."""
        if metrics["finite"]:
            return
        message = (
            f"the loss or the gradients are not finite at step {step} (L_RL "
            f"{metrics['loss_rl']}, L_NTP {metrics['loss_ntp']}); the step was not applied. "
            "Lower --lr or check the data."
        )
        save = self.config.train.save
        if save and self.saved_steps:
            good = [s for s in self.saved_steps if s < step - 1]
            if self.saved_steps[-1] == step - 1:
                if parallel.is_main_rank():
                    set_latest(save, good[-1] if good else None)
                message += (
                    f" {step_dir(save, step - 1)} holds the weights that gave these values and "
                    "is no longer the latest checkpoint."
                )
            message += (
                f" The last checkpoint that trained finitely is {step_dir(save, good[-1])}"
                if good
                else " No checkpoint of this run trained finitely."
            )
        raise TrainingError(message)

    # ---- evaluation, checkpoints, loop -------------------------------------------------------

    def evaluate(self, step: int) -> dict:
        total = self.config.train.train_iters
        report = evaluate(
            self.state.module,
            self.engine,
            self.data.tokenizer,
            self.valid_docs,
            self.eval_positions,
            self.config,
            self.builder.budget(total),
            self.config.train.seed,
        )
        report["step"] = step
        flat = {
            f"{key}/{split}": value[key]
            for split, value in report["splits"].items()
            for key in ("reasoning_accuracy", "ntp_accuracy")
        }
        flat["mean_reasoning_length"] = report["mean_reasoning_length"]
        self.writer.scalars(step, flat, "eval")
        if self.config.train.save and parallel.is_main_rank():
            directory = Path(self.config.train.save) / "eval"
            directory.mkdir(parents=True, exist_ok=True)
            for name in (f"iter_{step:07d}.json", "latest.json"):
                atomic_write(directory / name, json.dumps(report, indent=1))
        avg = report["average"]
        self._log(
            f"eval at step {step}: reasoning accuracy {avg['reasoning_accuracy']:.3f}, "
            f"NTP accuracy {avg['ntp_accuracy']:.3f}, mean reasoning length "
            f"{report['mean_reasoning_length']:.1f} (B_T {report['budget']})"
        )
        return report

    def save(self, step: int) -> None:
        if not self.config.train.save:
            return
        self.saved_steps.append(step)
        save_checkpoint(
            self.config.train.save,
            step,
            self.state.module,
            self.state.optimizer,
            {
                "step": step,
                "config": self.config.to_dict(),
                "scheduler": self.state.scheduler.state_dict(),
                "starting_weights": self.starting_weights,
                "sampler": self.builder.state_dict(),
                "prompt_budget": self.builder.budget(self.config.train.train_iters),
            },
        )

    def train(self) -> dict:
        """Train from the start (or resume) step to train_iters, or until exit_interval.

        Returns {"evaluations": [eval reports], "metrics": [per-step metrics], "exited_at": step
        or None}. A checkpoint is written at the end and at an exit."""
        config = self.config.train
        if config.skip_train:
            return {
                "evaluations": [self.evaluate(self.start_step)],
                "metrics": [],
                "exited_at": None,
            }
        evaluations, history = [], []
        self._restart_metrics()
        if self.start_step == 0:
            evaluations.append(self.evaluate(0))
        exited_at = None
        for step in range(self.start_step, config.train_iters):
            metrics = self.step(step)
            self._check_finite(step + 1, metrics)
            history.append(metrics)
            self.writer.scalars(step + 1, metrics, "train")
            self._append_metrics(step + 1, metrics)
            if (step + 1) % config.log_interval == 0 or step == 0:
                self._log(progress_line(step + 1, config.train_iters, metrics))
            if step + 1 == config.train_iters:
                break
            if config.exit_interval and (step + 1) % config.exit_interval == 0:
                exited_at = step + 1
                self._log(f"exiting at step {exited_at} (--exit-interval); resume with --load")
                break
            if config.save_interval and (step + 1) % config.save_interval == 0:
                self.save(step + 1)
            if config.eval_interval and (step + 1) % config.eval_interval == 0:
                evaluations.append(self.evaluate(step + 1))
        last = exited_at or config.train_iters
        if self.start_step < last:
            self.save(last)
        if exited_at is None:
            evaluations.append(self.evaluate(config.train_iters))
        self.writer.close()
        return {"evaluations": evaluations, "metrics": history, "exited_at": exited_at}

    def _writes_metrics(self) -> bool:
        """Whether this rank keeps the run's metrics log (`run.metrics_log`): the main rank of a
        run with --save."""
        return bool(self.config.train.save) and parallel.is_main_rank()

    def _restart_metrics(self) -> None:
        """Make the metrics log hold this run's steps up to where it starts: a run resuming its
        own --save keeps the rows up to its checkpoint's step (it redoes the later ones); any
        other run starts the log anew (`check_save_directory` allows it only where no checkpoint
        was saved, so the rows left there belong to no checkpoint)."""
        if self._writes_metrics():
            resumes_own = _same_directory(self.config.train.load, self.config.train.save)
            keep_metrics_up_to(self.config.train.save, self.start_step if resumes_own else 0)

    def _append_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if self._writes_metrics():
            append_metrics(self.config.train.save, step, metrics)

    @staticmethod
    def _log(message: str) -> None:
        if parallel.is_main_rank():
            print(message, flush=True)


def run_training(config: RMTConfig) -> dict:
    """Check the config, train inside this rank's process group; returns first/final eval
    reports."""
    require_supported(config.loss)
    config = checked_against_resume(with_imported_model(config))
    check_save_directory(config)
    train = config.train
    with parallel.process_group(config.model, train.seed, train.distributed_timeout_minutes):
        return Run(config).train()

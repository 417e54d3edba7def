"""RMT inside Megatron-LM's own loop, `megatron.training.pretrain()` (megatron-core >= 0.17).

Megatron-LM builds its training data iterator once, before the first step, and then calls
`forward_step(data_iterator, model)` `get_num_microbatches()` times a step. RMT's micro-batches
come from rollouts of the current policy, so the "dataset" that
`train_valid_test_datasets_provider` returns is a `StepStream`: with `--dataloader-type external`
Megatron-LM hands it to the schedule as the iterator. It builds nothing until `forward_step`
binds it to the model it is called with (the first call of step 1: the difficulty scores are
made or read then). From then on the first micro-batch of every step builds the whole step
(`StepBatchBuilder.build`: rollouts, rewards, advantages, the documents' NTP windows, step
numbers from Megatron-LM's iteration) and the stream hands out its micro-batches, then
micro-batches without a loss token up to Megatron-LM's fixed count (they add nothing to the
gradient: the loss is summed per token over the step).

What the loop cannot do is refused before step 1 with a message (`ConfigError`): pipeline
parallelism (rollouts inside a pipeline schedule would wait on each other; `pretrain_rmt.py`
runs them), Megatron-LM's own evaluation (RMT's is `python -m rmt_megatron.evaluate` on a
saved checkpoint), a per-micro-batch loss normalisation, and a step that needs more
micro-batches than `--global-batch-size` gives. A resumed run replays the curriculum sampler's
draws for the steps before Megatron-LM's iteration (`StepBatchBuilder.skip`): Megatron-LM's
checkpoint does not hold the sampler's state, and the draws depend on nothing else.
"""

from __future__ import annotations

import argparse
from collections import deque

import torch

from rmt_megatron.config.flags import config_from_args
from rmt_megatron.config.sections import RMTConfig
from rmt_megatron.errors import ConfigError, RMTError
from rmt_megatron.mcore import dropin, parallel
from rmt_megatron.mcore.forward_step import REPORT_PREFIX, require_maskable, require_supported
from rmt_megatron.mcore.indexed_dataset import documents_of, load_indexed_dataset
from rmt_megatron.mcore.megatron_lm import bare_model, megatron_lm_args, microbatches_per_step
from rmt_megatron.mcore.rollout_engines import build_rollout_engine, require_runnable
from rmt_megatron.method.group_scores import STEP_STATS
from rmt_megatron.method.packing import TrainingSequence, collate
from rmt_megatron.model_io.preprocess import check_tokenizer
from rmt_megatron.run.difficulty import DifficultyScorer, file_signature
from rmt_megatron.run.step_builder import StepBatchBuilder, StepBatches, max_step_sequences
from rmt_megatron.run.trainer import resolve_data


def _one_prefix(paths: list[str] | None, flag: str) -> str | None:
    if not paths:
        return None
    if len(paths) != 1:
        raise ConfigError(
            f"{flag} names {len(paths)} datasets; RMT trains on one indexed dataset: give its "
            "PREFIX alone (blend the corpora with tools/preprocess_data.py first)"
        )
    return paths[0]


def check_megatron_lm_args(args: argparse.Namespace) -> RMTConfig:
    """The run's `RMTConfig` from Megatron-LM's arguments, or a `ConfigError` naming what the
    loop cannot honour and the flag to change."""
    if args.pipeline_model_parallel_size > 1:
        raise ConfigError(
            "RMT inside megatron.training.pretrain() does not support pipeline parallelism "
            f"(--pipeline-model-parallel-size {args.pipeline_model_parallel_size}): rollouts "
            "run inside the training schedule and the stages would wait on each other. Use "
            "--pipeline-model-parallel-size 1 (tensor parallelism works), or run "
            "pretrain_rmt.py, which runs rollouts under pipeline parallelism"
        )
    if args.context_parallel_size > 1:
        raise ConfigError(
            f"RMT inside megatron.training.pretrain() does not support context parallelism "
            f"(--context-parallel-size {args.context_parallel_size}): rollouts decode whole "
            "sequences on each rank. Use --context-parallel-size 1"
        )
    if not args.calculate_per_token_loss:
        raise ConfigError(
            "the RMT loss is normalised per token over the whole step: add "
            "--calculate-per-token-loss"
        )
    if args.dataloader_type != "external":
        raise ConfigError(
            "RMT builds each step's micro-batches from the policy's rollouts: add "
            f"--dataloader-type external (got {args.dataloader_type!r})"
        )
    if args.eval_iters:
        raise ConfigError(
            "Megatron-LM's evaluation has no RMT data: add --eval-iters 0 and evaluate a "
            "saved checkpoint with python -m rmt_megatron.evaluate"
        )
    if args.skip_train:
        raise ConfigError("--skip-train: RMT's evaluation is python -m rmt_megatron.evaluate")
    namespace = argparse.Namespace(**vars(args))
    namespace.train_data_path = _one_prefix(args.train_data_path, "--train-data-path")
    namespace.valid_data_path = _one_prefix(args.valid_data_path, "--valid-data-path")
    namespace.test_data_path = None
    config = config_from_args(namespace)
    require_supported(config.loss)
    require_maskable(config.loss, args.transformer_impl == "transformer_engine")
    require_runnable(config.rollout)
    return config


class StepStream:
    """Megatron-LM's training 'data loader' for RMT (module docstring): an iterator of
    micro-batch dicts (`packing.collate`), `microbatches_per_step()` per step."""

    def __init__(self, config: RMTConfig, args: argparse.Namespace) -> None:
        self.config = config
        data = resolve_data(config)  # the built-in corpus, or the user's, as pretrain_rmt.py
        self.tokenizer, self.prefix = data.tokenizer, data.train_prefix
        check_tokenizer(self.prefix, self.tokenizer)
        if args.padded_vocab_size < self.tokenizer.vocab_size:
            raise ConfigError(
                f"the model has {args.padded_vocab_size} vocabulary rows but the tokenizer "
                f"{self.tokenizer.path} has {self.tokenizer.vocab_size} tokens: build the model "
                "for this tokenizer"
            )
        self.documents = documents_of(load_indexed_dataset(self.prefix, self.tokenizer.vocab_size))
        self.start_step = args.iteration
        self.starting_weights = args.load or args.pretrained_checkpoint
        self.builder: StepBatchBuilder | None = None
        self.pending: deque = deque()

    def bind(self, model) -> None:
        """Score difficulty with the policy `model` (or the fixed proxy), make the rollout engine
        over it and replay the sampler up to the starting step; later calls do nothing."""
        if self.builder is not None:
            return
        config, module = self.config, bare_model(model)
        signature = (
            file_signature(self.starting_weights)
            if self.starting_weights
            else {"random_init": {"seed": config.train.seed, **config.to_dict()["model"]}}
        )
        scorer = DifficultyScorer(
            config, self.tokenizer, config.curriculum.proxy_checkpoint, module, signature
        )
        score = (
            scorer.pool_scores(self.prefix, config.train.save)
            if config.loss.rl_weight > 0
            else None
        )
        engine = build_rollout_engine(module, self.tokenizer, config.model, config.rollout)
        builder = StepBatchBuilder(
            config,
            engine,
            self.tokenizer,
            self.documents,
            score,
            *parallel.data_parallel_rank_and_size(),
        )
        for step in range(self.start_step):
            builder.skip(step)
        dropin.configure(config)
        self.builder, self.step = builder, self.start_step

    def __iter__(self) -> StepStream:
        return self

    def __next__(self) -> dict:
        if self.builder is None:
            raise RuntimeError("rmt_megatron.dropin.forward_step binds this stream to the model")
        if not self.pending:
            batches = self.builder.build(self.step)
            idle = collate(
                [TrainingSequence([self.tokenizer.eos_id])],
                self.config.train.micro_batch_size,
                batches.seq_length,
                self.tokenizer.eos_id,
                0.0,
                0.0,
            )[0]
            count = microbatches_per_step()
            micro = batches.micro_batches + [idle] * (count - len(batches.micro_batches))
            self.pending.extend(_with_step_report(micro, batches))
            self.step += 1
        return self.pending.popleft()


def _with_step_report(micro_batches: list[dict], batches: StepBatches) -> list[dict]:
    """`micro_batches`, the first carrying this replica's rollout statistics (`STEP_STATS`, and
    B_t) as `[Σ, N]` report pairs and the others zeros, so that Megatron-LM logs their means
    over the step and the data-parallel replicas (`forward_step.REPORT_PREFIX`)."""
    pairs = dict(zip(STEP_STATS, batches.stats.sums_and_counts(STEP_STATS), strict=True))
    if batches.budget is not None:
        pairs["budget"] = [float(batches.budget), 1.0]
    first = {REPORT_PREFIX + name: torch.tensor(pair) for name, pair in pairs.items()}
    rest = {key: torch.zeros(2) for key in first}
    return [{**micro, **(first if i == 0 else rest)} for i, micro in enumerate(micro_batches)]


def check_step_fits(config: RMTConfig, microbatches: int) -> None:
    """A `ConfigError` unless Megatron-LM's `microbatches` per step hold every RMT step."""
    dp_rank, dp_size = parallel.data_parallel_rank_and_size()
    sequences = max_step_sequences(config, dp_rank, dp_size)
    needed = -(-sequences // config.train.micro_batch_size)
    if needed > microbatches:
        raise ConfigError(
            f"an RMT step makes up to {sequences} sequences per data-parallel rank, {needed} "
            f"micro-batches of {config.train.micro_batch_size}, but --global-batch-size gives "
            f"{microbatches} per step: use --global-batch-size "
            f"{needed * config.train.micro_batch_size * dp_size}"
        )


def _stop(error: RMTError) -> SystemExit:
    """The exit that ends a Megatron-LM run on `error`: its one line, no traceback."""
    return SystemExit(f"rmt_megatron: error: {error}")


def train_valid_test_datasets_provider(train_val_test_num_samples):
    """Megatron-LM's datasets provider: RMT's `StepStream` for training, nothing to evaluate.
    What the loop cannot honour ends the run here, before step 1, with one line."""
    args = megatron_lm_args()
    try:
        config = check_megatron_lm_args(args)
        check_step_fits(config, microbatches_per_step())
        return StepStream(config, args), None, None
    except RMTError as error:
        raise _stop(error) from None


train_valid_test_datasets_provider.is_distributed = True  # every rank builds the step


def forward_step(data_iterator, model):
    """Megatron schedule step with the dual loss; binds RMT's stream to `model` on first use."""
    stream = getattr(data_iterator, "iterable", data_iterator)
    if isinstance(stream, StepStream):
        try:
            stream.bind(model)
        except RMTError as error:  # the data cannot train (e.g. no eligible position)
            raise _stop(error) from None
    return dropin.forward_step(data_iterator, model)
